"""Activations are sharded over the batch: the train step, the relevance pass and generation each
lower with the models' logical activation constraints (batch over data+fsdp) as sharding
constraints in the StableHLO that jax hands to XLA (read from `jax_dump_ir_to`, i.e. what the
real entry points lowered, not a copy), and compute what one device computes. Constraints whose
mesh axes do not divide a dimension are fitted (a batch of 6 on data 2 x fsdp 4 keeps `data`)."""
import contextlib
import pathlib
import re

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from leaml_jax import defaults, generate, losses, neurons, optim, sharding as shd, train
from tests import helpers

BATCH = '{"data", "fsdp"}'
# An sdy constraint on a rank-3+ value: [{dim0 axes}, {...}, ...].
CONSTRAINT = re.compile(r"sdy\.sharding_constraint %\S+ <@mesh, \[(\{[^}]*\})[^\]]*\]> : tensor<([^>]*)>")


@contextlib.contextmanager
def lowered_modules(tmp_path):
  """The StableHLO of every function jax lowers inside, as {file name: text}."""
  out = {}
  jax.config.update("jax_dump_ir_to", str(tmp_path))
  try:
    yield out
  finally:
    jax.config.update("jax_dump_ir_to", "")
    for f in sorted(pathlib.Path(tmp_path).glob("*.mlir")):
      out[f.name] = f.read_text()


def _constraints(text):
  """(first-dim axes, shape) of every sharding constraint in a module."""
  return CONSTRAINT.findall(text)


def _one(modules, name):
  found = [t for f, t in modules.items() if name in f]
  assert len(found) == 1, (name, sorted(modules))
  return found[0]


def _train(model, cfg, mesh, batches):
  params = helpers.init_params(model, cfg, mesh)
  tcfg = defaults.train_section(steps=len(batches), batch_size=8, lr=1e-2, warmup_steps=1)
  tx = optim.make_optimizer(tcfg, params)
  state, sh = train.create_state(params, tx, mesh)
  step = train.jit_train_step(train.make_train_step(losses.lm_loss(model), tx), sh, mesh)
  losses_ = []
  for b in batches:
    state, m = step(state, shd.shard_batch(b, mesh), jax.random.key(0))
    losses_.append(float(m["loss"]))
  return losses_, jax.device_get(state.params)


def _meshes():
  return (shd.make_mesh({"data": 2, "fsdp": 4, "tensor": 1}),
          shd.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1]))


def test_train_step_constrains_activations_to_the_batch_and_matches_one_device(tmp_path):
  model, cfg = helpers.tiny_model(vocab=80)
  mesh8, mesh1 = _meshes()
  rng = np.random.default_rng(0)
  batches = [helpers.random_batch(rng, cfg, batch=8) for _ in range(2)]
  with lowered_modules(tmp_path) as modules:
    l8, p8 = _train(model, cfg, mesh8, batches)
  found = _constraints(_one(modules, "train_step"))
  # Residual stream, MLP hidden, queries and logits of the LM and ViT (scan bodies lower once).
  assert len(found) >= 6, found
  assert all(axes == BATCH for axes, _ in found), found
  assert any(shape.startswith("8x") and shape.endswith("x80xf32") for _, shape in found)  # logits

  l1, p1 = _train(model, cfg, mesh1, batches)
  np.testing.assert_allclose(l8, l1, atol=1e-5, rtol=0)
  # A key bias shifts every attention logit of a query equally, so softmax cancels it: its
  # gradient is rounding noise, which Adam scales up to lr-sized steps whose sign depends on the
  # order of the cross-device sums (as in tests/test_processes.py). Everything else agrees.
  flat8 = jax.tree_util.tree_flatten_with_path(p8)[0]
  for (path, a), b in zip(flat8, jax.tree.leaves(p1)):
    name = jax.tree_util.keystr(path)
    if "k_proj" not in name or "bias" not in name:
      np.testing.assert_allclose(a, b, atol=1e-5, rtol=0, err_msg=name)


def test_relevance_pass_constrains_activations(tmp_path):
  model, cfg = helpers.tiny_model(vocab=88)
  mesh8, mesh1 = _meshes()
  rng = np.random.default_rng(2)
  batches = [helpers.random_batch(rng, cfg, batch=8)]
  with lowered_modules(tmp_path) as modules:
    s8 = neurons.relevance(model, helpers.init_params(model, cfg, mesh8), batches, mesh=mesh8)
  found = _constraints(_one(modules, "one_batch"))
  assert found and all(axes == BATCH for axes, _ in found), found
  s1 = neurons.relevance(model, helpers.init_params(model, cfg, mesh1), batches, mesh=mesh1)
  for k in s1:
    np.testing.assert_allclose(s8[k], s1[k], rtol=1e-4, atol=1e-6)


def test_generation_fits_constraints_to_a_batch_the_mesh_does_not_divide(tmp_path):
  # 6 prompts, replicated over 8 devices: (data, fsdp) = 8 does not divide 6, `data` = 2 does.
  model, cfg = helpers.tiny_model(vocab=96)
  mesh8, mesh1 = _meshes()
  batch = helpers.random_batch(np.random.default_rng(3), cfg, batch=6)
  prompt = {k: batch[k] for k in ("image", "text", "mask_ar", "mask_input")}
  prompt["mask_ar"] = np.zeros_like(prompt["mask_ar"])
  prompt["mask_input"][:, 5:] = 0
  kw = dict(max_new_tokens=4, eos_id=1, pad_id=0)
  with lowered_modules(tmp_path) as modules:
    t8 = generate.generate(model, helpers.init_params(model, cfg, mesh8), prompt, **kw)
  found = _constraints(_one(modules, "decode_loop"))
  assert found and {axes for axes, _ in found} == {'{"data"}'}, found
  t1 = generate.generate(model, helpers.init_params(model, cfg, mesh1), prompt, **kw)
  np.testing.assert_array_equal(t8, t1)


def test_fitting_keeps_the_leading_axes_that_divide():
  mesh8, _ = _meshes()
  spec = P(("data", "fsdp"), None, "tensor")
  assert shd._divisible(spec, (16, 3, 5), mesh8) == P(("data", "fsdp"), None, "tensor")
  assert shd._divisible(spec, (6, 3, 5), mesh8) == P("data", None, "tensor")
  assert shd._divisible(spec, (3, 3, 5), mesh8) == P(None, None, "tensor")
  assert shd._divisible(P("fsdp", None), (6, 2), mesh8) == P(None, None)
