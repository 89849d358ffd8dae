"""gs:// workdirs against a local GCS emulator (gcp-storage-emulator on 127.0.0.1): artifacts,
metrics, tokenizer, params and orbax checkpoints (with the per-process data position) round-trip;
the whole pipeline on a bucket workdir, SIGKILLed in the middle of `vqa`, resumes from the bucket's
checkpoint (finished stages skipped), leaves every stage's outputs there, and its VQA params are
bit-identical to an uninterrupted run of that stage.
The emulator (tests/_gcs_emulator.py: gcp-storage-emulator plus the generation headers tensorstore
reads) is chosen only by the standard variables: STORAGE_EMULATOR_HOST (gcsfs, under
etils.epath) and TENSORSTORE_GCS_HTTP_URL (tensorstore, under orbax). GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT
=false skips gcsfs's bucket-type probe (a storage-control call the emulator does not serve:
without credentials it fails fast with a warning per call; with credentials it waits)."""
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
import portpicker
import pytest

from leaml_jax import config_lib, main
from leaml_jax.stages import context
from tests.test_processes import PIPELINE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def emulator():
  if shutil.which("gcp-storage-emulator") is None:
    pytest.skip("gcp-storage-emulator not installed (tests/requirements.txt)")
  port = portpicker.pick_unused_port()
  proc = subprocess.Popen([sys.executable, "-m", "tests._gcs_emulator", str(port)], cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  url = f"http://127.0.0.1:{port}"
  for _ in range(100):
    try:
      urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1)
      break
    except OSError:
      time.sleep(0.1)
  yield url
  proc.terminate()
  proc.wait(timeout=10)


def _gcs_env(emulator, **extra):
  return {**os.environ, "STORAGE_EMULATOR_HOST": emulator, "TENSORSTORE_GCS_HTTP_URL": emulator,
          "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO,
          **extra}


def _objects(emulator, prefix: str) -> list[str]:
  """Names of the bucket's objects under prefix (the JSON API, as any GCS client lists them)."""
  names, token = [], ""
  while True:
    query = urllib.parse.urlencode({"prefix": prefix, **({"pageToken": token} if token else {})})
    with urllib.request.urlopen(f"{emulator}/storage/v1/b/bkt/o?{query}", timeout=10) as r:
      page = json.load(r)
    names += [o["name"] for o in page.get("items", [])]
    token = page.get("nextPageToken", "")
    if not token:
      return names


def test_gs_workdir_round_trips(emulator):
  env = _gcs_env(emulator)
  proc = subprocess.run([sys.executable, "-m", "tests._gcs_worker", "gs://bkt/run"], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "gcs round trips ok" in proc.stdout


VQA_STEPS, SAVE_EVERY = 40, 5
BUCKET_RUN = PIPELINE + [f"--config.vqa.steps={VQA_STEPS}", f"--config.vqa.save_every={SAVE_EVERY}",
                         "--config.vqa.log_every=5", "--config.mesh.data=1", "--config.mesh.fsdp=-1"]


def test_killed_bucket_run_resumes_from_the_bucket(emulator, tmp_path):
  workdir = "gs://bkt/run"
  env = _gcs_env(emulator, XLA_FLAGS="--xla_force_host_platform_device_count=2 "
                 "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true",
                 LEAML_COMPILATION_CACHE=str(tmp_path / "xla"), LEAML_BUILD_CACHE=str(tmp_path / "builds"))
  cmd = [sys.executable, "-m", "leaml_jax.main", f"--workdir={workdir}", *BUCKET_RUN]
  log = open(tmp_path / "killed.log", "w")
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
  committed = lambda: sorted(int(m.group(1)) for n in _objects(emulator, "run/vqa/ckpt/")
                             if (m := re.fullmatch(r"run/vqa/ckpt/(\d+)/commit_success\.txt", n)))
  deadline = time.time() + 600
  while not committed() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.1)
  proc.kill()  # SIGKILL: no handler, no cleanup, like a lost VM
  proc.wait()
  log.close()
  killed_log = (tmp_path / "killed.log").read_text()
  steps = committed()
  assert proc.returncode == -9 and steps, killed_log[-3000:]
  resume_at = steps[-1]
  assert 0 < resume_at < VQA_STEPS and "[leaml] vqa: done" not in killed_log

  rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-3000:]
  for stage in ("prepare", "base", "captions", "relevance", "qa_generator", "pseudo_qa"):
    assert f"[leaml] {stage}: outputs complete, skipped" in rerun.stdout, stage
  assert f"[leaml] vqa: resumed at step {resume_at}" in rerun.stdout, rerun.stdout[-2000:]
  logged = [json.loads(line)["step"] for line in _read(emulator, "run/vqa/metrics.jsonl").splitlines()]
  # Trained on after the resume, one row per logged step (the killed run's later rows dropped).
  assert logged == list(range(5, VQA_STEPS + 1, 5)), logged

  # Every output each stage declares is in the bucket, and its completion marker.
  cfg = config_lib.load_config_file("configs/demo.py:quick")
  for arg in BUCKET_RUN[1:]:
    config_lib.apply_override(cfg, *arg[len("--config."):].split("=", 1))
  names = _objects(emulator, "run/")
  ctx = context.Context(cfg, workdir)
  for stage in cfg.stages:
    for out in [f"status/{stage}.json"] + main.stage_registry()[stage].outputs(ctx):
      assert any(n == f"run/{out}" or n.startswith(f"run/{out}/") for n in names), (stage, out)
  report = json.loads(_read(emulator, "run/report.json"))
  assert set(report["methods"]) == {"zero_shot", "finetune", "leaml"}

  # The resumed stage's params are those of an uninterrupted run of it (redone from scratch).
  dump = lambda out: _ok(subprocess.run([sys.executable, "-m", "tests._gcs_worker", "--params",
                                         f"{workdir}/vqa/params", str(out)], cwd=REPO, env=env,
                                        capture_output=True, text=True, timeout=300))
  dump(tmp_path / "resumed.npz")
  redo = subprocess.run(cmd + ["--config.stages=vqa", "--config.force=vqa"], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=900)
  assert redo.returncode == 0 and "resumed" not in redo.stdout, redo.stderr[-3000:]
  dump(tmp_path / "uninterrupted.npz")
  a, b = np.load(tmp_path / "resumed.npz"), np.load(tmp_path / "uninterrupted.npz")
  assert sorted(a.files) == sorted(b.files) and len(a.files) > 10
  for name in a.files:
    assert a[name].tobytes() == b[name].tobytes(), f"{name}: the resumed run differs"


def _read(emulator, name: str) -> str:
  url = f"{emulator}/download/storage/v1/b/bkt/o/{urllib.parse.quote(name, safe='')}?alt=media"
  with urllib.request.urlopen(url, timeout=10) as r:
    return r.read().decode()


def _ok(proc):
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  return proc
