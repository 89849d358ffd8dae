"""config.json <-> VLMConfig: which Hugging Face checkpoints map onto our presets, and back.

Families (`VLM_FAMILIES`, the config.json `model_type` values): "paligemma" (SigLIP + Gemma,
or Gemma2 = PaliGemma 2), "idefics3" (SmolVLM: SigLIP-like encoder + pixel-shuffle
connector + Llama), "gemma3" (SigLIP + 4x4 average pool + Gemma3, image tokens inline),
"qwen2_vl" (its own tower with 2-D RoPE + 2x2 patch merger + Qwen2 with M-RoPE; images and
videos of any size the tower's 28-pixel unit divides, `image_size` the default bucket) and
"qwen2_5_vl" (the same with the 2.5 tower: RMSNorm, SwiGLU, windowed attention).
A config outside what the models implement is refused with the reason.
"""

from __future__ import annotations

import math
from typing import Any

from leaml_jax.models.lm import is_local_layer
from leaml_jax.models.presets import LMConfig, ViTConfig, VLMConfig

VLM_FAMILIES = ("paligemma", "idefics3", "gemma3", "qwen2_vl", "qwen2_5_vl")
QWEN_FAMILIES = ("qwen2_vl", "qwen2_5_vl")
QWEN2_VL_IMAGE_SIZE = (448, 448)  # default image bucket: 16x16 = 256 image tokens


# ----------------------------------------------------------------------------- config.json -> VLMConfig
_ACTS = {"gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh", "silu": "silu"}


def _require(ok: bool, msg: str):
  if not ok:
    raise ValueError(f"hf: {msg}")


def _act(c) -> str:
  name = getattr(c, "hidden_activation", None) or getattr(c, "hidden_act", None)
  _require(name in _ACTS, f"{c.model_type}: activation {name!r} is not supported (use one of {sorted(_ACTS)})")
  return _ACTS[name]


def _rope_theta(t) -> float:
  rope = getattr(t, "rope_parameters", None) or getattr(t, "rope_scaling", None) or {}
  kind = rope.get("rope_type", rope.get("type", "default"))
  _require(kind == "default", f"{t.model_type}: RoPE type {kind!r} is not supported (only plain RoPE)")
  return float(rope.get("rope_theta", getattr(t, "rope_theta", 10000.0)))


def _local_global(t, pattern: int) -> dict:
  """sliding_window / sliding_pattern from a Gemma2/Gemma3 text config, after checking that its
  layer_types are the pattern this model implements (every pattern-th layer global)."""
  window = t.sliding_window
  expect = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(t.num_hidden_layers)]
  types = list(getattr(t, "layer_types", None) or expect)
  _require(window is None or types == expect,
           f"{t.model_type}: layer_types {types} differ from the pattern this model implements "
           f"(every {pattern}th layer global, the others sliding)")
  return dict(sliding_window=window, sliding_pattern=pattern)


def _gemma3_rope(t) -> dict:
  """Gemma3's two RoPE tables: rope_parameters per layer type (transformers 5 folds the older
  rope_theta / rope_local_base_freq / rope_scaling fields into it)."""
  rope = getattr(t, "rope_parameters", None) or {}
  full, local = rope.get("full_attention") or {}, rope.get("sliding_attention") or {}
  kind = full.get("rope_type", "default")
  _require(kind in ("default", "linear"), f"gemma3: RoPE type {kind!r} on the global layers is not supported "
           "(default, linear)")
  _require(local.get("rope_type", "default") == "default",
           f"gemma3: RoPE type {local.get('rope_type')!r} on the local layers is not supported (default)")
  return dict(rope_theta=float(full.get("rope_theta", 1e6)), rope_local_theta=float(local.get("rope_theta", 1e4)),
              rope_scale=float(full.get("factor", 1.0)) if kind == "linear" else 1.0)


