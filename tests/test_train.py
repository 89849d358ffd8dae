"""The pure train step and its optimizer: sharding invariance, frozen params (no state, no say
in clipping), weight decay by role, the on-device NaN guard, grad accumulation."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from ml_collections import ConfigDict

from leaml_jax import checkpoint, defaults, lora, losses, optim, sharding as shd, train
from leaml_jax.models.vlm import dummy_inputs
from tests import helpers


def _opt_cfg(trainable=defaults.TRAIN_ALL, lr=1e-2, wd=0.1, steps=5):
  c = defaults.train_section(steps=steps, batch_size=8, lr=lr, warmup_steps=1, weight_decay=wd)
  c.trainable = trainable
  return c


def _run(mesh, steps=5, trainable=defaults.TRAIN_ALL, grad_accum=1, batches=None, wd=0.1, tx=None):
  model, cfg = helpers.tiny_model()
  params = helpers.init_params(model, cfg, mesh)
  tx = tx or optim.make_optimizer(_opt_cfg(trainable, wd=wd), params)
  state, sh = train.create_state(params, tx, mesh)
  step = train.jit_train_step(
      train.make_train_step(losses.lm_loss(model), tx, grad_accum=grad_accum), sh, mesh)
  rng = np.random.default_rng(1)
  batches = batches or [helpers.random_batch(rng, cfg) for _ in range(steps)]
  out = []
  for b in batches:
    state, m = step(state, shd.shard_batch(b, mesh), jax.random.key(0))
    out.append(float(m["loss"]))
  return state, out, params


def test_eight_devices_match_one_device():
  assert jax.device_count() == 8
  mesh8 = shd.make_mesh({"data": 2, "fsdp": 4, "tensor": 1})
  mesh1 = shd.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  s8, l8, _ = _run(mesh8)
  s1, l1, _ = _run(mesh1)
  np.testing.assert_allclose(l8, l1, atol=1e-5, rtol=0)
  assert l8[-1] < l8[0]  # it learns
  # Params really are split over fsdp on the 8-device mesh.
  emb = s8.params["llm"]["embedder"]["embedding"]
  assert len(emb.sharding.device_set) == 8


def test_tensor_parallel_matches():
  mesh_t = shd.make_mesh({"data": 1, "fsdp": 2, "tensor": 4})
  mesh1 = shd.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  _, lt, _ = _run(mesh_t, steps=3)
  _, l1, _ = _run(mesh1, steps=3)
  np.testing.assert_allclose(lt, l1, atol=1e-5, rtol=0)


def test_frozen_params_bit_identical_with_weight_decay():
  mesh = shd.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  rules = ((r"img/.*", False), (r"llm/embedder/.*", False), (r".*", True))
  model, cfg = helpers.tiny_model()
  init = jax.device_get(helpers.init_params(model, cfg, mesh))
  state, _, _ = _run(mesh, trainable=rules, wd=0.5)
  final = jax.device_get(state.params)
  for path, leaf in jax.tree_util.tree_leaves_with_path(final):
    name = optim.path_str(path)
    before = np.asarray(_get(init, name))
    if name.startswith(("img/", "llm/embedder/")):
      assert np.array_equal(leaf, before), name
  assert not np.array_equal(final["llm"]["final_norm"]["scale"], init["llm"]["final_norm"]["scale"])


def _get(tree, name):
  for k in name.split("/"):
    tree = tree[k]
  return tree


def test_uncovered_parameter_fails():
  params = {"a": {"kernel": jnp.zeros((2, 2))}, "b": {"bias": jnp.zeros(2)}}
  with pytest.raises(ValueError, match="b/bias"):
    optim.trainable_mask(params, [(r"a/.*", True)])


def test_grad_accumulation_matches_full_batch():
  mesh = shd.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  model, cfg = helpers.tiny_model()
  rng = np.random.default_rng(3)
  batches = [helpers.random_batch(rng, cfg) for _ in range(2)]
  # Same number of loss tokens per micro-batch, so mean-of-means == overall mean.
  for b in batches:
    b["mask_input"][:] = 1
    b["mask_loss"] = b["mask_ar"].copy()
  # Plain SGD: Adam's normalisation would amplify float rounding in near-zero gradients.
  s1, l1, _ = _run(mesh, batches=batches, tx=optax.sgd(0.1))
  s2, l2, _ = _run(mesh, batches=batches, grad_accum=2, tx=optax.sgd(0.1))
  np.testing.assert_allclose(l1, l2, atol=1e-5)
  for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_nan_loss_keeps_state_and_reports():
  mesh = shd.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  model, cfg = helpers.tiny_model()
  params = helpers.init_params(model, cfg, mesh)
  tx = optim.make_optimizer(_opt_cfg(), params)
  state, sh = train.create_state(params, tx, mesh)
  before = jax.device_get(state.params)
  step = train.jit_train_step(train.make_train_step(losses.lm_loss(model), tx), sh, mesh)
  b = helpers.random_batch(np.random.default_rng(0), cfg)
  b["image"][0, 0, 0, 0] = np.nan
  state, m = step(state, shd.shard_batch(b, mesh), jax.random.key(0))
  assert float(m["ok"]) == 0.0 and int(state.step) == 0 and int(state.nonfinite_step) == 1
  for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(state.params))):
    assert np.array_equal(x, y)
  it = iter([b] * 3)
  with pytest.raises(train.NonFiniteLossError, match="NaN/Inf at step 1"):
    train.fit(state=state, step_fn=step, data_iter=it, num_steps=3, rng=jax.random.key(0),
              mesh=mesh, log_every=1)


# A linear least-squares model: the guard's bookkeeping, without compiling the VLM.
def _linear_loss(params, batch, rng):
  del rng
  loss = jnp.mean((batch["x"] @ params["w"]["kernel"] - batch["y"]) ** 2)
  return loss, {}


def _linear_setup(mesh):
  params = {"w": {"kernel": jax.device_put(jnp.ones((4,)), shd.replicated(mesh))}}
  tx = optim.make_optimizer(_opt_cfg(lr=0.1, steps=12), params)
  state, sh = train.create_state(params, tx, mesh)
  step = train.jit_train_step(train.make_train_step(_linear_loss, tx), sh, mesh)
  return state, step


def _linear_batches(n, nan_at=None):
  rng = np.random.default_rng(0)
  out = [{"x": rng.normal(size=(8, 4)).astype(np.float32),
          "y": rng.normal(size=(8,)).astype(np.float32)} for _ in range(n)]
  if nan_at is not None:
    out[nan_at - 1]["x"][3, 1] = np.nan  # step numbers are 1-based
  return out


def test_nonfinite_step_is_sticky_and_counter_counts_good_steps():
  mesh = shd.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  state, step = _linear_setup(mesh)
  oks = []
  for b in _linear_batches(5, nan_at=3):  # good, good, NaN, good, good
    state, m = step(state, shd.shard_batch(b, mesh), jax.random.key(0))
    oks.append(float(m["ok"]))
  # Steps after the bad one are no-ops even though their loss is finite.
  assert oks == [1.0, 1.0, 0.0, 0.0, 0.0]
  assert int(state.step) == 2 and int(state.nonfinite_step) == 3


def test_nan_between_sync_points_is_reported_and_last_checkpoint_is_good(tmp_path):
  """NaN at step 6 with log and save every 4 steps: neither a log nor a save step."""
  mesh = shd.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  state, step = _linear_setup(mesh)
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), save_every=4)
  with pytest.raises(train.NonFiniteLossError, match=r"NaN/Inf at step 6\b"):
    train.fit(state=state, step_fn=step, data_iter=iter(_linear_batches(12, nan_at=6)),
              num_steps=12, rng=jax.random.key(0), mesh=mesh, checkpointer=ckpt, log_every=4)
  assert ckpt.latest_step() == 4  # nothing was saved at step 8 (or 12)

  # The step-4 checkpoint holds exactly the state after the first 4 (good) batches.
  ref, ref_step = _linear_setup(mesh)
  for b in _linear_batches(4):
    ref, _ = ref_step(ref, shd.shard_batch(b, mesh), jax.random.key(0))
  restored, _ = ckpt.restore(checkpoint.abstract_like(ref))
  ckpt.close()
  assert int(restored.step) == 4 and int(restored.nonfinite_step) == 0
  np.testing.assert_array_equal(restored.params["w"]["kernel"], ref.params["w"]["kernel"])
  assert np.isfinite(np.asarray(restored.params["w"]["kernel"])).all()


def test_weight_decay_by_role_not_rank_with_scanned_layers():
  """Zero gradients: Adam's step is 0, so an update is exactly -lr·wd·p where decayed, else 0."""
  model, cfg = helpers.tiny_model(scan=True)
  abstract = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), *dummy_inputs(cfg)))
  rng = np.random.default_rng(0)
  base = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), jnp.float32),
                      abstract["params"])
  params = {"base": base, "lora": lora.init(base, jax.random.key(1), rank=2)}
  params["lora"] = jax.tree.map(lambda x: x + 1.0, params["lora"])  # no all-zero b factors
  lr, wd = 0.5, 0.1
  tx = optim.make_optimizer(_opt_cfg(lr=lr, wd=wd, steps=10), params)  # warmup 1: lr(1) = lr
  opt_state = tx.init(params)
  zeros = jax.tree.map(jnp.zeros_like, params)
  _, opt_state = tx.update(zeros, opt_state, params)  # step 0: lr = 0
  updates, _ = tx.update(zeros, opt_state, params)
  decayed = {"kernel", "a", "b"}  # dense/attention/conv kernels and LoRA factors, nothing else
  seen = set()
  for (path, u), p in zip(jax.tree_util.tree_leaves_with_path(updates), jax.tree.leaves(params)):
    name, p = optim.path_str(path), np.asarray(p)
    leaf = name.rsplit("/", 1)[-1]
    seen.add(leaf)
    if leaf in decayed:
      np.testing.assert_allclose(u, -lr * wd * p, rtol=1e-6, err_msg=name)
    else:
      assert not np.asarray(u).any(), f"{name} {p.shape} must not be weight-decayed"
  # The scanned model stacks norms and biases as [layers, D]: rank cannot tell them from matrices.
  stacked_scale = _get(params, "base/llm/layers/pre_attn_norm/scale")
  stacked_bias = _get(params, "base/img/Transformer/encoderblock/layer_norm1/bias")
  assert stacked_scale.ndim == 2 and stacked_bias.ndim == 2
  assert {"scale", "bias", "embedding", "pos_embedding"} <= seen


