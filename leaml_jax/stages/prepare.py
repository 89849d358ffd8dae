"""Stage `prepare`: datasets, tokenizer, labelled split by image -> data/.

config.data.source picks the target dataset: `synthetic` (the domain config.data.domain,
generated here) or a real dataset built from the files under config.data.path (the dataset
registry knows each one). Its train images are split into a labelled subset
(config.data.label_fraction, seeded by config.seed) and the unlabelled pool; its test split is
fixed by the dataset build. All three are lists of image ids in data/splits.json.
"""
from __future__ import annotations

import os

import numpy as np

from leaml_jax.data import datasets, tokenizer as tok_lib
from leaml_jax.stages import artifacts

DATA_SEED = 0  # the benchmark itself is fixed; config.seed draws labels and trains models


def outputs(ctx) -> list[str]:
  return ["data/tfds", "data/splits.json", "data/tokenizer.json"]


def run(ctx) -> None:
  c = ctx.config
  data_dir = ctx.path("data", "tfds")
  dataset = datasets.name_of(c.data)
  target = datasets.build(dataset, data_dir, c.data, seed=DATA_SEED)
  # The demo base is pre-trained on the general domain; a real base (model.path) is imported.
  general = datasets.build(c.base.domain, data_dir, c.data, seed=DATA_SEED, num_train=c.base.num_images,
                           num_test=c.base.eval_images) if "base" in c.stages and not c.model.path else ""
  train_ids = datasets.load_source(target, "train").ids()
  test_ids = datasets.load_source(target, "test").ids()
  rng = np.random.default_rng(c.seed)
  n_lab = max(1, int(round(c.data.label_fraction * len(train_ids))))
  order = rng.permutation(len(train_ids))
  artifacts.write_json(ctx.path("data", "splits.json"), {
      "dataset": dataset, "source": c.data.source, "target_dir": target, "general_dir": general,
      "label_fraction": c.data.label_fraction, "seed": c.seed,
      "labeled": sorted(train_ids[i] for i in order[:n_lab]),
      "unlabeled": sorted(train_ids[i] for i in order[n_lab:]), "test": test_ids})
  write_tokenizer(ctx)


def write_tokenizer(ctx) -> None:
  """data/tokenizer.json for the tiny model (config.model.path empty): a BPE trained on the text
  this run may learn from: the dataset's tokenizer corpus (datasets.tokenizer_corpus: the labelled
  QA as the model is trained on them, never unlabelled or test answers) and the teacher captions
  file. With config.model.path set nothing is written: the checkpoint brings its own tokenizer."""
  c = ctx.config
  path = ctx.path("data", "tokenizer.json")
  if c.model.path:
    return
  texts = datasets.tokenizer_corpus(datasets.name_of(c.data), artifacts.examples(ctx, "labeled"),
                                    mc_answer=c.data.mc_answer)
  if c.captions.path and os.path.exists(c.captions.path):
    texts += [str(r.get("caption", "")) for r in artifacts.read_jsonl(c.captions.path)
              if isinstance(r, dict)]
  tok_lib.train_tokenizer(texts, path, vocab_size=c.data.vocab_size)
