"""Loading a Hugging Face checkpoint into sharded params (and the VLMConfig it implies).

Loading streams tensor by tensor: each is read with `safe_open`, laid out like our param and
placed with its NamedSharding, so host memory holds about one parameter (one stacked parameter
for scanned layers) at a time. Names and shapes are all checked before the first read.
PaliGemma loads in our image-prefix layout (what the pipeline feeds); SmolVLM/Idefics3, Gemma 3
and the Qwen families in the inline layout (`VLMConfig.image_token_id`).
"""

from __future__ import annotations

import contextlib
import functools

import flax.linen as nn
import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from leaml_jax import sharding as shd
from leaml_jax.errors import CheckpointError
from leaml_jax.models.hf import config_json, param_keys
from leaml_jax.models.hf.directory import processor_of, resolve
from leaml_jax.models.hf.safetensors_index import tensor_refs
from leaml_jax.models.vlm import VLM, dummy_inputs


def load(path, *, mesh=None, dtype: str = "bfloat16", param_dtype: str = "float32", **overrides):
  """(model, params, processor) from a HF PaliGemma / PaliGemma 2 / Idefics3 (SmolVLM) / Gemma 3 /
  Qwen2-VL / Qwen2.5-VL checkpoint.

  path: local directory (config.json + safetensors, single or sharded) or a hub id (fetched
  when online). mesh: params are born with `sharding.param_shardings` on it (default: one
  device). dtype / param_dtype / overrides (scan, remat, attention) go to VLMConfig.
  processor: transformers' AutoProcessor when the directory has its files, else None.
  """
  directory = resolve(path)
  cfg = config(directory, dtype=dtype, param_dtype=param_dtype, **overrides)
  model = VLM(cfg)
  if mesh is None:
    mesh = shd.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
  abstract = _abstract_params(cfg)
  shardings = flatten_dict(shd.param_shardings(abstract, mesh))
  leaves = flatten_dict(nn.meta.unbox(abstract))
  refs = tensor_refs(directory)
  plan = _plan(cfg, directory, leaves, refs)
  params = {}
  cpu = _cpu_device()
  with contextlib.ExitStack() as stack:
    from safetensors import safe_open
    if cpu is not None:
      stack.enter_context(jax.default_device(cpu))  # read into host memory, never device 0
    files = {r.file for r in refs.values()}
    handles = {f: stack.enter_context(safe_open(str(f), framework="flax")) for f in files}
    for path_, leaf in leaves.items():
      keys, stacked, transform = plan[path_]
      to_ours = param_keys.TRANSFORMS[transform][0]
      host = np.empty(leaf.shape, leaf.dtype)
      for i, k in enumerate(keys):
        tensor = np.asarray(handles[refs[k].file].get_tensor(refs[k].key))
        if stacked:
          host[i] = to_ours(tensor, leaf.shape[1:])
        else:
          host[...] = to_ours(tensor, leaf.shape)
      params[path_] = jax.make_array_from_callback(leaf.shape, shardings[path_], lambda idx, h=host: h[idx])
      del host
  return model, unflatten_dict(params), processor_of(directory)


def config(path, *, dtype: str = "bfloat16", param_dtype: str = "float32", **overrides):
  """The VLMConfig `load(path, ...)` builds (no weights read): for restore targets and data layout."""
  from transformers import AutoConfig
  hf_cfg = AutoConfig.from_pretrained(resolve(path), trust_remote_code=False)
  return config_json.vlm_config(hf_cfg, dtype=dtype, param_dtype=param_dtype, **overrides)[0]


@functools.lru_cache(maxsize=8)
def _abstract_params(cfg):
  model = VLM(cfg)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), *dummy_inputs(cfg, 1, 4))["params"])


def _plan(cfg, directory, leaves, refs):
  """Our path -> (canonical keys, stacked, transform), after checking names and shapes."""
  plan, used, missing = {}, set(), []
  for path_, leaf in leaves.items():
    keys, stacked, transform = param_keys.source(cfg, path_)
    want = param_keys.TRANSFORMS[transform][2](leaf.shape[1:] if stacked else leaf.shape)
    for k in keys:
      ref = refs.get(k)
      if ref is None:
        missing.append(k)
      elif ref.shape != want:
        raise CheckpointError(f"{ref.file}: tensor {ref.key!r} has shape {list(ref.shape)} but config.json "
                              f"implies {list(want)} (for {'/'.join(path_)}); config and weights disagree")
      used.add(k)
    plan[path_] = (keys, stacked, transform)
  if missing:
    raise CheckpointError(f"{directory}: checkpoint lacks tensor(s) {missing[:8]}"
                          f"{f' and {len(missing) - 8} more' if len(missing) > 8 else ''} (canonical names, "
                          "see models/hf/param_keys.py); config.json and weights disagree or a shard is missing")
  tied = cfg.lm.tie_embeddings
  extra = [refs[k].key for k in refs
           if k not in used and not param_keys.IGNORED.search(k) and not (tied and k == "lm_head.weight")]
  if extra:
    raise CheckpointError(f"{directory}: tensor(s) {extra[:8]} are not used by the model config.json "
                          "describes; config and weights disagree")
  return plan


def _cpu_device():
  try:
    return jax.devices("cpu")[0]
  except RuntimeError:  # JAX_PLATFORMS without cpu: safetensors then reads onto the default device
    return None
