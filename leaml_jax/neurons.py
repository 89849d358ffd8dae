"""Neuron relevance for QA and the selection mask (LEAML's selective neuron update).

A *neuron* is unit j of a transformer MLP hidden layer h (LM: act(gate)·up, ViT: act(fc1), Qwen2.5-VL's
tower: silu(gate)·up with biases): column j of gate/up (fc1) with its bias entries, and row j of
down (fc2). The down projection's bias belongs to no neuron (it is per output). The model exposes h through
`sow("intermediates", "mlp_hidden")` and `perturb("mlp_hidden")`, so one jitted pass yields both
h_j and dL_QA/dh_j:

    activation:  mean over answer positions of |h_j|
    taylor:      mean over answer positions of |h_j · dL_QA/dh_j|   (first-order loss change
                 if neuron j were removed)

Axis legend: Ly layers (the scanned depth axis), B batch, T positions, P image patches,
F neurons.
"""
from __future__ import annotations

import contextlib
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from leaml_jax import losses, sharding as shd

HIDDEN = "mlp_hidden"
# Parameter name -> axis (from the end) that indexes neurons.
NEURON_AXIS = {"gate_proj/kernel": -1, "gate_proj/bias": -1, "up_proj/kernel": -1, "up_proj/bias": -1,
               "down_proj/kernel": -2, "fc1/kernel": -1, "fc1/bias": -1, "fc2/kernel": -2}


def _position_weights(mask_loss_BL, T: int, vit: bool = False):
  """Weight of each of the T positions of a hidden state: positions that predict an answer token.

  The LM sees [image tokens, text]; logits at text position t predict text[t+1], so position t
  counts when mask_loss[t+1] == 1. A ViT (T = #patches, no text) weighs all patches equally.
  """
  B, L = mask_loss_BL.shape
  predicting = jnp.concatenate([mask_loss_BL[:, 1:], jnp.zeros((B, 1), mask_loss_BL.dtype)], 1)
  if not vit and T >= L:
    return jnp.concatenate([jnp.zeros((B, T - L)), predicting.astype(jnp.float32)], axis=1)
  return jnp.ones((B, T)) * (mask_loss_BL.sum(1, keepdims=True) > 0)


def _flat(tree):
  return {"/".join(k[:-1]): v for k, v in traverse_util.flatten_dict(tree).items()
          if k[-1] == HIDDEN}


def make_relevance_fn(model, score: str):
  """jitted (params, batch) -> {mlp_path: (weighted sum [.., F], weight total)} for one batch."""
  if score not in ("taylor", "activation"):
    raise ValueError(f"unknown relevance score {score!r}: use 'taylor' or 'activation'")

  def one_batch(params, batch):
    args = (batch["image"], batch["text"], batch["mask_ar"], batch["mask_input"])
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *args))
    if "perturbations" not in shapes:
      raise ValueError("model exposes no MLP hidden states (perturb('mlp_hidden') missing)")
    perts = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["perturbations"])

    def qa_loss(perturbations):
      (logits, _), state = model.apply({"params": params, "perturbations": perturbations}, *args,
                                  mutable=["intermediates"])
      loss, _ = losses.token_ce(logits, batch["text"], batch["mask_loss"])
      return loss, state["intermediates"]

    (_, inter), grads = jax.value_and_grad(qa_loss, has_aux=True)(perts)
    h, g = _flat(inter), _flat(grads)
    out = {}
    for path, h_x in h.items():
      h_x = h_x[0] if isinstance(h_x, tuple) else h_x  # sow stores a tuple
      g_x = g[path]
      B = batch["mask_loss"].shape[0]
      if h_x.shape[-3] != B:  # a ViT over n image blocks per row: [.., B*n, P, F] -> [.., B, n*P, F]
        h_x, g_x = (x.reshape(*x.shape[:-3], B, -1, x.shape[-1]) for x in (h_x, g_x))
      T = h_x.shape[-2]
      w_BT = _position_weights(batch["mask_loss"], T, vit=path.startswith("img"))
      val = jnp.abs(h_x * g_x) if score == "taylor" else jnp.abs(h_x)
      val = val.astype(jnp.float32)
      out[path] = (jnp.einsum("...btf,bt->...f", val, w_BT), w_BT.sum())
    return out

  return jax.jit(one_batch)


def relevance(model, params, batches: Iterable[dict], *, score: str = "taylor", mesh=None):
  """Per-neuron relevance over labelled QA batches -> {mlp_path: np.ndarray [(Ly,) F]}."""
  fn = make_relevance_fn(model, score)
  sums, weights = {}, {}
  ctx = shd.with_mesh_rules(mesh) if mesh is not None else contextlib.nullcontext()
  with ctx:
    for batch in batches:
      if mesh is not None:
        batch = shd.shard_batch(batch, mesh)
      for path, (s, w) in fn(params, batch).items():
        sums[path] = sums.get(path, 0.0) + np.asarray(jax.device_get(s), np.float64)
        weights[path] = weights.get(path, 0.0) + float(w)
  if not sums:
    raise ValueError("relevance: no batches given (is the labelled set empty?)")
  return {k: (v / max(weights[k], 1e-9)).astype(np.float32) for k, v in sums.items()}


