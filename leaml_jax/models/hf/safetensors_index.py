"""The index of a safetensors checkpoint directory: which file holds which tensor, with what shape.

Only headers are read here (the JSON at the start of each file), checked against the file
sizes so that a truncated download names its tensor instead of failing deep in a read.
Tensors are indexed by their canonical key (models/hf/param_keys.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from leaml_jax.errors import CheckpointError
from leaml_jax.models.hf.param_keys import canonical

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


@dataclasses.dataclass(frozen=True)
class Ref:
  """Where one tensor of a checkpoint lies."""
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
        raise CheckpointError(f"{file}: tensor {key!r} belongs to no known part of a PaliGemma / Idefics3 / "
                              "Gemma 3 / Qwen2(.5)-VL checkpoint (config.json and weights disagree?)")
      if name in refs:
        raise CheckpointError(f"{directory}: tensor {key!r} appears twice ({refs[name].file.name}, {file.name})")
      refs[name] = Ref(file, key, tuple(meta["shape"]), meta["dtype"])
  return refs
