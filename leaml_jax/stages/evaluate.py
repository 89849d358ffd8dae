"""Stage `evaluate`: greedy answers of every method on the same test questions -> eval/<method>.json."""
from __future__ import annotations


from leaml_jax import generate
from leaml_jax.data import scoring
from leaml_jax.stages import artifacts, context


def outputs(ctx) -> list[str]:
  return ["eval"]


def run(ctx) -> None:
  c = ctx.config
  test = artifacts.vqa_records(ctx, "test")
  # Golds keep the dataset's answer (a letter for multiple choice); scoring maps a predicted
  # option text or letter onto the options.
  golds = [{k: r.get(k) for k in ("answer", "type", "category", "difficulty", "options")} for r in test]
  for method, params_dir in context.methods(c).items():
    out_path = ctx.path("eval", f"{method}.json")
    if artifacts.exists(out_path):  # finished before a kill; --config.force=evaluate redoes all
      continue
    preds, _ = generate.generate_texts(ctx.model, ctx.load_params(params_dir), test, encoder=ctx.encoder,
                                       batch_size=c.eval.batch_size, max_new_tokens=c.eval.max_new_tokens,
                                       desc=f"eval {method}")
    result = scoring.accuracy(preds, golds)
    free = [(p, g["answer"]) for p, g in zip(preds, golds) if not g.get("options")]
    if free:  # free-text answers (Kvasir-VQA): BLEU and ROUGE-L next to exact match
      result.update(scoring.text_metrics(*zip(*free)))
    result["method"] = method
    # Per question, for intervals (bootstrap over test images, paired across methods).
    result["correct"] = [int(scoring.is_correct(p, g["answer"], g.get("type"), g.get("options")))
                         for p, g in zip(preds, golds)]
    result["image_ids"] = [r["image_id"] for r in test]
    result["examples"] = [{"id": r["id"], "question": r["prompt"], "gold": r["answer"], "pred": p}
                          for r, p in list(zip(test, preds))[:20]]
    artifacts.write_json(out_path, result)
    print(f"[leaml] eval {method}: accuracy {result['accuracy']:.3f} on {result['n']} questions")
