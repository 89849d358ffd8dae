"""Checkpoints: save -> SIGKILL -> resume is bit-identical to never stopping; mismatches fail clearly.

The resume test drives tests/_resume_worker.py in subprocesses (a hard kill cannot happen inside
the pytest process). Each child runs on one CPU device with cheap XLA codegen and shares a
persistent compilation cache with its siblings, so only the first child pays for compiling.
"""
import os
import re
import signal
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from leaml_jax import checkpoint, defaults, lora, optim, sharding as shd, train
from leaml_jax.data import tokenizer as tok_lib
from leaml_jax.models.vlm import dummy_inputs
from tests import _resume_worker as worker
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, KILL_AFTER = 6, 4


def _child_env(cache_dir):
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  # Cheap LLVM codegen: compiling the tiny model's step goes from ~45 s to ~15 s of CPU. All runs
  # use the same flags (and share the cache), so bit-identity is still a fair comparison.
  flags += ["--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true"]
  env.update(XLA_FLAGS=" ".join(flags), JAX_PLATFORMS="cpu", PYTHONPATH=REPO,
             JAX_COMPILATION_CACHE_DIR=str(cache_dir),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return env


def _run_worker(workdir, tokenizer, env, kill_after=0):
  cmd = [sys.executable, "-m", "tests._resume_worker", f"--workdir={workdir}",
         f"--tokenizer={tokenizer}", f"--steps={STEPS}", f"--kill_after={kill_after}"]
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _parse(stdout):
  """-> (start_step, {step: batch row indices}) from the worker's log lines."""
  start = [int(m) for m in re.findall(r"^start_step=(\d+)$", stdout, re.M)]
  batches = {int(s): tuple(int(i) for i in idx.split(","))
             for s, idx in re.findall(r"^batch step=(\d+) index=([\d,]+)$", stdout, re.M)}
  assert len(start) == 1, stdout
  return start[0], batches


def _ok(proc):
  assert proc.returncode == 0, f"worker failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}"
  return proc


def test_kill_and_resume_is_bit_identical(tmp_path):
  records = worker.make_records()
  tokenizer = tmp_path / "tokenizer.json"
  tok = tok_lib.train_tokenizer(worker.corpus(records), str(tokenizer), vocab_size=300)
  env = _child_env(tmp_path / "xla_cache")
  run_a, run_b = tmp_path / "a", tmp_path / "b"

  # A: uninterrupted.
  out_a = _ok(_run_worker(run_a, tokenizer, env)).stdout
  start_a, batches_a = _parse(out_a)
  assert start_a == 0 and sorted(batches_a) == list(range(1, STEPS + 1))

  # B, first life: SIGKILLed by itself right after the step-4 checkpoint is on disk.
  killed = _run_worker(run_b, tokenizer, env, kill_after=KILL_AFTER)
  assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stdout, killed.stderr[-2000:])
  start_b1, batches_b1 = _parse(killed.stdout)
  assert start_b1 == 0 and sorted(batches_b1) == list(range(1, KILL_AFTER + 1))
  assert not (run_b / "final_params.npz").exists()
  probe = checkpoint.Checkpointer(str(run_b / "ckpt"))
  assert probe.latest_step() == KILL_AFTER
  probe.close()

  # B, second life: resumes at step 4 and trains only steps 5 and 6.
  start_b2, batches_b2 = _parse(_ok(_run_worker(run_b, tokenizer, env)).stdout)
  assert start_b2 == KILL_AFTER
  assert sorted(batches_b2) == list(range(KILL_AFTER + 1, STEPS + 1))

  # The data iterator resumed at the same position: B saw exactly A's batches, in order.
  assert {**batches_b1, **batches_b2} == batches_a
  # Two epochs of 12 records in batches of 4: every record is seen twice in 6 steps.
  seen = np.bincount(np.concatenate([batches_a[s] for s in batches_a]), minlength=len(records))
  assert seen.tolist() == [2] * len(records)

  final_a = np.load(run_a / "final_params.npz")
  final_b = np.load(run_b / "final_params.npz")
  assert sorted(final_a.files) == sorted(final_b.files) and len(final_a.files) > 10
  for name in final_a.files:
    a, b = final_a[name], final_b[name]
    assert a.dtype == b.dtype and a.shape == b.shape, name
    assert a.tobytes() == b.tobytes(), f"{name}: resumed run differs from uninterrupted run"

  # Steps 5-6 really moved the weights: resuming from step 4 is not a trivial no-op.
  model, cfg = helpers.tiny_model(vocab=tok.vocab_size)  # the worker's model
  at_step4 = _zero_state(model, cfg, jax.devices()[:1])
  reader = checkpoint.Checkpointer(str(run_a / "ckpt"))
  restored, data_state = reader.restore(checkpoint.abstract_like(at_step4), step=KILL_AFTER)
  reader.close()
  assert int(restored.step) == KILL_AFTER and data_state is not None
  emb4 = np.asarray(restored.params["llm"]["embedder"]["embedding"])
  assert not np.array_equal(emb4, final_a["llm/embedder/embedding"])


