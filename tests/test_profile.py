"""`--config.profile=STAGE:FIRST:NUM`: which steps a trace holds, generation calls, config checks."""
import glob
import gzip
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from leaml_jax import config_lib, generate, profiler, sharding as shd, train
from leaml_jax.errors import ConfigError
from tests import helpers


def _trace_events(logdir):
  files = glob.glob(os.path.join(logdir, "**", "*.trace.json.gz"), recursive=True)
  assert len(files) == 1, files  # one trace per run, in TensorBoard's plugins/profile layout
  assert glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb"))
  return json.load(gzip.open(files[0]))["traceEvents"]


def _annotated_steps(events, kind):
  return sorted({int(e["args"]["step_num"]) for e in events
                 if e.get("name") == kind and "step_num" in e.get("args", {})})


def _linear(mesh):
  params = {"w": jax.device_put(jnp.ones((4,)), shd.replicated(mesh))}
  loss = lambda p, b, rng: (jnp.mean((b["x"] @ p["w"] - b["y"]) ** 2), {})  # noqa: E731
  tx = optax.sgd(0.1)
  state, sh = train.create_state(params, tx, mesh)
  return state, train.jit_train_step(train.make_train_step(loss, tx), sh, mesh)


def test_training_trace_holds_exactly_the_window(tmp_path):
  mesh = shd.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  state, step = _linear(mesh)
  rng = np.random.default_rng(0)
  batches = iter([{"x": rng.normal(size=(8, 4)).astype(np.float32), "y": rng.normal(size=(8,)).astype(np.float32)}
                  for _ in range(6)])
  with profiler.stage("vqa", "vqa:2:3", str(tmp_path)):
    train.fit(state=state, step_fn=step, data_iter=batches, num_steps=6, rng=jax.random.key(0), mesh=mesh,
              log_every=100)
  assert _annotated_steps(_trace_events(tmp_path / "profile" / "vqa"), "train") == [2, 3, 4]


def test_other_stages_and_no_spec_write_nothing(tmp_path):
  mesh = shd.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  for spec in ("", "evaluate:0:1"):
    state, step = _linear(mesh)
    batches = iter([{"x": np.ones((8, 4), np.float32), "y": np.ones((8,), np.float32)}] * 3)
    with profiler.stage("vqa", spec, str(tmp_path)):
      train.fit(state=state, step_fn=step, data_iter=batches, num_steps=3, rng=jax.random.key(0), mesh=mesh)
  assert not (tmp_path / "profile").exists()


def test_generation_calls_are_counted_and_traced(tmp_path):
  model, cfg = helpers.tiny_model()
  params = helpers.random_params(model, cfg)
  b = helpers.random_batch(np.random.default_rng(0), cfg, batch=2)
  prompt = {k: b[k] for k in generate.BATCH_KEYS}
  with profiler.stage("pseudo_qa", "pseudo_qa:1:1", str(tmp_path)):
    for _ in range(3):
      generate.generate(model, params, prompt, max_new_tokens=3, eos_id=1, pad_id=0)
  assert _annotated_steps(_trace_events(tmp_path / "profile" / "pseudo_qa"), "generate") == [1]


@pytest.mark.parametrize("spec", ["vqa", "vqa:x:1", "vqa:1:0", "vqa:-1:2", "vqa:1:2:3"])
def test_malformed_specs_are_refused(spec):
  with pytest.raises(ConfigError, match="STAGE:FIRST:NUM"):
    profiler.parse(spec)


def test_validate_refuses_a_stage_the_run_does_not_run():
  cfg = config_lib.load_config_file("configs/demo.py:quick")
  config_lib.apply_override(cfg, "stages", "prepare,base")
  config_lib.apply_override(cfg, "profile", "vqa:1:2")
  with pytest.raises(ConfigError, match="does not run"):
    config_lib.validate(cfg)
  config_lib.apply_override(cfg, "profile", "base:1:2")
  config_lib.validate(cfg)
