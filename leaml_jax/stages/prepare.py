"""Stage `prepare`: datasets, tokenizer, labelled split by image.

Artifacts: data/tfds/ (ArrayRecord), data/tokenizer.json, data/splits.json.

config.data.source picks the target dataset: `synthetic` (the domain config.data.domain,
generated here) or a real dataset built from the files under config.data.path
(`kvasir_vqa`, `sportu_video`: leaml_jax/data/datasets). Its train images are split into a
labelled subset (config.data.label_fraction, seeded by config.seed) and the unlabelled pool;
its test split is fixed by the dataset build. All three are lists of image ids.
"""
from __future__ import annotations

import os

import numpy as np

from leaml_jax.data import datasets, frames, tokenizer as tok_lib
from leaml_jax.stages import common

DATA_SEED = 0  # the benchmark itself is fixed; config.seed draws labels and trains models


def run(ctx) -> None:
  c = ctx.config
  data_dir = ctx.path("data", "tfds")
  dataset = datasets.name_of(c.data)
  target = datasets.build(dataset, data_dir, c.data, seed=DATA_SEED)
  # The demo base is pre-trained on the general domain; a real base (model.path) is imported.
  general = datasets.build(c.base.domain, data_dir, c.data, seed=DATA_SEED,
                           num_train=c.base.num_images, num_test=100) if (
      "base" in c.stages and not c.model.path) else ""

  train_ids = datasets.load_source(target, "train").ids()
  test_ids = datasets.load_source(target, "test").ids()
  rng = np.random.default_rng(c.seed)
  n_lab = max(1, int(round(c.data.label_fraction * len(train_ids))))
  order = rng.permutation(len(train_ids))
  labeled = sorted(train_ids[i] for i in order[:n_lab])
  unlabeled = sorted(train_ids[i] for i in order[n_lab:])
  common.write_json(ctx.path("data", "splits.json"), {
      "dataset": dataset, "source": c.data.source, "target_dir": target, "general_dir": general,
      "label_fraction": c.data.label_fraction, "seed": c.seed,
      "labeled": labeled, "unlabeled": unlabeled, "test": test_ids})
  write_tokenizer(ctx)


def write_tokenizer(ctx) -> None:
  """data/tokenizer.json for the tiny model (config.model.path empty): a BPE trained on the
  dataset's tokenizer corpus (datasets.tokenizer_corpus) and the teacher captions file.
  With config.model.path set nothing is written: the checkpoint brings its own tokenizer
  (models.hf; Context.tokenizer is the hook that must read it from there)."""
  c = ctx.config
  path = ctx.path("data", "tokenizer.json")
  if c.model.path:
    return
  texts = datasets.tokenizer_corpus(datasets.name_of(c.data), examples(ctx, "labeled"),
                                    mc_answer=c.data.mc_answer)
  if c.captions.path and os.path.exists(c.captions.path):
    texts += [str(r.get("caption", "")) for r in common.read_jsonl(c.captions.path)
              if isinstance(r, dict)]
  tok_lib.train_tokenizer(texts, path, vocab_size=c.data.vocab_size)


def _all(source) -> list[dict]:
  return [source[i] for i in range(len(source))]


def splits(ctx) -> dict:
  path = ctx.path("data", "splits.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} missing: run the `prepare` stage first")
  return common.read_json(path)


def model_view(ex: dict, data_cfg) -> dict:
  """A real dataset's example as the model sees it: a clip's stored frame strip becomes one
  tiled image or [N, H, W, 3] blocks (config.data.frames), at config.data.image_size."""
  facts = ex.get("facts")
  if not isinstance(facts, dict) or "num_frames" not in facts:
    return ex  # synthetic: already the model's image
  image = frames.arrange(ex["image"], int(facts["num_frames"]), data_cfg.frames,
                         data_cfg.image_size)
  return {**ex, "image": image}


def examples(ctx, which: str) -> list[dict]:
  """Decoded examples of one pool: labeled | unlabeled | test | general."""
  s = splits(ctx)
  if which == "general":
    return _all(datasets.load_source(s["general_dir"], "train"))
  split = "test" if which == "test" else "train"
  wanted = set(s[which])
  cached = getattr(ctx, "_examples_cache", {})
  if split not in cached:
    cached[split] = [model_view(ex, ctx.config.data)
                     for ex in _all(datasets.load_source(s["target_dir"], split))]
    ctx._examples_cache = cached
  return [ex for ex in cached[split] if ex["id"] in wanted]
