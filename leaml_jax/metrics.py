"""Metric logging: one JSON line per step (metrics.jsonl) and TensorBoard scalars.

On a bucket (gs://) metrics.jsonl is rewritten whole at every log step (objects cannot be
appended to); TensorBoard events are written for local directories only."""
from __future__ import annotations

import json
import math
import os

import jax
import numpy as np
from etils import epath
from tqdm.auto import tqdm

SHOW_PROGRESS = True  # main sets it from config.progress


def progress(iterable=None, **kwargs):
  """tqdm bar (on the first process only), switched off with --config.progress=false."""
  off = kwargs.pop("disable", False) or not SHOW_PROGRESS or jax.process_index() != 0
  return tqdm(iterable, disable=off, **kwargs)


class MetricWriter:
  def __init__(self, directory: str, *, tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    self._tb = None
    if not self.enabled:
      return
    self._remote = "://" in str(directory)
    self._path = epath.Path(directory) / "metrics.jsonl"
    self._path.parent.mkdir(parents=True, exist_ok=True)
    if self._remote:
      self._lines = self._path.read_text().splitlines(True) if self._path.exists() else []
    else:
      self._f = open(self._path, "a")
    if tensorboard and not self._remote:
      from tensorboardX import SummaryWriter  # no TensorFlow needed
      self._tb = SummaryWriter(os.path.join(directory, "tb"))

  def write(self, step: int, metrics: dict):
    if not self.enabled:
      return
    row = {"step": int(step)}
    for k, v in metrics.items():
      v = float(np.asarray(v))
      row[k] = v if math.isfinite(v) else str(v)
      if self._tb is not None and math.isfinite(v):
        self._tb.add_scalar(k, v, step)
    if self._remote:
      self._lines.append(json.dumps(row) + "\n")
      self._path.write_text("".join(self._lines))
      return
    self._f.write(json.dumps(row) + "\n")
    self._f.flush()

  def drop_after(self, step: int):
    """A run resumed from its step-`step` checkpoint trains the later steps again: the rows a
    killed run logged for them go, so each step has one row."""
    if not self.enabled:
      return
    keep = lambda lines: [l for l in lines if l.strip() and json.loads(l)["step"] <= step]
    if self._remote:
      if len(keep(self._lines)) < len(self._lines):
        self._lines = keep(self._lines)
        self._path.write_text("".join(self._lines))
      return
    self._f.close()
    lines = self._path.read_text().splitlines(True)
    if len(keep(lines)) < len(lines):
      tmp = self._path.with_name(".tmp_metrics.jsonl")
      tmp.write_text("".join(keep(lines)))
      os.replace(tmp, self._path)
    self._f = open(self._path, "a")

  def close(self):
    if self.enabled:
      if not self._remote:
        self._f.close()
      if self._tb is not None:
        self._tb.close()

