"""Hugging Face checkpoints: load into sharded params, compare with transformers, save back.

  model, params, processor = hf.load("ckpt/paligemma2-3b-pt-224", mesh=mesh, dtype="float32")
  inputs = processor(images=images, text=prompts, return_tensors="np", padding="longest")
  logits = hf.logits_from_hf_inputs(model, params, **inputs)   # == transformers' logits
  batch = hf.batch_from_hf_inputs(model, **inputs)              # our layout, for generate()
  hf.save(model, params, "out/", hf_config="ckpt/paligemma2-3b-pt-224", processor=processor)

Axis legend: B batch, T processor sequence length, n images per row, H/W pixels, V vocab.

Families and key layouts: see models/hf_keys.py. Only safetensors are read (never pickle,
never remote code). Loading streams tensor by tensor: each is read with `safe_open`, laid
out like our param and placed with its NamedSharding, so host memory holds about one
parameter (one stacked parameter for scanned layers) at a time.
PaliGemma loads in our image-prefix layout (what the pipeline feeds); SmolVLM/Idefics3 in
the inline layout (`VLMConfig.image_token_id`). Images are NHWC in [-1, 1], which is what
both processors produce (mean 0.5, std 0.5).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import re
import shutil
import warnings
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from leaml_jax import sharding as shd
from leaml_jax.errors import CheckpointError
from leaml_jax.models import hf_keys
from leaml_jax.models.vlm import VLM, dummy_inputs

_WHERE = ("Put config.json and the *.safetensors files (optionally the tokenizer/processor files) in one "
          "local directory, e.g. on a machine with internet `huggingface-cli download "
          "google/paligemma2-3b-pt-224 --local-dir ckpt/paligemma2-3b-pt-224`, copy it here, and pass that "
          "directory.")
_HUB_FILES = ["*.json", "*.safetensors", "tokenizer.model", "*.txt", "*.jinja"]  # no pickles, no code
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "tokenizer.json",
                    "tokenizer_config.json", "tokenizer.model")
_EXTRA_FILES = _PROCESSOR_FILES + ("special_tokens_map.json", "generation_config.json", "chat_template.json",
                                   "chat_template.jinja", "added_tokens.json")


# ----------------------------------------------------------------------------- finding the files
def resolve(path) -> Path:
  """A local checkpoint directory, or a hub snapshot of `path` (safetensors + json only)."""
  p = Path(path).expanduser()
  if p.is_dir():
    directory = p
  elif p.exists():
    raise FileNotFoundError(f"{path} is a file; pass its checkpoint directory. {_WHERE}")
  elif re.fullmatch(r"[\w-][\w.-]*/[\w.-]+", str(path)):
    try:
      import huggingface_hub
      directory = Path(huggingface_hub.snapshot_download(str(path), allow_patterns=_HUB_FILES))
    except Exception as e:  # noqa: BLE001 - offline, gated, unknown repo: all end the same way
      raise FileNotFoundError(f"{str(path)!r} is not a local directory and could not be fetched from the "
                              f"Hugging Face Hub ({type(e).__name__}: {str(e)[:200]}). {_WHERE}") from e
  else:
    raise FileNotFoundError(f"checkpoint directory {str(path)!r} does not exist. {_WHERE}")
  if not (directory / "config.json").is_file():
    raise FileNotFoundError(f"{directory} has no config.json. {_WHERE}")
  if not any(directory.glob("*.safetensors")):
    pickles = sorted(f.name for f in directory.iterdir() if f.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    raise FileNotFoundError(f"{directory} has no *.safetensors files{f' (only {pickles})' if pickles else ''}. "
                            "Only safetensors are read, never pickles: convert once with transformers "
                            "(`model.save_pretrained(dir, safe_serialization=True)`) where you trust the file. "
                            + _WHERE)
  return directory


# ----------------------------------------------------------------------------- load
def load(path, *, mesh=None, dtype: str = "bfloat16", param_dtype: str = "float32", **overrides):
  """(model, params, processor) from a HF PaliGemma / PaliGemma 2 / Idefics3 (SmolVLM) checkpoint.

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
  refs = hf_keys.tensor_refs(directory)
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
      to_ours = hf_keys.TRANSFORMS[transform][0]
      host = np.empty(leaf.shape, leaf.dtype)
      for i, k in enumerate(keys):
        tensor = np.asarray(handles[refs[k].file].get_tensor(refs[k].key))
        if stacked:
          host[i] = to_ours(tensor, leaf.shape[1:])
        else:
          host[...] = to_ours(tensor, leaf.shape)
      params[path_] = jax.make_array_from_callback(leaf.shape, shardings[path_], lambda idx, h=host: h[idx])
      del host
  return model, unflatten_dict(params), _processor(directory)


