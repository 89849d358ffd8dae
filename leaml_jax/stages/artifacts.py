"""The artifacts stages hand each other under the workdir, read and written atomically.

  data/splits.json         prepare     labelled / unlabelled / test image ids, dataset dirs
  data/captions.jsonl      captions    {"image_id", "caption"} per unlabelled image
  <variant>pseudo_qa.jsonl pseudo_qa   {"image_id", "question", "answer", "options", "type", "confidence"}
  <stage>/params           training stages (orbax, via Context.save_params / load_params)

Only process 0 writes; every write goes to a temporary file first and is renamed into place, so
a killed run never leaves a half-written artifact that a rerun would take as complete.
"""
from __future__ import annotations

import json
import os
import tempfile

import jax
import numpy as np

from leaml_jax.data import datasets, frames, prompts, records as records_lib
from leaml_jax.defaults import ALL_STAGES
from leaml_jax.errors import CheckpointError


# ----------------------------------------------------------------------------- atomic files
def atomic_write(path: str, write_fn, mode: str = "w") -> None:
  """write_fn(file) into a temporary file beside `path`, then rename it over `path`."""
  if jax.process_index() != 0:
    return
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_")
  try:
    with os.fdopen(fd, mode) as f:
      write_fn(f)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(path: str, obj) -> None:
  atomic_write(path, lambda f: json.dump(obj, f, indent=1))


def read_json(path: str):
  with open(path) as f:
    return json.load(f)


def write_jsonl(path: str, rows) -> None:
  atomic_write(path, lambda f: f.writelines(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def write_npz(path: str, arrays: dict) -> None:
  atomic_write(path, lambda f: np.savez(f, **arrays), mode="wb")


def read_npz(path: str, stage: str) -> dict:
  return _require(path, stage, lambda p: dict(np.load(p)))


def _require(path: str, stage: str, read):
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} missing: run the `{stage}` stage first")
  return read(path)


# ----------------------------------------------------------------------------- splits, examples
def splits(ctx) -> dict:
  return _require(ctx.path("data", "splits.json"), "prepare", read_json)


def model_view(ex: dict, data_cfg) -> dict:
  """A stored example in the run's one image layout (datasets.frames_per_example), so stills and
  clips (a strip of facts["num_frames"] frames) batch together:
    1 image   a still as stored, a clip tiled into one [S, S, 3] image (S = config.data.image_size)
    N blocks  [N, S, S, 3]: a clip's frames (sampled to N when it has another count), a still
              repeated N times (a clip in which nothing moves)."""
  facts = ex.get("facts")
  stored = int(facts.get("num_frames", 1)) if isinstance(facts, dict) else 1
  run = datasets.frames_per_example(data_cfg)
  if run == 1:
    if stored == 1:
      return ex
    return {**ex, "image": frames.arrange(ex["image"], stored, "tile", data_cfg.image_size)}
  clip = frames.from_strip(ex["image"], stored)[frames.sample_indices(stored, run)]
  return {**ex, "image": np.stack([frames.resize(f, data_cfg.image_size) for f in clip])}


def examples(ctx, pool: str) -> list[dict]:
  """Decoded examples of one pool: labeled | unlabeled | test | general (the base's world).
  The target dataset's splits are decoded once per run context."""
  s = splits(ctx)
  if pool == "general":
    source = datasets.load_source(s["general_dir"], "train")
    return [source[i] for i in range(len(source))]
  split = "test" if pool == "test" else "train"
  cache = ctx.cache.setdefault("examples", {})
  if split not in cache:
    source = datasets.load_source(s["target_dir"], split)
    cache[split] = [model_view(source[i], ctx.config.data) for i in range(len(source))]
  wanted = set(s[pool])
  return [ex for ex in cache[split] if ex["id"] in wanted]


def captions(ctx) -> dict[str, str]:
  rows = _require(ctx.path("data", "captions.jsonl"), "captions", read_jsonl)
  return {r["image_id"]: r["caption"] for r in rows}


def vqa_records(ctx, pool: str) -> list[dict]:
  """VQA records of a pool; multiple choice answered by option text or letter (data.mc_answer)."""
  return records_lib.vqa_records(examples(ctx, pool), mc_answer=ctx.config.data.mc_answer)


def pseudo_vqa_records(ctx, variant) -> list[dict]:
  """The variant's pseudo QA as VQA records on the unlabelled images."""
  rows = _require(ctx.path(variant.directory, "pseudo_qa.jsonl"), "pseudo_qa", read_jsonl)
  images = {ex["id"]: ex["image"] for ex in examples(ctx, "unlabeled")}
  as_text = ctx.config.data.mc_answer == "text"
  return [{"image": images[r["image_id"]], "prompt": prompts.vqa_prompt(r["question"], r["options"]),
           "target": r["options"][r["answer"]] if r["options"] and as_text else r["answer"],
           "id": r["image_id"]} for r in rows]


def params_missing(path: str, name: str) -> CheckpointError:
  stage = next((p for p in reversed(name.split("/")) if p in ALL_STAGES), name)
  return CheckpointError(f"parameters {path} missing: run the `{stage}` stage first "
                         f"(or redo it with --config.force={stage})")
