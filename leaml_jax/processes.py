"""Several processes (multi-host TPU slices, CPU clusters): start-up and who does what.

Every process runs the same command. `initialize` calls `jax.distributed.initialize()` once,
before any other jax call:
  * on a Cloud TPU VM without flags (jax reads the slice's workers from the VM's metadata;
    a one-host slice becomes one process);
  * with `--config.mesh.coordinator=HOST:PORT --config.mesh.num_processes=N
    --config.mesh.process_id=I` anywhere else (CPU clusters, tests).
A caller that initialised jax.distributed itself is left alone.

`batch_size` in the config is the global batch: each process feeds `local_batch_size` rows.
Shared files are written by process 0 only (stages/artifacts.py); `sync` is where the others
wait for them, `process_0_first` runs work that must not race on a shared disk.
"""
from __future__ import annotations

import glob

import jax
from jax.experimental import multihost_utils

from leaml_jax.errors import ConfigError

_TPU_PCI_VENDOR = "0x1ae0"  # Google: what jax itself checks to know it runs on a Cloud TPU VM


def on_cloud_tpu_vm() -> bool:
  for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
    try:
      with open(vendor) as f:
        if f.read().strip() == _TPU_PCI_VENDOR:
          return True
    except OSError:
      continue
  return False


def initialize(mesh_cfg) -> None:
  """jax.distributed.initialize() exactly once, when there is more than one process to expect."""
  if jax.distributed.is_initialized():
    return
  coordinator = str(mesh_cfg.get("coordinator", "") or "")
  if coordinator:
    n, i = int(mesh_cfg.num_processes), int(mesh_cfg.process_id)
    if n < 1 or not 0 <= i < n:
      raise ConfigError(f"--config.mesh.coordinator={coordinator} needs --config.mesh.num_processes=N "
                        f"(>= 1) and --config.mesh.process_id=I in [0, N); got N={n}, I={i}")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=n, process_id=i)
  elif on_cloud_tpu_vm():
    jax.distributed.initialize()  # the slice's workers come from the TPU VM metadata


def local_batch_size(global_batch: int, count: int | None = None, what: str = "batch_size") -> int:
  """Rows each of `count` processes feeds for a global batch (they must divide evenly)."""
  count = jax.process_count() if count is None else count
  if global_batch % count:
    raise ConfigError(f"{what}={global_batch} is the global batch and must divide evenly over "
                      f"{count} processes; use a multiple of {count}")
  return global_batch // count


def sync(point: str) -> None:
  """Every process waits here until all have reached `point` (a no-op with one process); the
  name must be the same on every process (a mismatch fails loudly)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(point)


def process_0_first(fn, point: str):
  """fn() on process 0, then on every other process: work that writes into a directory the
  processes may share (a local workdir on one machine or NFS) but that each needs on its own disk
  otherwise (per-host dataset builds). The others then find process 0's result, or make theirs."""
  out = fn() if jax.process_index() == 0 else None
  sync(point)
  return out if jax.process_index() == 0 else fn()
