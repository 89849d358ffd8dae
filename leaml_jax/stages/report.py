"""Stage `report`: report.json (schema: shared/DESIGN.md §2), report.md and plots/*.png."""
from __future__ import annotations

import os

from leaml_jax.stages import artifacts, context

_LABELS = {"zero_shot": "zero-shot (base)", "finetune": "full fine-tune (labelled only)",
           "lora": "LoRA (labelled only)", "leaml": "LEAML",
           "leaml_no_mask": "LEAML w/o neuron mask", "leaml_random_mask": "LEAML random mask",
           "leaml_no_distill": "LEAML w/o caption distillation"}


def outputs(ctx) -> list[str]:
  return ["report.json", "report.md", "plots"]


def build_report(ctx) -> dict:
  c = ctx.config
  s = artifacts.splits(ctx)
  methods = {}
  for m in context.methods(c):
    path = ctx.path("eval", f"{m}.json")
    if os.path.exists(path):
      r = artifacts.read_json(path)
      methods[m] = {k: r[k] for k in ("accuracy", "n", "per_category", "per_difficulty", "per_type",
                                      "bleu", "rouge_l") if k in r}
  stats_path = ctx.path("pseudo_qa_stats.json")
  pq = artifacts.read_json(stats_path) if os.path.exists(stats_path) else {}
  labeled = artifacts.examples(ctx, "labeled")
  timings = {}
  for stage in c.stages:
    p = ctx.path("status", f"{stage}.json")
    if os.path.exists(p):
      timings[stage] = round(artifacts.read_json(p)["seconds"], 2)
  rel = ctx.path("relevance", "stats.json")
  return {
      "dataset": s["dataset"], "label_fraction": s["label_fraction"], "seed": s["seed"],
      "counts": {"labeled_qa": sum(len(e["qa"]) for e in labeled),
                 "labeled_images": len(s["labeled"]), "unlabeled_images": len(s["unlabeled"]),
                 "test_qa": next(iter(methods.values()))["n"] if methods else 0},
      "methods": methods,
      "pseudo_qa": {"generated": pq.get("generated", 0), "kept": pq.get("kept", 0),
                    "dropped": pq.get("dropped", {})},
      "neurons": ({k: v for k, v in artifacts.read_json(rel).items() if k != "layers"}
                  if os.path.exists(rel) else {}),
      "timings_s": timings,
  }


def markdown(rep: dict) -> str:
  lines = [f"# LEAML report: {rep['dataset']}", "",
           f"label fraction **{rep['label_fraction']}**, seed {rep['seed']}; "
           f"{rep['counts']['labeled_images']} labelled images ({rep['counts']['labeled_qa']} QA), "
           f"{rep['counts']['unlabeled_images']} unlabelled images, "
           f"{rep['counts']['test_qa']} test questions.", "",
           "| method | accuracy |", "|---|---|"]
  for m, r in rep["methods"].items():
    lines.append(f"| {_LABELS.get(m, m)} | {100 * r['accuracy']:.1f}% |")
  groups = ("per_difficulty", "per_category", "per_type")
  for g in groups:
    names = sorted({k for r in rep["methods"].values() for k in r.get(g, {})})
    if not names:
      continue
    lines += ["", f"## Accuracy {g.replace('_', ' ')}", "",
              "| method | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for m, r in rep["methods"].items():
      cells = [f"{100 * r[g][n]:.1f}" if n in r[g] else "–" for n in names]
      lines.append(f"| {_LABELS.get(m, m)} | " + " | ".join(cells) + " |")
  pq = rep["pseudo_qa"]
  lines += ["", "## Pseudo QA", "", f"generated {pq['generated']}, kept {pq['kept']}; "
            f"dropped: {pq.get('dropped', {})}", ""]
  if rep.get("neurons"):
    n = rep["neurons"]
    lines += [f"Neuron mask: {n.get('selected')} of {n.get('neurons')} MLP neurons "
              f"({100 * n.get('fraction', 0):.1f}%), score `{n.get('score')}`.", ""]
  lines += ["## Stage wall time (s)", "", "| stage | seconds |", "|---|---|"]
  lines += [f"| {k} | {v:.1f} |" for k, v in rep["timings_s"].items()]
  lines += ["", "![accuracy](plots/accuracy.png)", "", "![breakdown](plots/breakdown.png)", ""]
  return "\n".join(lines)


def plots(rep: dict, out_dir: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  os.makedirs(out_dir, exist_ok=True)
  names = list(rep["methods"])
  acc = [100 * rep["methods"][m]["accuracy"] for m in names]
  fig, ax = plt.subplots(figsize=(8, 3.5))
  colors = ["#d62728" if m == "leaml" else "#1f77b4" if m.startswith("leaml") else "#7f7f7f"
            for m in names]
  bars = ax.bar([_LABELS.get(m, m) for m in names], acc, color=colors)
  ax.bar_label(bars, fmt="%.1f")
  ax.set_ylabel("test accuracy (%)")
  ax.set_ylim(0, 100)
  ax.set_title(f"{rep['dataset']} at {100 * rep['label_fraction']:g}% labels")
  plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, "accuracy.png"), dpi=110)
  plt.close(fig)

  group = next((g for g in ("per_difficulty", "per_category", "per_type")
                if any(rep["methods"][m].get(g) for m in names)), None)
  if group is None:
    return
  cats = sorted({k for m in names for k in rep["methods"][m][group]})
  fig, ax = plt.subplots(figsize=(9, 3.5))
  width = 0.8 / max(len(names), 1)
  for i, m in enumerate(names):
    vals = [100 * rep["methods"][m][group].get(k, 0.0) for k in cats]
    ax.bar([j + i * width for j in range(len(cats))], vals, width, label=_LABELS.get(m, m))
  ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(cats))], cats)
  ax.set_ylabel("accuracy (%)")
  ax.set_ylim(0, 100)
  ax.set_title(f"accuracy {group.replace('_', ' ')}")
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, "breakdown.png"), dpi=110)
  plt.close(fig)


def run(ctx) -> None:
  rep = build_report(ctx)
  # The report stage's own time is not known yet; main records it in status/report.json.
  artifacts.write_json(ctx.path("report.json"), rep)
  plots(rep, ctx.path("plots"))
  artifacts.atomic_write(ctx.path("report.md"), lambda f: f.write(markdown(rep)))
  for m, r in rep["methods"].items():
    print(f"  {_LABELS.get(m, m):34s} {100 * r['accuracy']:5.1f}%")
