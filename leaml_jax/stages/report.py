"""Stage `report`: report.json (schema: shared/DESIGN.md §2), report.md and plots/*.png.

One run's report and a sweep's combined report (`--config.seeds=0,1,2`: one run per seed under
seed_<k>/) are the same function over a list of runs: per method the mean accuracy over seeds
with a 95% interval, and paired differences against LEAML, from a bootstrap over test images
(and seeds) that resamples every method jointly (leaml_jax.stats); the mechanism (pseudo-QA
answers and generator captions against the synthetic ground truth); the base's accuracy on the
general world; the 100%-label ceiling; which lr/steps the dev tuning gave each method.
"""
from __future__ import annotations

import collections
import os

import numpy as np

from leaml_jax import stats
from leaml_jax.data import datasets, scoring
from leaml_jax.stages import artifacts, context

LABELS = {"zero_shot": "zero-shot (base)", "finetune": "full fine-tune (labelled only)",
          "finetune_matched": "full fine-tune, compute-matched", "lora": "LoRA (labelled only)",
          "lora_connector": "LoRA + connector", "oracle_100": "full fine-tune, 100% true labels",
          "leaml": "LEAML", "leaml_no_mask": "LEAML w/o neuron mask",
          "leaml_random_mask": "LEAML random mask", "leaml_no_distill": "LEAML w/o caption distillation"}
_GROUPS = ("per_difficulty", "per_category", "per_type")
_PAIRED_WITH_LEAML = ("finetune", "lora", "finetune_matched", "lora_connector", "leaml_no_mask",
                      "leaml_random_mask", "leaml_no_distill")


def outputs(ctx) -> list[str]:
  return ["report.json", "report.md", "plots"]


def runs_of(ctx) -> list:
  """The runs a report covers: this one, or each seed's run of a sweep."""
  if not ctx.config.seeds:
    return [ctx]
  shared = os.path.abspath(ctx.path("shared"))
  return [context.Context(context.seed_config(ctx.config, s, shared_base=shared), ctx.path(f"seed_{s}"))
          for s in ctx.config.seeds]


def _mean(values):
  return float(np.mean(values)) if len(values) else 0.0


def _mean_dicts(dicts) -> dict:
  keys = sorted({k for d in dicts for k in d})
  return {k: _mean([d[k] for d in dicts if k in d]) for k in keys}


def _read(path, default=None):
  return artifacts.read_json(path) if artifacts.exists(path) else default


def build_report(ctx) -> dict:
  runs = runs_of(ctx)
  first = runs[0]
  s = artifacts.splits(first)
  evals = [{m: _read(r.path("eval", f"{m}.json")) for m in context.methods(r.config)} for r in runs]
  names = [m for m in evals[0] if m != "oracle_100" and all(e.get(m) for e in evals)]
  image_ids = evals[0][names[0]]["image_ids"] if names else []
  for e in evals:
    for m in names:
      if e[m]["image_ids"] != image_ids:
        raise ValueError(f"eval/{m}.json covers other test questions than {names[0]}: rerun evaluate")
  summary = stats.summarize({m: [e[m]["correct"] for e in evals] for m in names}, image_ids,
                            pairs=[("leaml", m) for m in _PAIRED_WITH_LEAML])
  methods = {}
  for m in names:
    per_run = [e[m] for e in evals]
    methods[m] = {**summary["methods"][m], "n": per_run[0]["n"],
                  **{g: _mean_dicts([r.get(g, {}) for r in per_run]) for g in _GROUPS},
                  **{k: _mean([r[k] for r in per_run]) for k in ("bleu", "rouge_l") if k in per_run[0]}}
    tuning = [_read(r.path(context.methods(r.config)[m], "tuning.json")) for r in runs]
    if all(tuning):
      methods[m]["tuning"] = [{"lr": t["lr"], "steps": t["steps"], "tuned_on_dev": bool(t.get("grid"))}
                              for t in tuning]
  pq = [_read(r.path("pseudo_qa_stats.json"), {}) for r in runs]
  labeled = artifacts.examples(first, "labeled")
  return {
      "dataset": s["dataset"], "label_fraction": s["label_fraction"], "seed": s["seed"],
      "seeds": [r.config.seed for r in runs],
      "counts": {"labeled_qa": sum(len(e["qa"]) for e in labeled),
                 "labeled_images": len(s["labeled"]), "unlabeled_images": len(s["unlabeled"]),
                 "test_qa": len(image_ids)},
      "methods": methods,
      "paired": summary["paired"],
      "pseudo_qa": {"generated": sum(p.get("generated", 0) for p in pq),
                    "kept": sum(p.get("kept", 0) for p in pq),
                    "dropped": dict(sum((collections.Counter(p.get("dropped", {})) for p in pq),
                                        collections.Counter()))},
      "mechanism": _mean_mechanism([mechanism(r) for r in runs]),
      "base_general": _read(os.path.join(os.path.dirname(first.params_path("base")), "general_eval.json"), {}),
      "oracle_100": _oracle(runs),
      "neurons": {k: v for k, v in _read(first.path("relevance", "stats.json"), {}).items() if k != "layers"},
      "timings_s": _mean_dicts([_timings(r) for r in runs]),
  }


