"""Saving our params as a Hugging Face checkpoint directory that transformers' `from_pretrained` loads.

Weights go out in the hub (transformers 4.x) key layout of the model's family, which every
transformers version reads; config.json is the source checkpoint's with our shapes over it.
Params that span several hosts are gathered one tensor at a time (every process must call
`save`); only process 0 writes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict

from leaml_jax.models.hf import config_json, param_keys
from leaml_jax.models.hf.directory import EXTRA_FILES
from leaml_jax.models.vlm import VLM


def save(model: VLM, params, path, *, hf_config=None, processor=None, max_shard_bytes: int = 2**31,
         dtype=None) -> Path:
  """Writes a directory transformers' `from_pretrained` loads (4.x hub key layout, safetensors).

  hf_config: the source checkpoint directory or its config.json as a dict: token ids and other
  fields are kept, shapes come from `model.cfg`; from a directory, tokenizer / processor files
  are copied too (unless `processor` is given, which is saved with `save_pretrained`).
  Files over `max_shard_bytes` are split into model-0000i-of-0000n.safetensors + index.
  dtype: the stored dtype ("bfloat16", "float32"; default: the params', which must then agree).
  On several hosts every process calls this; tensors are gathered one at a time and process 0 writes.
  """
  from safetensors.numpy import save_file
  cfg = model.cfg
  family = config_json.family_of(cfg)
  flat = flatten_dict(nn.meta.unbox(params))
  dtypes = {np.dtype(dtype or x.dtype).name for x in flat.values()}
  if len(dtypes) != 1:
    raise ValueError(f"hf.save: params mix dtypes {sorted(dtypes)}; pass dtype= or cast them to one first")
  writer = jax.process_index() == 0
  entries, shards = [], [[]]
  for path_, x in flat.items():
    keys, stacked, transform = param_keys.source(cfg, path_)
    for i, k in enumerate(keys):
      entries.append((param_keys.hf_key(family, k), path_, i if stacked else None, transform,
                      x.size * np.dtype(dtype or x.dtype).itemsize // len(keys)))
  size = 0
  for e in entries:
    if shards[-1] and size + e[4] > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(e)
    size += e[4]
  out = Path(path)
  if writer:
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("model*.safetensors"), out / "model.safetensors.index.json"]:
      old.unlink(missing_ok=True)
  names = (["model.safetensors"] if len(shards) == 1 else
           [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
  weight_map, cached = {}, (None, None)
  for name, shard in zip(names, shards):
    tensors = {}
    for hf_name, path_, layer, transform, _ in shard:
      if cached[0] != path_:  # one host copy of one param at a time
        cached = (path_, _host_copy(flat[path_], dtype))
      if not writer:  # took part in the gather; process 0 writes
        continue
      a = cached[1] if layer is None else cached[1][layer]
      tensors[hf_name] = np.ascontiguousarray(param_keys.TRANSFORMS[transform][1](a))
      weight_map[hf_name] = name
    if writer:
      save_file(tensors, str(out / name), metadata={"format": "pt"})
  if not writer:
    return out
  if len(shards) > 1:
    index = {"metadata": {"total_size": sum(e[4] for e in entries)}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
  config = config_json.save_config(cfg, dtypes.pop(), _source_config(hf_config, out, processor))
  (out / "config.json").write_text(json.dumps(config, indent=2))
  if processor is not None:
    processor.save_pretrained(out)
  return out


def _host_copy(x, dtype) -> np.ndarray:
  """One param on this host (gathered from every process when it spans several), in `dtype`."""
  if not getattr(x, "is_fully_addressable", True):
    from jax.experimental import multihost_utils
    x = multihost_utils.process_allgather(x, tiled=True)
  x = np.asarray(jax.device_get(x))
  return x if dtype is None else x.astype(jnp.dtype(dtype))


def _source_config(hf_config, out: Path, processor) -> dict:
  if hf_config is None or isinstance(hf_config, dict):
    return dict(hf_config or {})
  source = Path(hf_config)
  if processor is None and source.resolve() != out.resolve():
    for name in EXTRA_FILES:
      if (source / name).is_file():
        shutil.copy2(source / name, out / name)
  return json.loads((source / "config.json").read_text())
