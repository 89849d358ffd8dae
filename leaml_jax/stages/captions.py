"""Stage `captions`: teacher captions for the unlabelled images -> data/captions.jsonl."""
from __future__ import annotations

import os

from leaml_jax.config_lib import ConfigError
from leaml_jax.stages import common, prepare


def run(ctx) -> None:
  """Teacher captions for the unlabelled images -> data/captions.jsonl.

  Sources: a user file (config.captions.path, JSONL {"image_id", "caption"}), or the
  synthetic teacher that rendered each image (its captions are imperfect on purpose).
  """
  c = ctx.config.captions
  pool = prepare.examples(ctx, "unlabeled")
  if c.path:
    rows = _read_caption_file(c.path, {ex["id"] for ex in pool})
  elif c.teacher_path:
    raise ConfigError("config.captions.teacher_path: running a teacher VLM from a HF checkpoint "
                      "is not wired into this version; provide config.captions.path (JSONL)")
  else:
    rows = [{"image_id": ex["id"], "caption": ex["caption"]} for ex in pool]
  common.write_jsonl(ctx.path("data", "captions.jsonl"), rows)


def _read_caption_file(path: str, ids: set) -> list[dict]:
  if not os.path.exists(path):
    raise FileNotFoundError(f"captions file {path} not found (config.captions.path); expected "
                            f"JSONL lines {{\"image_id\": ..., \"caption\": ...}}")
  rows, bad = [], 0
  for i, row in enumerate(common.read_jsonl(path)):
    if not isinstance(row, dict) or not str(row.get("caption", "")).strip() or "image_id" not in row:
      bad += 1
      continue
    if row["image_id"] in ids:
      rows.append({"image_id": row["image_id"], "caption": str(row["caption"])})
  if not rows:
    raise FileNotFoundError(f"captions file {path} has no caption for any unlabelled image "
                            f"({bad} malformed lines)")
  return rows


def captions(ctx) -> dict:
  path = ctx.path("data", "captions.jsonl")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} missing: run the `captions` stage first")
  return {r["image_id"]: r["caption"] for r in common.read_jsonl(path)}