def _timings(run) -> dict:
  out = {}
  for stage in run.config.stages:
    status = _read(run.path("status", f"{stage}.json"))
    if status:
      out[stage] = round(status["seconds"], 2)
  return out


def _oracle(runs) -> dict:
  for r in runs:
    result = _read(r.path("eval", "oracle_100.json"))
    if result:
      tuning = _read(r.path("baselines", "oracle_100", "tuning.json"), {})
      return {"accuracy": result["accuracy"], "steps": tuning.get("steps", r.config.vqa.steps)}
  return {}


# ----------------------------------------------------------------------------- mechanism
def mechanism(run) -> dict:
  """LEAML's chain against the ground truth of a synthetic world: how often the kept pseudo QA's
  answers are true (overall, per question type), and which facts the generator's own captions
  and the teacher's captions state correctly (on the same unlabelled images). {} without
  ground truth (datasets from files)."""
  name = datasets.name_of(run.config.data)
  unlabeled = {ex["id"]: ex for ex in artifacts.examples(run, "unlabeled")}
  rows = artifacts.read_jsonl(run.path("pseudo_qa.jsonl")) if artifacts.exists(run.path("pseudo_qa.jsonl")) else []
  right, by_type = [], collections.defaultdict(list)
  for row in rows:
    truth = datasets.true_answer(name, unlabeled[row["image_id"]], row["question"])
    if truth is None:
      continue
    said = row["options"][row["answer"]] if row["options"] else row["answer"]
    ok = scoring.is_correct(said, truth)
    right.append(ok)
    by_type[row["type"]].append(ok)
  out = {}
  if right or not rows:
    out.update(pseudo_qa_accuracy=_mean(right), pseudo_qa_verified=len(right),
               pseudo_qa_accuracy_per_type={t: _mean(v) for t, v in sorted(by_type.items())})
  probe = run.path("generator_captions.jsonl")
  if artifacts.exists(probe):
    generated = artifacts.read_jsonl(probe)
    teacher = artifacts.captions(run)
    for key, caps in (("caption_accuracy_per_fact", {r["image_id"]: r["caption"] for r in generated}),
                      ("teacher_caption_accuracy_per_fact", {r["image_id"]: teacher.get(r["image_id"], "")
                                                             for r in generated})):
      facts = collections.defaultdict(list)
      for image_id, caption in caps.items():
        for st in datasets.caption_statements(name, unlabeled[image_id], caption) or []:
          facts[st["fact"]].append(st["said"] == st["true"])
      if facts:
        out[key] = {f: _mean(v) for f, v in sorted(facts.items())}
  return out


