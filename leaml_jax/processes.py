"""Several processes (multi-host TPU slices, CPU clusters): start-up and who does what.

Every process runs the same command. `initialize` calls `jax.distributed.initialize()` once,
before any other jax call:
  * on a Cloud TPU VM without flags (jax reads the slice's workers from the VM's metadata;
    a one-host slice becomes one process);
  * with `--config.mesh.coordinator=HOST:PORT --config.mesh.num_processes=N
    --config.mesh.process_id=I` anywhere else (CPU clusters, tests).
A caller that initialised jax.distributed itself is left alone.

`batch_size` in the config is the global batch: each process feeds `local_batch_size` rows.
"""
from __future__ import annotations

import glob

import jax

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
