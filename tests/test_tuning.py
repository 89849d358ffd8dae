"""The fair comparison: the dev split, the one tuning procedure every trained method goes through
(Context.train_method), and the baselines finetune_matched, lora_connector and oracle_100.

Runs on configs/demo.py:quick shrunk to a few images and steps; `prepare` and `base` run once."""
import json
import os

import jax
import numpy as np
import pytest
from flax import traverse_util

from leaml_jax import config_lib, lora, main
from leaml_jax.data import datasets
from leaml_jax.errors import ConfigError
from leaml_jax.stages import artifacts, baselines, context, prepare

DEV_IMAGES = 10


def _config(**overrides):
  cfg = config_lib.load_config_file("configs/demo.py:quick")
  small = {"data.num_train": "120", "data.num_test": "10", "base.num_images": "100",
           "base.steps": "2", "vqa.steps": "4", "data.label_fraction": "0.1",
           "data.dev_images": str(DEV_IMAGES), "eval.batch_size": "16", "eval.max_new_tokens": "4",
           "mesh.num_devices": "2", "progress": "False"}
  small.update(overrides)
  for k, v in small.items():
    config_lib.apply_override(cfg, k, v)
  return cfg


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A workdir with `prepare` and `base` done; each test trains what it needs on top."""
  path = str(tmp_path_factory.mktemp("fair"))
  cfg = _config()
  cfg.unlock()
  cfg.stages = ("prepare", "base")
  main.main(cfg, path)
  return path


def _ctx(workdir, **overrides):
  return context.Context(_config(**overrides), workdir)


def _flat(params) -> dict:
  return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(jax.device_get(x))
          for path, x in jax.tree_util.tree_flatten_with_path(params)[0]}


# ----------------------------------------------------------------------------- dev split
def test_dev_split_is_disjoint_from_labels_unlabelled_and_test(workdir):
  s = json.load(open(os.path.join(workdir, "data", "splits.json")))
  pools = {k: set(s[k]) for k in ("labeled", "dev", "unlabeled", "test")}
  assert len(pools["dev"]) == DEV_IMAGES and len(pools["labeled"]) == 12
  for a in pools:
    for b in pools:
      assert a == b or not pools[a] & pools[b], (a, b)
  train_ids = set(datasets.load_source(s["target_dir"], "train").ids())
  assert pools["labeled"] | pools["dev"] | pools["unlabeled"] == train_ids
  ctx = _ctx(workdir)
  assert {ex["id"] for ex in artifacts.examples(ctx, "dev")} == pools["dev"]


def test_tuning_without_dev_images_stops_before_any_work(tmp_path):
  ctx = context.Context(_config(**{"data.dev_images": "0", "tune.lrs": "1e-3,3e-3"}), str(tmp_path))
  with pytest.raises(ConfigError, match="dev_images"):
    prepare.run(ctx)
  assert not os.listdir(tmp_path)


# ----------------------------------------------------------------------------- tuning
def test_tuning_steps_and_best_candidate_by_hand():
  assert context.tuning_steps(200, 4) == [50, 100, 150, 200]
  assert context.tuning_steps(10, 3) == [4, 8, 10]
  assert context.tuning_steps(3, 5) == [1, 2, 3]
  grid = [{"lr": 1e-3, "steps": 50, "dev_accuracy": 0.4}, {"lr": 3e-3, "steps": 100, "dev_accuracy": 0.6},
          {"lr": 1e-3, "steps": 150, "dev_accuracy": 0.6}, {"lr": 3e-4, "steps": 100, "dev_accuracy": 0.6}]
  assert context.best_candidate(grid) == grid[3]  # tie at 0.6: fewer steps, then the lower lr


def test_tuning_picks_the_best_lr_and_step_and_resumes(workdir, monkeypatch):
  """A scripted dev accuracy (the grid is scored lr by lr, steps ascending): the chosen params are
  the ones scored best, tuning.json records the grid; a kill mid-grid resumes without redoing
  the scored lr."""
  lrs, steps = (1e-3, 3e-3), [2, 4]
  order = [(lr, s) for lr in lrs for s in steps]
  scores = {(1e-3, 2): 0.2, (1e-3, 4): 0.5, (3e-3, 2): 0.5, (3e-3, 4): 0.4}
  seen = []

  def scripted(self, params):
    if len(seen) == kill_at:
      raise KeyboardInterrupt("killed")
    seen.append(_flat(params))
    return scores[order[len(seen) - 1]]

  monkeypatch.setattr(context.Context, "dev_accuracy", scripted)
  ctx = _ctx(workdir, **{"tune.lrs": "1e-3,3e-3", "tune.evals": "2",
                         "baselines.methods": "('finetune',)"})
  kill_at = 2  # a kill after the first lr is scored, before the second is
  with pytest.raises(KeyboardInterrupt):
    baselines.run(ctx)
  assert os.path.exists(ctx.path("baselines/finetune/tune/lr_0.001/dev.json"))
  assert not ctx.has_params("baselines/finetune")
  kill_at = None
  scored_before = len(seen)
  baselines.run(ctx)
  assert len(seen) == scored_before + 2  # only the second lr's two candidates were scored again

  tuning = json.load(open(ctx.path("baselines/finetune/tuning.json")))
  assert tuning["lr"] == 3e-3 and tuning["steps"] == 2  # the tie at 0.5 goes to fewer steps
  assert tuning["grid"] == [{"lr": lr, "steps": s, "dev_accuracy": scores[(lr, s)]} for lr, s in order]
  chosen = seen[-2]  # the second lr's first candidate
  final = _flat(ctx.load_params("baselines/finetune"))
  assert final.keys() == chosen.keys()
  for k in final:
    np.testing.assert_array_equal(final[k], chosen[k], err_msg=k)
  base = _flat(ctx.load_params("base"))
  assert any(not np.array_equal(final[k], base[k]) for k in final)
  assert not os.path.exists(ctx.path("baselines/finetune/tune/lr_0.003/ckpt"))


# ----------------------------------------------------------------------------- baselines
def test_finetune_matched_sees_as_many_examples_as_generator_plus_vqa(workdir, monkeypatch):
  # 7 generator steps of 5 labelled QA + 3 captions, 11 VQA steps of 6: 56 + 66 = 122 examples
  # -> 122 / 6 = 20.3 -> 21 steps at the VQA batch size.
  cfg = _config(**{"qa_generator.steps": "7", "qa_generator.batch_size": "5",
                   "qa_generator.distill_batch_size": "3", "vqa.steps": "11", "vqa.batch_size": "6"})
  assert baselines.matched_steps(cfg) == 21
  got = {}
  monkeypatch.setattr(context.Context, "train_method",
                      lambda self, name, *, tcfg, **kw: got.update({name: (tcfg.steps, tcfg.lr)}))
  cfg.unlock()
  cfg.baselines.methods = ("finetune_matched",)
  baselines.run(context.Context(cfg, workdir))
  assert got == {"baselines/finetune_matched": (21, cfg.vqa.lr)}


def test_oracle_trains_on_exactly_the_train_pools_true_qa(workdir, monkeypatch):
  fed = {}
  original_dataset = context.Context.dataset

  def recorded(self, records, batch_size, purpose):
    fed[purpose] = records
    return original_dataset(self, records, batch_size, purpose)

  monkeypatch.setattr(context.Context, "dataset", recorded)
  monkeypatch.setattr(context.Context, "train_method", lambda self, name, *, new_data, **kw: new_data())
  ctx = _ctx(workdir, **{"baselines.methods": "('oracle_100',)"})
  baselines.run(ctx)
  records = fed["baselines/oracle_100/data"]
  s = json.load(open(ctx.path("data", "splits.json")))
  pool = set(s["labeled"]) | set(s["unlabeled"])
  source = datasets.load_source(s["target_dir"], "train")
  expected = sorted((ex["id"], q["question"], q["answer"]) for ex in map(source.__getitem__, range(len(source)))
                    if ex["id"] in pool for q in ex["qa"])
  assert sorted((r["image_id"], r["question"], r["answer"]) for r in records) == expected
  assert not {r["image_id"] for r in records} & (set(s["dev"]) | set(s["test"]))


def test_lora_connector_trains_exactly_the_lora_factors_and_the_connector(workdir, monkeypatch):
  trained = {}
  original_finetune = context.Context.finetune

  def keep(self, name, **kw):
    out = original_finetune(self, name, **kw)
    trained[name] = _flat(out)
    return out

  monkeypatch.setattr(context.Context, "finetune", keep)
  ctx = _ctx(workdir, **{"baselines.methods": "('lora_connector',)", "vqa.steps": "3"})
  baselines.run(ctx)
  raw = trained["baselines/lora_connector"]
  base = _flat(ctx.load_params("base"))
  connector = [k for k in base if k.startswith("img/head/")]
  assert connector
  for k, v in base.items():
    if k in connector:
      assert not np.array_equal(raw["base/" + k], v), k
    else:
      np.testing.assert_array_equal(raw["base/" + k], v, err_msg=k)  # LM and ViT bit-identical
  factors = [k for k in raw if k.startswith("lora/")]
  assert factors and all(k.endswith(("/a", "/b")) for k in factors)
  assert any(not np.allclose(raw[k], 0) for k in factors if k.endswith("/b"))  # B starts at 0
  assert set(raw) == {"base/" + k for k in base} | set(factors)
  # What is saved is the merged model (trained connector included); tuning.json says how.
  b = ctx.config.baselines
  nested = traverse_util.unflatten_dict({k[len("base/"):]: v for k, v in raw.items()
                                         if k.startswith("base/")}, sep="/")
  merged = _flat(lora.merge({"base": nested, "lora": _unflat_lora(raw)}, rank=b.lora_rank,
                            alpha=b.lora_alpha))
  saved = _flat(ctx.load_params("baselines/lora_connector"))
  assert saved.keys() == merged.keys()
  for k in saved:
    np.testing.assert_allclose(saved[k], merged[k], rtol=1e-6, atol=1e-6, err_msg=k)
  assert json.load(open(ctx.path("baselines/lora_connector/tuning.json"))) == {
      "lr": b.lora_lr, "steps": 3, "grid": []}


def _unflat_lora(raw: dict) -> dict:
  """The flat 'lora/<param path>/<a|b>' entries back into lora's {path: {"a", "b"}}."""
  out = {}
  for k, v in raw.items():
    if k.startswith("lora/"):
      path, _, factor = k[len("lora/"):].rpartition("/")
      out.setdefault(path, {})[factor] = v
  return out


@pytest.mark.parametrize("arg,domain", [("claim", "synthetic_sports"),
                                        ("claim,endoscopy", "synthetic_endoscopy")])
def test_claim_config_turns_on_the_fair_comparison(arg, domain):
  c = config_lib.load_config_file(f"configs/demo.py:{arg}")
  config_lib.validate(c)
  assert c.data.domain == domain and c.data.dev_images > 0 and len(c.tune.lrs) > 1
  assert set(context.BASELINES) <= set(c.baselines.methods)
  assert set(context.methods(c)) >= {"zero_shot", "leaml", "leaml_no_mask", "leaml_random_mask",
                                     *context.BASELINES}
  default = config_lib.load_config_file("configs/demo.py")
  assert not default.tune.lrs and set(default.baselines.methods) == {"zero_shot", "finetune", "lora"}