def _lora_like_params():
  rng = np.random.default_rng(0)
  f32 = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
  return {"base": {"llm": {"q": {"kernel": f32(4, 3)}, "norm": {"scale": f32(3)}}},
          "lora": {"llm/q/kernel": {"a": f32(4, 2), "b": f32(2, 3)}}}


def test_clipping_ignores_frozen_gradients():
  """Huge frozen (base) gradients must not shrink the LoRA update: the reference is clip+AdamW
  over the LoRA subtree alone (optax), run for 3 steps with gradients of different norms."""
  params = _lora_like_params()
  ocfg = _opt_cfg(trainable=lora.TRAINABLE, lr=0.1, wd=0.1, steps=5)
  ocfg.clip_norm = 1.0
  tx = optim.make_optimizer(ocfg, params)
  ref_tx = optax.chain(optax.clip_by_global_norm(1.0),
                       optax.adamw(optim.schedule(ocfg), b1=ocfg.b1, b2=ocfg.b2, eps=1e-8,
                                   weight_decay=0.1))  # LoRA factors are all decayed
  state, ref_state = tx.init(params), ref_tx.init(params["lora"])
  p, ref_p = params, params["lora"]
  rng = np.random.default_rng(1)
  for scale in (5.0, 0.3, 40.0):  # LoRA gradient norms above and below the clip norm
    g_lora = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), ref_p)
    g_lora = jax.tree.map(lambda g: g * scale / optax.tree.norm(g_lora), g_lora)
    g_base = jax.tree.map(lambda x: jnp.full_like(x, 1e8), params["base"])
    updates, state = tx.update({"base": g_base, "lora": g_lora}, state, p)
    p = optax.apply_updates(p, updates)
    ref_up, ref_state = ref_tx.update(g_lora, ref_state, ref_p)
    ref_p = optax.apply_updates(ref_p, ref_up)
    for a, b in zip(jax.tree.leaves(updates["lora"]), jax.tree.leaves(ref_up)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)
    for u in jax.tree.leaves(updates["base"]):
      assert not np.asarray(u).any()
  for a, b in zip(jax.tree.leaves(p["base"]), jax.tree.leaves(params["base"])):
    assert np.array_equal(a, b)


