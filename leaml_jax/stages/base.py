"""Stage `base`: the base VLM -> base/params (orbax)."""
from __future__ import annotations

from leaml_jax.data import pipeline
from leaml_jax.stages import adapt, prepare


def run(ctx) -> None:
  """Demo base VLM: pre-train the tiny model on the general domain (VQA, captions, QA-gen)."""
  c = ctx.config
  if c.model.path:
    from leaml_jax.config_lib import ConfigError
    raise ConfigError("config.model.path: importing a HF checkpoint is not wired into this "
                      "version; leave it empty to pre-train the tiny demo base")
  exs = prepare.examples(ctx, "general")
  records = (pipeline.vqa_records(exs) + pipeline.caption_records(exs, key="gt_caption")
             + pipeline.qa_gen_records(exs))
  params = adapt.lm_finetune(ctx, "base", params=ctx.init_params(ctx.rng("init")), tcfg=c.base,
                             records=records)
  ctx.save_params("base", params)
