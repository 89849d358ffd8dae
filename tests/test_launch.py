"""launch/tpu_vm.sh with DRY_RUN=1: the gcloud commands it would run, for a 2-host slice (v4-16)."""
import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(PROJECT="proj", ZONE="us-central2-b", TPU_NAME="pod", ACCEL="v4-16",
           BUCKET="gs://bkt", RUN="r1", CONFIG="configs/demo.py", DRY_RUN="1")


def _dry(*args, **env) -> list[str]:
  out = subprocess.run(["bash", os.path.join(REPO, "launch", "tpu_vm.sh"), *args],
                       env={**os.environ, **ENV, **env}, capture_output=True, text=True,
                       timeout=60, check=True, cwd=REPO).stdout
  return [line for line in out.splitlines() if line.startswith("gcloud ")]


def test_create_plain_spot_and_queued():
  [plain] = _dry("create")
  assert plain.startswith("gcloud compute tpus tpu-vm --project=proj --zone=us-central2-b create pod")
  assert "--accelerator-type=v4-16" in plain and "--spot" not in plain
  [spot] = _dry("create", SPOT="1")
  assert spot.endswith("--spot")
  [queued] = _dry("create", SPOT="1", QUEUED="1")
  assert "queued-resources" in queued and "--node-id=pod" in queued and "--spot" in queued


def test_setup_reaches_every_worker():
  lines = _dry("setup")
  assert len(lines) == 2 and all("--worker=all" in line for line in lines)
  assert " scp " in lines[0] and "pip install -q -r ~/leaml_jax/requirements.txt" in lines[1]


def test_run_is_one_command_on_every_worker_with_the_bucket_as_workdir():
  [run] = _dry("run", "--config.seed=3")
  assert " ssh pod --worker=all " in run
  assert run.count("python -m leaml_jax.main") == 1
  assert "--config=configs/demo.py" in run and "--config.seed=3" in run
  assert "--workdir=gs://bkt/runs/r1 " in run
  assert "rsync" not in run and "jax.distributed" not in run  # main starts it, once


def test_status_and_logs_look_at_every_worker():
  status = _dry("status")
  assert "describe pod" in status[0] and "--worker=all" in status[-1]
  [logs] = _dry("logs", LINES="7")
  assert "--worker=all" in logs and "tail -n 7 $HOME/leaml_r1.log" in logs


def test_run_refuses_a_local_bucket():
  proc = subprocess.run(["bash", os.path.join(REPO, "launch", "tpu_vm.sh"), "run"],
                        env={**os.environ, **ENV, "BUCKET": "/tmp/x"}, capture_output=True,
                        text=True, timeout=60)
  assert proc.returncode == 2 and "must be a gs:// URL" in proc.stderr