def _mean_mechanism(per_run: list[dict]) -> dict:
  out = {}
  for key in sorted({k for m in per_run for k in m}):
    values = [m[key] for m in per_run if key in m]
    out[key] = _mean_dicts(values) if isinstance(values[0], dict) else _mean(values)
  return out


# ----------------------------------------------------------------------------- markdown, plots
def _pct(x) -> str:
  return f"{100 * x:.1f}"


def markdown(rep: dict) -> str:
  seeds = rep["seeds"]
  lines = [f"# LEAML report: {rep['dataset']}", "",
           f"label fraction **{rep['label_fraction']}**, seed(s) {', '.join(map(str, seeds))}; "
           f"{rep['counts']['labeled_images']} labelled images ({rep['counts']['labeled_qa']} QA), "
           f"{rep['counts']['unlabeled_images']} unlabelled images, {rep['counts']['test_qa']} test questions. "
           f"Intervals: 95%, bootstrap over test images{' and seeds' if len(seeds) > 1 else ''}.", "",
           "| method | accuracy (mean) | 95% CI | per seed | lr / steps (dev) |", "|---|---|---|---|---|"]
  for m, r in rep["methods"].items():
    tuned = ", ".join(f"{t['lr']:g} / {t['steps']}{'' if t['tuned_on_dev'] else ' (config)'}"
                      for t in r.get("tuning", [])) or "–"
    lines.append(f"| {LABELS.get(m, m)} | {_pct(r['accuracy'])}% | {_pct(r['ci95'][0])}–{_pct(r['ci95'][1])} | "
                 f"{' '.join(_pct(a) for a in r['per_seed'])} | {tuned} |")
  if rep["paired"]:
    lines += ["", "## Paired differences (points)", "", "| difference | mean | 95% CI |", "|---|---|---|"]
    lines += [f"| {k} | {100 * v['mean']:+.1f} | {100 * v['ci95'][0]:+.1f} to {100 * v['ci95'][1]:+.1f} |"
              for k, v in rep["paired"].items()]
  if rep.get("oracle_100"):
    o = rep["oracle_100"]
    lines += ["", f"Ceiling: full fine-tune on 100% of the true labels, {o['steps']} steps: "
              f"**{_pct(o['accuracy'])}%**."]
  if rep.get("base_general"):
    b = rep["base_general"]
    lines += ["", f"Base model on held-out general-world questions: {_pct(b['accuracy'])}% "
              f"({', '.join(f'{t} {_pct(a)}' for t, a in b.get('per_type', {}).items())})."]
    if b.get("image_shuffled"):
      s = b["image_shuffled"]
      lines += ["", f"The same questions asked of another example's image (what the base answers without "
                f"reading the image): {_pct(s['accuracy'])}% "
                f"({', '.join(f'{t} {_pct(a)}' for t, a in s.get('per_type', {}).items())})."]
  for g in _GROUPS:
    cols = sorted({k for r in rep["methods"].values() for k in r.get(g, {})})
    if cols:
      lines += ["", f"## Accuracy {g.replace('_', ' ')}", "", "| method | " + " | ".join(cols) + " |",
                "|---" * (len(cols) + 1) + "|"]
      lines += [f"| {LABELS.get(m, m)} | " + " | ".join(_pct(r[g][c]) if c in r[g] else "–" for c in cols) + " |"
                for m, r in rep["methods"].items()]
  mech, pq = rep.get("mechanism", {}), rep["pseudo_qa"]
  lines += ["", "## Mechanism (against the synthetic ground truth)", "",
            f"Pseudo QA: generated {pq['generated']}, kept {pq['kept']}; dropped {pq['dropped']}."]
  if "pseudo_qa_accuracy" in mech:
    per_type = ", ".join(f"{t} {_pct(a)}" for t, a in mech.get("pseudo_qa_accuracy_per_type", {}).items())
    lines.append(f"Kept pseudo answers that are true: **{_pct(mech['pseudo_qa_accuracy'])}%** of "
                 f"{mech['pseudo_qa_verified']:g} checked ({per_type}).")
  for key, who in (("caption_accuracy_per_fact", "generator"), ("teacher_caption_accuracy_per_fact", "teacher")):
    if key in mech:
      lines.append(f"Facts stated correctly by the {who}'s captions: "
                   + ", ".join(f"{f} {_pct(a)}" for f, a in mech[key].items()) + ".")
  if rep.get("neurons"):
    n = rep["neurons"]
    lines += ["", f"Neuron mask: {n.get('selected')} of {n.get('neurons')} MLP neurons "
              f"({_pct(n.get('fraction', 0))}%), score `{n.get('score')}`."]
  lines += ["", "## Stage wall time (s, mean per seed)", "", "| stage | seconds |", "|---|---|"]
  lines += [f"| {k} | {v:.1f} |" for k, v in rep["timings_s"].items()]
  lines += ["", "![accuracy](plots/accuracy.png)", "", "![breakdown](plots/breakdown.png)", ""]
  return "\n".join(lines)


