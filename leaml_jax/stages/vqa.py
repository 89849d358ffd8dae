"""Stage `vqa`: fine-tune the base on labelled + pseudo QA, for LEAML and each configured
ablation -> <variant>/vqa/. Each batch draws config.vqa.pseudo_weight of its rows from pseudo QA."""
from __future__ import annotations

import os

from leaml_jax.data import pipeline
from leaml_jax.stages import artifacts, context


def outputs(ctx) -> list[str]:
  return [os.path.join(v.directory, "vqa") for v in context.variants(ctx.config)]


def run(ctx) -> None:
  for variant in context.variants(ctx.config):
    name = os.path.join(variant.directory, "vqa")
    if not ctx.has_params(name):
      train_vqa(ctx, variant, name)


def train_vqa(ctx, variant: context.Variant, name: str) -> None:
  v = ctx.config.vqa
  labeled = ctx.dataset(artifacts.vqa_records(ctx, "labeled"), None, name + "/labeled")
  pseudo = artifacts.pseudo_vqa_records(ctx, variant)
  if pseudo and v.pseudo_weight > 0:
    ds = pipeline.mix([labeled, ctx.dataset(pseudo, None, name + "/pseudo")],
                      [1.0 - v.pseudo_weight, v.pseudo_weight], batch_size=v.batch_size)
  else:
    ds = pipeline.batch(labeled, v.batch_size)
  ctx.finetune(name, params=ctx.load_params("base"), tcfg=v, data_iter=iter(ds))
