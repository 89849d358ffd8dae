"""Stage `relevance`: QA relevance of every MLP neuron of the base model on the labelled QA, and
the selected mask -> relevance/{scores.npz, mask.npz, stats.json}."""
from __future__ import annotations

import jax

from leaml_jax import neurons
from leaml_jax.data import pipeline, records as records_lib
from leaml_jax.metrics import progress
from leaml_jax.stages import artifacts


def outputs(ctx) -> list[str]:
  return ["relevance"]


def run(ctx) -> None:
  c = ctx.config.neurons
  params = ctx.load_params("base")
  records = records_lib.qa_gen_records(artifacts.examples(ctx, "labeled"))
  n = jax.process_count()  # full global batches only: every process feeds an equal share
  bs = max(min(c.batch_size, len(records)) // n * n, n)
  ds = pipeline.make_dataset(records, ctx.encoder, batch_size=bs, shuffle=False, num_epochs=None,
                             seed=0)
  batches = [b for _, b in zip(range(min(c.max_batches, max(len(records) // bs, 1))), ds)]
  scores = neurons.relevance(ctx.model, params, progress(batches, desc="relevance", leave=False),
                             score=c.score, mesh=ctx.mesh)
  masks, _ = neurons.select(scores, c.fraction, per_layer=c.per_layer, towers=tuple(c.towers))
  artifacts.write_npz(ctx.path("relevance", "scores.npz"), scores)
  artifacts.write_npz(ctx.path("relevance", "mask.npz"), masks)
  artifacts.write_json(ctx.path("relevance", "stats.json"),
                       {"score": c.score, "batches": len(batches), **neurons.stats(scores, masks)})
