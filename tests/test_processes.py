"""Several processes: two processes x 2 CPU devices (jax.distributed on localhost) train and
generate exactly what one process x 4 devices does with the same global batch; each saves its own
data position, and a different number of processes cannot resume it. Pre-emption: SIGTERM in the
middle of training -> checkpoint at that step, exit 75 -> rerun -> bit-identical final params.

Workers are tests/_resume_worker.py subprocesses (jax.distributed needs a process each)."""
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
