"""Stage `vqa`: fine-tune the base on labelled + pseudo QA, for LEAML and each configured
ablation -> <variant>/vqa/ (params, tuning.json). Each batch draws config.vqa.pseudo_weight of its
rows from pseudo QA; lr and steps as every trained method gets them (Context.train_method)."""
from __future__ import annotations


from leaml_jax.data import pipeline
from leaml_jax.stages import artifacts, context


def outputs(ctx) -> list[str]:
  return context.variant_outputs(ctx.config, "vqa")


def run(ctx) -> None:
  context.train_variants(ctx, "vqa", train_vqa)


def train_vqa(ctx, variant: context.Variant, name: str) -> None:
  v = ctx.config.vqa
  labeled = artifacts.vqa_records(ctx, "labeled")
  pseudo = artifacts.pseudo_vqa_records(ctx, variant)

  def new_data():
    labeled_ds = ctx.dataset(labeled, None, name + "/labeled")
    if pseudo and v.pseudo_weight > 0:
      return iter(pipeline.mix([labeled_ds, ctx.dataset(pseudo, None, name + "/pseudo")],
                               [1.0 - v.pseudo_weight, v.pseudo_weight], batch_size=v.batch_size))
    return iter(pipeline.batch(labeled_ds, v.batch_size))

  ctx.train_method(name, tcfg=v, new_params=lambda: ctx.load_params("base"), new_data=new_data)
