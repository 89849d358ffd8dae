"""`--config.profile=STAGE:FIRST:NUM`: a jax.profiler trace of a few steps of one stage.

    --config.profile=vqa:10:3        training steps 10, 11, 12 of the vqa stage's first training run
    --config.profile=pseudo_qa:0:1   the first generation call of the pseudo_qa stage

In a stage that trains, FIRST counts training steps from 0 (step k is the (k+1)-th optimizer
step of a training run); in a stage that only generates (captions, pseudo_qa, evaluate), it counts the stage's generation
calls from 0 (one call = one batch: prefill + decode loop). Steps already compiled count like any
other, so pick FIRST > 0 to leave compilation out. One trace per run, written under
`<workdir>/profile/<stage>/` (TensorBoard's layout: plugins/profile/<run>/<host>.xplane.pb and a
Perfetto .trace.json.gz). Open it with `tensorboard --logdir <workdir>/profile` (Profile tab;
needs `pip install tensorboard tensorboard-plugin-profile`) or drop the .trace.json.gz on
https://ui.perfetto.dev.

The active window is process state set by `main` around each stage (`stage(...)`); training
loops and `generate` report their steps through `step_begin` / `step_end` (no-ops otherwise).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os

from leaml_jax.errors import ConfigError


@dataclasses.dataclass
class _Window:
  stage: str
  first: int
  num: int
  logdir: str
  kind: str | None = None    # "train" or "generate": the first kind of step the stage reports
  calls: int = 0             # generation calls so far
  tracing: bool = False
  done: bool = False


_ACTIVE: _Window | None = None


def parse(spec: str) -> tuple[str, int, int] | None:
  """"STAGE:FIRST:NUM" -> (stage, first, num); "" -> None."""
  if not spec:
    return None
  parts = spec.split(":")
  try:
    stage, first, num = parts[0], int(parts[1]), int(parts[2])
    if len(parts) != 3 or not stage or first < 0 or num < 1:
      raise ValueError
  except (ValueError, IndexError):
    raise ConfigError(f"config.profile={spec!r}: use STAGE:FIRST:NUM, e.g. vqa:10:3 (steps 10-12 of "
                      "the vqa stage; FIRST >= 0, NUM >= 1)") from None
  return stage, first, num


@contextlib.contextmanager
def stage(name: str, spec: str, workdir: str):
  """Activates the profile window while stage `name` runs, if `spec` names it."""
  global _ACTIVE
  parsed = parse(spec)
  if parsed is None or parsed[0] != name:
    yield
    return
  _ACTIVE = _Window(name, parsed[1], parsed[2], os.path.join(workdir, "profile", name))
  try:
    yield
  finally:
    window, _ACTIVE = _ACTIVE, None
    if window.tracing:  # the stage ended inside the window: keep what was traced
      import jax
      jax.profiler.stop_trace()
      _report(window)


def step_begin(kind: str, index: int) -> None:
  """Before step `index` of `kind` ("train": the step about to run, 0-based; "generate": the call)."""
  w = _ACTIVE
  if w is None or w.done or w.tracing:
    return
  w.kind = w.kind or kind
  if kind == w.kind and index == w.first:
    import jax
    os.makedirs(w.logdir, exist_ok=True)
    jax.profiler.start_trace(w.logdir)
    w.tracing = True


def step_end(kind: str, index: int, outputs=None) -> None:
  """After step `index` of `kind`: waits for `outputs` and ends the trace after the window's last."""
  w = _ACTIVE
  if w is None or not w.tracing or kind != w.kind or index != w.first + w.num - 1:
    return
  import jax
  jax.block_until_ready(outputs)
  jax.profiler.stop_trace()
  w.tracing, w.done = False, True
  _report(w)


@contextlib.contextmanager
def generation_call():
  """Wraps one generation call (dispatch to host result): counted, traced inside the window."""
  w = _ACTIVE
  if w is None:
    yield
    return
  index, w.calls = w.calls, w.calls + 1
  step_begin("generate", index)
  with annotation("generate", index):
    yield
  step_end("generate", index)


def annotation(kind: str, index: int):
  """A named step in the trace (TensorBoard's step view) while a window is being traced."""
  if _ACTIVE is not None and _ACTIVE.tracing:
    import jax
    return jax.profiler.StepTraceAnnotation(kind, step_num=index)
  return contextlib.nullcontext()


def _report(w: _Window) -> None:
  print(f"[leaml] {w.stage}: profile of {w.kind} steps from {w.first} written to {w.logdir} "
        f"(tensorboard --logdir {os.path.dirname(w.logdir)}, or its .trace.json.gz in ui.perfetto.dev)",
        flush=True)
