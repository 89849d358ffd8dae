"""Model configurations: frozen dataclasses and named presets.

Real presets use the numbers of the Hugging Face `config.json` files, so that
`models/hf/` can import their weights one-to-one:

  paligemma_3b   google/paligemma-3b-pt-224   SigLIP So400m/14 @224 + Gemma 2B   (2,923,335,408 params)
  paligemma2_3b  google/paligemma2-3b-pt-224  SigLIP So400m/14 @224 + Gemma2 2B  (~3.03B)
  smolvlm_256m   HuggingFaceTB/SmolVLM-256M-Instruct  SigLIP B/16 @512, pixel shuffle 4,
                 SmolLM2-135M-style Llama decoder, untied head (~256M)
  gemma3_4b      google/gemma-3-4b-it  SigLIP So400m/14 @896, 4x4 average pool (256 tokens),
                 Gemma3 4B (5 local : 1 global layers, q/k norms) (~4.30B)
  qwen2_vl_2b    Qwen/Qwen2-VL-2B-Instruct  its 675M tower (2-D RoPE, 2x2 patch merger) at a
                 448x448 bucket (256 tokens; any multiple of 28 runs), Qwen2 1.5B with M-RoPE (~2.21B)
  qwen2_5_vl_3b / _7b / _72b  Qwen/Qwen2.5-VL-{3B,7B,72B}-Instruct  the 2.5 tower (RMSNorm, SwiGLU,
                 112-pixel attention windows with full attention in blocks 7/15/23/31) at the same
                 448x448 bucket, Qwen2.5 LMs with M-RoPE (~3.75B / ~8.29B / ~73.4B)

Tiny presets (`tiny`, `tiny_gemma2`, `tiny_llama`, `tiny_qwen2`) shrink the same
families for CPU tests and the offline demo.
"""

from __future__ import annotations

import dataclasses
from typing import Any

LM_FAMILIES = ("gemma", "gemma2", "gemma3", "llama", "qwen2")  # LMConfig.family values
ACTIVATIONS = ("gelu_tanh", "silu")  # LM MLPs
CONNECTORS = ("linear", "pixel_shuffle", "avg_pool", "patch_merger")
VIT_FAMILIES = ("siglip", "qwen2_vl", "qwen2_5_vl")
REMAT = ("none", "full", "dots")
ATTENTION = ("auto", "xla", "cudnn")


