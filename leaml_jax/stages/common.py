"""What every stage shares: the run context (config, workdir, mesh, model, tokenizer) and
atomic artifact I/O. Stages talk only through files under the workdir."""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import tempfile

import jax
import numpy as np

from leaml_jax import checkpoint, sharding as shd
from leaml_jax.errors import CheckpointError


# ----------------------------------------------------------------------------- atomic I/O
def _atomic_write(path: str, write_fn, mode="w"):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp_")
  try:
    with os.fdopen(fd, mode) as f:
      write_fn(f)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(path: str, obj) -> None:
  if jax.process_index() == 0:
    _atomic_write(path, lambda f: json.dump(obj, f, indent=1, sort_keys=False))


def read_json(path: str):
  with open(path) as f:
    return json.load(f)


def write_jsonl(path: str, rows) -> None:
  if jax.process_index() == 0:
    _atomic_write(path, lambda f: f.writelines(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


# ----------------------------------------------------------------------------- context
@dataclasses.dataclass
class Context:
  config: object
  workdir: str

  def path(self, *parts) -> str:
    return os.path.join(self.workdir, *parts)

  def rng(self, name: str) -> jax.Array:
    """Deterministic key per (seed, purpose): stages are independent of each other's draws."""
    h = int.from_bytes(name.encode()[:8].ljust(8, b"\0"), "little") % (2 ** 31)
    return jax.random.fold_in(jax.random.key(self.config.seed), h)

  @functools.cached_property
  def mesh(self):
    m = self.config.mesh
    devices = jax.devices()
    if m.num_devices:
      devices = devices[: m.num_devices]
    return shd.make_mesh({"data": m.data, "fsdp": m.fsdp, "tensor": m.tensor}, devices)

  # -- model ------------------------------------------------------------------
  # config.model.path set: model, tokenizer and data layout come from that HF checkpoint
  # directory (models/hf.py, data/encoders/hf.py); else the tiny preset + the trained BPE.
  @functools.cached_property
  def processor(self):
    """The HF checkpoint's transformers processor (config.model.path runs), else None."""
    if not self.config.model.path:
      return None
    from leaml_jax.models import hf
    processor = hf.processor(self.config.model.path)
    if processor is None:
      raise CheckpointError(f"config.model.path={self.config.model.path}: the directory has no tokenizer / "
                            "processor files (tokenizer.json, preprocessor_config.json, ...); copy them "
                            "from the hub snapshot next to config.json")
    return processor

  @functools.cached_property
  def tokenizer(self):
    from leaml_jax.data import tokenizer as tok_lib
    if self.processor is not None:
      return tok_lib.HFTokenizer(self.processor.tokenizer, processor=self.processor)
    path = self.path("data", "tokenizer.json")
    if not os.path.exists(path):
      raise FileNotFoundError(f"tokenizer {path} missing: run the `prepare` stage first")
    return tok_lib.load_tokenizer(path)

  @functools.cached_property
  def encoder(self):
    """Examples -> fixed-shape arrays (pipeline.make_dataset / encoders.prompt_batch take it)."""
    from leaml_jax.data import encoders
    return encoders.encoder_for(self.tokenizer, self.config.data.text_len)

  @functools.cached_property
  def model_cfg(self):
    from leaml_jax.models import presets
    m = self.config.model
    if m.path:
      from leaml_jax.models import hf
      return hf.config(m.path, **self.model_options())
    size = self.config.data.image_size
    return presets.get(m.preset, lm=dict(vocab_size=self.tokenizer.vocab_size),
                       vit=dict(image_size=(size, size), frames=m.vit_frames), **self.model_options())

  def model_options(self) -> dict:
    """config.model's dtype / scan / remat / attention, as VLMConfig (and hf.load) take them."""
    m = self.config.model
    return dict(dtype=m.dtype, param_dtype=m.param_dtype, scan=m.scan, remat=m.remat, attention=m.attention)

  @functools.cached_property
  def model(self):
    from leaml_jax.models.vlm import VLM
    return VLM(self.model_cfg)

  def dummy_batch(self, batch_size: int = 1) -> dict:
    h, w = self.model_cfg.vit.image_size
    L = self.config.data.text_len
    return {"image": np.zeros((batch_size, h, w, 3), np.float32),
            "text": np.zeros((batch_size, L), np.int32),
            "mask_ar": np.zeros((batch_size, L), np.int32),
            "mask_input": np.ones((batch_size, L), np.int32)}

  def _init_fn(self):
    b = self.dummy_batch()
    return lambda r: self.model.init(r, b["image"], b["text"], b["mask_ar"], b["mask_input"])

  def init_params(self, rng):
    """Fresh params, born sharded on the mesh."""
    variables, _ = shd.init_sharded(self._init_fn(), self.mesh, rng)
    return variables["params"]

  @functools.cached_property
  def abstract_params(self):
    """ShapeDtypeStructs with the mesh shardings: restore targets for orbax."""
    abstract = jax.eval_shape(self._init_fn(), jax.random.key(0))
    sh = shd.param_shardings(abstract, self.mesh)["params"]
    from flax import linen as nn
    plain = nn.meta.unbox(abstract)["params"]
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), plain, sh)

  def save_params(self, name: str, params) -> None:
    checkpoint.save_params(self.path(name, "params"), params)

  def load_params(self, name: str):
    path = self.path(name, "params")
    if not os.path.isdir(path):
      raise CheckpointError(f"parameters {path} missing: run the stage that writes `{name}` "
                            f"(or --config.force={name.split('/')[0]})")
    try:
      return checkpoint.load_params(path, self.abstract_params)
    except Exception as e:
      raise CheckpointError(f"parameters at {path} do not match config.model "
                            f"({type(e).__name__}: {str(e)[:200]}); delete the directory or "
                            f"use the config it was written with") from e
