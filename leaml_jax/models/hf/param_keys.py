"""Our parameter paths <-> Hugging Face checkpoint keys, and the weight transforms between them.

Checkpoint keys are first put in a canonical form that hides transformers' layouts:
  text.*       language_model.model.* (4.x) | model.language_model.* (5.x) | model.text_model.*
               | model.{layers,embed_tokens,norm}.* (Qwen2-VL 4.x)
  lm_head.*    language_model.lm_head.* | lm_head.*
  vision.*     vision_tower.vision_model.* (4.x) | (model.)vision_tower.* (5.x) | model.vision_model.*
               | (model.)visual.* (Qwen2-VL, Qwen2.5-VL: blocks, patch_embed, merger)
  connector.*  (model.)multi_modal_projector.linear.* | model.connector.modality_projection.proj.*
               | (model.)multi_modal_projector.* (Gemma 3: mm_input_projection_weight, mm_soft_emb_norm)
`save` writes the 4.x (hub) layout of each family (`hf_key`), which every transformers version reads.

Weight layout: torch Linear weights are [out, in] (ours [in, out]); attention projections are
split per head ([D,N,H] / [N,H,D] in the legend of models/__init__.py); the patch conv is OIHW
(ours HWIO); scanned layers carry a leading depth axis (one HF tensor per layer, stacked).
"""

from __future__ import annotations

import math
import re

from leaml_jax.models.presets import VLMConfig

# ----------------------------------------------------------------------------- checkpoint key forms
_CANONICAL = (  # first match wins
    (r"^(model\.)?language_model\.model\.", "text."),
    (r"^(model\.)?language_model\.lm_head\.", "lm_head."),
    (r"^(model\.)?language_model\.", "text."),
    (r"^model\.text_model\.", "text."),
    (r"^(model\.)?vision_tower\.(vision_model\.)?", "vision."),
    (r"^model\.vision_model\.", "vision."),
    (r"^(model\.)?visual\.", "vision."),
    (r"^(model\.)?multi_modal_projector\.linear\.", "connector."),
    (r"^(model\.)?multi_modal_projector\.", "connector."),
    (r"^model\.connector\.modality_projection\.proj\.", "connector."),
    (r"^model\.(?=(layers|embed_tokens|norm)\.)", "text."),
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
    "gemma3": {"text.": "language_model.model.", "lm_head.": "language_model.lm_head.",
               "vision.": "vision_tower.vision_model.", "connector.": "multi_modal_projector."},
    "qwen2_vl": {"text.": "model.", "lm_head.": "lm_head.", "vision.": "visual."},
    "qwen2_5_vl": {"text.": "model.", "lm_head.": "lm_head.", "vision.": "visual."},
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
    # Qwen2-VL Conv3d [D,3,T,p,p] <-> ours [p,p,T·3,D] (frames stacked frame-major along channels)
    "conv3d": (lambda a, s: a.transpose(3, 4, 2, 1, 0).reshape(s),
               lambda a: a.reshape(*a.shape[:2], -1, 3, a.shape[3]).transpose(4, 3, 2, 0, 1),
               lambda s: (s[3], 3, s[2] // 3, s[0], s[1])),
    "batch1": (lambda a, s: a[None], lambda a: a[0], lambda s: tuple(s[1:])),
}


# ----------------------------------------------------------------------------- our param paths -> canonical keys
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
  if family == "gemma3":
    table["attn/q_norm/scale"] = ("self_attn.q_norm.weight", "id")
    table["attn/k_norm/scale"] = ("self_attn.k_norm.weight", "id")
  if family in ("gemma2", "gemma3"):  # four norms; HF's post_attention_layernorm follows attention
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
_QWEN_VIT_BLOCK = {
    "self_attn/qkv/kernel": ("attn.qkv.weight", "heads_in"), "self_attn/qkv/bias": ("attn.qkv.bias", "heads_bias"),
    "self_attn/out_proj/kernel": ("attn.proj.weight", "heads_out"), "self_attn/out_proj/bias": ("attn.proj.bias", "id"),
    **{f"{n}/{p}": (f"{hf_n}.{hf}", "id") for n, hf_n in (("layer_norm1", "norm1"), ("layer_norm2", "norm2"))
       for p, hf in (("scale", "weight"), ("bias", "bias"))},
    **{f"mlp/{n}/kernel": (f"mlp.{n}.weight", "T") for n in ("fc1", "fc2")},
    **{f"mlp/{n}/bias": (f"mlp.{n}.bias", "id") for n in ("fc1", "fc2")},
}
_QWEN2_5_VIT_BLOCK = {  # RMSNorms (weight only) and a SwiGLU MLP with biases
    **{k: v for k, v in _QWEN_VIT_BLOCK.items() if not k.startswith(("mlp/", "layer_norm"))},
    **{f"{n}/scale": (f"{hf_n}.weight", "id") for n, hf_n in (("layer_norm1", "norm1"), ("layer_norm2", "norm2"))},
    **{f"mlp/{n}/kernel": (f"mlp.{n}.weight", "T") for n in ("gate_proj", "up_proj", "down_proj")},
    **{f"mlp/{n}/bias": (f"mlp.{n}.bias", "id") for n in ("gate_proj", "up_proj", "down_proj")},
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
_TOP_CONNECTOR = {
    "avg_pool": {  # Gemma 3's projector: a bare [vision width, LM width] matrix after an RMSNorm
        "img/head/kernel": ("connector.mm_input_projection_weight", "id"),
        "img/head_norm/scale": ("connector.mm_soft_emb_norm.weight", "id")},
    "patch_merger": {  # Qwen2(.5)-VL: our final Layer/RMSNorm is its merger's ln_q, then a 2-layer MLP
        "img/embedding/kernel": ("vision.patch_embed.proj.weight", "conv3d"),
        "img/Transformer/encoder_norm/scale": ("vision.merger.ln_q.weight", "id"),
        "img/Transformer/encoder_norm/bias": ("vision.merger.ln_q.bias", "id"),
        **{f"img/{ours}/{p}": (f"vision.merger.mlp.{i}.{hf}", t) for ours, i in (("head_hidden", 0), ("head", 2))
           for p, hf, t in (("kernel", "weight", "T"), ("bias", "bias", "id"))}},
}


def source(cfg: VLMConfig, path: tuple[str, ...]) -> tuple[list[str], bool, str]:
  """Our param path -> (canonical HF keys, stacked along a leading layer axis?, transform name).

  Scanned blocks (`llm/layers/...`, `img/Transformer/encoderblock/...`) take one key per layer;
  unrolled ones (`layers_3`, `encoderblock_3`) and top-level params take one key.
  """
  qwen = cfg.vit.family != "siglip"
  vit_block = {"siglip": _VIT_BLOCK, "qwen2_vl": _QWEN_VIT_BLOCK, "qwen2_5_vl": _QWEN2_5_VIT_BLOCK}[cfg.vit.family]
  for scope, block, table, prefix, depth in (
      (("llm",), "layers", _lm_block(cfg.lm.family), "text.layers.", cfg.lm.depth),
      (("img", "Transformer"), "encoderblock", vit_block,
       "vision.blocks." if qwen else "vision.encoder.layers.", cfg.vit.depth)):
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
  top = {**_TOP, **_TOP_CONNECTOR.get(cfg.connector, {})}
  if name not in top:
    raise KeyError(f"hf: no Hugging Face counterpart known for parameter {name!r}")
  key, transform = top[name]
  return [key], False, transform
