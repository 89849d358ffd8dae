"""Stage `base`: the base VLM -> base/params (orbax), and (demo) base/general_eval.json.

Imports config.model.path (a HF checkpoint, straight into the mesh's shardings), or (demo)
pre-trains the tiny model on the general domain: VQA, captions and QA writing (each batch mixed
by config.base.task_weights), on its stills and clips in the run's image layout
(artifacts.model_view). The pre-trained base then answers the
general world's held-out test split (images it never trained on) greedily:
base/general_eval.json = {"accuracy", "per_type", "per_category" (still / clip), "n"}, the
general competence LEAML assumes of its base; "image_shuffled" {"accuracy", "per_type"}: the same
questions about another example's image, the control that shows what the base reads off the image.
"""
from __future__ import annotations

from leaml_jax import generate
from leaml_jax.data import datasets, pipeline, records as records_lib, scoring
from leaml_jax.errors import CheckpointError
from leaml_jax.stages import artifacts

GENERAL_EVAL = "general_eval.json"


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
  exs = general_examples(ctx, "train")
  tasks = {"vqa": records_lib.vqa_records(exs),
           "caption": records_lib.caption_records(exs, key="gt_caption"),
           "qa_gen": records_lib.qa_gen_records(exs)}
  data = pipeline.mix([ctx.dataset(tasks[t], None, f"base/data/{t}") for t in tasks],
                      [c.base.task_weights[t] for t in tasks], batch_size=c.base.batch_size)
  params = ctx.finetune("base", params=ctx.init_params(ctx.rng("base/init")), tcfg=c.base,
                        data_iter=iter(data))
  result = evaluate_general(ctx, params)
  artifacts.write_json(ctx.path("base", GENERAL_EVAL), result)
  per_type = ", ".join(f"{k} {v:.3f}" for k, v in result["per_type"].items())
  print(f"[leaml] base on {result['n']} held-out general questions: accuracy "
        f"{result['accuracy']:.3f} ({per_type}); with another example's image "
        f"{result['image_shuffled']['accuracy']:.3f}")


def general_examples(ctx, split: str) -> list[dict]:
  """The general world's examples of one split in the run's image layout: "train" (what the base
  learns from) or "test" (held out: what it is measured on)."""
  source = datasets.load_source(artifacts.splits(ctx)["general_dir"], split)
  return [artifacts.model_view(source[i], ctx.config.data) for i in range(len(source))]


def evaluate_general(ctx, params) -> dict:
  """Greedy answers of `params` to every held-out general question, scored as the target's, and
  the same questions asked of another held-out example's image ("image_shuffled": example i gets
  the image of example (i + n // 2) mod n, never its own). What a base answers as well without
  the right image it answers from the question alone: the gap is what it reads off the image."""
  c = ctx.config
  exs = general_examples(ctx, "test")
  test = records_lib.vqa_records(exs)
  n = len(exs)
  swapped = records_lib.vqa_records([{**ex, "image": exs[(i + n // 2) % n]["image"]}
                                     for i, ex in enumerate(exs)])

  def answer(records, name):
    preds, _ = generate.generate_texts(ctx.model, params, records, encoder=ctx.encoder,
                                       batch_size=c.eval.batch_size, max_new_tokens=c.eval.max_new_tokens,
                                       desc=f"base general eval ({name} images)")
    return preds, scoring.accuracy(preds, test)  # scored against the questions' own answers

  preds, own = answer(test, "own")
  _, shuffled = answer(swapped, "image_shuffled")
  return {"accuracy": own["accuracy"], "per_type": own["per_type"],
          "per_category": own["per_category"], "n": own["n"],
          "image_shuffled": {"accuracy": shuffled["accuracy"], "per_type": shuffled["per_type"]},
          "examples": [{"question": r["prompt"], "gold": r["answer"], "pred": p}
                       for r, p in list(zip(test, preds))[:20]]}


def import_checkpoint(ctx):
  """Params of the HF checkpoint at config.model.path, read straight into the mesh's shardings."""
  from leaml_jax.models import hf
  model, params, _ = hf.load(ctx.config.model.path, mesh=ctx.mesh, **ctx.model_options())
  if model.cfg != ctx.model_cfg:
    raise CheckpointError(f"config.model.path={ctx.config.model.path}: the checkpoint gives {model.cfg}, "
                          f"the run expects {ctx.model_cfg}")
  return params