def lm_config(t, tie: bool) -> LMConfig:
  family = {"gemma3_text": "gemma3", "qwen2_vl_text": "qwen2", "qwen2_5_vl_text": "qwen2"}.get(t.model_type,
                                                                                              t.model_type)
  _require(family in ("gemma", "gemma2", "gemma3", "llama", "qwen2"),
           f"text model {t.model_type!r} is not supported (gemma, gemma2, gemma3_text, llama, qwen2_vl_text, "
           "qwen2_5_vl_text)")
  _require(not getattr(t, "attention_bias", False) and not getattr(t, "mlp_bias", False),
           f"{family}: attention_bias / mlp_bias checkpoints are not supported")
  heads = t.num_attention_heads
  kw = dict(vocab_size=t.vocab_size, width=t.hidden_size, depth=t.num_hidden_layers,
            mlp_dim=t.intermediate_size, num_heads=heads, num_kv_heads=t.num_key_value_heads or heads,
            head_dim=getattr(t, "head_dim", None) or t.hidden_size // heads, family=family, act=_act(t),
            norm_eps=t.rms_norm_eps, tie_embeddings=tie)
  if family == "llama":
    return LMConfig(**kw, rope_theta=_rope_theta(t), scale_embeddings=False, gemma_norm=False)
  if family == "qwen2":
    _require(not getattr(t, "use_sliding_window", False), "qwen2_vl: use_sliding_window is not supported")
    section = (getattr(t, "rope_parameters", None) or {}).get("mrope_section")
    _require(section is not None, "qwen2_vl: rope_parameters has no mrope_section")
    return LMConfig(**kw, rope_theta=_rope_theta(t), qkv_bias=True, scale_embeddings=False, gemma_norm=False,
                    mrope_section=tuple(section))
  if family == "gemma2":
    kw.update(attn_logit_softcap=t.attn_logit_softcapping, final_logit_softcap=t.final_logit_softcapping,
              query_pre_attn_scalar=t.query_pre_attn_scalar, post_norms=True, **_local_global(t, 2))
  if family == "gemma3":
    _require(not getattr(t, "use_bidirectional_attention", False),
             "gemma3: use_bidirectional_attention (an encoder variant) is not supported")
    # Gemma3ForConditionalGeneration applies no final_logit_softcapping (only Gemma3ForCausalLM
    # does), so neither does this model.
    return LMConfig(**kw, attn_logit_softcap=t.attn_logit_softcapping, query_pre_attn_scalar=t.query_pre_attn_scalar,
                    post_norms=True, qk_norm=True, **_local_global(t, 6), **_gemma3_rope(t))
  return LMConfig(**kw, rope_theta=_rope_theta(t))


def vit_config(v) -> ViTConfig:
  _require(getattr(v, "num_channels", 3) == 3, f"vision tower needs 3 channels, got {v.num_channels}")
  _require(_act(v) == "gelu_tanh", f"vision tower activation {v.hidden_act!r} is not gelu_pytorch_tanh")
  return ViTConfig(image_size=(v.image_size, v.image_size), patch_size=v.patch_size, width=v.hidden_size,
                   depth=v.num_hidden_layers, mlp_dim=v.intermediate_size, num_heads=v.num_attention_heads,
                   norm_eps=v.layer_norm_eps)


def qwen2_vl_vit_config(v, image_size) -> ViTConfig:
  _require(v.in_channels == 3, f"{v.model_type}: vision tower needs 3 channels, got {v.in_channels}")
  theta = float((getattr(v, "rope_parameters", None) or {}).get("rope_theta", 10000.0))
  _require(theta == 10000.0, f"{v.model_type}: vision RoPE theta {theta} is not supported (10000)")
  if v.model_type == "qwen2_5_vl_vision":
    _require(v.hidden_act == "silu", f"qwen2_5_vl: vision activation {v.hidden_act!r} is not silu")
    return ViTConfig(image_size=image_size, patch_size=v.patch_size, width=v.hidden_size, depth=v.depth,
                     mlp_dim=v.intermediate_size, num_heads=v.num_heads, frames=v.temporal_patch_size,
                     family="qwen2_5_vl", window_size=v.window_size, full_attention_blocks=v.fullatt_block_indexes)
  _require(v.hidden_act == "quick_gelu", f"qwen2_vl: vision activation {v.hidden_act!r} is not quick_gelu")
  return ViTConfig(image_size=image_size, patch_size=v.patch_size, width=v.embed_dim, depth=v.depth,
                   mlp_dim=int(v.embed_dim * v.mlp_ratio), num_heads=v.num_heads, frames=v.temporal_patch_size,
                   family="qwen2_vl")


