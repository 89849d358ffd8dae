"""The one pure train step, its jitted/sharded form, and the loop that drives it.

    train_step(state, batch, rng) -> (state, metrics)

jitted once with explicit in/out shardings and the state donated. The loss is a small pure
function `loss_fn(params, batch, rng) -> (loss, metrics)` chosen by the stage (losses.py).

Non-finite guard, on device and without a host sync per step: a step whose loss or gradient is
not finite leaves the state untouched (metrics["ok"] = 0) and records its number in
`state.nonfinite_step`; from then on every step is a no-op. `fit` reads that field at its next
sync point (log or save step) and stops before saving, so `state.step` always counts the good
steps applied and the last checkpoint is always a good one.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from leaml_jax import checkpoint, optim, profiler, sharding as shd
from leaml_jax.errors import NonFiniteLossError, Preempted
from leaml_jax.metrics import progress


@flax.struct.dataclass
class TrainState:
  step: jax.Array            # good steps applied
  params: Any
  opt_state: Any
  # 0 while every step was finite; else the number (1-based) of the first non-finite step.
  # Sticky: once set, steps are no-ops, so a bad step between two syncs cannot be skipped over.
  nonfinite_step: jax.Array


def _global_norm(tree):
  return optax.tree.norm(jax.tree.map(lambda x: x.astype(jnp.float32), tree))


def _split_micro(batch, n: int):
  def split(x):
    if x.shape[0] % n:
      raise ValueError(f"batch size {x.shape[0]} not divisible by grad_accum={n}")
    return x.reshape((n, x.shape[0] // n) + x.shape[1:])
  return jax.tree.map(split, batch)


def make_train_step(loss_fn: Callable, tx: optax.GradientTransformation, *, grad_accum: int = 1):
  """Pure step. loss_fn(params, batch, rng) -> (scalar loss, dict of scalar metrics)."""
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state: TrainState, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    if grad_accum == 1:
      (loss, aux), grads = grad_fn(state.params, batch, rng)
    else:
      micro = _split_micro(batch, grad_accum)

      def body(carry, xs):
        i, mb = xs
        (l, a), g = grad_fn(state.params, mb, jax.random.fold_in(rng, i))
        acc_g, acc_l, acc_a = carry
        return (jax.tree.map(jnp.add, acc_g, g), acc_l + l, jax.tree.map(jnp.add, acc_a, a)), None

      zeros_g = jax.tree.map(jnp.zeros_like, state.params)
      _, aux_shape = jax.eval_shape(loss_fn, state.params, jax.tree.map(lambda x: x[0], micro), rng)
      zeros_a = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), aux_shape)
      (grads, loss, aux), _ = jax.lax.scan(
          body, (zeros_g, jnp.zeros((), jnp.float32), zeros_a), (jnp.arange(grad_accum), micro))
      grads = jax.tree.map(lambda g: g / grad_accum, grads)
      loss, aux = loss / grad_accum, jax.tree.map(lambda a: a / grad_accum, aux)

    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = _global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    ok = finite & (state.nonfinite_step == 0)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
    first_bad = (state.nonfinite_step == 0) & ~finite
    new_state = TrainState(step=state.step + ok.astype(state.step.dtype),
                           params=keep(params, state.params),
                           opt_state=keep(opt_state, state.opt_state),
                           nonfinite_step=jnp.where(first_bad, state.step + 1, state.nonfinite_step))
    metrics = {"loss": loss, "grad_norm": grad_norm, "param_norm": _global_norm(params),
               "update_norm": _global_norm(updates), "ok": ok.astype(jnp.float32), **aux}
    return new_state, metrics

  return train_step


def create_state(params, tx, mesh) -> tuple[TrainState, Any]:
  """TrainState with the optimizer state born sharded like the params. -> (state, shardings)."""
  # Leaves created off the mesh (e.g. fresh LoRA factors) are replicated onto it.
  on_mesh = lambda x: isinstance(x.sharding, jax.sharding.NamedSharding) and x.sharding.mesh == mesh
  params = jax.tree.map(lambda x: x if on_mesh(x) else jax.device_put(x, shd.replicated(mesh)),
                        params)
  param_sh = jax.tree.map(lambda x: x.sharding, params)
  # Moments mirror the params; anything else (counts, masks, scalars) is replicated. Leaves that
  # a masked/partitioned optimizer keeps no state for (frozen params) are optax.MaskedNode: they
  # must stay MaskedNode here, so the shardings tree has the state's structure.
  abstract_opt = jax.eval_shape(tx.init, params)
  hole = lambda x: isinstance(x, optax.MaskedNode)
  opt_sh = optax.tree_map_params(
      tx, lambda s, p_sh: s if hole(s) else p_sh, abstract_opt, param_sh,
      transform_non_params=lambda _: shd.replicated(mesh), is_leaf=hole)
  opt_state = jax.jit(tx.init, out_shardings=opt_sh)(params)
  scalar = lambda: jax.device_put(jnp.zeros((), jnp.int32), shd.replicated(mesh))
  state = TrainState(step=scalar(), params=params, opt_state=opt_state, nonfinite_step=scalar())
  shardings = TrainState(step=shd.replicated(mesh), params=param_sh, opt_state=opt_sh,
                         nonfinite_step=shd.replicated(mesh))
  return state, shardings


def jit_train_step(train_step, state_shardings, mesh):
  """Jit once: explicit shardings, state donated. Batch leaves split over (data, fsdp)."""
  repl = shd.replicated(mesh)
  batch_sh = lambda b: jax.tree.map(lambda x: shd.batch_sharding(mesh, x.ndim), b)
  cache = {}

  def call(state, batch, rng):
    key = jax.tree.structure(batch)
    if key not in cache:
      cache[key] = jax.jit(train_step,
                           in_shardings=(state_shardings, batch_sh(batch), repl),
                           out_shardings=(state_shardings, repl), donate_argnums=0)
    with shd.with_mesh_rules(mesh):
      return cache[key](state, batch, rng)
  return call


def fit(*, state: TrainState, step_fn, data_iter, num_steps: int, rng, mesh, checkpointer=None,
        writer=None, log_every: int = 10, flops_per_step: float = 0.0, tokens_per_step: int = 0,
        desc: str = "train", host_batch_fn: Callable | None = None):
  """Run `step_fn` until state.step == num_steps; checkpoint model + data position; log metrics.

  The host syncs with the device only on log and save steps (and at the end); each sync first
  checks `state.nonfinite_step` and raises NonFiniteLossError before anything is saved.

  Pre-emption: after SIGTERM (one process) or once jax's preemption service reports the sync
  point (several processes, `Checkpointer.reached_preemption`), the step just finished is
  checkpointed and `Preempted` is raised; rerunning resumes there exactly."""
  start = int(jax.device_get(state.step))
  _check_finite(state, desc, checkpointer)
  if start >= num_steps:
    return state, {}
  with _stop_on_sigterm(checkpointer is not None) as stop:
    return _loop(state, step_fn, data_iter, start, num_steps, rng, mesh, checkpointer, writer,
                 log_every, flops_per_step, tokens_per_step, desc, host_batch_fn, stop)


def _loop(state, step_fn, data_iter, start, num_steps, rng, mesh, checkpointer, writer, log_every,
          flops_per_step, tokens_per_step, desc, host_batch_fn, stop):
  last_t, last_step, metrics = time.perf_counter(), start, {}
  bar = progress(range(start, num_steps), desc=desc, initial=0, leave=False)
  for step in bar:
    host_batch = next(data_iter)
    if host_batch_fn is not None:
      host_batch = host_batch_fn(host_batch)
    batch = shd.shard_batch(host_batch, mesh)
    profiler.step_begin("train", step)
    with profiler.annotation("train", step):
      state, m = step_fn(state, batch, rng)
    profiler.step_end("train", step, (state, m))
    done = step + 1
    if done % log_every == 0 or done == num_steps or (checkpointer and checkpointer.should_save(done)):
      _check_finite(state, desc, checkpointer)
      metrics = {k: float(v) for k, v in jax.device_get(m).items()}
      now = time.perf_counter()
      dt = (now - last_t) / max(done - last_step, 1)
      last_t, last_step = now, done
      metrics.update(step_time_s=dt, tokens_per_s=tokens_per_step / dt,
                     model_tflops=flops_per_step / dt / 1e12)
      bar.set_postfix(loss=f"{metrics['loss']:.3f}")
      if writer is not None:
        writer.write(done, metrics)
      if checkpointer is not None and checkpointer.should_save(done) and done != num_steps:
        checkpointer.save(done, state, _data_state(data_iter))
    if checkpointer is not None and done != num_steps and (
        stop.is_set() or checkpointer.reached_preemption(done)):
      _check_finite(state, desc, checkpointer)
      if checkpointer.latest_step() != done:
        checkpointer.save(done, state, _data_state(data_iter))
      raise Preempted(f"{desc}: pre-empted at step {done}/{num_steps}; checkpoint saved in "
                      f"{checkpointer.directory}. Rerun the same command to resume from it.")
  if checkpointer is not None:
    checkpointer.save(num_steps, state, _data_state(data_iter))
  return state, metrics


@contextlib.contextmanager
def _stop_on_sigterm(enabled: bool):
  """An Event set by SIGTERM while the loop runs (one process: several processes must stop at the
  same step, which jax's preemption service, installed by jax.distributed, arranges)."""
  stop = threading.Event()
  if (not enabled or jax.distributed.is_initialized()
      or threading.current_thread() is not threading.main_thread()):
    yield stop
    return
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
  try:
    yield stop
  finally:
    signal.signal(signal.SIGTERM, previous)


def _check_finite(state: TrainState, desc: str, checkpointer=None):
  """Raise NonFiniteLossError if a step so far was not finite (one small device read)."""
  bad = int(jax.device_get(state.nonfinite_step))
  if bad:
    where = f" in {checkpointer.directory}" if checkpointer is not None else ""
    raise NonFiniteLossError(
        f"{desc}: loss or gradient became NaN/Inf at step {bad}. Training stopped; the last "
        f"checkpoint{where} is the last good state (step {bad} and later ones were not applied). "
        f"Lower the learning rate (config.*.lr) or check the data.")


def _data_state(it):
  return it.get_state() if hasattr(it, "get_state") else None


# ----------------------------------------------------------------------------- FLOPs
def model_flops_per_example(cfg, text_len: int) -> float:
  """Training FLOPs (fwd+bwd) per example: 6·N·tokens for matmul params + attention scores."""
  vit, lm = cfg.vit, cfg.lm
  n_img = (vit.image_size[0] // vit.patch_size) * (vit.image_size[1] // vit.patch_size)
  n_img_lm = cfg.num_image_tokens  # after the connector (pixel shuffle, pooling, patch merger)
  vit_params = vit.depth * (4 * vit.width ** 2 + 2 * vit.width * vit.mlp_dim)
  lm_attn = lm.width * lm.head_dim * (2 * lm.num_heads + 2 * lm.num_kv_heads)
  lm_params = lm.depth * (lm_attn + 3 * lm.width * lm.mlp_dim) + lm.width * lm.vocab_size
  t_lm = n_img_lm + text_len
  flops = 6 * vit_params * n_img + 6 * lm_params * t_lm
  flops += 12 * vit.depth * n_img ** 2 * vit.width
  flops += 12 * lm.depth * t_lm ** 2 * lm.num_heads * lm.head_dim
  return float(flops)



# ----------------------------------------------------------------------------- harness
class ZipIterator:
  """{name: next(it)} over several data iterators, with one checkpointable joint position
  (the QA generator draws a labelled-QA batch and a caption batch each step)."""

  def __init__(self, **iters):
    self.iters = iters

  def __next__(self):
    return {k: next(it) for k, it in self.iters.items()}

  def get_state(self):
    return {k: it.get_state() for k, it in self.iters.items()}

  def set_state(self, state):
    for k, it in self.iters.items():
      it.set_state(state[k])


def finetune(*, params, tcfg, loss_fn, data_iter, mesh, rng, checkpointer, writer=None,
             mask_tree=None, flops_per_step: float = 0.0, tokens_per_step: int = 0,
             desc: str = "train"):
  """Every training run: the optimizer from `tcfg` (steps, lr, trainable rules, ...), the one
  jitted train step, resumed from `checkpointer`'s latest step (model, optimizer and data
  position), trained to tcfg.steps. -> the trained params."""
  tx = optim.make_optimizer(tcfg, params, mask_tree)
  state, shardings = create_state(params, tx, mesh)
  if checkpointer.latest_step() is not None:
    state, data_state = checkpointer.restore(checkpoint.abstract_like(state))
    if data_state is not None:
      data_iter.set_state(data_state)
    print(f"[leaml] {desc}: resumed at step {int(state.step)}")
    if writer is not None:
      writer.drop_after(int(state.step))
  step_fn = jit_train_step(make_train_step(loss_fn, tx, grad_accum=tcfg.grad_accum), shardings, mesh)
  state, _ = fit(state=state, step_fn=step_fn, data_iter=data_iter, num_steps=tcfg.steps, rng=rng,
                 mesh=mesh, checkpointer=checkpointer, writer=writer, log_every=tcfg.log_every,
                 flops_per_step=flops_per_step, tokens_per_step=tokens_per_step, desc=desc)
  return state.params
