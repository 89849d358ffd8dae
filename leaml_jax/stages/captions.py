"""Stage `captions`: teacher captions for the unlabelled images -> data/captions.jsonl."""
from __future__ import annotations

import logging
import os

from leaml_jax.config_lib import ConfigError
from leaml_jax.data import datasets
from leaml_jax.errors import CheckpointError
from leaml_jax.metrics import progress
from leaml_jax.stages import common, prepare


def run(ctx) -> None:
  """Teacher captions for the unlabelled images -> data/captions.jsonl.

  Sources: a user file (config.captions.path, JSONL {"image_id", "caption"}), a teacher VLM
  (config.captions.teacher_path: a HF checkpoint directory of any family `hf.load` reads), or
  the synthetic teacher that rendered each image (its captions are imperfect on purpose).
  """
  c = ctx.config.captions
  pool = prepare.examples(ctx, "unlabeled")
  if c.path and c.teacher_path:
    raise ConfigError("config.captions.path and config.captions.teacher_path are both set; keep one")
  if c.path:
    rows = _read_caption_file(c.path, {ex["id"] for ex in pool})
  elif c.teacher_path:
    rows = teacher_captions(ctx, pool)
  elif datasets.ships_captions(datasets.name_of(ctx.config.data)):
    rows = [{"image_id": ex["id"], "caption": ex["caption"]} for ex in pool]
  else:
    raise ConfigError(f"{datasets.name_of(ctx.config.data)} has no teacher captions: set "
                      "config.captions.path (JSONL of {\"image_id\", \"caption\"}) or "
                      "config.captions.teacher_path (a local HF checkpoint of a teacher VLM)")
  common.write_jsonl(ctx.path("data", "captions.jsonl"), rows)


def teacher_captions(ctx, pool: list[dict]) -> list[dict]:
  """Greedy captions of every image in `pool` by the teacher checkpoint, with its family's caption
  prompt, in fixed-shape batches (the last one padded) through the jitted generation engine."""
  from leaml_jax import generate
  from leaml_jax.data import encoders, prompts
  from leaml_jax.models import hf
  c = ctx.config.captions
  model, params, processor = hf.load(c.teacher_path, mesh=ctx.mesh, **ctx.model_options())
  if processor is None:
    raise CheckpointError(f"config.captions.teacher_path={c.teacher_path}: no tokenizer / processor files "
                          "next to config.json; the teacher needs them to read images and write text")
  enc = encoders.HFEncoder(processor, text_len=_PROMPT_ROOM)
  tok, prompt = enc.tokenizer, prompts.caption_prompt(enc.family)
  rows, empty = [], 0
  for start in progress(range(0, len(pool), c.batch_size), desc="teacher captions", leave=False):
    chunk = pool[start:start + c.batch_size]
    padded = chunk + [chunk[-1]] * (c.batch_size - len(chunk))
    batch = encoders.prompt_batch([{"image": ex["image"], "prompt": prompt, "id": ex["id"]} for ex in padded],
                                  enc)
    tokens = generate.generate(model, params, batch, max_new_tokens=c.max_new_tokens, eos_id=tok.eos_id,
                               pad_id=tok.pad_id)
    for ex, t in zip(chunk, tokens):
      caption = tok.decode(list(t)).strip()
      if caption:
        rows.append({"image_id": ex["id"], "caption": caption})
      else:
        empty += 1
  if empty:
    logging.warning("teacher %s wrote empty captions for %d of %d images; they get none", c.teacher_path,
                    empty, len(pool))
  if not rows:
    raise CheckpointError(f"teacher {c.teacher_path} wrote no caption for any of {len(pool)} images (eos "
                          "first every time); is it a captioning checkpoint with its own processor?")
  return rows


_PROMPT_ROOM = 8192  # prompt arrays' width; generation drops the all-padding columns


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