@dataclasses.dataclass(frozen=True)
class LMConfig:
  """Decoder-only language model (Gemma, Gemma2, Gemma3, Llama, Qwen2 semantics as in HF)."""
  vocab_size: int
  width: int
  depth: int
  mlp_dim: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  family: str = "gemma"
  act: str = "gelu_tanh"
  norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  attn_logit_softcap: float | None = None
  final_logit_softcap: float | None = None
  sliding_window: int | None = None   # local layers attend within this window (gemma2, gemma3)
  sliding_pattern: int = 2            # every sliding_pattern-th layer is global, the rest local
                                      # (gemma2: 2 = local first, alternating; gemma3: 6)
  rope_local_theta: float | None = None  # RoPE base of the local layers (gemma3: 1e4); None = rope_theta
  rope_scale: float = 1.0             # linear RoPE scaling of the global layers (gemma3 4B+: 8)
  qk_norm: bool = False               # gemma3: RMSNorm over head_dim on queries and keys before RoPE
  # M-RoPE (Qwen2-VL): rotary frequency pairs per position stream, cycling (temporal, height,
  # width); sums to head_dim / 2. Positions are then [B,T,3]; [B,T] means three equal streams.
  mrope_section: tuple[int, ...] | None = None
  query_pre_attn_scalar: float | None = None   # attention scale = this ** -0.5 (default head_dim)
  qkv_bias: bool = False
  tie_embeddings: bool = True
  scale_embeddings: bool = True   # multiply token embeddings by sqrt(width) (Gemma)
  gemma_norm: bool = True         # RMSNorm scale applied as (1 + w), all in float32
  post_norms: bool = False        # gemma2: extra norms after attention and after the MLP

  def __post_init__(self):
    _check(self.family in LM_FAMILIES, f"LMConfig.family={self.family!r}: use one of {LM_FAMILIES}")
    _check(self.act in ACTIVATIONS, f"LMConfig.act={self.act!r}: use one of {ACTIVATIONS}")
    _check(self.num_heads % self.num_kv_heads == 0,
           f"LMConfig: num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
    _check(self.sliding_pattern >= 1, f"LMConfig: sliding_pattern must be >= 1, got {self.sliding_pattern}")
    if self.mrope_section is not None:
      object.__setattr__(self, "mrope_section", tuple(int(n) for n in self.mrope_section))
      _check(sum(self.mrope_section) * 2 == self.head_dim and self.sliding_window is None,
             f"LMConfig: mrope_section {self.mrope_section} must sum to head_dim / 2 = {self.head_dim // 2}, "
             "without a sliding window")


@dataclasses.dataclass(frozen=True)
class ViTConfig:
  """Vision tower: patch conv, pre-LN blocks, final LN, no pooling. family "siglip": learned
  position embedding, conv bias, gelu_tanh; "qwen2_vl": 2-D RoPE in attention (fused qkv), no
  position embedding nor conv bias, quick_gelu, `frames` = its temporal patch size (a still image
  is `frames` equal frames), any image size divisible by patch_size · the merge factor;
  "qwen2_5_vl": as qwen2_vl with RMSNorms, a SwiGLU MLP with biases, and attention within
  `window_size`-pixel windows except in the blocks `full_attention_blocks`."""
  image_size: tuple[int, int]
  patch_size: int
  width: int
  depth: int
  mlp_dim: int
  num_heads: int
  norm_eps: float = 1e-6
  # Tubelet length (ViViT): the patch embedding sees `frames` consecutive frames stacked along
  # channels, so motion inside a patch is a local feature. 1 = still images (every HF family).
  frames: int = 1
  family: str = "siglip"
  window_size: int = 0                        # qwen2_5_vl: attention window side in pixels (config.json's)
  full_attention_blocks: tuple[int, ...] = ()  # qwen2_5_vl: blocks attending over the whole image

  def __post_init__(self):
    object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
    object.__setattr__(self, "full_attention_blocks", tuple(int(i) for i in self.full_attention_blocks))
    _check(self.family in VIT_FAMILIES, f"ViTConfig.family={self.family!r}: use one of {VIT_FAMILIES}")
    _check(self.frames >= 1, f"ViTConfig: frames must be >= 1, got {self.frames}")
    h, w = self.image_size
    _check(h % self.patch_size == 0 and w % self.patch_size == 0,
           f"ViTConfig: image_size {self.image_size} must be divisible by patch_size {self.patch_size}")
    _check(self.width % self.num_heads == 0,
           f"ViTConfig: width {self.width} must be divisible by num_heads {self.num_heads}")

  @property
  def grid(self) -> tuple[int, int]:
    return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size


@dataclasses.dataclass(frozen=True)
class VLMConfig:
  """Image tower + connector (`img/head`) + LM."""
  vit: ViTConfig
  lm: LMConfig
  connector: str = "linear"          # "linear" (PaliGemma, with bias) | "pixel_shuffle" (Idefics3, no bias)
                                     # | "avg_pool" (Gemma 3: pool, RMSNorm, no bias)
                                     # | "patch_merger" (Qwen2-VL: 2x2 windows, MLP with biases)
  pixel_shuffle_factor: int = 1      # space-to-depth factor of pixel_shuffle and patch_merger
  pool_factor: int = 1               # avg_pool: side of the square pooling window, in patches
  dtype: str = "bfloat16"            # compute dtype
  param_dtype: str = "float32"
  scan: bool = True                  # stack layers along a leading "layers" axis
  remat: str = "none"                # none | full | dots (policy inside the scanned block)
  attention: str = "auto"            # auto | xla | cudnn  (jax.nn.dot_product_attention implementation)
  position_offset: int = 1           # HF PaliGemma position ids start at 1; Llama/Idefics3 at 0
  # None: image tokens are a prefix before the text (PaliGemma, big_vision). An id: image
  # features replace the text positions holding this token, in order (HF Idefics3/SmolVLM
  # layout, several images per row allowed); the text then carries all positions.
  image_token_id: int | None = None
  # Sliding-window layers: True keeps the query's whole bidirectional block visible however long
  # (transformers' PaliGemma 2 ORs the block onto the window); False: the window cuts blocks too
  # (transformers' Gemma 3 ANDs the window onto causal-or-block).
  local_sees_block: bool = True
  # Qwen2-VL / Qwen2.5-VL video: the id whose positions take a video's features (after any images
  # of the row, in text order), and the M-RoPE temporal position of temporal patch t:
  # t · tokens_per_second · seconds_per_patch (Qwen2.5-VL; truncated as transformers does), or t
  # (tokens_per_second None, Qwen2-VL). seconds_per_patch is the clips' temporal_patch_size / fps
  # (transformers' second_per_grid_ts), one value per batch.
  video_token_id: int | None = None
  tokens_per_second: float | None = None
  seconds_per_patch: float = 1.0

  def __post_init__(self):
    _check(self.connector in CONNECTORS, f"VLMConfig.connector={self.connector!r}: use one of {CONNECTORS}")
    _check(self.remat in REMAT, f"VLMConfig.remat={self.remat!r}: use one of {REMAT}")
    _check(self.attention in ATTENTION, f"VLMConfig.attention={self.attention!r}: use one of {ATTENTION}")
    _check((self.connector == "patch_merger") == (self.vit.family in ("qwen2_vl", "qwen2_5_vl")),
           f"VLMConfig: connector {self.connector!r} with a {self.vit.family} tower; patch_merger goes with "
           "qwen2_vl / qwen2_5_vl")
    if self.connector != "linear":
      gh, gw = self.vit.grid
      s = self.connector_factor
      name = "pool_factor" if self.connector == "avg_pool" else "pixel_shuffle_factor"
      _check(s >= 1 and gh % s == 0 and gw % s == 0,
             f"VLMConfig: patch grid {self.vit.grid} must be divisible by {name} {s}")

  @property
  def connector_factor(self) -> int:
    """Patches per image token along each side (pixel shuffle or pooling; 1 = linear)."""
    return {"linear": 1, "pixel_shuffle": self.pixel_shuffle_factor, "avg_pool": self.pool_factor,
            "patch_merger": self.pixel_shuffle_factor}[self.connector]

  @property
  def num_image_tokens(self) -> int:
    gh, gw = self.vit.grid
    s = self.connector_factor
    return (gh // s) * (gw // s)

  @property
  def num_prefix_tokens(self) -> int:
    """Sequence positions before the text: the image tokens, unless they live inside the text."""
    return 0 if self.image_token_id is not None else self.num_image_tokens


def _check(ok: bool, msg: str):
  if not ok:
    raise ValueError(msg)


# ----------------------------------------------------------------------------- presets

SIGLIP_SO400M_14_224 = ViTConfig(image_size=(224, 224), patch_size=14, width=1152, depth=27,
                                 mlp_dim=4304, num_heads=16)
SIGLIP_B16_512 = ViTConfig(image_size=(512, 512), patch_size=16, width=768, depth=12,
                           mlp_dim=3072, num_heads=12)
GEMMA_2B = LMConfig(vocab_size=257216, width=2048, depth=18, mlp_dim=16384, num_heads=8,
                    num_kv_heads=1, head_dim=256, family="gemma")
GEMMA2_2B = LMConfig(vocab_size=257216, width=2304, depth=26, mlp_dim=9216, num_heads=8,
                     num_kv_heads=4, head_dim=256, family="gemma2", attn_logit_softcap=50.0,
                     final_logit_softcap=30.0, sliding_window=4096, query_pre_attn_scalar=256,
                     post_norms=True)
SMOLLM2_135M = LMConfig(vocab_size=49280, width=576, depth=30, mlp_dim=1536, num_heads=9,
                        num_kv_heads=3, head_dim=64, family="llama", act="silu", norm_eps=1e-5,
                        rope_theta=100000.0, tie_embeddings=False, scale_embeddings=False,
                        gemma_norm=False)

SIGLIP_SO400M_14_896 = dataclasses.replace(SIGLIP_SO400M_14_224, image_size=(896, 896))
GEMMA3_4B = LMConfig(vocab_size=262208, width=2560, depth=34, mlp_dim=10240, num_heads=8, num_kv_heads=4,
                     head_dim=256, family="gemma3", sliding_window=1024, sliding_pattern=6,
                     query_pre_attn_scalar=256, rope_theta=1e6, rope_local_theta=1e4, rope_scale=8.0,
                     qk_norm=True, post_norms=True)

QWEN2_VL_VIT = ViTConfig(image_size=(448, 448), patch_size=14, width=1280, depth=32, mlp_dim=5120, num_heads=16,
                         frames=2, family="qwen2_vl")
QWEN2_1_5B = LMConfig(vocab_size=151936, width=1536, depth=28, mlp_dim=8960, num_heads=12, num_kv_heads=2,
                      head_dim=128, family="qwen2", act="silu", rope_theta=1e6, qkv_bias=True, scale_embeddings=False,
                      gemma_norm=False, mrope_section=(16, 24, 24))

# Qwen2.5-VL: one tower (675M) for every size, only its merger's output width and (72B) MLP differ.
QWEN2_5_VL_VIT = ViTConfig(image_size=(448, 448), patch_size=14, width=1280, depth=32, mlp_dim=3420, num_heads=16,
                           frames=2, family="qwen2_5_vl", window_size=112, full_attention_blocks=(7, 15, 23, 31))
_QWEN2_5 = dict(family="qwen2", act="silu", rope_theta=1e6, qkv_bias=True, scale_embeddings=False, gemma_norm=False,
                mrope_section=(16, 24, 24))
QWEN2_5_3B = LMConfig(vocab_size=151936, width=2048, depth=36, mlp_dim=11008, num_heads=16, num_kv_heads=2,
                      head_dim=128, **_QWEN2_5)
QWEN2_5_7B = LMConfig(vocab_size=152064, width=3584, depth=28, mlp_dim=18944, num_heads=28, num_kv_heads=4,
                      head_dim=128, tie_embeddings=False, **_QWEN2_5)
QWEN2_5_72B = LMConfig(vocab_size=152064, width=8192, depth=80, mlp_dim=29568, num_heads=64, num_kv_heads=8,
                       head_dim=128, tie_embeddings=False, **_QWEN2_5)
_QWEN2_5_VL = dict(connector="patch_merger", pixel_shuffle_factor=2, position_offset=0, image_token_id=151655,
                   video_token_id=151656, tokens_per_second=2)

TINY_VIT = ViTConfig(image_size=(32, 32), patch_size=8, width=64, depth=2, mlp_dim=128, num_heads=4)
_TINY_LM = dict(vocab_size=512, width=96, depth=2, mlp_dim=256, num_heads=4, head_dim=24)

PRESETS: dict[str, VLMConfig] = {
    "tiny": VLMConfig(vit=TINY_VIT, lm=LMConfig(**_TINY_LM, num_kv_heads=1)),
    "tiny_gemma2": VLMConfig(vit=TINY_VIT, lm=LMConfig(
        **_TINY_LM, num_kv_heads=2, family="gemma2", attn_logit_softcap=50.0,
        final_logit_softcap=30.0, sliding_window=16, query_pre_attn_scalar=24, post_norms=True)),
    "tiny_llama": VLMConfig(vit=TINY_VIT, connector="pixel_shuffle", pixel_shuffle_factor=2,
                            position_offset=0, lm=LMConfig(
        **_TINY_LM, num_kv_heads=2, family="llama", act="silu", norm_eps=1e-5, rope_theta=100000.0,
        tie_embeddings=False, scale_embeddings=False, gemma_norm=False)),
    "tiny_qwen2": VLMConfig(vit=TINY_VIT, position_offset=0, lm=LMConfig(
        **_TINY_LM, num_kv_heads=2, family="qwen2", act="silu", rope_theta=1e6, qkv_bias=True,
        scale_embeddings=False, gemma_norm=False)),
    "paligemma_3b": VLMConfig(vit=SIGLIP_SO400M_14_224, lm=GEMMA_2B),
    "paligemma2_3b": VLMConfig(vit=SIGLIP_SO400M_14_224, lm=GEMMA2_2B),
    "smolvlm_256m": VLMConfig(vit=SIGLIP_B16_512, lm=SMOLLM2_135M, connector="pixel_shuffle",
                              pixel_shuffle_factor=4, position_offset=0),
    "gemma3_4b": VLMConfig(vit=SIGLIP_SO400M_14_896, lm=GEMMA3_4B, connector="avg_pool", pool_factor=4,
                           position_offset=0, image_token_id=262144, local_sees_block=False),
    "qwen2_vl_2b": VLMConfig(vit=QWEN2_VL_VIT, lm=QWEN2_1_5B, connector="patch_merger", pixel_shuffle_factor=2,
                             position_offset=0, image_token_id=151655, video_token_id=151656),
    "qwen2_5_vl_3b": VLMConfig(vit=QWEN2_5_VL_VIT, lm=QWEN2_5_3B, **_QWEN2_5_VL),
    "qwen2_5_vl_7b": VLMConfig(vit=QWEN2_5_VL_VIT, lm=QWEN2_5_7B, **_QWEN2_5_VL),
    "qwen2_5_vl_72b": VLMConfig(vit=dataclasses.replace(QWEN2_5_VL_VIT, mlp_dim=3456), lm=QWEN2_5_72B, **_QWEN2_5_VL),
}


def get(name: str, **overrides: Any) -> VLMConfig:
  """Preset `name` with top-level overrides; `vit=`/`lm=` may be dicts of nested overrides.

  Example: get("tiny", dtype="float32", lm=dict(vocab_size=300)).
  """
  if name not in PRESETS:
    raise KeyError(f"Unknown model preset {name!r}; known presets: {sorted(PRESETS)}")
  cfg = PRESETS[name]
  for key in ("vit", "lm"):
    if isinstance(overrides.get(key), dict):
      overrides[key] = dataclasses.replace(getattr(cfg, key), **overrides[key])
  unknown = set(overrides) - {f.name for f in dataclasses.fields(VLMConfig)}
  if unknown:
    raise KeyError(f"Unknown VLMConfig field(s) {sorted(unknown)}; "
                   f"valid: {[f.name for f in dataclasses.fields(VLMConfig)]}")
  return dataclasses.replace(cfg, **overrides)


def to_dict(cfg: VLMConfig) -> dict[str, Any]:
  """JSON-ready dict (saved next to checkpoints)."""
  d = dataclasses.asdict(cfg)
  d["vit"]["image_size"] = list(d["vit"]["image_size"])
  d["vit"]["full_attention_blocks"] = list(d["vit"]["full_attention_blocks"])
  return d


def config_from_dict(d: dict[str, Any]) -> VLMConfig:
  """Inverse of `to_dict`; unknown keys fail loudly (a checkpoint from a newer/older layout)."""
  d = dict(d)
  for key, cls in (("vit", ViTConfig), ("lm", LMConfig)):
    sub = dict(d.pop(key))
    unknown = set(sub) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise KeyError(f"Unknown {cls.__name__} key(s) {sorted(unknown)} in saved model config")
    d[key] = cls(**sub)
  unknown = set(d) - {f.name for f in dataclasses.fields(VLMConfig)}
  if unknown:
    raise KeyError(f"Unknown VLMConfig key(s) {sorted(unknown)} in saved model config")
  return VLMConfig(**d)
