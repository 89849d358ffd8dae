"""Stage `prepare`: datasets, tokenizer, labelled split by image.

Artifacts: data/tfds/ (ArrayRecord), data/tokenizer.json, data/splits.json.
"""
from __future__ import annotations

import os

import numpy as np

from leaml_jax.config_lib import ConfigError
from leaml_jax.data import builders, tokenizer as tok_lib
from leaml_jax.stages import common

DATA_SEED = 0  # the benchmark itself is fixed; config.seed draws labels and trains models


def run(ctx) -> None:
  c = ctx.config
  if c.data.source != "synthetic":
    raise ConfigError(f"config.data.source={c.data.source!r}: real datasets are not wired into "
                      f"this version yet; use configs/demo.py (synthetic)")
  data_dir = ctx.path("data", "tfds")
  build = lambda domain, n, n_test: builders.build(
      domain, data_dir, num_train=n, num_test=n_test, seed=DATA_SEED,
      caption_error_rate=c.data.caption_error_rate, image_size=c.data.image_size)
  target = build(c.data.domain, c.data.num_train, c.data.num_test)
  general = build(c.base.domain, c.base.num_images, 100) if "base" in c.stages else ""
  tok_lib.synthetic_tokenizer(ctx.path("data", "tokenizer.json"), vocab_size=c.data.vocab_size)

  train_ids = builders.load_source(target, "train").ids()
  test_ids = builders.load_source(target, "test").ids()
  rng = np.random.default_rng(c.seed)
  n_lab = max(1, int(round(c.data.label_fraction * len(train_ids))))
  order = rng.permutation(len(train_ids))
  labeled = sorted(train_ids[i] for i in order[:n_lab])
  unlabeled = sorted(train_ids[i] for i in order[n_lab:])
  common.write_json(ctx.path("data", "splits.json"), {
      "dataset": c.data.domain, "target_dir": target, "general_dir": general,
      "label_fraction": c.data.label_fraction, "seed": c.seed,
      "labeled": labeled, "unlabeled": unlabeled, "test": test_ids})


def _all(source) -> list[dict]:
  return [source[i] for i in range(len(source))]


def splits(ctx) -> dict:
  path = ctx.path("data", "splits.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} missing: run the `prepare` stage first")
  return common.read_json(path)


def examples(ctx, which: str) -> list[dict]:
  """Decoded examples of one pool: labeled | unlabeled | test | general."""
  s = splits(ctx)
  if which == "general":
    return _all(builders.load_source(s["general_dir"], "train"))
  split = "test" if which == "test" else "train"
  wanted = set(s[which])
  cached = getattr(ctx, "_examples_cache", {})
  key = split
  if key not in cached:
    cached[key] = _all(builders.load_source(s["target_dir"], split))
    ctx._examples_cache = cached
  return [ex for ex in cached[key] if ex["id"] in wanted]
