"""Stage `base`: the base VLM -> base/params (orbax).

Imports config.model.path (a HF checkpoint, straight into the mesh's shardings), or (demo)
pre-trains the tiny model on the general domain: VQA, captions and QA writing.
"""
from __future__ import annotations

from leaml_jax.data import records as records_lib
from leaml_jax.errors import CheckpointError
from leaml_jax.stages import artifacts


def outputs(ctx) -> list[str]:
  return [] if ctx.config.base.workdir else ["base"]  # never delete a base this run only reuses


def run(ctx) -> None:
  c = ctx.config
  if c.base.workdir:
    if not ctx.has_params("base"):
      raise FileNotFoundError(f"config.base.workdir={c.base.workdir}: no base/params there; run the "
                              "`base` stage in that workdir first")
    return
  if c.model.path:
    ctx.save_params("base", import_checkpoint(ctx))
    return
  exs = artifacts.examples(ctx, "general")
  records = (records_lib.vqa_records(exs) + records_lib.caption_records(exs, key="gt_caption")
             + records_lib.qa_gen_records(exs))
  ctx.finetune("base", params=ctx.init_params(ctx.rng("base/init")), tcfg=c.base,
               data_iter=iter(ctx.dataset(records, c.base.batch_size, "base/data")))


def import_checkpoint(ctx):
  """Params of the HF checkpoint at config.model.path, read straight into the mesh's shardings."""
  from leaml_jax.models import hf
  model, params, _ = hf.load(ctx.config.model.path, mesh=ctx.mesh, **ctx.model_options())
  if model.cfg != ctx.model_cfg:
    raise CheckpointError(f"config.model.path={ctx.config.model.path}: the checkpoint gives {model.cfg}, "
                          f"the run expects {ctx.model_cfg}")
  return params
