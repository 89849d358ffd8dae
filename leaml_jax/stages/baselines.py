"""Stage `baselines`: the trained baselines -> baselines/<name>/ (params, tuning.json).

Same harness, data pipeline and tuning procedure (Context.train_method) as LEAML's VQA stage, at
its budget (config.vqa) unless said otherwise:
  finetune          every parameter, on the labelled data only
  lora              LoRA factors only (lora.TRAINABLE, config.baselines.lora_*), saved merged
  finetune_matched  as `finetune`, for as many training examples as LEAML's generator + VQA
                    stages see together (`matched_steps`)
  lora_connector    as `lora`, with the vision-to-LM connector (img/head) trained fully
  oracle_100        every parameter, on the true QA of every train-pool image (labelled and
                    unlabelled; never dev or test): the ceiling any label-efficient method has
"""
from __future__ import annotations

from leaml_jax import losses, lora
from leaml_jax.stages import artifacts, context


def outputs(ctx) -> list[str]:
  return ["baselines"]


def run(ctx) -> None:
  for method in context.BASELINES:
    name = f"baselines/{method}"
    if method in ctx.config.baselines.methods and not ctx.has_params(name):
      TRAINERS[method](ctx, name)


def matched_steps(config) -> int:
  """Steps at the VQA batch size that see as many examples as the QA generator (labelled QA +
  distillation captions per step) and the VQA stage together, rounded up."""
  g, v = config.qa_generator, config.vqa
  seen = g.steps * (g.batch_size + g.distill_batch_size) + v.steps * v.batch_size
  return -(-seen // v.batch_size)


def train_full(ctx, name: str, records, steps: int | None = None) -> None:
  tcfg = ctx.config.vqa.copy_and_resolve_references()
  tcfg.steps = tcfg.steps if steps is None else steps
  ctx.train_method(name, tcfg=tcfg, new_params=lambda: ctx.load_params("base"),
                   new_data=lambda: iter(ctx.dataset(records, tcfg.batch_size, name + "/data")))


def train_lora(ctx, name: str, records, trainable=lora.TRAINABLE) -> None:
  b = ctx.config.baselines
  tcfg = ctx.config.vqa.copy_and_resolve_references()
  tcfg.lr, tcfg.trainable, tcfg.weight_decay = b.lora_lr, trainable, 0.0
  merge = lambda p: lora.merge(p, rank=b.lora_rank, alpha=b.lora_alpha)  # noqa: E731

  def new_params():
    base = ctx.load_params("base")
    return {"base": base, "lora": lora.init(base, ctx.rng(name + "/init"), rank=b.lora_rank)}

  ctx.train_method(name, tcfg=tcfg, new_params=new_params, to_model=merge,
                   loss_fn=losses.lm_loss(ctx.model, merge),
                   new_data=lambda: iter(ctx.dataset(records, tcfg.batch_size, name + "/data")))


def _labeled(ctx):
  return artifacts.vqa_records(ctx, "labeled")


TRAINERS = {
    "finetune": lambda ctx, name: train_full(ctx, name, _labeled(ctx)),
    "lora": lambda ctx, name: train_lora(ctx, name, _labeled(ctx)),
    "finetune_matched": lambda ctx, name: train_full(ctx, name, _labeled(ctx),
                                                     steps=matched_steps(ctx.config)),
    "lora_connector": lambda ctx, name: train_lora(ctx, name, _labeled(ctx),
                                                   trainable=lora.TRAINABLE_WITH_CONNECTOR),
    "oracle_100": lambda ctx, name: train_full(
        ctx, name, artifacts.vqa_records(ctx, "labeled") + artifacts.vqa_records(ctx, "unlabeled")),
}