def config(path, *, dtype: str = "bfloat16", param_dtype: str = "float32", **overrides):
  """The VLMConfig `load(path, ...)` builds (no weights read): for restore targets and data layout."""
  from transformers import AutoConfig
  hf_cfg = AutoConfig.from_pretrained(resolve(path), trust_remote_code=False)
  return hf_keys.vlm_config(hf_cfg, dtype=dtype, param_dtype=param_dtype, **overrides)[0]


def processor(path):
  """transformers' AutoProcessor of a checkpoint directory (tokenizer + image processor), or None."""
  return _processor(resolve(path))


@functools.lru_cache(maxsize=8)
def _abstract_params(cfg):
  model = VLM(cfg)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), *dummy_inputs(cfg, 1, 4))["params"])


def _plan(cfg, directory, leaves, refs):
  """Our path -> (canonical keys, stacked, transform), after checking names and shapes."""
  plan, used, missing = {}, set(), []
  for path_, leaf in leaves.items():
    keys, stacked, transform = hf_keys.source(cfg, path_)
    want = hf_keys.TRANSFORMS[transform][2](leaf.shape[1:] if stacked else leaf.shape)
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
                          "see models/hf_keys.py); config.json and weights disagree or a shard is missing")
  tied = cfg.lm.tie_embeddings
  extra = [refs[k].key for k in refs
           if k not in used and not hf_keys.IGNORED.search(k) and not (tied and k == "lm_head.weight")]
  if extra:
    raise CheckpointError(f"{directory}: tensor(s) {extra[:8]} are not used by the model config.json "
                          "describes; config and weights disagree")
  return plan


def _cpu_device():
  try:
    return jax.devices("cpu")[0]
  except RuntimeError:  # JAX_PLATFORMS without cpu: safetensors then reads onto the default device
    return None


def _processor(directory: Path):
  if not any((directory / n).is_file() for n in _PROCESSOR_FILES):
    return None
  from transformers import AutoProcessor
  processor = AutoProcessor.from_pretrained(directory, trust_remote_code=False)
  ip = getattr(processor, "image_processor", None)
  if ip is not None and not (np.allclose(getattr(ip, "image_mean", None) or 0.5, 0.5)
                             and np.allclose(getattr(ip, "image_std", None) or 0.5, 0.5)):
    warnings.warn(f"{directory}: the processor normalises images with mean {ip.image_mean} / std "
                  f"{ip.image_std}, not to [-1, 1] as this package's data pipeline does; feed this model "
                  "pixel_values from the processor (batch_from_hf_inputs)", stacklevel=3)
  return processor


# ----------------------------------------------------------------------------- processor inputs
_INPUT_KEYS = ("input_ids", "attention_mask", "pixel_values", "token_type_ids", "pixel_attention_mask", "labels")


def _np(x, dtype=None) -> np.ndarray:
  if hasattr(x, "detach"):  # a torch tensor; numpy has no bfloat16 there
    x = x.detach().cpu()
    x = (x.float() if x.is_floating_point() else x).numpy()
  x = np.asarray(x)
  return x if dtype is None else x.astype(dtype)


