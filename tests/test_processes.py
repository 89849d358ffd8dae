"""Several processes: two processes x 2 CPU devices (jax.distributed on localhost) train and
generate exactly what one process x 4 devices does with the same global batch; each saves its own
data position, and a different number of processes cannot resume it. Pre-emption: SIGTERM in the
middle of training -> checkpoint at that step, exit 75 -> rerun -> bit-identical final params.

The whole pipeline (`python -m leaml_jax.main`, configs/demo.py:quick shrunk, every stage) on two
processes x 4 CPU devices writes the same report, predictions, pseudo QA and parameters as on one
process x 8 devices.

Workers are tests/_resume_worker.py / leaml_jax.main subprocesses (jax.distributed needs a
process each)."""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import portpicker

from leaml_jax import checkpoint
from leaml_jax.data import tokenizer as tok_lib
from leaml_jax.errors import PREEMPTED_EXIT_CODE
from tests import _resume_worker as worker
from tests.test_checkpoint import REPO, _child_env, _ok, _parse

STEPS = 4


def _env(tmp_path, devices_per_process):
  env = _child_env(tmp_path / "xla_cache")
  env["XLA_FLAGS"] += f" --xla_force_host_platform_device_count={devices_per_process}"
  return env


def _cmd(workdir, tokenizer, *extra):
  return [sys.executable, "-m", "tests._resume_worker", f"--workdir={workdir}",
          f"--tokenizer={tokenizer}", f"--steps={STEPS}", "--devices=4", "--batch_size=4",
          *extra]


def _tokenizer(tmp_path):
  path = tmp_path / "tokenizer.json"
  tok_lib.train_tokenizer(worker.corpus(worker.make_records()), str(path), vocab_size=300)
  return path


def _run_two(workdir, tokenizer, env, *extra):
  port = portpicker.pick_unused_port()
  procs = [subprocess.Popen(_cmd(workdir, tokenizer, f"--coordinator=127.0.0.1:{port}",
                                 "--num_processes=2", f"--process_id={i}", *extra),
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  return [subprocess.CompletedProcess(p.args, p.returncode, o, e) for p, (o, e) in zip(procs, outs)]


def test_two_processes_train_and_generate_like_one(tmp_path):
  tokenizer = _tokenizer(tmp_path)
  one, two = tmp_path / "one", tmp_path / "two"
  single = _ok(subprocess.run(_cmd(one, tokenizer, "--texts"), cwd=REPO, env=_env(tmp_path, 4),
                              capture_output=True, text=True, timeout=600))
  runs = [_ok(r) for r in _run_two(two, tokenizer, _env(tmp_path, 2), "--texts")]

  # Each process fed its half of every global batch; in process order they are one process's.
  whole = _parse(single.stdout)[1]
  halves = [_parse(r.stdout)[1] for r in runs]
  assert sorted(whole) == list(range(1, STEPS + 1))
  assert all(halves[0][s] + halves[1][s] == whole[s] and len(halves[0][s]) == 2 for s in whole)

  a, b = np.load(one / "final_params.npz"), np.load(two / "final_params.npz")
  assert sorted(a.files) == sorted(b.files) and len(a.files) > 10
  # A key bias shifts every attention logit of a query equally, so softmax cancels it: its
  # gradient is rounding noise, which Adam scales up to lr-sized steps whose sign differs between
  # one and two processes (the cross-process sum adds in another order). Everything else agrees.
  for name in a.files:
    if not name.endswith("k_proj/bias"):
      np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-5, err_msg=name)
  texts = json.loads((one / "texts.json").read_text())
  assert len(texts) == 6 and json.loads((two / "texts.json").read_text()) == texts

  # The data position is saved per process, and only the same process count can resume it.
  data = two / "ckpt" / str(STEPS) / "data"
  assert sorted(f for f in os.listdir(data) if f.startswith("process_")) == [
      "process_0-of-2.json", "process_1-of-2.json"]
  resumed = subprocess.run(_cmd(two, tokenizer), cwd=REPO,
                           env=_env(tmp_path, 4), capture_output=True, text=True, timeout=600)
  assert resumed.returncode != 0
  assert "saved by [2] process(es), this run has 1" in resumed.stderr


def test_sigterm_checkpoints_and_rerun_is_bit_identical(tmp_path):
  tokenizer = _tokenizer(tmp_path)
  env = _env(tmp_path, 1)
  plain, stopped = tmp_path / "plain", tmp_path / "stopped"
  base = lambda d, *x: subprocess.run(_cmd(d, tokenizer, "--devices=1", *x), cwd=REPO, env=env,
                                      capture_output=True, text=True, timeout=600)
  _ok(base(plain))
  first = base(stopped, "--sigterm_at=3")
  assert first.returncode == PREEMPTED_EXIT_CODE, (first.returncode, first.stdout, first.stderr[-2000:])
  assert "pre-empted at step 3/4" in first.stdout
  probe = checkpoint.Checkpointer(str(stopped / "ckpt"))
  assert probe.latest_step() == 3  # not a save_every step: saved for the SIGTERM
  probe.close()
  start, batches = _parse(_ok(base(stopped)).stdout)
  assert start == 3 and sorted(batches) == [4]
  a, b = np.load(plain / "final_params.npz"), np.load(stopped / "final_params.npz")
  for name in a.files:
    assert a[name].tobytes() == b[name].tobytes(), f"{name}: resumed run differs"


# configs/demo.py:quick shrunk until both runs fit a few minutes on 2 cores, every stage still run:
# enough base steps that some answers are right (a report of zeros would compare nothing). The mesh
# is 2 (data) x 4 (fsdp): parameters sharded within a process, the batch across processes, so
# the cross-process traffic is the gradient reduction. Measured 2026-12-02, 2-core CPU, tiny model,
# batch 8, 2 processes x 4 devices: 1.2 s per train step at 2 x 4, 1.7 s at 1 x 8 (fsdp across
# the processes), 0.12 s on one process.
PIPELINE = ["--config=configs/demo.py:quick", "--config.progress=false",
            "--config.mesh.data=2", "--config.mesh.fsdp=4",
            "--config.data.num_train=80", "--config.data.num_test=16", "--config.data.label_fraction=0.1",
            "--config.base.num_images=80", "--config.base.eval_images=8",
            "--config.base.steps=20", "--config.base.lr=1e-2", "--config.base.warmup_steps=2",
            "--config.base.batch_size=16", "--config.qa_generator.steps=4", "--config.vqa.steps=4",
            "--config.qa_generator.batch_size=8", "--config.qa_generator.distill_batch_size=8",
            "--config.vqa.batch_size=8", "--config.vqa.save_every=2", "--config.neurons.batch_size=8",
            "--config.pseudo_qa.batch_size=16", "--config.pseudo_qa.samples_per_image=1",
            "--config.pseudo_qa.caption_probe=8", "--config.pseudo_qa.answer_tokens=16",
            "--config.captions.max_new_tokens=16", "--config.eval.batch_size=16",
            "--config.baselines.methods=zero_shot,finetune"]


def read_params(directory) -> dict:
  """A params checkpoint (orbax) as {path: numpy array}, onto this process's first device whatever
  mesh and process count wrote it."""
  import jax
  import orbax.checkpoint as ocp
  directory = str(directory) if "://" in str(directory) else os.path.abspath(directory)
  meta = ocp.StandardCheckpointer().metadata(directory)
  meta = getattr(meta, "item_metadata", meta)
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one), meta)
  params = ocp.StandardCheckpointer().restore(directory, target)
  return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
          for path, v in jax.tree_util.tree_leaves_with_path(params)}


