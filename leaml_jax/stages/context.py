"""The run context every stage receives: config, workdir, mesh, model, tokenizer, encoder, params
I/O, random streams; and the run's methods (LEAML, its ablations, the baselines) with the
directories their artifacts live in.

config.model.path set: model, tokenizer and data layout come from that HF checkpoint directory
(models/hf/, data/encoders/hf.py); else the tiny preset and the BPE trained by `prepare`.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os

import jax
import numpy as np
from etils import epath

from leaml_jax import checkpoint, losses, sharding as shd, train
from leaml_jax.data import encoders, pipeline
from leaml_jax.errors import CheckpointError
from leaml_jax.metrics import MetricWriter
from leaml_jax.stages import artifacts


# ----------------------------------------------------------------------------- methods
@dataclasses.dataclass(frozen=True)
class Variant:
  """LEAML or one of its ablations; `directory`: where its artifacts live under the workdir."""
  name: str = "leaml"
  directory: str = ""
  mask: str | None = None        # None = config.neurons.mask; "none" | "random" | "relevance"
  distill: bool = True

  @property
  def method(self) -> str:
    return "leaml" if self.name == "leaml" else f"leaml_{self.name}"


VARIANTS = {"leaml": Variant(),
            "no_mask": Variant("no_mask", "ablations/no_mask", mask="none"),
            "random_mask": Variant("random_mask", "ablations/random_mask", mask="random"),
            "no_distill": Variant("no_distill", "ablations/no_distill", distill=False)}
BASELINES = ("finetune", "lora")  # trained on the labelled data only, under baselines/<name>


def variants(config) -> list[Variant]:
  """LEAML, then the configured ablations: the LEAML stages run each of them."""
  return [VARIANTS["leaml"]] + [VARIANTS[a] for a in config.ablations]


def seed_config(config, seed: int, *, shared_base: str = ""):
  """One seed's run of a sweep (--config.seeds): the same config with that seed; with
  `shared_base`, the base (and the built datasets) come from that workdir."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.seed, c.seeds = int(seed), ()
    if shared_base:
      c.base.workdir = shared_base
  c.lock()
  return c


def methods(config) -> dict[str, str]:
  """Every evaluated method -> its params directory (relative to the workdir), in report order."""
  out = {}
  if "zero_shot" in config.baselines.methods:
    out["zero_shot"] = "base"
  if "baselines" in config.stages:
    out.update({m: f"baselines/{m}" for m in BASELINES if m in config.baselines.methods})
  if "vqa" in config.stages:
    out.update({v.method: os.path.join(v.directory, "vqa") for v in variants(config)})
  return out