def _zero_state(model, cfg, devices, steps=2):
  """A TrainState of zeros shaped like `model` (no model compile needed)."""
  mesh = shd.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices)
  abstract = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), *dummy_inputs(cfg)))
  params = jax.tree.map(lambda x: jax.device_put(np.zeros(x.shape, x.dtype), shd.replicated(mesh)),
                        abstract["params"])
  tx = optim.make_optimizer(defaults.train_section(steps=steps, batch_size=2, lr=1e-3), params)
  return train.create_state(params, tx, mesh)[0]


@pytest.mark.parametrize("other", [dict(name="tiny", vocab=80),          # one shape differs
                                   dict(name="tiny_gemma2", vocab=64)])  # extra parameters
def test_restore_into_other_model_fails_clearly(tmp_path, other):
  devices = jax.devices()[:1]
  saved = _zero_state(*helpers.tiny_model("tiny", vocab=64), devices)
  directory = str(tmp_path / "ckpt")
  writer = checkpoint.Checkpointer(directory, save_every=1)
  writer.save(1, saved, {"position": 3})
  writer.close()

  target = _zero_state(*helpers.tiny_model(other["name"], vocab=other["vocab"]), devices)
  reader = checkpoint.Checkpointer(directory)
  with pytest.raises(RuntimeError) as err:  # (errors.CheckpointError is a RuntimeError too)
    reader.restore(checkpoint.abstract_like(target))
  reader.close()
  msg = str(err.value)
  assert directory in msg and "does not match" in msg and "Delete that directory" in msg


def test_state_with_frozen_params_round_trips(tmp_path):
  """Frozen params have no optimizer state (optax.MaskedNode holes): the state still saves and
  restores to the same structure and values, on the mesh it was born on."""
  mesh = shd.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  rng = np.random.default_rng(0)
  params = {"base": {"q": {"kernel": rng.normal(size=(4, 3)).astype(np.float32)}},
            "lora": {"q/kernel": {"a": rng.normal(size=(4, 2)).astype(np.float32),
                                  "b": rng.normal(size=(2, 3)).astype(np.float32)}}}
  ocfg = defaults.train_section(steps=2, batch_size=2, lr=1e-3)
  ocfg.trainable = lora.TRAINABLE
  tx = optim.make_optimizer(ocfg, params, jax.tree.map(lambda x: np.ones((1,) * x.ndim), params))
  state, _ = train.create_state(jax.tree.map(jnp.asarray, params), tx, mesh)
  state = state.replace(opt_state=jax.tree.map(lambda x: x + 1, state.opt_state))  # not all 0
  directory = str(tmp_path / "ckpt")
  writer = checkpoint.Checkpointer(directory, save_every=1)
  writer.save(1, state, {"position": 1})
  writer.close()
  reader = checkpoint.Checkpointer(directory)
  restored, data_state = reader.restore(checkpoint.abstract_like(state))
  reader.close()
  assert data_state == {"position": 1}
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    assert np.array_equal(a, b) and a.sharding == b.sharding


def test_restore_without_checkpoint_names_directory(tmp_path):
  directory = str(tmp_path / "empty")
  saved = _zero_state(*helpers.tiny_model("tiny", vocab=64), jax.devices()[:1])
  reader = checkpoint.Checkpointer(directory)
  with pytest.raises(checkpoint.CheckpointError, match=re.escape(directory)):
    reader.restore(checkpoint.abstract_like(saved))
  reader.close()
