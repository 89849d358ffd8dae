"""Stage `evaluate`: greedy answers of every method on the same test questions -> eval/<method>.json."""
from __future__ import annotations

import os

from leaml_jax.data import scoring
from leaml_jax.stages import adapt, common, prepare


def methods(ctx) -> dict[str, str]:
  """method name -> params directory (relative to the workdir), in report order."""
  c = ctx.config
  out = {}
  if "zero_shot" in c.baselines.methods:
    out["zero_shot"] = "base"
  if "baselines" in c.stages:
    for m in ("finetune", "lora"):
      if m in c.baselines.methods:
        out[m] = f"baselines/{m}"
  if "vqa" in c.stages:
    out["leaml"] = "vqa"
  if "baselines" in c.stages:
    for a in c.ablations:
      out[f"leaml_{a}"] = adapt.VARIANTS[a].prefix + "vqa"
  return out


def run(ctx) -> None:
  c = ctx.config
  test = adapt.vqa_records(ctx, "test")
  for method, src in methods(ctx).items():
    out_path = ctx.path("eval", f"{method}.json")
    if os.path.exists(out_path) and method not in str(c.force).split(","):
      continue
    params = ctx.load_params(src)
    preds = adapt.generate_texts(ctx, params, test, batch_size=c.eval.batch_size,
                                 max_new_tokens=c.eval.max_new_tokens, desc=f"eval {method}")
    # Golds keep the dataset's answer (a letter for multiple choice); scoring maps a predicted
    # option text or letter onto the options.
    golds = [{k: r.get(k) for k in ("answer", "type", "category", "difficulty", "options")}
             for r in test]
    result = scoring.accuracy(preds, golds)
    free = [(p, g["answer"]) for p, g in zip(preds, golds) if not g.get("options")]
    if free:  # free-text answers (Kvasir-VQA): BLEU and ROUGE-L next to exact match
      result.update(scoring.text_metrics(*zip(*free)))
    result["method"] = method
    result["examples"] = [{"id": r["id"], "question": r["prompt"], "gold": r["answer"], "pred": p}
                          for r, p in list(zip(test, preds))[:20]]
    common.write_json(out_path, result)
    print(f"[leaml] eval {method}: accuracy {result['accuracy']:.3f} on {result['n']} questions")
