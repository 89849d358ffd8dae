"""Smoke test of the whole LEAML pipeline (configs/demo.py:quick, shrunk) -> a valid report."""
import json
import os

import jax

from leaml_jax import config_lib, main


def _quick_config(**overrides):
  cfg = config_lib.load_config_file("configs/demo.py:quick")
  small = {"data.num_train": "200", "data.num_test": "20", "base.num_images": "200",
           "base.steps": "8", "qa_generator.steps": "4", "vqa.steps": "4",
           "data.label_fraction": "0.1", "pseudo_qa.samples_per_image": "1",
           "ablations": "no_distill", "mesh.num_devices": "2"}
  small.update(overrides)
  for k, v in small.items():
    config_lib.apply_override(cfg, k, v)
  return cfg


def test_quick_pipeline_writes_valid_report(tmp_path):
  workdir = str(tmp_path / "run")
  cfg = _quick_config()
  timings = main.main(cfg, workdir)
  assert list(timings) == list(cfg.stages)
  rep = json.load(open(os.path.join(workdir, "report.json")))
  assert rep["dataset"] == "synthetic_sports" and rep["label_fraction"] == 0.1
  assert set(rep["counts"]) >= {"labeled_qa", "labeled_images", "unlabeled_images", "test_qa"}
  assert rep["counts"]["labeled_images"] == 20 and rep["counts"]["unlabeled_images"] == 180
  expected = {"zero_shot", "finetune", "lora", "leaml", "leaml_no_distill"}
  assert set(rep["methods"]) == expected
  n = {m["n"] for m in rep["methods"].values()}
  assert n == {rep["counts"]["test_qa"]}  # same test questions for every method
  for m in rep["methods"].values():
    assert 0.0 <= m["accuracy"] <= 1.0 and m["per_difficulty"]
  assert rep["pseudo_qa"]["generated"] == 180
  assert 0 <= rep["pseudo_qa"]["kept"] <= rep["pseudo_qa"]["generated"]
  assert set(rep["timings_s"]) >= set(cfg.stages) - {"report"}
  for f in ("report.md", "plots/accuracy.png", "relevance/stats.json", "pseudo_qa.jsonl",
            "qa_generator/metrics.jsonl"):
    assert os.path.exists(os.path.join(workdir, f)), f
  splits = json.load(open(os.path.join(workdir, "data", "splits.json")))
  assert not set(splits["labeled"]) & set(splits["test"])
  assert not set(splits["labeled"]) & set(splits["unlabeled"])
  # A rerun finds every output complete and runs nothing.
  assert main.main(cfg, workdir) == {}
