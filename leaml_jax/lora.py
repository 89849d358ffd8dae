"""LoRA for the baseline: W + (alpha/r)·A@B on attention and MLP kernels of the LM.

Functional: `params = {"base": <frozen model params>, "lora": {path: {"a", "b"}}}`; the loss calls
the model with `merge(params)`. Freezing "base/.*" is an ordinary optimizer trainability rule,
so LoRA runs through the same train_step as every other method.
"""
from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
from flax import traverse_util

TARGETS = r"llm/.*/(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)/kernel"
# Trailing axes that are "output" (q/k/v: heads, head_dim) and "input" (o_proj: heads, head_dim).
_OUT_AXES = {"q_proj": 2, "k_proj": 2, "v_proj": 2}
_IN_AXES = {"o_proj": 2}
TRAINABLE = ((r"base/.*", False), (r"lora/.*", True))
# The same, with the vision-to-LM connector (`img/head`, models/vit.py) trained fully as well.
TRAINABLE_WITH_CONNECTOR = ((r"base/img/head/.*", True),) + TRAINABLE


def _split(name: str, shape):
  layer = name.split("/")[-2]
  n_out, n_in = _OUT_AXES.get(layer, 1), _IN_AXES.get(layer, 1)
  lead = len(shape) - n_in - n_out
  # Plain integer arithmetic on the static shape, so `init` also traces (eval_shape, jit).
  d_in = math.prod(shape[lead:lead + n_in])
  d_out = math.prod(shape[lead + n_in:])
  return shape[:lead], d_in, d_out


def init(params, rng, *, rank: int, targets: str = TARGETS):
  """A ~ N(0, 1/d_in), B = 0: the merged model starts equal to the base."""
  rx = re.compile(targets)
  flat = traverse_util.flatten_dict(params, sep="/")
  lora = {}
  for i, (name, w) in enumerate(sorted(flat.items())):
    if not rx.fullmatch(name):
      continue
    lead, d_in, d_out = _split(name, w.shape)
    a = jax.random.normal(jax.random.fold_in(rng, i), (*lead, d_in, rank), jnp.float32) / d_in ** 0.5
    lora[name] = {"a": a.astype(w.dtype), "b": jnp.zeros((*lead, rank, d_out), w.dtype)}
  if not lora:
    raise ValueError(f"LoRA: no parameter matches {targets!r}")
  return lora


def merge(params, *, rank: int, alpha: float):
  """{"base", "lora"} -> plain model params with the low-rank deltas added."""
  flat = dict(traverse_util.flatten_dict(params["base"], sep="/"))
  scale = alpha / rank
  for name, ab in params["lora"].items():
    w = flat[name]
    delta = jnp.einsum("...ir,...ro->...io", ab["a"], ab["b"]) * scale
    flat[name] = w + delta.reshape(w.shape).astype(w.dtype)
  return traverse_util.unflatten_dict(flat, sep="/")
