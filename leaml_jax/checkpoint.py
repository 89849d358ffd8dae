"""Orbax checkpoints: the train state and the data-iterator position, saved together.

A stage killed midway restarts from `latest()`; saves are atomic (orbax writes to a temp dir
and renames; on gs:// a commit marker), so a crash during a save never corrupts the last good
checkpoint. Directories are local paths or gs:// URLs (orbax/tensorstore handle both).

Each process saves its own data-iterator position, `data/process_{i}-of-{n}.json` inside the
step, and restores it on the same number of processes.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from leaml_jax.errors import CheckpointError


def _absolute(directory) -> str:
  directory = str(directory)
  return directory if "://" in directory else os.path.abspath(directory)


# ----------------------------------------------------------------------------- data position
class ProcessDataHandler(ocp.CheckpointHandler):
  """One JSON file per process: its data iterator's state (grain's checkpoint layout)."""

  def save(self, directory: epath.Path, args: "ProcessDataSave"):
    name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    (directory / name).write_text(json.dumps(args.state))

  def restore(self, directory: epath.Path, args: "ProcessDataRestore" = None):
    n = jax.process_count()
    path = directory / f"process_{jax.process_index()}-of-{n}.json"
    if not path.exists():
      counts = sorted({int(m.group(1)) for f in directory.iterdir()
                       if (m := re.fullmatch(r"process_\d+-of-(\d+)\.json", f.name))})
      raise CheckpointError(
          f"{directory}: the data position was saved by {counts or 'no'} process(es), this run has "
          f"{n}; resume with the same number of processes (hosts), or delete "
          f"{directory.parent.parent} to restart this stage")
    return json.loads(path.read_text())

  def metadata(self, directory):
    return None

  def structure(self, directory):
    return None

  def finalize(self, directory):
    pass

  def close(self):
    pass


@ocp.args.register_with_handler(ProcessDataHandler, for_save=True)
@dataclasses.dataclass
class ProcessDataSave(ocp.args.CheckpointArgs):
  state: Any


@ocp.args.register_with_handler(ProcessDataHandler, for_restore=True)
@dataclasses.dataclass
class ProcessDataRestore(ocp.args.CheckpointArgs):
  pass


class Checkpointer:
  """Thin wrapper: save(step, state, data_state), restore_latest(abstract_state)."""

  def __init__(self, directory: str, *, save_every: int = 0, max_to_keep: int = 2):
    self.directory = _absolute(directory)
    self.save_every = int(save_every)
    self._mngr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=False))

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def should_save(self, step: int) -> bool:
    return self.save_every > 0 and step % self.save_every == 0

  def reached_preemption(self, step: int) -> bool:
    """True on every process at the same step once the slice is being pre-empted (jax's
    preemption service, multi-process runs only; single-process SIGTERM is train.fit's)."""
    return self._mngr.reached_preemption(step)

  def save(self, step: int, state, data_state: dict | None = None, *, force: bool = True):
    args = {"state": ocp.args.StandardSave(state)}
    if data_state is not None:
      args["data"] = ProcessDataSave(data_state)
    self._mngr.save(step, args=ocp.args.Composite(**args), force=force)
    self._mngr.wait_until_finished()

  def restore(self, abstract_state, step: int | None = None):
    """-> (state, data_state or None). abstract_state: ShapeDtypeStructs with shardings."""
    step = self._mngr.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint under {self.directory}")
    has_data = (epath.Path(self.directory) / str(step) / "data").exists()
    args = {"state": ocp.args.StandardRestore(abstract_state)}
    if has_data:
      args["data"] = ProcessDataRestore()
    try:
      out = self._mngr.restore(step, args=ocp.args.Composite(**args))
    except CheckpointError:
      raise
    except Exception as e:  # mismatched tree / shapes: say what to do.
      raise CheckpointError(
          f"checkpoint at {self.directory} step {step} does not match the model/optimizer of this "
          f"config ({type(e).__name__}: {str(e)[:300]}). Delete that directory or use the config "
          f"it was written with.") from e
    return out["state"], (out["data"] if has_data else None)

  def close(self):
    self._mngr.close()


def abstract_like(tree):
  """ShapeDtypeStructs (with shardings) for restoring into the same layout as `tree`."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)


def save_params(directory: str, params):
  """One-shot params checkpoint (stage artifacts like base/, vqa/)."""
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(_absolute(directory), params, force=True)
  ckptr.wait_until_finished()


def load_params(directory: str, abstract_params):
  path = _absolute(directory)
  if not epath.Path(path).is_dir():
    raise FileNotFoundError(f"no parameters at {path}: run the stage that writes it first")
  return ocp.StandardCheckpointer().restore(path, abstract_params)