def vlm_config(hf, **overrides: Any) -> tuple[VLMConfig, str]:
  """A transformers config (PaliGemmaConfig / Idefics3Config / Gemma3Config / Qwen2VLConfig /
  Qwen2_5_VLConfig) -> (VLMConfig, family). overrides: VLMConfig fields, and `image_size` (the
  Qwen families' image bucket)."""
  family = hf.model_type
  _require(family in VLM_FAMILIES, f"model_type {family!r} is not supported; supported: {VLM_FAMILIES}")
  t, v = hf.text_config, hf.vision_config
  tie = bool(getattr(hf, "tie_word_embeddings", getattr(t, "tie_word_embeddings", True)))
  image_size = overrides.pop("image_size", None)
  _require(image_size is None or family in QWEN_FAMILIES, f"{family}: the image size is the checkpoint's")
  lm = lm_config(t, tie)
  qwen = family in QWEN_FAMILIES
  vit = qwen2_vl_vit_config(v, image_size or QWEN2_VL_IMAGE_SIZE) if qwen else vit_config(v)
  if qwen:
    out_width = v.hidden_size if family == "qwen2_vl" else v.out_hidden_size
    _require(lm.family == "qwen2" and out_width == lm.width,
             f"{family}: merger width {out_width} != text hidden_size {lm.width}")
    kw = dict(connector="patch_merger", pixel_shuffle_factor=v.spatial_merge_size, position_offset=0,
              image_token_id=hf.image_token_id, video_token_id=hf.video_token_id,
              tokens_per_second=float(v.tokens_per_second) if family == "qwen2_5_vl" else None)
  elif family == "paligemma":
    _require(lm.family in ("gemma", "gemma2"), f"paligemma with a {lm.family} text model is not supported")
    _require(hf.projection_dim == lm.width,
             f"paligemma: projection_dim {hf.projection_dim} != text hidden_size {lm.width}")
    kw = dict(connector="linear", position_offset=1)
  elif family == "gemma3":
    _require(lm.family == "gemma3", f"gemma3 with a {lm.family} text model is not supported")
    side, grid = math.isqrt(hf.mm_tokens_per_image), vit.grid[0]
    _require(side * side == hf.mm_tokens_per_image and side and grid % side == 0,
             f"gemma3: mm_tokens_per_image {hf.mm_tokens_per_image} is not a square that divides the "
             f"{grid}x{grid} patch grid")
    kw = dict(connector="avg_pool", pool_factor=grid // side, position_offset=0, image_token_id=hf.image_token_id,
              local_sees_block=False)
  else:
    _require(lm.family == "llama", f"idefics3 with a {lm.family} text model is not supported")
    _require(_idefics3_positions_in_order(vit.grid[0]),
             f"idefics3: for a {vit.grid[0]}x{vit.grid[0]} patch grid transformers' float32 bucketing gives "
             "position ids out of order (models/hf/config_json.py); this grid is not supported")
    kw = dict(connector="pixel_shuffle", pixel_shuffle_factor=hf.scale_factor, position_offset=0,
              image_token_id=hf.image_token_id)
  return VLMConfig(vit=vit, lm=lm, **{**kw, **overrides}), family


def _idefics3_positions_in_order(side: int) -> bool:
  """HF Idefics3 finds a full image's position ids by bucketing i/side into [k/side) bins in
  float32; for some grids (19, 25, 29, ...) rounding puts patches in the wrong bin, while our
  ViT uses ids 0..side-1. Exact for powers of two; other grids are checked with torch."""
  if side & (side - 1) == 0:
    return True
  try:
    import torch
  except ImportError:
    return False
  boundaries = torch.arange(1 / side, 1.0, 1 / side)
  coords = torch.clamp(torch.arange(side, dtype=torch.float32) * (1.0 / torch.tensor(side)), max=1.0 - 1e-6)
  return bool(torch.equal(torch.bucketize(coords, boundaries, right=True), torch.arange(side)))


