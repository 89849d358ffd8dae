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

from leaml_jax.data import builders, pipeline, prompts, real, tokenizer as tok_lib
from leaml_jax.stages import artifacts

DATA_SEED = 0  # the benchmark itself is fixed; config.seed draws labels and trains models


def outputs(ctx) -> list[str]:
  return ["data/tfds", "data/splits.json", "data/tokenizer.json"]


def run(ctx) -> None:
  c = ctx.config
  data_dir = ctx.path("data", "tfds")
  build = lambda domain, n, n_test: builders.build(
      domain, data_dir, num_train=n, num_test=n_test, seed=DATA_SEED,
      caption_error_rate=c.data.caption_error_rate, image_size=c.data.image_size)
  if c.data.source == "synthetic":
    dataset, target = c.data.domain, build(c.data.domain, c.data.num_train, c.data.num_test)
  else:
    dataset = c.data.source
    target = real.build(c.data.source, c.data.path, data_dir, image_size=c.data.image_size,
                        num_frames=c.data.num_frames, test_fraction=c.data.test_fraction,
                        seed=DATA_SEED)
  # The demo base is pre-trained on the general domain; a real base (model.path) is imported.
  general = build(c.base.domain, c.base.num_images, 100) if (
      "base" in c.stages and not c.model.path) else ""

  train_ids = builders.load_source(target, "train").ids()
  test_ids = builders.load_source(target, "test").ids()
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
  """data/tokenizer.json for the tiny model (config.model.path empty).

  Synthetic: the demo tokenizer of the three synthetic worlds. Real datasets: a BPE trained on
  the text this run may learn from: the labelled QA (as the exact prompts/targets the model is
  trained on) and the teacher captions file, never unlabelled or test answers. With
  config.model.path set nothing is written: the checkpoint brings its own tokenizer."""
  c = ctx.config
  path = ctx.path("data", "tokenizer.json")
  if c.model.path:
    return
  if c.data.source == "synthetic":
    tok_lib.synthetic_tokenizer(path, vocab_size=c.data.vocab_size)
    return
  exs = artifacts.examples(ctx, "labeled")
  texts = [prompts.caption_prompt(), prompts.qa_gen_prompt()]
  for r in pipeline.vqa_records(exs, mc_target=c.data.mc_answer) + pipeline.qa_gen_records(exs):
    texts += [r["prompt"], r["target"]]
  if c.captions.path and os.path.exists(c.captions.path):
    texts += [str(r.get("caption", "")) for r in artifacts.read_jsonl(c.captions.path)
              if isinstance(r, dict)]
  tok_lib.train_tokenizer(texts, path, vocab_size=c.data.vocab_size)
