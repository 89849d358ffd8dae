"""The artifacts stages hand each other under the workdir, read and written atomically.

  data/splits.json         prepare     labelled / dev / unlabelled / test image ids, dataset dirs
  data/captions.jsonl      captions    {"image_id", "caption"} per unlabelled image
  <variant>pseudo_qa.jsonl pseudo_qa   {"image_id", "question", "answer", "options", "type", "confidence"}
  <stage>/params           training stages (orbax, via Context.save_params / load_params)

Paths are local or remote (gs://...; etils.epath, gcsfs underneath). Every process calls the
writers; only process 0 writes, and every process returns once the file is complete, so any
process may read it next.
Locally every write goes to a temporary file first and is renamed into place; on a bucket the
object is uploaded whole and appears only once complete (objects are write-once). Either way a
killed run never leaves a half-written artifact that a rerun would take as complete.
"""
from __future__ import annotations

import io
import json
import os
import tempfile

import jax
import numpy as np
from etils import epath

from leaml_jax import processes
from leaml_jax.data import datasets, frames, prompts, records as records_lib
from leaml_jax.defaults import ALL_STAGES
from leaml_jax.errors import CheckpointError


# ----------------------------------------------------------------------------- atomic files
def atomic_write(path: str, write_fn, mode: str = "w") -> None:
  """write_fn(file) into a temporary file beside `path`, then rename it over `path` (process 0;
  the others wait until it is there)."""
  if jax.process_index() == 0:
    _write(path, write_fn, mode)
  processes.sync(f"wrote {path}")


def _write(path: str, write_fn, mode: str) -> None:
  if is_remote(path):
    buffer = io.BytesIO() if "b" in mode else io.StringIO()
    write_fn(buffer)
    target = epath.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    (target.write_bytes if "b" in mode else target.write_text)(buffer.getvalue())
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


def is_remote(path) -> bool:
  return "://" in str(path)


def exists(path) -> bool:
  return epath.Path(path).exists()


def write_json(path: str, obj) -> None:
  atomic_write(path, lambda f: json.dump(obj, f, indent=1))


def read_json(path: str):
  return json.loads(epath.Path(path).read_text())


def write_jsonl(path: str, rows) -> None:
  atomic_write(path, lambda f: f.writelines(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path: str) -> list[dict]:
  return [json.loads(line) for line in epath.Path(path).read_text().splitlines() if line.strip()]


def write_npz(path: str, arrays: dict) -> None:
  atomic_write(path, lambda f: np.savez(f, **arrays), mode="wb")


def read_npz(path: str, stage: str) -> dict:
  return _require(path, stage, lambda p: dict(np.load(io.BytesIO(epath.Path(p).read_bytes()))))


def _require(path: str, stage: str, read):
  if not exists(path):
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
  """Decoded examples of one pool: labeled | dev | unlabeled | test | general (the base's world).
  The target dataset's splits are decoded once per run context."""
  s = splits(ctx)
  if pool not in s and pool != "general":
    raise FileNotFoundError(f"{ctx.path('data', 'splits.json')} has no {pool!r} pool: it was "
                            f"written by an older version; redo it with --config.force=prepare")
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