# ----------------------------------------------------------------------------- VLMConfig -> config.json
def family_of(cfg: VLMConfig) -> str:
  lm = cfg.lm
  if cfg.connector == "linear" and lm.family in ("gemma", "gemma2"):
    family, offset = "paligemma", 1
  elif cfg.connector == "pixel_shuffle" and lm.family == "llama" and cfg.image_token_id is not None:
    family, offset = "idefics3", 0
  elif cfg.connector == "avg_pool" and lm.family == "gemma3" and cfg.image_token_id is not None:
    family, offset = "gemma3", 0
  elif cfg.connector == "patch_merger" and lm.family == "qwen2" and cfg.image_token_id is not None:
    family, offset = cfg.vit.family, 0
  else:
    raise ValueError(f"hf.save: no Hugging Face family has a {lm.family} LM with a {cfg.connector} "
                     f"connector (image_token_id={cfg.image_token_id}); supported: PaliGemma (gemma/gemma2, "
                     "linear), Idefics3/SmolVLM (llama, pixel_shuffle, image_token_id set), Gemma 3 (gemma3, "
                     "avg_pool, image_token_id set), Qwen2-VL / Qwen2.5-VL (qwen2, patch_merger, image_token_id set)")
  gemma, g3, qwen = lm.family not in ("llama", "qwen2"), lm.family == "gemma3", family in QWEN_FAMILIES
  _require(cfg.vit.frames == 1 or qwen, f"save: a tubelet vision tower (ViTConfig.frames={cfg.vit.frames}, several "
           "frames per patch) has no Hugging Face counterpart; Hugging Face towers embed one image per patch")
  _require(cfg.position_offset == offset, f"save: {family} needs position_offset={offset}")
  _require(cfg.local_sees_block != g3 or lm.sliding_window is None,
           f"save: {family} needs local_sees_block={not g3}")
  want = dict(gemma_norm=gemma, scale_embeddings=gemma, qkv_bias=qwen, post_norms=lm.family in ("gemma2", "gemma3"),
              act="gelu_tanh" if gemma else "silu", qk_norm=g3,
              sliding_pattern={"gemma2": 2, "gemma3": 6}.get(lm.family, lm.sliding_pattern))
  if g3:
    want.update(final_logit_softcap=None)
  else:
    want.update(rope_local_theta=None, rope_scale=1.0)
  if not qwen:
    want.update(mrope_section=None)
  wrong = {k: getattr(lm, k) for k, v in want.items() if getattr(lm, k) != v}
  _require(not wrong, f"save: LMConfig fields {wrong} do not match HF {lm.family} (which has {want})")
  _require(not qwen or (lm.mrope_section is not None and lm.head_dim * lm.num_heads == lm.width),
           f"save: {family} needs mrope_section and head_dim = width / num_heads")
  _require((cfg.tokens_per_second is not None) == (family == "qwen2_5_vl"),
           f"save: {family} {'needs' if family == 'qwen2_5_vl' else 'has no'} tokens_per_second")
  return family


