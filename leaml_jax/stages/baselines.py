"""Stage `baselines`: full fine-tune and LoRA on the labelled data only -> baselines/<name>/.

Same harness, data and step budget as LEAML's VQA stage (config.vqa); LoRA trains only its
low-rank factors (lora.TRAINABLE) and saves the merged params."""
from __future__ import annotations

import jax

from leaml_jax import losses, lora
from leaml_jax.stages import artifacts, context


def outputs(ctx) -> list[str]:
  return ["baselines"]


def run(ctx) -> None:
  c = ctx.config
  labeled = artifacts.vqa_records(ctx, "labeled")
  for method in context.BASELINES:
    name = f"baselines/{method}"
    if method not in c.baselines.methods or ctx.has_params(name):
      continue
    data = iter(ctx.dataset(labeled, c.vqa.batch_size, name + "/data"))
    # Each run loads its own copy of the base: the train step donates (consumes) its input.
    base = ctx.load_params("base")
    if method == "finetune":
      ctx.finetune(name, params=base, tcfg=c.vqa, data_iter=data)
    else:
      train_lora(ctx, name, base, data)


def train_lora(ctx, name: str, base, data) -> None:
  b = ctx.config.baselines
  tcfg = ctx.config.vqa.copy_and_resolve_references()
  tcfg.lr, tcfg.trainable, tcfg.weight_decay = b.lora_lr, lora.TRAINABLE, 0.0
  merge = lambda p: lora.merge(p, rank=b.lora_rank, alpha=b.lora_alpha)
  params = {"base": base, "lora": lora.init(base, ctx.rng(name + "/init"), rank=b.lora_rank)}
  params = ctx.finetune(name, params=params, tcfg=tcfg, data_iter=data,
                        loss_fn=losses.lm_loss(ctx.model, merge), save=False)
  ctx.save_params(name, jax.jit(merge)(params))
