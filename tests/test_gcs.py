"""gs:// workdirs against a local GCS emulator (gcp-storage-emulator on 127.0.0.1): artifacts,
metrics, tokenizer, params and orbax checkpoints (with the per-process data position) round-trip.
The emulator is chosen only by the standard variables: STORAGE_EMULATOR_HOST (gcsfs, under
etils.epath) and TENSORSTORE_GCS_HTTP_URL (tensorstore, under orbax). GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT
=false skips gcsfs's bucket-type probe (a storage-control call the emulator does not serve:
without credentials it fails fast with a warning per call; with credentials it waits)."""
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import portpicker
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def emulator():
  exe = shutil.which("gcp-storage-emulator")
  if exe is None:
    pytest.skip("gcp-storage-emulator not installed (tests/requirements.txt)")
  port = portpicker.pick_unused_port()
  proc = subprocess.Popen([exe, "start", "--host=127.0.0.1", f"--port={port}", "--in-memory",
                           "--default-bucket=bkt"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
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


def test_gs_workdir_round_trips(emulator):
  env = {**os.environ, "STORAGE_EMULATOR_HOST": emulator, "TENSORSTORE_GCS_HTTP_URL": emulator,
         "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO}
  proc = subprocess.run([sys.executable, "-m", "tests._gcs_worker", "gs://bkt/run"], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "gcs round trips ok" in proc.stdout
