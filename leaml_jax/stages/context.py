"""The run context every stage receives: config, workdir, mesh, model, tokenizer, encoder, params
I/O, random streams, training; and the run's methods (LEAML, its ablations, the baselines) with
the directories their artifacts live in.

Every evaluated method that trains goes through `Context.train_method`: the one place where its
learning rate and step count are chosen on the dev split (config.tune) and <method>/tuning.json
says which values it got.

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

from leaml_jax import checkpoint, generate, losses, optim, processes, sharding as shd, train
from leaml_jax.data import encoders, pipeline, scoring
from leaml_jax.errors import CheckpointError, ConfigError
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
# Trained by stage `baselines` under baselines/<name> (what each is: config.baselines).
BASELINES = ("finetune", "lora", "finetune_matched", "lora_connector", "oracle_100")


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


def variant_outputs(config, artifact: str) -> list[str]:
  """<variant>/<artifact> of LEAML and every configured ablation."""
  return [os.path.join(v.directory, artifact) for v in variants(config)]


def train_variants(ctx, stage: str, train_fn) -> None:
  """train_fn(ctx, variant, "<variant>/<stage>") for each variant whose params are not there yet."""
  for variant in variants(ctx.config):
    name = os.path.join(variant.directory, stage)
    if not ctx.has_params(name):
      train_fn(ctx, variant, name)


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
    return encoders.encoder_for(self.tokenizer, self.config.data.text_len, self.config.data.image_size)

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
               examples_per_step: int | None = None, save: bool = True, rng_purpose: str = "",
               save_every: int | None = None, keep_checkpoints: int = 1):
    """Train `params` for tcfg.steps under workdir/<name>/ (resumes from its checkpoint) and, with
    `save`, write the result as <name>/params. loss_fn defaults to the plain LM loss; the train
    step's random stream is rng(rng_purpose or name); checkpoints every `save_every` steps
    (default tcfg.save_every), the last `keep_checkpoints` of them kept."""
    examples_per_step = examples_per_step or tcfg.batch_size
    L = self.config.data.text_len
    writer = MetricWriter(self.path(name))
    ckpt = checkpoint.Checkpointer(self.path(name, "ckpt"), max_to_keep=keep_checkpoints,
                                   save_every=tcfg.save_every if save_every is None else save_every)
    try:
      params = train.finetune(
          params=params, tcfg=tcfg, loss_fn=loss_fn or losses.lm_loss(self.model), data_iter=data_iter,
          mesh=self.mesh, rng=self.rng(rng_purpose or name), checkpointer=ckpt, writer=writer,
          mask_tree=mask_tree, flops_per_step=examples_per_step * train.model_flops_per_example(self.model_cfg, L),
          tokens_per_step=examples_per_step * (self.model_cfg.num_image_tokens + L), desc=name)
    finally:
      writer.close()
      ckpt.close()
    if save:
      self.save_params(name, params)
    return params

  # -- a method's training, with its lr and step count chosen on the dev split -----------------
  def train_method(self, name: str, *, tcfg, new_params, new_data, to_model=None, **run) -> None:
    """Train one evaluated method -> <name>/params (model params: `to_model` of the trained ones,
    e.g. LoRA merged) and <name>/tuning.json {"lr", "steps", "grid": [{"lr", "steps",
    "dev_accuracy"}, ...]}. new_params() / new_data(): a fresh copy of the starting params (the
    train step consumes them) and a fresh data iterator at its start, once per training run;
    `run`: loss_fn, mask_tree, examples_per_step as `finetune` takes them.

    config.tune.lrs empty: one run at tcfg.lr for tcfg.steps (grid []). Else one run per lr
    (<name>/tune/lr_<lr>/, each resumable, all with the same data order and random stream) to
    tcfg.steps, scored by greedy dev accuracy at `tuning_steps`; the best (lr, steps) of the
    whole grid (`best_candidate`) gives the params."""
    export = jax.jit(to_model) if to_model is not None else None
    lrs = tuple(self.config.tune.lrs)
    if not lrs:
      params = self.finetune(name, params=new_params(), tcfg=tcfg, data_iter=new_data(),
                             save=export is None, **run)
      if export is not None:
        self.save_params(name, export(params))
      artifacts.write_json(self.path(name, "tuning.json"),
                           {"lr": float(tcfg.lr), "steps": int(tcfg.steps), "grid": []})
      return
    grid = []
    for lr in lrs:
      grid += self._tuning_run(name, tcfg, float(lr), new_params, new_data, export, run)
    best = best_candidate(grid)
    artifacts.write_json(self.path(name, "tuning.json"),
                         {"lr": best["lr"], "steps": best["steps"], "grid": grid})
    self.save_params(name, self.load_params(_lr_dir(name, best["lr"])))
    for lr in lrs:  # each lr's best params were only needed for the choice
      _remove(self.path(_lr_dir(name, float(lr)), "params"))

  def _tuning_run(self, name, tcfg, lr, new_params, new_data, export, run) -> list[dict]:
    """One lr of the grid: train, score the checkpoints kept at the candidate steps on the dev
    split, keep the lr's best model params. -> its grid rows (also in <run>/dev.json)."""
    run_name = _lr_dir(name, lr)
    done = self.path(run_name, "dev.json")
    if artifacts.exists(done):  # scored before a kill
      return artifacts.read_json(done)
    t = tcfg.copy_and_resolve_references()
    t.lr = lr
    steps = tuning_steps(t.steps, self.config.tune.evals)
    final = self.finetune(run_name, params=new_params(), tcfg=t, data_iter=new_data(), save=False,
                          rng_purpose=name, save_every=steps[0], keep_checkpoints=len(steps), **run)
    # The kept checkpoints are train states: their restore target is this run's state layout.
    state, _ = train.create_state(final, optim.make_optimizer(t, final, run.get("mask_tree")), self.mesh)
    abstract = checkpoint.abstract_like(state)
    del state
    ckpt = checkpoint.Checkpointer(self.path(run_name, "ckpt"), max_to_keep=len(steps))
    rows, best_params = [], None
    try:
      for step in steps:
        params = final if step == t.steps else ckpt.restore(abstract, step=step)[0].params
        params = params if export is None else export(params)
        rows.append({"lr": lr, "steps": step, "dev_accuracy": self.dev_accuracy(params)})
        if best_candidate(rows) is rows[-1]:
          best_params = params
    finally:
      ckpt.close()
    self.save_params(run_name, best_params)
    artifacts.write_json(done, rows)
    _remove(self.path(run_name, "ckpt"))
    return rows

  def dev_accuracy(self, params) -> float:
    """Greedy accuracy on the dev split, generated and scored as `evaluate` does the test split."""
    if "dev_records" not in self.cache:
      self.cache["dev_records"] = artifacts.vqa_records(self, "dev")
    records = self.cache["dev_records"]
    if not records:
      raise ConfigError("config.tune.lrs chooses hyper-parameters on the dev split, which is empty: "
                        "set config.data.dev_images and redo `prepare` (--config.force=prepare)")
    e = self.config.eval
    preds, _ = generate.generate_texts(self.model, params, records, encoder=self.encoder,
                                       batch_size=e.batch_size, max_new_tokens=e.max_new_tokens,
                                       desc="dev")
    return float(np.mean([scoring.is_correct(p, r["answer"], r.get("type"), r.get("options"))
                          for p, r in zip(preds, records)]))


def tuning_steps(steps: int, evals: int) -> list[int]:
  """The steps at which a tuning run is scored: every ceil(steps / evals) steps, and the last."""
  every = max(1, -(-steps // max(1, evals)))
  return sorted({*range(every, steps, every), steps})


def best_candidate(grid: list[dict]) -> dict:
  """The row with the highest dev accuracy; ties go to fewer steps, then to the lower lr."""
  return min(grid, key=lambda row: (-row["dev_accuracy"], row["steps"], row["lr"]))


def _lr_dir(name: str, lr: float) -> str:
  return os.path.join(name, "tune", f"lr_{lr:g}")


def _remove(path: str) -> None:
  """Deletes a directory (local or in a bucket) once every process is done with it."""
  processes.sync(f"remove {path}")
  if jax.process_index() == 0 and epath.Path(path).is_dir():
    epath.Path(path).rmtree()
  processes.sync(f"removed {path}")


def _purpose_id(purpose: str) -> int:
  """The whole purpose string -> a 31-bit id (blake2s), so "vqa/labeled" and "vqa/pseudo" differ."""
  return int.from_bytes(hashlib.blake2s(purpose.encode(), digest_size=4).digest(), "little") >> 1
