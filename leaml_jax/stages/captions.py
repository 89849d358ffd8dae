"""Stage `captions`: teacher captions for the unlabelled images -> data/captions.jsonl.

Sources: a user file (config.captions.path, JSONL {"image_id", "caption"}), a teacher VLM
(config.captions.teacher_path: a HF checkpoint directory of any family `hf.load` reads), or the
dataset's own teacher captions (the synthetic worlds ship imperfect ones on purpose).
"""
from __future__ import annotations

import logging

from leaml_jax import generate
from leaml_jax.data import datasets
from leaml_jax.errors import ConfigError
from leaml_jax.errors import CheckpointError
from leaml_jax.stages import artifacts

_PROMPT_ROOM = 8192  # the teacher's prompt arrays' width; generation drops all-padding columns


def outputs(ctx) -> list[str]:
  return ["data/captions.jsonl"]


def run(ctx) -> None:
  c = ctx.config.captions
  pool = artifacts.examples(ctx, "unlabeled")
  if c.path and c.teacher_path:
    raise ConfigError("config.captions.path and config.captions.teacher_path are both set; keep one")
  if c.path:
    rows = read_caption_file(c.path, {ex["id"] for ex in pool})
  elif c.teacher_path:
    rows = teacher_captions(ctx, pool)
  elif datasets.ships_captions(datasets.name_of(ctx.config.data)):
    rows = [{"image_id": ex["id"], "caption": ex["caption"]} for ex in pool]
  else:
    raise ConfigError(f"{datasets.name_of(ctx.config.data)} has no teacher captions: set "
                      "config.captions.path (JSONL of {\"image_id\", \"caption\"}) or "
                      "config.captions.teacher_path (a local HF checkpoint of a teacher VLM)")
  artifacts.write_jsonl(ctx.path("data", "captions.jsonl"), rows)


def teacher_captions(ctx, pool: list[dict]) -> list[dict]:
  """Greedy captions of every image in `pool` by the teacher checkpoint, with its family's caption
  prompt, through the jitted generation engine."""
  from leaml_jax.data import encoders, prompts
  from leaml_jax.models import hf
  c = ctx.config.captions
  model, params, processor = hf.load(c.teacher_path, mesh=ctx.mesh, **ctx.model_options())
  if processor is None:
    raise CheckpointError(f"config.captions.teacher_path={c.teacher_path}: no tokenizer / processor files "
                          "next to config.json; the teacher needs them to read images and write text")
  encoder = encoders.HFEncoder(processor, text_len=_PROMPT_ROOM, image_size=ctx.config.data.image_size)
  prompt = prompts.caption_prompt(encoder.family)
  records = [{"image": ex["image"], "prompt": prompt, "id": ex["id"]} for ex in pool]
  texts, _ = generate.generate_texts(model, params, records, encoder=encoder, batch_size=c.batch_size,
                                     max_new_tokens=c.max_new_tokens, desc="teacher captions")
  rows = [{"image_id": ex["id"], "caption": t.strip()} for ex, t in zip(pool, texts) if t.strip()]
  if len(rows) < len(pool):
    logging.warning("teacher %s wrote empty captions for %d of %d images; they get none", c.teacher_path,
                    len(pool) - len(rows), len(pool))
  if not rows:
    raise CheckpointError(f"teacher {c.teacher_path} wrote no caption for any of {len(pool)} images (eos "
                          "first every time); is it a captioning checkpoint with its own processor?")
  return rows


def read_caption_file(path: str, ids: set) -> list[dict]:
  if not artifacts.exists(path):
    raise FileNotFoundError(f"captions file {path} not found (config.captions.path); expected "
                            f"JSONL lines {{\"image_id\": ..., \"caption\": ...}}")
  rows, bad = [], 0
  for row in artifacts.read_jsonl(path):
    if not isinstance(row, dict) or not str(row.get("caption", "")).strip() or "image_id" not in row:
      bad += 1
      continue
    if row["image_id"] in ids:
      rows.append({"image_id": row["image_id"], "caption": str(row["caption"])})
  if not rows:
    raise FileNotFoundError(f"captions file {path} has no caption for any unlabelled image "
                            f"({bad} malformed lines)")
  return rows