def select(scores: dict, fraction: float, *, per_layer: bool = False, params=None,
           non_neuron: str = "frozen", towers: tuple[str, ...] | None = None):
  """Top-`fraction` neurons -> (neuron masks {mlp_path: bool [(Ly,) F]}, param mask tree or None).

  Exactly round(fraction · n) neurons are chosen (globally, or in every layer when per_layer);
  ties break by lower index. With `params`, also returns a mask shaped like the params (leaves
  broadcastable: [Ly, 1, F] for gate/up, [Ly, F, 1] for down); params that hold no
  selectable neuron get a scalar 0 (non_neuron="frozen") or 1 ("trainable").
  """
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"neuron fraction must be in (0, 1], got {fraction}")
  keys = sorted(k for k in scores if towers is None or k.split("/")[0] in towers)
  if not keys:
    raise ValueError(f"no MLP neurons to select in towers {towers}; have {sorted(scores)}")
  masks = {}
  if per_layer:
    for k in keys:
      s = np.asarray(scores[k])
      rows = s.reshape(-1, s.shape[-1])
      n = int(round(fraction * rows.shape[-1]))
      m = np.zeros_like(rows, bool)
      for i, r in enumerate(rows):
        m[i, _top(r, n)] = True
      masks[k] = m.reshape(s.shape)
  else:
    flat = np.concatenate([np.asarray(scores[k]).ravel() for k in keys])
    chosen = np.zeros(flat.size, bool)
    chosen[_top(flat, int(round(fraction * flat.size)))] = True
    offset = 0
    for k in keys:
      size = np.asarray(scores[k]).size
      masks[k] = chosen[offset:offset + size].reshape(np.shape(scores[k]))
      offset += size
  if params is None:
    return masks, None
  return masks, param_mask(masks, params, non_neuron=non_neuron)


def mask_gradients(params, mask):
  """Params whose gradient flows only where mask is 1 (values unchanged, bit-exact).

  Used when the relevance mask covers one loss term only (the caption-distillation term):
  that term is computed with `mask_gradients(params, mask)`, the other terms with `params`.
  """
  return jax.tree.map(
      lambda p, m: jnp.where(jnp.asarray(m, bool), p, jax.lax.stop_gradient(p)), params, mask)


def _top(values, n: int):
  order = np.lexsort((np.arange(values.size), -values))  # descending value, then index
  return order[:n]


def random_scores(scores: dict, rng: np.random.Generator) -> dict:
  """Scores of the same shapes drawn at random: the 'random mask of the same size' ablation."""
  return {k: rng.random(np.shape(v)).astype(np.float32) for k, v in scores.items()}


def param_mask(neuron_masks: dict, params, *, non_neuron: str = "frozen"):
  """Expand {mlp_path: bool [(Ly,) F]} to a mask tree over params (see `select`)."""
  fill = {"frozen": 0.0, "trainable": 1.0}[non_neuron]
  flat = traverse_util.flatten_dict(params, sep="/")
  out = {}
  for path, p in flat.items():
    module, _, leaf = path.rpartition("/")
    module, _, layer = module.rpartition("/")
    axis = NEURON_AXIS.get(f"{layer}/{leaf}")
    if axis is None or module not in neuron_masks:
      out[path] = np.float32(fill)
      continue
    m = neuron_masks[module].astype(np.float32)  # [(Ly,) F]
    if axis == -1:
      m = m.reshape(m.shape[:-1] + (1,) * (p.ndim - m.ndim) + m.shape[-1:])
    else:
      m = m.reshape(m.shape + (1,) * (p.ndim - m.ndim))
    out[path] = m
  return traverse_util.unflatten_dict(out, sep="/")


def stats(scores: dict, masks: dict) -> dict:
  """Per-layer selection statistics (written to relevance/stats.json)."""
  layers = []
  for k in sorted(masks):
    s, m = np.asarray(scores[k]), masks[k]
    s2, m2 = s.reshape(-1, s.shape[-1]), m.reshape(-1, m.shape[-1])
    for i in range(s2.shape[0]):
      sel = s2[i][m2[i]]
      layers.append({"mlp": k, "layer": i, "neurons": int(m2.shape[-1]),
                     "selected": int(m2[i].sum()), "fraction": float(m2[i].mean()),
                     "score_mean": float(s2[i].mean()),
                     "score_mean_selected": float(sel.mean()) if sel.size else 0.0})
  total = sum(l["neurons"] for l in layers)
  chosen = sum(l["selected"] for l in layers)
  return {"neurons": total, "selected": chosen, "fraction": chosen / max(total, 1),
          "layers": layers}