def _hf_view(model: VLM, inputs: dict):
  """Processor dict -> (cfg with inline image ids, image [B,n,H,W,3], ids [B,T], mask_ar, valid)."""
  unknown = sorted(set(inputs) - set(_INPUT_KEYS))
  if unknown:
    raise TypeError(f"hf: unsupported processor output(s) {unknown}; this family takes {_INPUT_KEYS}")
  if "input_ids" not in inputs or "pixel_values" not in inputs:
    raise KeyError("hf: the processor dict needs input_ids and pixel_values")
  cfg = model.cfg
  family = hf_keys.family_of(cfg)
  ids = _np(inputs["input_ids"], np.int32)
  B = ids.shape[0]
  valid = _np(inputs["attention_mask"], np.int32) if "attention_mask" in inputs else np.ones_like(ids)
  pixels = _np(inputs["pixel_values"], np.float32)
  if pixels.ndim == 4 and pixels.shape[0] % B == 0:  # PaliGemma: images of all rows in one batch
    pixels = pixels.reshape(B, pixels.shape[0] // B, *pixels.shape[1:])
  if pixels.ndim != 5 or pixels.shape[:1] != (B,) or pixels.shape[2] != 3:
    raise ValueError(f"hf: pixel_values {pixels.shape} should be [B,3,H,W] or [B,n,3,H,W] with B={B}")
  N, n = cfg.num_image_tokens, pixels.shape[1]
  real = np.ones((B, n), bool)
  if family == "paligemma":
    tt = inputs.get("token_type_ids")
    mask_ar = _np(tt, np.int32) if tt is not None else np.ones_like(ids)  # HF: no token types = causal
    token = cfg.image_token_id if cfg.image_token_id is not None else _leading_token(ids, valid, N * n)
  else:  # Idefics3 is causal throughout; all-zero images are the processor's padding (HF drops them)
    mask_ar, token = np.ones_like(ids), cfg.image_token_id
    real = ~(pixels == 0).all(axis=(2, 3, 4))
    pam = inputs.get("pixel_attention_mask")
    if pam is not None and not _np(pam, bool)[real].all():
      raise ValueError("hf: images with padded pixels (pixel_attention_mask partly 0) are not supported; "
                       "they come from processor settings that do not resize to the vision tower's size")
  counts = (ids == token).sum(axis=1)
  if (counts != real.sum(axis=1) * N).any():
    raise ValueError(f"hf: rows hold {counts.tolist()} image tokens (id {token}) but their images need "
                     f"{(real.sum(axis=1) * N).tolist()} ({N} per image)")
  return dataclasses.replace(cfg, image_token_id=token), pixels.transpose(0, 1, 3, 4, 2), ids, mask_ar, valid


def _leading_token(ids, valid, count) -> int:
  """PaliGemma layout: each row's first `count` real tokens are one image token id."""
  first = [row[v.astype(bool)][:count] for row, v in zip(ids, valid)]
  found = {int(t) for f in first for t in f}
  if len(found) != 1 or any(len(f) != count for f in first):
    raise ValueError(f"hf: expected every row to start with {count} copies of the image token "
                     f"(PaliGemma layout); found ids {sorted(found)[:5]}")
  return found.pop()


@functools.lru_cache(maxsize=8)
def _forward(cfg):
  model = VLM(cfg)
  return jax.jit(lambda p, *a: model.apply({"params": p}, *a)[0])


def logits_from_hf_inputs(model: VLM, params, **inputs) -> np.ndarray:
  """float32 logits [B,T,V] for exactly the dict a transformers processor returns.

  PaliGemma: input_ids, attention_mask, pixel_values [B,3,H,W], token_type_ids (prefix 0,
  suffix 1; without them HF is causal throughout, and so is this). SmolVLM/Idefics3:
  pixel_values [B,n,3,H,W] (all-zero images are padding), pixel_attention_mask.
  Positions with attention_mask 0 hold meaningless values (as in transformers).
  """
  cfg, image, ids, mask_ar, valid = _hf_view(model, inputs)
  logits = _forward(cfg)(nn.meta.unbox(params), image, ids, mask_ar, valid)
  return np.asarray(jax.device_get(logits), np.float32)


def batch_from_hf_inputs(model: VLM, **inputs) -> dict[str, np.ndarray]:
  """Processor dict -> our batch (image, text, mask_ar, mask_input), rows left-aligned.

  For `leaml_jax.generate.generate` on prompts a processor made (either padding side).
  PaliGemma (prefix layout): image tokens dropped from the text; image [B,H,W,3] for one
  image per row, [B,n,H,W,3] for n (their tokens must lead each row, as the processor puts them).
  """
  cfg, image, ids, mask_ar, valid = _hf_view(model, inputs)
  keep = valid.astype(bool)
  if model.cfg.image_token_id is None:
    if "token_type_ids" not in inputs:
      raise ValueError("hf: the image-prefix layout needs token_type_ids (the processor's prefix/suffix)")
    keep &= ids != cfg.image_token_id
    image = image[:, 0] if image.shape[1] == 1 else image
  B, L = ids.shape[0], int(keep.sum(axis=1).max())
  text, ar, mask_input = np.zeros((B, L), np.int32), np.ones((B, L), np.int32), np.zeros((B, L), np.int32)
  for b in range(B):
    n = int(keep[b].sum())
    text[b, :n], ar[b, :n], mask_input[b, :n] = ids[b, keep[b]], mask_ar[b, keep[b]], 1
  return {"image": image, "text": text, "mask_ar": ar, "mask_input": mask_input}


# ----------------------------------------------------------------------------- save
def save(model: VLM, params, path, *, hf_config=None, processor=None, max_shard_bytes: int = 2**31) -> Path:
  """Writes a directory transformers' `from_pretrained` loads (4.x hub key layout, safetensors).

  hf_config: the source checkpoint directory or its config.json as a dict: token ids and other
  fields are kept, shapes come from `model.cfg`; from a directory, tokenizer / processor files
  are copied too (unless `processor` is given, which is saved with `save_pretrained`).
  Files over `max_shard_bytes` are split into model-0000i-of-0000n.safetensors + index.
  """
  from safetensors.numpy import save_file
  cfg = model.cfg
  family = hf_keys.family_of(cfg)
  flat = flatten_dict(nn.meta.unbox(params))
  if not all(getattr(x, "is_fully_addressable", True) for x in flat.values()):
    raise ValueError("hf.save: params span several hosts; gather them first "
                     "(jax.experimental.multihost_utils.process_allgather) and save from one process")
  dtypes = {np.dtype(x.dtype).name for x in flat.values()}
  if len(dtypes) != 1:
    raise ValueError(f"hf.save: params mix dtypes {sorted(dtypes)}; cast them to one first")
  entries, shards = [], [[]]
  for path_, x in flat.items():
    keys, stacked, transform = hf_keys.source(cfg, path_)
    for i, k in enumerate(keys):
      entries.append((hf_keys.hf_key(family, k), path_, i if stacked else None, transform,
                      x.nbytes // len(keys)))
  size = 0
  for e in entries:
    if shards[-1] and size + e[4] > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(e)
    size += e[4]
  out = Path(path)
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
        cached = (path_, np.asarray(jax.device_get(flat[path_])))
      a = cached[1] if layer is None else cached[1][layer]
      tensors[hf_name] = np.ascontiguousarray(hf_keys.TRANSFORMS[transform][1](a))
      weight_map[hf_name] = name
    save_file(tensors, str(out / name), metadata={"format": "pt"})
  if len(shards) > 1:
    index = {"metadata": {"total_size": sum(e[4] for e in entries)}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
  config = hf_keys.save_config(cfg, dtypes.pop(), _source_config(hf_config, out, processor))
  (out / "config.json").write_text(json.dumps(config, indent=2))
  if processor is not None:
    processor.save_pretrained(out)
  return out


def _source_config(hf_config, out: Path, processor) -> dict:
  if hf_config is None or isinstance(hf_config, dict):
    return dict(hf_config or {})
  source = Path(hf_config)
  if processor is None and source.resolve() != out.resolve():
    for name in _EXTRA_FILES:
      if (source / name).is_file():
        shutil.copy2(source / name, out / name)
  return json.loads((source / "config.json").read_text())