def hf_config_dict(cfg: VLMConfig, dtype: str) -> dict[str, Any]:
  """config.json for `cfg` (transformers fills the unlisted fields with its defaults)."""
  family = family_of(cfg)
  lm, vit = cfg.lm, cfg.vit
  text = dict(model_type=lm.family, vocab_size=lm.vocab_size, hidden_size=lm.width,
              intermediate_size=lm.mlp_dim, num_hidden_layers=lm.depth, num_attention_heads=lm.num_heads,
              num_key_value_heads=lm.num_kv_heads, head_dim=lm.head_dim, rms_norm_eps=lm.norm_eps,
              rope_parameters=dict(rope_type="default", rope_theta=lm.rope_theta),
              hidden_act="silu" if lm.act == "silu" else "gelu_pytorch_tanh",
              tie_word_embeddings=lm.tie_embeddings, attention_bias=False)
  if lm.family in ("gemma2", "gemma3"):
    text.update(attn_logit_softcapping=lm.attn_logit_softcap, final_logit_softcapping=lm.final_logit_softcap,
                sliding_window=lm.sliding_window, query_pre_attn_scalar=lm.query_pre_attn_scalar,
                hidden_activation=text["hidden_act"],
                layer_types=["sliding_attention" if is_local_layer(lm, i) else "full_attention"
                             for i in range(lm.depth)])
  if lm.family == "gemma3":
    full = dict(rope_type="default", rope_theta=lm.rope_theta)
    if lm.rope_scale != 1.0:
      full.update(rope_type="linear", factor=lm.rope_scale)
    text.update(model_type="gemma3_text", rope_parameters=dict(
        full_attention=full, sliding_attention=dict(rope_type="default", rope_theta=lm.rope_local_theta)))
  vision = dict(hidden_size=vit.width, intermediate_size=vit.mlp_dim, num_hidden_layers=vit.depth,
                num_attention_heads=vit.num_heads, image_size=vit.image_size[0], patch_size=vit.patch_size,
                layer_norm_eps=vit.norm_eps, hidden_act="gelu_pytorch_tanh", num_channels=3)
  _require(vit.image_size[0] == vit.image_size[1] or family in QWEN_FAMILIES,
           f"save: HF vision towers are square, got {vit.image_size}")
  out = dict(dtype=dtype, tie_word_embeddings=lm.tie_embeddings, text_config=text)
  if family == "paligemma":
    # Without a source config the image token is out of vocabulary: HF PaliGemma then embeds it as 0.
    return dict(out, architectures=["PaliGemmaForConditionalGeneration"], model_type="paligemma",
                vocab_size=lm.vocab_size, projection_dim=lm.width, hidden_size=lm.width,
                image_token_index=cfg.image_token_id if cfg.image_token_id is not None else lm.vocab_size,
                vision_config=dict(vision, model_type="siglip_vision_model", vision_use_head=False,
                                   projection_dim=lm.width))
  if family in QWEN_FAMILIES:
    for k in ("head_dim", "attention_bias"):  # not Qwen2VLTextConfig fields
      text.pop(k)
    text.update(model_type=f"{family}_text", rope_parameters=dict(
        rope_type="default", rope_theta=lm.rope_theta, mrope_section=list(lm.mrope_section)))
    ids = dict(image_token_id=cfg.image_token_id,
               **({} if cfg.video_token_id is None else dict(video_token_id=cfg.video_token_id)))
  if family == "qwen2_5_vl":
    return dict(out, architectures=["Qwen2_5_VLForConditionalGeneration"], model_type=family, **ids,
                vision_config=dict(
                    model_type="qwen2_5_vl_vision", depth=vit.depth, hidden_size=vit.width, hidden_act="silu",
                    intermediate_size=vit.mlp_dim, num_heads=vit.num_heads, in_channels=3, out_hidden_size=lm.width,
                    patch_size=vit.patch_size, spatial_merge_size=cfg.pixel_shuffle_factor,
                    temporal_patch_size=vit.frames, window_size=vit.window_size,
                    fullatt_block_indexes=list(vit.full_attention_blocks),
                    tokens_per_second=_number(cfg.tokens_per_second)))
  if family == "qwen2_vl":
    return dict(out, architectures=["Qwen2VLForConditionalGeneration"], model_type="qwen2_vl", **ids,
                vision_config=dict(
                    depth=vit.depth, embed_dim=vit.width, hidden_size=lm.width, hidden_act="quick_gelu",
                    mlp_ratio=vit.mlp_dim // vit.width, num_heads=vit.num_heads, in_channels=3,
                    patch_size=vit.patch_size, spatial_merge_size=cfg.pixel_shuffle_factor,
                    temporal_patch_size=vit.frames))
  if family == "gemma3":
    return dict(out, architectures=["Gemma3ForConditionalGeneration"], model_type="gemma3",
                mm_tokens_per_image=cfg.num_image_tokens, image_token_index=cfg.image_token_id,
                vision_config=dict(vision, model_type="siglip_vision_model", vision_use_head=False))
  return dict(out, architectures=["Idefics3ForConditionalGeneration"], model_type="idefics3",
              image_token_id=cfg.image_token_id, scale_factor=cfg.pixel_shuffle_factor,
              vision_config=dict(vision, model_type="idefics3_vision"))


def _number(x: float):
  """An integral float as int (transformers' strict config fields type tokens_per_second as int)."""
  return int(x) if float(x).is_integer() else x


def save_config(cfg: VLMConfig, dtype: str, base: dict) -> dict[str, Any]:
  """config.json for `cfg` over the source's `base`: shapes from cfg, token ids etc. from base."""
  ours = hf_config_dict(cfg, dtype)
  if cfg.image_token_id is None and {"image_token_index", "image_token_id"} & set(base):
    ours.pop("image_token_index")  # image-prefix layout: the source's image token stays

  def merge(b, o):
    return {**b, **{k: merge(b[k], v) if isinstance(v, dict) and isinstance(b.get(k), dict) else v
                    for k, v in o.items()}}
  out = merge(base, ours)
  out.pop("torch_dtype", None)  # superseded by "dtype"
  return out
