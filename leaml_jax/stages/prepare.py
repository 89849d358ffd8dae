"""Stage `prepare`: datasets, tokenizer, labelled split by image -> data/.

config.data.source picks the target dataset: `synthetic` (the domain config.data.domain,
generated here) or a real dataset built from the files under config.data.path (the dataset
registry knows each one). Its train images are split into a labelled subset
(config.data.label_fraction, seeded by config.seed), a dev set (config.data.dev_images: only
for choosing hyper-parameters, see config.tune) and the unlabelled pool; its test split is fixed by the dataset build. All four are
lists of image ids in data/splits.json, pairwise disjoint.
"""
from __future__ import annotations

import os

import numpy as np
from etils import epath

from leaml_jax import processes
from leaml_jax.data import datasets, tokenizer as tok_lib
from leaml_jax.errors import ConfigError
from leaml_jax.stages import artifacts

DATA_SEED = 0  # the benchmark itself is fixed; config.seed draws labels and trains models


def outputs(ctx) -> list[str]:
  # A bucket workdir's datasets are built on each host's disk (build_dir), not under the workdir.
  local = [] if artifacts.is_remote(ctx.workdir) else ["data/tfds"]
  return local + ["data/splits.json", "data/tokenizer.json"]


def run(ctx) -> None:
  c = ctx.config
  if c.tune.lrs and not c.data.dev_images:
    raise ConfigError(f"config.tune.lrs={tuple(c.tune.lrs)} chooses hyper-parameters on dev "
                      f"images: set config.data.dev_images (e.g. 100) or config.tune.lrs=()")
  # Built datasets depend on the data config only: a run reusing another's base reuses its builds.
  data_dir = build_dir(c.base.workdir or ctx.workdir)
  dataset = datasets.name_of(c.data)
  # The demo base is pre-trained on the general domain; a real base (model.path) is imported.
  pretrain = "base" in c.stages and not (c.model.path or c.base.workdir)

  def build():
    target = datasets.build(dataset, data_dir, c.data, seed=DATA_SEED)
    general = datasets.build(c.base.domain, data_dir, c.data, seed=DATA_SEED, num_train=c.base.num_images,
                             num_test=c.base.eval_images) if pretrain else ""
    return target, general

  # Several processes: two builders renaming into one shared folder would collide.
  target, general = processes.process_0_first(build, "prepare: datasets built")
  train_ids = datasets.load_source(target, "train").ids()
  test_ids = datasets.load_source(target, "test").ids()
  rng = np.random.default_rng(c.seed)
  n_lab = max(1, int(round(c.data.label_fraction * len(train_ids))))
  n_dev = int(c.data.dev_images)
  n_rest = len(train_ids) - n_lab
  if not 0 <= n_dev <= n_rest:
    raise ConfigError(f"config.data.dev_images={n_dev}: must be in [0, {n_rest}] (the "
                      f"{len(train_ids)} train images less the {n_lab} labelled ones)")
  # One seeded order: labelled images from its front, dev images from its back, so the labelled
  # set does not depend on dev_images and the dev set not on label_fraction.
  order = rng.permutation(len(train_ids))
  n_pool = len(train_ids) - n_dev
  artifacts.write_json(ctx.path("data", "splits.json"), {
      "dataset": dataset, "source": c.data.source, "target_dir": target, "general_dir": general,
      "label_fraction": c.data.label_fraction, "seed": c.seed,
      "labeled": sorted(train_ids[i] for i in order[:n_lab]),
      "dev": sorted(train_ids[i] for i in order[n_pool:]),
      "unlabeled": sorted(train_ids[i] for i in order[n_lab:n_pool]), "test": test_ids})
  write_tokenizer(ctx)


def build_dir(workdir: str) -> str:
  """Where the datasets are built: <workdir>/data/tfds; for a bucket workdir a local folder per
  host (LEAML_BUILD_CACHE, default ~/.cache/leaml_jax/tfds/<bucket path>): the builds are
  deterministic inputs, and the array_record reader needs local files."""
  if not artifacts.is_remote(workdir):
    return os.path.join(workdir, "data", "tfds")
  cache = os.path.expanduser(os.environ.get("LEAML_BUILD_CACHE", "~/.cache/leaml_jax/tfds"))
  return os.path.join(cache, workdir.replace("://", "/"))


def write_tokenizer(ctx) -> None:
  """data/tokenizer.json for the tiny model (config.model.path empty): a BPE trained on the text
  this run may learn from: the dataset's tokenizer corpus (datasets.tokenizer_corpus: the labelled
  QA as the model is trained on them, never unlabelled or test answers) and the teacher captions
  file. With config.model.path set nothing is written: the checkpoint brings its own tokenizer."""
  c = ctx.config
  path = ctx.path("data", "tokenizer.json")
  if c.model.path:
    return
  if c.base.workdir:  # the base's vocabulary is the base's tokenizer
    source = os.path.join(c.base.workdir, "data", "tokenizer.json")
    artifacts.atomic_write(path, lambda f: f.write(epath.Path(source).read_text()))
    return
  texts = datasets.tokenizer_corpus(datasets.name_of(c.data), artifacts.examples(ctx, "labeled"),
                                    mc_answer=c.data.mc_answer)
  if c.captions.path and artifacts.exists(c.captions.path):
    texts += [str(r.get("caption", "")) for r in artifacts.read_jsonl(c.captions.path)
              if isinstance(r, dict)]
  # Trained and written by process 0 only (the other processes load the file).
  artifacts.atomic_write(path, lambda f: f.write(
      tok_lib.train_tokenizer(texts, vocab_size=c.data.vocab_size).tok.to_str(pretty=True)))
