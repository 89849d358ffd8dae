"""Orbax checkpoints: the train state and the data-iterator position, saved together.

A stage killed midway restarts from `latest()`; saves are atomic (orbax writes to a temp dir
and renames), so a crash during a save never corrupts the last good checkpoint.
"""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp

from leaml_jax.errors import CheckpointError


class Checkpointer:
  """Thin wrapper: save(step, state, data_state), restore_latest(abstract_state)."""

  def __init__(self, directory: str, *, save_every: int = 0, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory) if "://" not in directory else directory
    self.save_every = int(save_every)
    self._mngr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=False))

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def should_save(self, step: int) -> bool:
    return self.save_every > 0 and step % self.save_every == 0

  def save(self, step: int, state, data_state: dict | None = None, *, force: bool = True):
    args = {"state": ocp.args.StandardSave(state)}
    if data_state is not None:
      args["data"] = ocp.args.JsonSave(data_state)
    self._mngr.save(step, args=ocp.args.Composite(**args), force=force)
    self._mngr.wait_until_finished()

  def restore(self, abstract_state, step: int | None = None):
    """-> (state, data_state or None). abstract_state: ShapeDtypeStructs with shardings."""
    step = self._mngr.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint under {self.directory}")
    items = self._mngr.item_metadata(step)
    args = {"state": ocp.args.StandardRestore(abstract_state)}
    has_data = items is not None and "data" in (items.keys() if hasattr(items, "keys") else [])
    if has_data:
      args["data"] = ocp.args.JsonRestore()
    try:
      out = self._mngr.restore(step, args=ocp.args.Composite(**args))
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
  path = os.path.abspath(directory)
  ckptr.save(path, params, force=True)
  ckptr.wait_until_finished()


def load_params(directory: str, abstract_params):
  path = os.path.abspath(directory)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"no parameters at {path}: run the stage that writes it first")
  return ocp.StandardCheckpointer().restore(path, abstract_params)