def test_frozen_params_have_no_optimizer_state():
  params = _lora_like_params()
  mask = jax.tree.map(lambda x: np.ones((1,) * x.ndim, np.float32), params)  # neuron mask too
  tx = optim.make_optimizer(_opt_cfg(trainable=lora.TRAINABLE), params, mask)
  opt_state = tx.init(params)
  arrays = jax.tree_util.tree_leaves_with_path(opt_state)
  assert not [jax.tree_util.keystr(k) for k, _ in arrays if "'base'" in jax.tree_util.keystr(k)]
  lora_bytes = sum(x.nbytes for x in jax.tree.leaves(params["lora"]))
  mask_bytes = sum(m.nbytes for m in jax.tree.leaves(mask["lora"]))
  scalars = [x for _, x in arrays if x.ndim == 0]  # step counts
  assert len(scalars) <= 3
  # Adam's two moments of the LoRA factors, their neuron mask, the counts: nothing else.
  assert sum(x.nbytes for _, x in arrays) == 2 * lora_bytes + mask_bytes + sum(
      x.nbytes for x in scalars)


def test_lora_state_born_sharded_and_base_untouched_on_eight_devices():
  mesh = shd.make_mesh({"data": 2, "fsdp": 4, "tensor": 1})
  model, cfg = helpers.tiny_model()
  base = helpers.init_params(model, cfg, mesh)
  params = {"base": base, "lora": lora.init(base, jax.random.key(1), rank=2)}
  # LoRA plus one fsdp-sharded base leaf (the embedding), so sharded moments are checked too.
  rules = ((r"base/llm/embedder/.*", True), (r"base/.*", False), (r"lora/.*", True))
  tx = optim.make_optimizer(_opt_cfg(trainable=rules), params)
  state, sh = train.create_state(params, tx, mesh)
  param_sh = {jax.tree_util.keystr(k): x.sharding  # (LoRA factors: replicated onto the mesh)
              for k, x in jax.tree_util.tree_leaves_with_path(state.params)}
  emb = "['base']['llm']['embedder']['embedding']"
  moments = 0
  for k, x in jax.tree_util.tree_leaves_with_path(state.opt_state):
    path = jax.tree_util.keystr(k)
    assert "['base']" not in path or path.endswith(emb), f"state for a frozen param: {path}"
    owner = [p for p in param_sh if path.endswith(p)]
    if owner and x.ndim:
      moments += 1
      assert x.sharding.is_equivalent_to(param_sh[owner[0]], x.ndim), (path, x.sharding)
  assert moments == 2 * (len(jax.tree.leaves(params["lora"])) + 1)  # mu, nu
  assert len(param_sh[emb].device_set) == 8  # the embedding's moments really are split

  loss_fn = losses.lm_loss(model, lambda p: lora.merge(p, rank=2, alpha=4.0))
  step = train.jit_train_step(train.make_train_step(loss_fn, tx), sh, mesh)
  before = jax.device_get(params)
  b = helpers.random_batch(np.random.default_rng(0), cfg)
  state, m = step(state, shd.shard_batch(b, mesh), jax.random.key(0))
  state, m = step(state, shd.shard_batch(b, mesh), jax.random.key(1))  # step 0 has lr 0
  assert float(m["ok"]) == 1.0
  after = jax.device_get(state.params)
  for (k, x), y in zip(jax.tree_util.tree_leaves_with_path(after), jax.tree.leaves(before)):
    path = jax.tree_util.keystr(k)
    if path.startswith("['base']") and path != emb:
      assert np.array_equal(x, y), path
  up = "llm/layers/mlp/up_proj/kernel"
  assert not np.array_equal(after["lora"][up]["b"], before["lora"][up]["b"])


def test_flops_estimate_matches_hand_count():
  _, cfg = helpers.tiny_model()
  vit, lm = cfg.vit, cfg.lm
  n_img, L = 16, 10
  hand = 6 * (vit.depth * (4 * 64 * 64 + 2 * 64 * 128)) * n_img
  hand += 6 * (lm.depth * (96 * 24 * (2 * 4 + 2 * 1) + 3 * 96 * 256) + 96 * 64) * (n_img + L)
  hand += 12 * vit.depth * n_img ** 2 * 64 + 12 * lm.depth * (n_img + L) ** 2 * 4 * 24
  assert train.model_flops_per_example(cfg, L) == hand
