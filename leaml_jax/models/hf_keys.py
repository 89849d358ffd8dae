"""Hugging Face <-> leaml_jax translation tables: config.json -> VLMConfig, checkpoint keys -> param paths.

Families (`FAMILIES`): "paligemma" (SigLIP + Gemma, or Gemma2 = PaliGemma 2) and "idefics3"
(SmolVLM: SigLIP-like encoder + pixel-shuffle connector + Llama).

Checkpoint keys are first put in a canonical form that hides transformers' layouts:
  text.*       language_model.model.* (4.x) | model.language_model.* (5.x) | model.text_model.*
  lm_head.*    language_model.lm_head.* | lm_head.*
  vision.*     vision_tower.vision_model.* (4.x) | (model.)vision_tower.* (5.x) | model.vision_model.*
  connector.*  (model.)multi_modal_projector.linear.* | model.connector.modality_projection.proj.*
`save` writes the 4.x (hub) layout, which every transformers version reads. `tensor_refs` indexes
a checkpoint directory (which file holds which tensor), checking headers against file sizes.

Weight layout: torch Linear weights are [out, in] (ours [in, out]); attention projections are
split per head ([D, heads, head_dim] / [heads, head_dim, D]); the patch conv is OIHW (ours HWIO);
scanned layers carry a leading depth axis (one HF tensor per layer, stacked).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any

from leaml_jax.errors import CheckpointError
from leaml_jax.models.presets import LMConfig, ViTConfig, VLMConfig

FAMILIES = ("paligemma", "idefics3")

_CANONICAL = (  # first match wins
    (r"^(model\.)?language_model\.model\.", "text."),
    (r"^(model\.)?language_model\.lm_head\.", "lm_head."),
    (r"^(model\.)?language_model\.", "text."),
    (r"^model\.text_model\.", "text."),
    (r"^(model\.)?vision_tower\.(vision_model\.)?", "vision."),
    (r"^model\.vision_model\.", "vision."),
    (r"^(model\.)?multi_modal_projector\.linear\.", "connector."),
    (r"^model\.connector\.modality_projection\.proj\.", "connector."),
    (r"^lm_head\.", "lm_head."),
)
# Canonical keys some checkpoints carry that these VLMs never use: SigLIP's pooling head
# (PaliGemma reads the last hidden state) and old RoPE buffers.
IGNORED = re.compile(r"^vision\.head\.|\.rotary_emb\.inv_freq$")

_HF_PREFIX = {  # canonical -> the key prefix `save` writes, per family (the hub layout)
    "paligemma": {"text.": "language_model.model.", "lm_head.": "language_model.lm_head.",
                  "vision.": "vision_tower.vision_model.", "connector.": "multi_modal_projector.linear."},
    "idefics3": {"text.": "model.text_model.", "lm_head.": "lm_head.",
                 "vision.": "model.vision_model.", "connector.": "model.connector.modality_projection.proj."},
}


def canonical(key: str) -> str | None:
  for pattern, repl in _CANONICAL:
    if re.match(pattern, key):
      return re.sub(pattern, repl, key, count=1)
  return None


def hf_key(family: str, canonical_key: str) -> str:
  for prefix, hf_prefix in _HF_PREFIX[family].items():
    if canonical_key.startswith(prefix):
      return hf_prefix + canonical_key[len(prefix):]
  raise KeyError(canonical_key)


# ----------------------------------------------------------------------------- the checkpoint index
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


@dataclasses.dataclass(frozen=True)
class Ref:
  file: Path
  key: str          # as stored in the file
  shape: tuple
  dtype: str


def _read_header(file: Path) -> dict:
  """The safetensors JSON header, checked against the file size (names truncated tensors)."""
  size = file.stat().st_size
  with open(file, "rb") as f:
    n = int.from_bytes(f.read(8), "little") if size >= 8 else -1
    if n < 0 or 8 + n > size:
      raise CheckpointError(f"{file} is truncated or not safetensors (header runs past the end of the "
                            f"{size}-byte file); download it again")
    try:
      header = json.loads(f.read(n))
    except ValueError as e:
      raise CheckpointError(f"{file}: unreadable safetensors header ({e}); download it again") from e
  header.pop("__metadata__", None)
  data_size = size - 8 - n
  for key, meta in header.items():
    start, end = meta["data_offsets"]
    if meta["dtype"] not in _DTYPE_BYTES:
      raise CheckpointError(f"{file}: tensor {key!r} has dtype {meta['dtype']}, which is not supported")
    want = math.prod(meta["shape"]) * _DTYPE_BYTES[meta["dtype"]]
    if end > data_size:
      raise CheckpointError(f"{file} is truncated: tensor {key!r} needs bytes {start}..{end} of the data "
                            f"section but the file holds {data_size}; download it again")
    if end - start != want:
      raise CheckpointError(f"{file}: tensor {key!r} ({meta['dtype']} {meta['shape']}) holds {end - start} "
                            f"bytes instead of {want}; the file is corrupt")
  return header


def tensor_refs(directory: Path) -> dict[str, Ref]:
  """canonical key -> where it is; every file named by the shard index (or every *.safetensors)."""
  index = directory / "model.safetensors.index.json"
  if index.is_file():
    names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
      raise CheckpointError(f"{directory}: shard file(s) {missing} named in {index.name} are missing")
    files = [directory / n for n in names]
  else:
    files = sorted(directory.glob("*.safetensors"))
  refs: dict[str, Ref] = {}
  for file in files:
    for key, meta in _read_header(file).items():
      name = canonical(key)
      if name is None:
        raise CheckpointError(f"{file}: tensor {key!r} belongs to no known part of a PaliGemma / Idefics3 "
                              "checkpoint (config.json and weights disagree?)")
      if name in refs:
        raise CheckpointError(f"{directory}: tensor {key!r} appears twice ({refs[name].file.name}, {file.name})")
      refs[name] = Ref(file, key, tuple(meta["shape"]), meta["dtype"])
  return refs


# ----------------------------------------------------------------------------- weight transforms
# name -> (HF array -> ours given our shape, ours -> HF array, our shape -> HF shape)
TRANSFORMS = {
    "id": (lambda a, s: a, lambda a: a, lambda s: tuple(s)),
    "T": (lambda a, s: a.T, lambda a: a.T, lambda s: tuple(s[::-1])),
    "heads_in": (lambda a, s: a.T.reshape(s), lambda a: a.reshape(a.shape[0], -1).T,
                 lambda s: (math.prod(s[1:]), s[0])),
    "heads_out": (lambda a, s: a.T.reshape(s), lambda a: a.reshape(-1, a.shape[-1]).T,
                  lambda s: (s[-1], math.prod(s[:-1]))),
    "heads_bias": (lambda a, s: a.reshape(s), lambda a: a.reshape(-1), lambda s: (math.prod(s),)),
    "conv": (lambda a, s: a.transpose(2, 3, 1, 0), lambda a: a.transpose(3, 2, 0, 1),
             lambda s: (s[3], s[2], s[0], s[1])),
    "batch1": (lambda a, s: a[None], lambda a: a[0], lambda s: tuple(s[1:])),
}


def _attn(q, k, v, o, with_out_bias):
  table = {}
  for ours, hf in ((q, "q_proj"), (k, "k_proj"), (v, "v_proj")):
    table[f"{ours}/kernel"] = (f"self_attn.{hf}.weight", "heads_in")
    table[f"{ours}/bias"] = (f"self_attn.{hf}.bias", "heads_bias")
  table[f"{o}/kernel"] = (f"self_attn.{o.split('/')[-1]}.weight", "heads_out")
  if with_out_bias:
    table[f"{o}/bias"] = (f"self_attn.{o.split('/')[-1]}.bias", "id")
  return table


def _lm_block(family: str) -> dict[str, tuple[str, str]]:
  table = _attn("attn/q_proj", "attn/k_proj", "attn/v_proj", "attn/o_proj", False)
  table.update({f"mlp/{n}/kernel": (f"mlp.{n}.weight", "T") for n in ("gate_proj", "up_proj", "down_proj")})
  table["pre_attn_norm/scale"] = ("input_layernorm.weight", "id")
  if family == "gemma2":  # HF Gemma2 has four norms; its post_attention_layernorm follows attention
    table["post_attn_norm/scale"] = ("post_attention_layernorm.weight", "id")
    table["pre_ffw_norm/scale"] = ("pre_feedforward_layernorm.weight", "id")
    table["post_ffw_norm/scale"] = ("post_feedforward_layernorm.weight", "id")
  else:
    table["pre_ffw_norm/scale"] = ("post_attention_layernorm.weight", "id")
  return table


_VIT_BLOCK = {
    **_attn("self_attn/q_proj", "self_attn/k_proj", "self_attn/v_proj", "self_attn/out_proj", True),
    **{f"{n}/{p}": (f"{n}.{hf}", "id") for n in ("layer_norm1", "layer_norm2")
       for p, hf in (("scale", "weight"), ("bias", "bias"))},
    **{f"mlp/{n}/kernel": (f"mlp.{n}.weight", "T") for n in ("fc1", "fc2")},
    **{f"mlp/{n}/bias": (f"mlp.{n}.bias", "id") for n in ("fc1", "fc2")},
}
_TOP = {
    "llm/embedder/embedding": ("text.embed_tokens.weight", "id"),
    "llm/final_norm/scale": ("text.norm.weight", "id"),
    "llm/lm_head/kernel": ("lm_head.weight", "T"),
    "img/embedding/kernel": ("vision.embeddings.patch_embedding.weight", "conv"),
    "img/embedding/bias": ("vision.embeddings.patch_embedding.bias", "id"),
    "img/pos_embedding": ("vision.embeddings.position_embedding.weight", "batch1"),
    "img/Transformer/encoder_norm/scale": ("vision.post_layernorm.weight", "id"),
    "img/Transformer/encoder_norm/bias": ("vision.post_layernorm.bias", "id"),
    "img/head/kernel": ("connector.weight", "T"),
    "img/head/bias": ("connector.bias", "id"),
}


def source(cfg: VLMConfig, path: tuple[str, ...]) -> tuple[list[str], bool, str]:
  """Our param path -> (canonical HF keys, stacked along a leading layer axis?, transform name).

  Scanned blocks (`llm/layers/...`, `img/Transformer/encoderblock/...`) take one key per layer;
  unrolled ones (`layers_3`, `encoderblock_3`) and top-level params take one key.
  """
  for scope, block, table, prefix, depth in (
      (("llm",), "layers", _lm_block(cfg.lm.family), "text.layers.", cfg.lm.depth),
      (("img", "Transformer"), "encoderblock", _VIT_BLOCK, "vision.encoder.layers.", cfg.vit.depth)):
    n = len(scope)
    if path[:n] != scope or len(path) <= n or not path[n].startswith(block):
      continue
    rel = "/".join(path[n + 1:])
    if rel not in table:
      break
    key, transform = table[rel]
    if path[n] == block:
      return [f"{prefix}{i}.{key}" for i in range(depth)], True, transform
    return [f"{prefix}{int(path[n][len(block) + 1:])}.{key}"], False, transform
  name = "/".join(path)
  if name not in _TOP:
    raise KeyError(f"hf: no Hugging Face counterpart known for parameter {name!r}")
  key, transform = _TOP[name]
  return [key], False, transform


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


def lm_config(t, tie: bool) -> LMConfig:
  family = t.model_type
  _require(family in ("gemma", "gemma2", "llama"),
           f"text model {family!r} is not supported (gemma, gemma2, llama)")
  _require(not getattr(t, "attention_bias", False) and not getattr(t, "mlp_bias", False),
           f"{family}: attention_bias / mlp_bias checkpoints are not supported")
  heads = t.num_attention_heads
  kw = dict(vocab_size=t.vocab_size, width=t.hidden_size, depth=t.num_hidden_layers,
            mlp_dim=t.intermediate_size, num_heads=heads, num_kv_heads=t.num_key_value_heads or heads,
            head_dim=getattr(t, "head_dim", None) or t.hidden_size // heads, family=family, act=_act(t),
            norm_eps=t.rms_norm_eps, rope_theta=_rope_theta(t), tie_embeddings=tie)
  if family == "llama":
    return LMConfig(**kw, scale_embeddings=False, gemma_norm=False)
  if family == "gemma2":
    window = t.sliding_window
    expect = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(t.num_hidden_layers)]
    types = list(getattr(t, "layer_types", None) or expect)
    _require(window is None or types == expect,
             f"gemma2: layer_types {types} differ from the alternation (sliding first) this model implements")
    kw.update(attn_logit_softcap=t.attn_logit_softcapping, final_logit_softcap=t.final_logit_softcapping,
              sliding_window=window, query_pre_attn_scalar=t.query_pre_attn_scalar, post_norms=True)
  return LMConfig(**kw)


def vit_config(v) -> ViTConfig:
  _require(getattr(v, "num_channels", 3) == 3, f"vision tower needs 3 channels, got {v.num_channels}")
  _require(_act(v) == "gelu_tanh", f"vision tower activation {v.hidden_act!r} is not gelu_pytorch_tanh")
  return ViTConfig(image_size=(v.image_size, v.image_size), patch_size=v.patch_size, width=v.hidden_size,
                   depth=v.num_hidden_layers, mlp_dim=v.intermediate_size, num_heads=v.num_attention_heads,
                   norm_eps=v.layer_norm_eps)


def vlm_config(hf, **overrides: Any) -> tuple[VLMConfig, str]:
  """A transformers config (PaliGemmaConfig / Idefics3Config) -> (VLMConfig, family)."""
  family = hf.model_type
  _require(family in FAMILIES, f"model_type {family!r} is not supported; supported: {FAMILIES}")
  t, v = hf.text_config, hf.vision_config
  tie = bool(getattr(hf, "tie_word_embeddings", getattr(t, "tie_word_embeddings", True)))
  lm, vit = lm_config(t, tie), vit_config(v)
  if family == "paligemma":
    _require(lm.family in ("gemma", "gemma2"), f"paligemma with a {lm.family} text model is not supported")
    _require(hf.projection_dim == lm.width,
             f"paligemma: projection_dim {hf.projection_dim} != text hidden_size {lm.width}")
    kw = dict(connector="linear", position_offset=1)
  else:
    _require(lm.family == "llama", f"idefics3 with a {lm.family} text model is not supported")
    _require(_idefics3_positions_in_order(vit.grid[0]),
             f"idefics3: for a {vit.grid[0]}x{vit.grid[0]} patch grid transformers' float32 bucketing gives "
             "position ids out of order (models/hf_keys.py); this grid is not supported")
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
  if cfg.connector == "linear" and cfg.lm.family in ("gemma", "gemma2"):
    family, offset = "paligemma", 1
  elif cfg.connector == "pixel_shuffle" and cfg.lm.family == "llama" and cfg.image_token_id is not None:
    family, offset = "idefics3", 0
  else:
    raise ValueError(f"hf.save: no Hugging Face family has a {cfg.lm.family} LM with a {cfg.connector} "
                     f"connector (image_token_id={cfg.image_token_id}); supported: PaliGemma (gemma/gemma2, "
                     "linear), Idefics3/SmolVLM (llama, pixel_shuffle, image_token_id set)")
  lm = cfg.lm
  gemma = lm.family != "llama"
  _require(cfg.position_offset == offset, f"save: {family} needs position_offset={offset}")
  _require(lm.gemma_norm == gemma and lm.scale_embeddings == gemma and not lm.qkv_bias
           and lm.post_norms == (lm.family == "gemma2") and lm.act == ("gelu_tanh" if gemma else "silu"),
           f"save: LMConfig {lm} does not match HF {lm.family}")
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
  if lm.family == "gemma2":
    text.update(attn_logit_softcapping=lm.attn_logit_softcap, final_logit_softcapping=lm.final_logit_softcap,
                sliding_window=lm.sliding_window, query_pre_attn_scalar=lm.query_pre_attn_scalar,
                layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(lm.depth)])
  vision = dict(hidden_size=vit.width, intermediate_size=vit.mlp_dim, num_hidden_layers=vit.depth,
                num_attention_heads=vit.num_heads, image_size=vit.image_size[0], patch_size=vit.patch_size,
                layer_norm_eps=vit.norm_eps, hidden_act="gelu_pytorch_tanh", num_channels=3)
  _require(vit.image_size[0] == vit.image_size[1], f"save: HF vision towers are square, got {vit.image_size}")
  out = dict(dtype=dtype, tie_word_embeddings=lm.tie_embeddings, text_config=text)
  if family == "paligemma":
    # Without a source config the image token is out of vocabulary: HF PaliGemma then embeds it as 0.
    return dict(out, architectures=["PaliGemmaForConditionalGeneration"], model_type="paligemma",
                vocab_size=lm.vocab_size, projection_dim=lm.width, hidden_size=lm.width,
                image_token_index=cfg.image_token_id if cfg.image_token_id is not None else lm.vocab_size,
                vision_config=dict(vision, model_type="siglip_vision_model", vision_use_head=False,
                                   projection_dim=lm.width))
  return dict(out, architectures=["Idefics3ForConditionalGeneration"], model_type="idefics3",
              image_token_id=cfg.image_token_id, scale_factor=cfg.pixel_shuffle_factor,
              vision_config=dict(vision, model_type="idefics3_vision"))


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