def _main_cmd(workdir, *extra):
  return [sys.executable, "-m", "leaml_jax.main", f"--workdir={workdir}", *PIPELINE, *extra]


def test_two_processes_run_the_pipeline_like_one(tmp_path):
  one, two = tmp_path / "one", tmp_path / "two"
  env = lambda devices, cache: {**_env(tmp_path, devices), "LEAML_COMPILATION_CACHE": str(cache)}
  port = portpicker.pick_unused_port()
  # All at once: the two processes wait on each other's collectives, the single run fills the gaps.
  procs = [subprocess.Popen(_main_cmd(two, f"--config.mesh.coordinator=127.0.0.1:{port}",
                                      "--config.mesh.num_processes=2", f"--config.mesh.process_id={i}"),
                            cwd=REPO, env=env(4, tmp_path / f"cache_two_{i}"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  procs.append(subprocess.Popen(_main_cmd(one), cwd=REPO, env=env(8, tmp_path / "cache_one"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  outs = [p.communicate(timeout=900) for p in procs]
  for p, (o, e) in zip(procs, outs):
    _ok(subprocess.CompletedProcess(p.args, p.returncode, o, e))

  # Two processes really ran each training stage: each saved its own data position.
  for stage in ("base", "qa_generator", "vqa", "baselines/finetune"):
    assert [os.path.basename(f) for f in sorted(glob.glob(str(two / stage / "ckpt" / "*" / "data" / "process_*")))
            ] == ["process_0-of-2.json", "process_1-of-2.json"], stage
    assert [os.path.basename(f) for f in glob.glob(str(one / stage / "ckpt" / "*" / "data" / "process_*"))
            ] == ["process_0-of-1.json"], stage

  a, b = (json.loads((d / "report.json").read_text()) for d in (one, two))
  assert set(a["methods"]) == {"zero_shot", "finetune", "leaml"} and a["counts"] == b["counts"]
  assert {m: r["accuracy"] for m, r in a["methods"].items()} == {
      m: r["accuracy"] for m, r in b["methods"].items()}
  assert max(r["accuracy"] for r in a["methods"].values()) > 0  # something to compare
  # Same sampled texts, parsed and dropped for the same reasons (a 20-step base writes few valid QA).
  assert a["pseudo_qa"] == b["pseudo_qa"] and a["pseudo_qa"]["generated"] == 72
  # Every generated text: test answers per question, pseudo QA, the generator's captions.
  for f in ("eval/zero_shot.json", "eval/finetune.json", "eval/leaml.json"):
    ea, eb = (json.loads((d / f).read_text()) for d in (one, two))
    assert ea["correct"] == eb["correct"] and ea["examples"] == eb["examples"], f
  for f in ("pseudo_qa.jsonl", "generator_captions.jsonl", "data/captions.jsonl", "data/tokenizer.json"):
    assert (one / f).read_text() == (two / f).read_text(), f
  sa, sb = (json.loads((d / "data" / "splits.json").read_text()) for d in (one, two))
  assert all(sa[k] == sb[k] for k in ("labeled", "dev", "unlabeled", "test")) and sa["labeled"]
  for f in ("mask.npz",):
    ma, mb = np.load(one / "relevance" / f), np.load(two / "relevance" / f)
    assert all(np.array_equal(ma[k], mb[k]) for k in ma.files)

  # Final parameters of every trained stage (k_proj biases aside, see above).
  for stage in ("base", "qa_generator", "vqa", "baselines/finetune"):
    pa, pb = read_params(one / stage / "params"), read_params(two / stage / "params")
    assert sorted(pa) == sorted(pb) and len(pa) > 10
    for name in pa:
      if not name.endswith("k_proj/bias"):
        np.testing.assert_allclose(pa[name], pb[name], rtol=1e-5, atol=1e-5, err_msg=f"{stage}: {name}")