def _save_figure(fig, path: str) -> None:
  artifacts.atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110), mode="wb")


def plots(rep: dict, out_dir: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  names = list(rep["methods"])
  acc = np.array([100 * rep["methods"][m]["accuracy"] for m in names])
  ci = np.array([[100 * x for x in rep["methods"][m]["ci95"]] for m in names]).reshape(-1, 2)
  fig, ax = plt.subplots(figsize=(9, 3.8))
  colors = ["#d62728" if m == "leaml" else "#1f77b4" if m.startswith("leaml") else "#7f7f7f" for m in names]
  bars = ax.bar([LABELS.get(m, m) for m in names], acc, color=colors,
                yerr=np.abs(ci.T - acc) if len(names) else None, capsize=3)
  ax.bar_label(bars, fmt="%.1f", padding=2)
  if rep.get("oracle_100"):
    ax.axhline(100 * rep["oracle_100"]["accuracy"], ls="--", c="k", lw=1, label="100% labels")
    ax.legend(fontsize=7)
  ax.set_ylabel("test accuracy (%)")
  ax.set_ylim(0, 100)
  ax.set_title(f"{rep['dataset']} at {100 * rep['label_fraction']:g}% labels, seeds {rep['seeds']}")
  plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
  fig.tight_layout()
  _save_figure(fig, os.path.join(out_dir, "accuracy.png"))
  plt.close(fig)
  group = next((g for g in _GROUPS if any(rep["methods"][m].get(g) for m in names)), None)
  if group is None:
    return
  cats = sorted({k for m in names for k in rep["methods"][m][group]})
  fig, ax = plt.subplots(figsize=(9, 3.5))
  width = 0.8 / max(len(names), 1)
  for i, m in enumerate(names):
    vals = [100 * rep["methods"][m][group].get(k, 0.0) for k in cats]
    ax.bar([j + i * width for j in range(len(cats))], vals, width, label=LABELS.get(m, m))
  ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(cats))], cats)
  ax.set_ylabel("accuracy (%)")
  ax.set_ylim(0, 100)
  ax.set_title(f"accuracy {group.replace('_', ' ')}")
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  _save_figure(fig, os.path.join(out_dir, "breakdown.png"))
  plt.close(fig)


def run(ctx) -> None:
  rep = build_report(ctx)
  # The report stage's own time is not known yet; main records it in status/report.json.
  artifacts.write_json(ctx.path("report.json"), rep)
  plots(rep, ctx.path("plots"))
  artifacts.atomic_write(ctx.path("report.md"), lambda f: f.write(markdown(rep)))
  for m, r in rep["methods"].items():
    print(f"  {LABELS.get(m, m):34s} {_pct(r['accuracy']):>5s}%  [{_pct(r['ci95'][0])}, {_pct(r['ci95'][1])}]")
