"""Stage `qa_generator`: LEAML's QA generator, and each configured ablation's -> <variant>/qa_generator/.

QA loss on the labelled (image -> question + answer) triples + distill_weight · caption
distillation on the unlabelled images' teacher captions. With the relevance mask (the paper's
default) the distillation gradient reaches only the QA-relevant neurons (neurons.mask_gradients,
bit-exact); with neurons.applies_to=all the mask is the optimizer's last link instead.
"""
from __future__ import annotations

import functools
import os

import numpy as np

from leaml_jax import losses, neurons, train
from leaml_jax.data import records as records_lib
from leaml_jax.stages import artifacts, context


def outputs(ctx) -> list[str]:
  return context.variant_outputs(ctx.config, "qa_generator")


def run(ctx) -> None:
  context.train_variants(ctx, "qa_generator", train_generator)


def train_generator(ctx, variant: context.Variant, name: str) -> None:
  g = ctx.config.qa_generator
  params = ctx.load_params("base")
  qa_records = records_lib.qa_gen_records(artifacts.examples(ctx, "labeled"))
  qa_it = iter(ctx.dataset(qa_records, g.batch_size, name + "/qa"))
  if not variant.distill:
    ctx.finetune(name, params=params, tcfg=g, data_iter=qa_it)
    return
  caps = artifacts.captions(ctx)
  unlabeled = [{**ex, "caption": caps[ex["id"]]} for ex in artifacts.examples(ctx, "unlabeled")
               if ex["id"] in caps]
  distill_it = iter(ctx.dataset(records_lib.caption_records(unlabeled), g.distill_batch_size,
                                name + "/distill"))
  mask_tree = generator_mask(ctx, variant, params)
  masks_all = ctx.config.neurons.applies_to == "all"
  masked = None if masks_all or mask_tree is None else functools.partial(neurons.mask_gradients,
                                                                         mask=mask_tree)
  loss_fn = losses.generator_loss(ctx.model, distill_weight=g.distill_weight, distill_params_fn=masked)
  ctx.finetune(name, params=params, tcfg=g, loss_fn=loss_fn,
               data_iter=train.ZipIterator(qa=qa_it, distill=distill_it),
               mask_tree=mask_tree if masks_all else None,
               examples_per_step=g.batch_size + g.distill_batch_size)


def generator_mask(ctx, variant: context.Variant, params):
  """Param mask tree for the distillation updates, or None (all neurons).

  "relevance": the selection the `relevance` stage wrote; "random": the same number of neurons
  chosen from random scores of the same shapes (its own random stream)."""
  c = ctx.config.neurons
  kind = variant.mask or c.mask
  if kind == "none":
    return None
  if kind == "relevance":
    masks = artifacts.read_npz(ctx.path("relevance", "mask.npz"), "relevance")
  else:
    scores = artifacts.read_npz(ctx.path("relevance", "scores.npz"), "relevance")
    rng = np.random.default_rng(ctx.seed(os.path.join(variant.directory, "random_mask")))
    masks, _ = neurons.select(neurons.random_scores(scores, rng), c.fraction, per_layer=c.per_layer,
                              towers=tuple(c.towers))
  return neurons.param_mask(masks, params, non_neuron=c.non_neuron_params)
