"""Selective neuron update: relevance scores, exact selection, the optax mask transform."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

from leaml_jax import defaults, losses, neurons, optim, sharding as shd, train
from leaml_jax.data import datasets
from leaml_jax.data.datasets import synthetic
from leaml_jax.pseudo_qa import parse_pseudo_qa
from tests import helpers


def _mesh1():
  return shd.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])


def test_masked_entries_bit_identical_after_adamw_with_weight_decay():
  mesh = _mesh1()
  model, cfg = helpers.tiny_model()
  params = helpers.init_params(model, cfg, mesh)
  rng = np.random.default_rng(0)
  scores = {"llm/layers/mlp": rng.random((cfg.lm.depth, cfg.lm.mlp_dim)),
            "img/Transformer/encoderblock/mlp": rng.random((cfg.vit.depth, cfg.vit.mlp_dim))}
  _, mask = neurons.select(scores, 0.25, params=jax.device_get(params), non_neuron="trainable")
  tcfg = defaults.train_section(steps=6, batch_size=8, lr=3e-2, warmup_steps=1, weight_decay=0.5)
  tx = optim.make_optimizer(tcfg, params, mask)
  before = jax.device_get(params)
  state, sh = train.create_state(params, tx, mesh)
  step = train.jit_train_step(train.make_train_step(losses.lm_loss(model), tx), sh, mesh)
  for i in range(6):
    state, _ = step(state, shd.shard_batch(helpers.random_batch(rng, cfg), mesh), jax.random.key(i))
  after = jax.device_get(state.params)
  gate_b = before["llm"]["layers"]["mlp"]["gate_proj"]["kernel"]
  gate_a = after["llm"]["layers"]["mlp"]["gate_proj"]["kernel"]
  down_b = before["llm"]["layers"]["mlp"]["down_proj"]["kernel"]
  down_a = after["llm"]["layers"]["mlp"]["down_proj"]["kernel"]
  sel = np.asarray(mask["llm"]["layers"]["mlp"]["gate_proj"]["kernel"])[:, 0, :] > 0  # [depth, F]
  for d in range(cfg.lm.depth):
    assert np.array_equal(gate_a[d][:, ~sel[d]], gate_b[d][:, ~sel[d]])     # masked columns frozen
    assert np.array_equal(down_a[d][~sel[d], :], down_b[d][~sel[d], :])     # masked rows frozen
    assert not np.array_equal(gate_a[d][:, sel[d]], gate_b[d][:, sel[d]])  # selected ones move
  fc1_b = before["img"]["Transformer"]["encoderblock"]["mlp"]["fc1"]["bias"]
  fc1_a = after["img"]["Transformer"]["encoderblock"]["mlp"]["fc1"]["bias"]
  sel_v = np.asarray(mask["img"]["Transformer"]["encoderblock"]["mlp"]["fc1"]["bias"]) > 0
  assert np.array_equal(fc1_a[~sel_v], fc1_b[~sel_v])
  # Non-neuron params were configured trainable: they move.
  assert not np.array_equal(after["llm"]["final_norm"]["scale"], before["llm"]["final_norm"]["scale"])


def test_neuron_mask_transform_zeroes_updates_and_keeps_mask_in_state():
  mask = {"w": jnp.array([[1.0, 0.0, 1.0]])}
  tx = optim.neuron_mask(mask)
  state = tx.init({"w": jnp.zeros((2, 3))})
  up, _ = tx.update({"w": jnp.ones((2, 3)) * 5}, state)
  np.testing.assert_array_equal(up["w"], [[5, 0, 5], [5, 0, 5]])
  np.testing.assert_array_equal(state.mask["w"], mask["w"])


def test_mask_gradients_blocks_gradient_but_not_value():
  p = {"w": jnp.array([1.0, 2.0, 3.0])}
  m = {"w": np.array([1.0, 0.0, 1.0])}
  f = lambda q: jnp.sum(neurons.mask_gradients(q, m)["w"] ** 2)
  assert float(f(p)) == 14.0
  np.testing.assert_array_equal(jax.grad(f)(p)["w"], [2.0, 0.0, 6.0])


@pytest.mark.parametrize("per_layer", [False, True])
@pytest.mark.parametrize("fraction", [0.1, 0.37, 1.0])
def test_selected_fraction_exact(fraction, per_layer):
  rng = np.random.default_rng(1)
  scores = {"llm/layers/mlp": rng.random((3, 40)), "img/x/mlp": rng.random((2, 24))}
  masks, _ = neurons.select(scores, fraction, per_layer=per_layer)
  if per_layer:
    for k, m in masks.items():
      assert (m.sum(-1) == round(fraction * m.shape[-1])).all()
  else:
    total = sum(m.size for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == round(fraction * total)
    # Globally the chosen ones are exactly the top scores.
    flat_s = np.concatenate([scores[k].ravel() for k in sorted(scores)])
    flat_m = np.concatenate([masks[k].ravel() for k in sorted(scores)])
    if 0 < flat_m.sum() < flat_m.size:
      assert flat_s[flat_m].min() >= flat_s[~flat_m].max()


def _reference_scores(model, params, batch, score):
  """Reference reduction written out by hand in float64: h and dL/dh from the model's hooks
  (checked against finite differences in test_models), answer-position weights built here."""
  args = (batch["image"], batch["text"], batch["mask_ar"], batch["mask_input"])
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *args))["perturbations"]
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

  def loss(perts):
    (logits, _), st = model.apply({"params": params, "perturbations": perts}, *args,
                                  mutable=["intermediates"])
    return losses.token_ce(logits, batch["text"], batch["mask_loss"])[0], st
  (_, st), g = jax.value_and_grad(loss, has_aux=True)(zeros)
  h = st["intermediates"]["llm"]["layers"]["mlp"]["mlp_hidden"][0]  # [Ly,B,T,F]
  gh = g["llm"]["layers"]["mlp"]["mlp_hidden"]
  h, gh = np.asarray(h, np.float64), np.asarray(gh, np.float64)
  # Weight: LM positions whose next token is an answer token (hand-built here).
  B, L = batch["text"].shape
  T = h.shape[2]
  w = np.zeros((B, T))
  w[:, T - L:T - 1] = batch["mask_loss"][:, 1:]
  val = np.abs(h * gh) if score == "taylor" else np.abs(h)
  return (val * w[None, :, :, None]).sum((1, 2)) / w.sum()


@pytest.mark.parametrize("score", ["taylor", "activation"])
def test_relevance_matches_reference_and_is_sharding_invariant(score):
  model, cfg = helpers.tiny_model()
  mesh1 = _mesh1()
  mesh8 = shd.make_mesh({"data": 2, "fsdp": 4, "tensor": 1})
  params1 = helpers.init_params(model, cfg, mesh1)
  params8 = helpers.init_params(model, cfg, mesh8)
  rng = np.random.default_rng(2)
  batches = [helpers.random_batch(rng, cfg) for _ in range(2)]
  s1 = neurons.relevance(model, params1, batches, score=score, mesh=mesh1)
  s8 = neurons.relevance(model, params8, batches, score=score, mesh=mesh8)
  assert set(s1) == {"llm/layers/mlp", "img/Transformer/encoderblock/mlp"}
  for k in s1:
    np.testing.assert_allclose(s8[k], s1[k], rtol=1e-4, atol=1e-9)
  # Against a hand-weighted reference (two batches: sum of sums / sum of weights).
  p = jax.device_get(params1)
  refs = [_reference_scores(model, p, b, score) for b in batches]
  ws = [b["mask_loss"][:, 1:].sum() for b in batches]
  ref = sum(r * w for r, w in zip(refs, ws)) / sum(ws)
  np.testing.assert_allclose(s1["llm/layers/mlp"], ref, rtol=1e-4, atol=1e-9)
  assert (s1["llm/layers/mlp"] > 0).any()


_RULES = {d: datasets.pseudo_qa_rule(d, synthetic.generate_examples(d, "train", 40, seed=0))
          for d in ("synthetic_sports", "synthetic_endoscopy")}  # labelled: 40 images each


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_pseudo_qa_parser_never_raises(text):
  for rule in _RULES.values():
    out = parse_pseudo_qa(text, rule, np.random.default_rng(0))
    assert out in ("unparsable", "invalid") or isinstance(out, dict)


def test_pseudo_qa_parser_builds_valid_options():
  rng = np.random.default_rng(0)
  rule = _RULES["synthetic_sports"]
  out = parse_pseudo_qa("What sport is being played? answer: hockey", rule, rng)
  assert out["options"][out["answer"]] == "hockey" and len(out["options"]) == 4
  assert parse_pseudo_qa("What sport is being played? answer: golf", rule, rng) == "invalid"
  assert parse_pseudo_qa("no answer tag here", rule, rng) == "unparsable"
