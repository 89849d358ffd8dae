"""Smoke test of the whole LEAML pipeline (configs/demo.py:quick, shrunk) -> a valid report."""
import glob
import json
import os

import jax
import numpy as np

from leaml_jax import config_lib, main
from leaml_jax.stages import context


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


def test_quick_pipeline_writes_valid_report(tmp_path, monkeypatch, capsys):
  workdir = str(tmp_path / "run")
  cfg = _quick_config(profile="vqa:1:2")
  purposes = set()
  original_rng = context.Context.rng
  monkeypatch.setattr(context.Context, "rng",
                      lambda self, purpose: purposes.add(purpose) or original_rng(self, purpose))
  timings = main.main(cfg, workdir)
  assert list(timings) == list(cfg.stages)
  rep = json.load(open(os.path.join(workdir, "report.json")))
  assert rep["dataset"] == "synthetic_sports" and rep["label_fraction"] == 0.1
  assert set(rep["counts"]) >= {"labeled_qa", "labeled_images", "unlabeled_images", "test_qa"}
  assert rep["seeds"] == [0] and {"paired", "mechanism", "base_general", "oracle_100"} <= set(rep)
  assert rep["counts"]["labeled_images"] == 20 and rep["counts"]["unlabeled_images"] == 180
  expected = {"zero_shot", "finetune", "lora", "leaml", "leaml_no_distill"}
  assert set(rep["methods"]) == expected
  n = {m["n"] for m in rep["methods"].values()}
  assert n == {rep["counts"]["test_qa"]}  # same test questions for every method
  for m in rep["methods"].values():
    assert 0.0 <= m["accuracy"] <= 1.0 and m["per_difficulty"]
  assert rep["pseudo_qa"]["generated"] == 180
  assert 0 <= rep["pseudo_qa"]["kept"] <= rep["pseudo_qa"]["generated"]
  # every sampled text is either kept or dropped for one counted reason
  assert rep["pseudo_qa"]["kept"] + sum(rep["pseudo_qa"]["dropped"].values()) == 180
  for row in map(json.loads, open(os.path.join(workdir, "pseudo_qa.jsonl"))):
    assert 0.0 <= row["confidence"] <= 1.0 and row["answer"].strip()
  assert set(rep["timings_s"]) >= set(cfg.stages) - {"report"}
  for f in ("report.md", "plots/accuracy.png", "relevance/stats.json", "pseudo_qa.jsonl",
            "qa_generator/metrics.jsonl"):
    assert os.path.exists(os.path.join(workdir, f)), f
  # --config.profile=vqa:1:2 left a trace of VQA steps 1-2 in TensorBoard's layout.
  assert glob.glob(os.path.join(workdir, "profile", "vqa", "plugins", "profile", "*", "*.trace.json.gz"))
  splits = json.load(open(os.path.join(workdir, "data", "splits.json")))
  assert not set(splits["labeled"]) & set(splits["test"])
  assert not set(splits["labeled"]) & set(splits["unlabeled"])
  # Every random stream the run drew is its own: distinct purposes, distinct keys.
  assert {"base", "base/init", "qa_generator", "qa_generator/qa", "qa_generator/distill",
          "vqa/labeled", "baselines/finetune", "baselines/lora"} <= purposes
  ctx = context.Context(cfg, workdir)
  keys = {p: tuple(np.asarray(jax.random.key_data(original_rng(ctx, p))).ravel()) for p in purposes}
  assert len(set(keys.values())) == len(keys), keys
  # A rerun finds every output complete and runs nothing.
  assert main.main(cfg, workdir) == {}
  # A forced stage redoes its work from scratch: no old outputs, no restored checkpoint.
  capsys.readouterr()
  eval_path = os.path.join(workdir, "eval", "leaml.json")
  json.dump({"stale": True}, open(eval_path, "w"))
  open(os.path.join(workdir, "vqa", "stale"), "w").close()
  cfg.unlock()
  cfg.force = "vqa,evaluate"
  assert list(main.main(cfg, workdir)) == ["vqa", "evaluate"]
  assert "resumed" not in capsys.readouterr().out
  assert not os.path.exists(os.path.join(workdir, "vqa", "stale"))
  assert "stale" not in json.load(open(eval_path)) and "accuracy" in json.load(open(eval_path))


