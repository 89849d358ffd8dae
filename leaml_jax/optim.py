"""Optimizer: what trains, how fast, and the selective-neuron-update mask.

`make_optimizer(cfg, params, neuron_mask=None)` partitions the params by the trainability rules:

    trainable:  clip -> AdamW(warmup+cosine) -> [neuron_mask]
    frozen:     set_to_zero

Trainability comes from regex rules over parameter paths (`cfg.trainable = [(regex, bool), ...]`,
first match wins, every path must match one). Frozen parameters carry no optimizer state (no Adam
moments, no mask) and take no part in the global clip norm: a LoRA run is clipped by the norm of
its LoRA gradients alone, not by the frozen base's. Their update is exactly zero, so they stay
bit-identical. The neuron mask is the last link of the trainable chain, so neither Adam moments
nor weight decay can move a masked entry.

Weight decay goes by a parameter's role (its path), never its rank: with scanned layers a
stacked norm scale or bias is [layers, D], as 2-D as any matrix. Decayed: every `.../kernel`
(dense, attention and conv weights, the connector) and the LoRA factors `lora/.../a|b` (decay
pulls the low-rank delta towards zero, i.e. the merged weight towards the base). Never decayed:
norm scales, biases, the token embedding (tied to the output head in Gemma; rows of rare tokens
would decay towards zero just for being rare) and position embeddings, as in big_vision.
"""
from __future__ import annotations

import re
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

DECAY = r".*/kernel|lora/.*/(a|b)"  # fullmatch over the parameter path; see the module docstring


def path_str(path) -> str:
  """('llm', 'layers', 'mlp', 'gate_proj', 'kernel') -> 'llm/layers/mlp/gate_proj/kernel'."""
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def tree_paths(tree) -> Any:
  return jax.tree_util.tree_map_with_path(lambda p, _: path_str(p), tree)


def trainable_mask(params, rules: Sequence[tuple[str, bool]]):
  """Bool tree from regex rules; raises if a parameter is covered by no rule."""
  compiled = [(re.compile(r), bool(t)) for r, t in rules]
  uncovered = []

  def decide(path, _):
    name = path_str(path)
    for rx, train in compiled:
      if rx.fullmatch(name):
        return train
    uncovered.append(name)
    return False

  mask = jax.tree_util.tree_map_with_path(decide, params)
  if uncovered:
    raise ValueError(
        f"optimizer.trainable rules cover no rule for {len(uncovered)} parameter(s), e.g. "
        f"{uncovered[:3]}; add a rule such as ('.*', True) at the end of config.optim.trainable")
  return mask


def apply_mask(updates, mask):
  """updates * mask, leafwise; mask leaves are bools/0-1 arrays broadcastable to the update."""
  return jax.tree.map(lambda u, m: u * jnp.asarray(m, u.dtype), updates, mask)


class NeuronMaskState(NamedTuple):
  mask: Any  # pytree like params (leaves broadcastable to the param), sharded like the params


def neuron_mask(mask) -> optax.GradientTransformation:
  """Multiply updates by `mask` (1 = may change). Place it last in the chain.

  The mask is held in the transform's state, so it is checkpointed and sharded with the
  optimizer state; a masked entry receives exactly zero update, every step.
  """
  def init_fn(params):
    del params
    return NeuronMaskState(mask=jax.tree.map(jnp.asarray, mask))

  def update_fn(updates, state, params=None):
    del params
    return apply_mask(updates, state.mask), state

  return optax.GradientTransformation(init_fn, update_fn)


def schedule(cfg) -> optax.Schedule:
  warmup = int(cfg.warmup_steps)
  total = max(int(cfg.steps), warmup + 1)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.lr, warmup_steps=warmup, decay_steps=total,
      end_value=cfg.lr * cfg.get("end_lr_factor", 0.0))


def decay_mask(params):
  """Bool tree: which params take weight decay (by path, see DECAY). Frozen leaves (MaskedNode)
  hold no array and are passed through."""
  rx = re.compile(DECAY)
  return jax.tree_util.tree_map_with_path(lambda p, _: bool(rx.fullmatch(path_str(p))), params)


def _only_trainable(tree, trainable):
  # The trainable chain sees frozen leaves as optax.MaskedNode; a mask that is to line up with
  # its updates must have the same holes (and so keeps no array for a frozen leaf).
  return jax.tree.map(lambda t, m: m if t else optax.MaskedNode(), trainable, tree)


def make_optimizer(cfg, params, neuron_mask_tree=None) -> optax.GradientTransformation:
  """cfg: ConfigDict with steps, lr, warmup_steps, weight_decay, b1, b2, clip_norm, trainable."""
  trainable = trainable_mask(params, [tuple(r) for r in cfg.trainable])
  links = []
  if cfg.clip_norm:
    links.append(optax.clip_by_global_norm(cfg.clip_norm))
  links.append(optax.adamw(schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=1e-8,
                           weight_decay=cfg.weight_decay, mask=decay_mask))
  if neuron_mask_tree is not None:
    links.append(neuron_mask(_only_trainable(neuron_mask_tree, trainable)))
  labels = jax.tree.map(lambda t: "train" if t else "frozen", trainable)
  return optax.partition({"train": optax.chain(*links), "frozen": optax.set_to_zero()}, labels)