# ----------------------------------------------------------------------------- context
@dataclasses.dataclass
class Context:
  config: object
  workdir: str
  cache: dict = dataclasses.field(default_factory=dict)  # decoded examples, shared by stages

  def path(self, *parts) -> str:
    return os.path.join(self.workdir, *parts)

  # -- randomness: one stream per purpose, a pure function of (config.seed, purpose) -----------
  def rng(self, purpose: str) -> jax.Array:
    """Key of one purpose ("base", "qa_generator/distill", ...): distinct purposes get
    independent streams, so no stage's draws depend on another's."""
    return jax.random.fold_in(jax.random.key(self.config.seed), _purpose_id(purpose))

  def seed(self, purpose: str) -> int:
    """An int seed (grain shuffles, numpy) for one purpose, from the same stream as `rng`."""
    return int(jax.random.randint(self.rng(purpose), (), 0, 2 ** 31 - 1))

  # -- mesh and model ------------------------------------------------------------------------
  @functools.cached_property
  def mesh(self):
    m = self.config.mesh
    devices = jax.devices()[: m.num_devices] if m.num_devices else jax.devices()
    return shd.make_mesh({"data": m.data, "fsdp": m.fsdp, "tensor": m.tensor}, devices)

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
    if not artifacts.exists(path):
      raise FileNotFoundError(f"tokenizer {path} missing: run the `prepare` stage first")
    return tok_lib.load_tokenizer(path)

  @functools.cached_property
  def encoder(self):
    """Examples -> fixed-shape arrays: the synthetic layout or the checkpoint's processor."""
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

  def _init_fn(self):
    h, w = self.model_cfg.vit.image_size
    L = self.config.data.text_len
    image, text = np.zeros((1, h, w, 3), np.float32), np.zeros((1, L), np.int32)
    return lambda r: self.model.init(r, image, text, text, np.ones((1, L), np.int32))

  def init_params(self, rng):
    """Fresh params, born sharded on the mesh."""
    variables, _ = shd.init_sharded(self._init_fn(), self.mesh, rng)
    return variables["params"]

  @functools.cached_property
  def abstract_params(self):
    """ShapeDtypeStructs with the mesh shardings: restore targets for orbax."""
    from flax import linen as nn
    abstract = jax.eval_shape(self._init_fn(), jax.random.key(0))
    sh = shd.param_shardings(abstract, self.mesh)["params"]
    plain = nn.meta.unbox(abstract)["params"]
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), plain, sh)

  # -- params artifacts -------------------------------------------------------------------------
  def params_path(self, name: str) -> str:
    """<name>/params under the workdir; the base's under config.base.workdir when the run reuses
    another run's base (a sweep's seeds share one)."""
    root = self.config.base.workdir if name == "base" and self.config.base.workdir else self.workdir
    return os.path.join(root, name, "params")

  def save_params(self, name: str, params) -> None:
    checkpoint.save_params(self.params_path(name), params)

  def has_params(self, name: str) -> bool:
    return epath.Path(self.params_path(name)).is_dir()

  def load_params(self, name: str):
    path = self.params_path(name)
    if not epath.Path(path).is_dir():
      raise artifacts.params_missing(path, name)
    try:
      return checkpoint.load_params(path, self.abstract_params)
    except Exception as e:
      raise CheckpointError(f"parameters at {path} do not match config.model "
                            f"({type(e).__name__}: {str(e)[:200]}); delete the directory or "
                            f"use the config it was written with") from e

  # -- training -----------------------------------------------------------------------------------
  def dataset(self, records, batch_size: int | None, purpose: str):
    """Shuffled, repeated, encoded records (batched unless batch_size is None)."""
    return pipeline.make_dataset(records, self.encoder, batch_size=batch_size, seed=self.seed(purpose))

  def finetune(self, name: str, *, params, tcfg, data_iter, loss_fn=None, mask_tree=None,
               examples_per_step: int | None = None, save: bool = True):
    """Train `params` for tcfg.steps under workdir/<name>/ (resumes from its checkpoint) and, with
    `save`, write the result as <name>/params. loss_fn defaults to the plain LM loss."""
    examples_per_step = examples_per_step or tcfg.batch_size
    L = self.config.data.text_len
    writer = MetricWriter(self.path(name))
    ckpt = checkpoint.Checkpointer(self.path(name, "ckpt"), save_every=tcfg.save_every, max_to_keep=1)
    try:
      params = train.finetune(
          params=params, tcfg=tcfg, loss_fn=loss_fn or losses.lm_loss(self.model), data_iter=data_iter,
          mesh=self.mesh, rng=self.rng(name), checkpointer=ckpt, writer=writer, mask_tree=mask_tree,
          flops_per_step=examples_per_step * train.model_flops_per_example(self.model_cfg, L),
          tokens_per_step=examples_per_step * (self.model_cfg.num_image_tokens + L), desc=name)
    finally:
      writer.close()
      ckpt.close()
    if save:
      self.save_params(name, params)
    return params


def _purpose_id(purpose: str) -> int:
  """The whole purpose string -> a 31-bit id (blake2s), so "vqa/labeled" and "vqa/pseudo" differ."""
  return int.from_bytes(hashlib.blake2s(purpose.encode(), digest_size=4).digest(), "little") >> 1