def test_every_purpose_gets_its_own_random_stream():
  """Purposes that share a prefix (the old key read only the first bytes) still differ."""
  cfg = _quick_config()
  ctx = context.Context(cfg, "/nonexistent")
  purposes = ["base", "base/init", "base/data", "baselines/finetune", "baselines/finetune/data",
              "baselines/lora", "baselines/lora/init", "qa_generator", "qa_generator/qa",
              "qa_generator/distill", "vqa", "vqa/labeled", "vqa/pseudo", "pseudo_qa/sample",
              "ablations/no_mask/qa_generator", "ablations/random_mask/qa_generator",
              "ablations/no_distill/vqa/labeled", "ablations/no_distill/vqa/pseudo"]
  keys = {tuple(np.asarray(jax.random.key_data(ctx.rng(p))).ravel()) for p in purposes}
  seeds = {ctx.seed(p) for p in purposes}
  assert len(keys) == len(purposes) and len(seeds) == len(purposes)


def test_forced_answer_start_is_laid_out_as_in_training():
  """A record's `forced` text sits where the answer goes (causal, as the training layout has it)
  with no EOS, so generation continues it; the plain prompt batch is the same row cut before it."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from leaml_jax.data import encoders, tokenizer  # pylint: disable=import-outside-toplevel
  tok = tokenizer.train_tokenizer(["generate question and answer", "How many? answer: two"],
                                  vocab_size=300)
  image = np.zeros((8, 8, 3), np.uint8)
  rec = {"image": image, "prompt": "generate question and answer"}
  enc = encoders.encoder_for(tok, 24)
  full = enc.encode_example(image, rec["prompt"], "How many? answer:")
  n = int(full["mask_input"].sum())  # real tokens, the EOS last
  forced = encoders.prompt_batch([{**rec, "forced": "How many? answer:"}], enc)
  np.testing.assert_array_equal(forced["mask_input"][0, :n - 1], 1)
  np.testing.assert_array_equal(forced["mask_input"][0, n - 1:], 0)
  np.testing.assert_array_equal(forced["text"][0, :n - 1], full["text"][:n - 1])
  np.testing.assert_array_equal(forced["mask_ar"][0, :n - 1], full["mask_ar"][:n - 1])
  assert full["text"][n - 1] == tok.eos_id and forced["mask_ar"][0].max() == 1
  plain = encoders.prompt_batch([rec], enc)
  p = int(plain["mask_input"].sum())
  assert plain["mask_ar"][0].max() == 0 and p < n - 1
  np.testing.assert_array_equal(plain["text"][0, :p], full["text"][:p])


def test_seed_sweep_shares_one_base_and_writes_a_combined_report(tmp_path):
  workdir = str(tmp_path / "sweep")
  cfg = _quick_config(**{"seeds": "0,1", "ablations": "", "pseudo_qa.caption_probe": "20"})
  timings = main.main(cfg, workdir)
  assert set(timings) == {"shared", "seed_0", "seed_1", "report"}
  assert os.path.isdir(os.path.join(workdir, "shared", "base", "params"))  # the base, once
  assert not os.path.exists(os.path.join(workdir, "seed_0", "base")) and "base" not in timings["seed_1"]
  splits = [json.load(open(os.path.join(workdir, f"seed_{s}", "data", "splits.json"))) for s in (0, 1)]
  assert splits[0]["labeled"] != splits[1]["labeled"] and splits[0]["test"] == splits[1]["test"]
  rep = json.load(open(os.path.join(workdir, "report.json")))
  per_seed = [json.load(open(os.path.join(workdir, f"seed_{s}", "report.json"))) for s in (0, 1)]
  assert rep["seeds"] == [0, 1] and per_seed[1]["seeds"] == [1]
  for name, m in rep["methods"].items():
    assert m["per_seed"] == [p["methods"][name]["accuracy"] for p in per_seed]
    assert m["accuracy"] == sum(m["per_seed"]) / 2
    lo, hi = m["ci95"]
    assert 0.0 <= lo <= hi <= 1.0
  for pair in ("leaml-finetune", "leaml-lora"):
    a, b = pair.split("-")
    assert abs(rep["paired"][pair]["mean"] - (rep["methods"][a]["accuracy"] - rep["methods"][b]["accuracy"])) < 1e-12
    assert rep["paired"][pair]["ci95"][0] <= rep["paired"][pair]["ci95"][1]
  mech = rep["mechanism"]
  assert 0.0 <= mech["pseudo_qa_accuracy"] <= 1.0 and set(mech["caption_accuracy_per_fact"]) >= {
      "sport", "action", "direction"}
  assert set(mech["teacher_caption_accuracy_per_fact"]) == set(mech["caption_accuracy_per_fact"])
  assert {"base_general", "oracle_100", "timings_s", "counts", "pseudo_qa"} <= set(rep)
  assert os.path.exists(os.path.join(workdir, "report.md"))
