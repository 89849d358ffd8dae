"""Decoder-only language model with Gemma / Gemma2 / Gemma3 / Llama / Qwen2 semantics (as HF has them).

Axis letters as in models/__init__.py: here T is the query length and S the key length
(the cache length when decoding); D the LM width, F its mlp_dim.

The LM works on embeddings: `embed` turns tokens into (scaled) embeddings, `__call__`
runs the blocks over any embedded sequence (the VLM prepends image tokens), `logits`
applies the final norm and the (tied or untied) head. Attention masks and RoPE
positions are built by the caller, so prefix-LM, padding and KV-cache decoding all
share one code path. A KV cache is an explicit pytree (k, v), head-major: [depth, B, K, S, H] with scanned layers,
one [B, K, S, H] per layer otherwise (`init_cache`).
Local (sliding-window) and global layers differ only in the mask and the RoPE table they take
(Gemma3: two RoPE bases, linear scaling on the global layers); both are built once per call.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from leaml_jax.models.presets import LMConfig

Array = jax.Array
P = nn.with_logical_partitioning
NEG_INF = -2.3819763e38  # most negative finite bfloat16; masks without NaN on all-masked rows

REMAT_POLICIES = {
    "full": None,  # save nothing, recompute the whole block
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def activation(name: str):
  return {"gelu_tanh": functools.partial(jax.nn.gelu, approximate=True), "silu": jax.nn.silu,
          "gelu": functools.partial(jax.nn.gelu, approximate=False),
          "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x)}[name]


def dense_init(fan_in_axes=(-2,)):
  return nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=fan_in_axes)


class RMSNorm(nn.Module):
  eps: float
  gemma: bool  # Gemma: x * (1 + w) computed in float32; Llama/Qwen2: w * x cast back first
  param_dtype: Any = jnp.float32
  axis_name: str = "embed"  # logical name of the normalised axis ("head_dim" for q/k norms)

  @nn.compact
  def __call__(self, x):
    init = nn.initializers.zeros if self.gemma else nn.initializers.ones
    w = self.param("scale", P(init, (self.axis_name,)), (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    if self.gemma:
      return (y * (1.0 + w.astype(jnp.float32))).astype(x.dtype)
    return w.astype(x.dtype) * y.astype(x.dtype)


def rope_cos_sin(positions_BT: Array, head_dim: int, theta: float, dtype, scale: float = 1.0,
                 mrope_section=None) -> tuple[Array, Array]:
  """HF layout: frequencies repeated over both halves of head_dim; computed in float32.
  scale: HF "linear" RoPE scaling (frequencies divided by it). M-RoPE (Qwen2-VL): positions
  [B,T,3] and frequency pair j turns with stream k % 3 of the section k it falls in."""
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  if scale != 1.0:
    inv_freq = inv_freq / scale
  if positions_BT.ndim == 3:
    stream = np.repeat(np.arange(len(mrope_section)) % 3, mrope_section)
    freqs = positions_BT[..., stream].astype(jnp.float32) * inv_freq
  else:
    freqs = positions_BT.astype(jnp.float32)[..., None] * inv_freq
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb).astype(dtype), jnp.sin(emb).astype(dtype)


def apply_rope(x_BTNH: Array, cos_BTH: Array, sin_BTH: Array) -> Array:
  half = x_BTNH.shape[-1] // 2
  rotated = jnp.concatenate([-x_BTNH[..., half:], x_BTNH[..., :half]], axis=-1)
  return x_BTNH * cos_BTH[:, :, None, :] + rotated * sin_BTH[:, :, None, :]


def attention(q_BTNH, k_BKSH, v_BKSH, mask_BTS, *, scale: float, softcap: float | None,
              implementation: str) -> Array:
  """Masked GQA attention; keys and values head-major [B,K,S,H], the KV cache's own layout, so a
  decode step reads the cache in place (no per-step transpose of the whole cache). Soft-capping
  and masking sit in the one fusion that makes the logits; softmax in float32 (as transformers).
  `implementation="cudnn"` (or "auto" on a GPU, without soft-capping) hands the work to
  jax.nn.dot_product_attention's fused kernel instead."""
  B, T, N, H = q_BTNH.shape
  K = k_BKSH.shape[1]
  fused = implementation == "cudnn" or (implementation == "auto" and softcap is None
                                        and jax.default_backend() == "gpu")
  if fused:
    if softcap is not None:
      raise ValueError("attention implementation 'cudnn' has no logit soft-capping; use 'xla' or 'auto'")
    to_bskh = lambda x: x.transpose(0, 2, 1, 3)  # noqa: E731
    return jax.nn.dot_product_attention(q_BTNH, to_bskh(k_BKSH), to_bskh(v_BKSH), mask=mask_BTS[:, None],
                                        scale=scale, implementation=None if implementation == "auto" else "cudnn")
  q_BKGTH = q_BTNH.reshape(B, T, K, N // K, H).transpose(0, 2, 3, 1, 4)
  logits = jnp.einsum("bkgth,bksh->bkgts", q_BKGTH * jnp.asarray(scale, q_BTNH.dtype), k_BKSH)
  if softcap is not None:
    logits = jnp.tanh(logits / softcap) * softcap
  logits = jnp.where(mask_BTS[:, None, None], logits.astype(jnp.float32), NEG_INF)
  probs = jax.nn.softmax(logits, axis=-1).astype(v_BKSH.dtype)
  out = jnp.einsum("bkgts,bksh->btkgh", probs, v_BKSH)
  return out.reshape(B, T, N, H)


class Attention(nn.Module):
  cfg: LMConfig
  dtype: Any
  param_dtype: Any
  implementation: str = "auto"

  @nn.compact
  def __call__(self, x_BTD, rope, mask_BTS, kv_cache=None, cache_index=None):
    c = self.cfg
    dense = functools.partial(nn.DenseGeneral, dtype=self.dtype, param_dtype=self.param_dtype,
                              kernel_init=P(dense_init(), ("embed", "heads", "head_dim")))
    bias_init = lambda names: P(nn.initializers.zeros, names)  # noqa: E731
    q = dense((c.num_heads, c.head_dim), use_bias=c.qkv_bias, name="q_proj",
              bias_init=bias_init(("heads", "head_dim")))(x_BTD)
    kv_kernel = P(dense_init(), ("embed", "kv", "head_dim"))
    k = dense((c.num_kv_heads, c.head_dim), use_bias=c.qkv_bias, name="k_proj",
              kernel_init=kv_kernel, bias_init=bias_init(("kv", "head_dim")))(x_BTD)
    v = dense((c.num_kv_heads, c.head_dim), use_bias=c.qkv_bias, name="v_proj",
              kernel_init=kv_kernel, bias_init=bias_init(("kv", "head_dim")))(x_BTD)
    if c.qk_norm:
      q = RMSNorm(c.norm_eps, c.gemma_norm, self.param_dtype, "head_dim", name="q_norm")(q)
      k = RMSNorm(c.norm_eps, c.gemma_norm, self.param_dtype, "head_dim", name="k_norm")(k)
    q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    q = nn.with_logical_constraint(q, ("batch", "length", "heads", "head_dim"))
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # head-major [B,K,T,H], as the cache
    if kv_cache is not None:  # write this step's keys at cache_index, attend over the whole cache
      k_cache, v_cache = kv_cache
      k = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), (0, 0, cache_index, 0))
      v = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), (0, 0, cache_index, 0))
      kv_cache = (k, v)
    scale = (c.query_pre_attn_scalar or c.head_dim) ** -0.5
    out = attention(q, k.astype(self.dtype), v.astype(self.dtype), mask_BTS, scale=scale,
                    softcap=c.attn_logit_softcap, implementation=self.implementation)
    out = nn.DenseGeneral(c.width, axis=(-2, -1), use_bias=False, dtype=self.dtype,
                          param_dtype=self.param_dtype, name="o_proj",
                          kernel_init=P(dense_init(), ("heads", "head_dim", "embed")))(out)
    return out, kv_cache


class GatedMLP(nn.Module):
  """down(act(gate(x)) * up(x)); the hidden h [B,T,F] is the LEAML neuron axis."""
  width: int
  mlp_dim: int
  act: str
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, x_BTD):
    dense = functools.partial(nn.Dense, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype)
    gate = dense(self.mlp_dim, name="gate_proj", kernel_init=P(dense_init(), ("embed", "mlp")))(x_BTD)
    up = dense(self.mlp_dim, name="up_proj", kernel_init=P(dense_init(), ("embed", "mlp")))(x_BTD)
    h_BTF = activation(self.act)(gate) * up
    h_BTF = nn.with_logical_constraint(h_BTF, ("batch", "length", "mlp"))
    # Relevance hooks: no-ops unless the caller passes/asks for these collections.
    h_BTF = self.perturb("mlp_hidden", h_BTF)
    self.sow("intermediates", "mlp_hidden", h_BTF)
    return dense(self.width, name="down_proj", kernel_init=P(dense_init(), ("mlp", "embed")))(h_BTF)


class Block(nn.Module):
  """One decoder layer. `is_local` selects the sliding-window mask and the local RoPE table."""
  cfg: LMConfig
  dtype: Any
  param_dtype: Any
  implementation: str = "auto"

  @nn.compact
  def __call__(self, x_BTD, is_local, kv_cache, ropes, masks, cache_index):
    c = self.cfg
    norm = functools.partial(RMSNorm, c.norm_eps, c.gemma_norm, self.param_dtype)
    mask_global, mask_local = masks
    mask_BTS = mask_global if mask_local is None else jnp.where(is_local, mask_local, mask_global)
    rope_global, rope_local = ropes
    rope = rope_global if rope_local is None else jax.tree.map(
        lambda l, g: jnp.where(is_local, l, g), rope_local, rope_global)
    h = norm(name="pre_attn_norm")(x_BTD)
    h, kv_cache = Attention(c, self.dtype, self.param_dtype, self.implementation, name="attn")(
        h, rope, mask_BTS, kv_cache, cache_index)
    if c.post_norms:
      h = norm(name="post_attn_norm")(h)
    x_BTD = x_BTD + h
    h = norm(name="pre_ffw_norm")(x_BTD)
    h = GatedMLP(c.width, c.mlp_dim, c.act, self.dtype, self.param_dtype, name="mlp")(h)
    if c.post_norms:
      h = norm(name="post_ffw_norm")(h)
    x_BTD = nn.with_logical_constraint(x_BTD + h, ("batch", "length", "embed"))
    return x_BTD, kv_cache


def is_local_layer(cfg: LMConfig, layer: int):
  """HF Gemma2 / Gemma3 layer_types: every sliding_pattern-th layer is global, the rest local."""
  return cfg.sliding_window is not None and (layer + 1) % cfg.sliding_pattern != 0


class LM(nn.Module):
  cfg: LMConfig
  dtype: Any = jnp.bfloat16
  param_dtype: Any = jnp.float32
  scan: bool = True
  remat: str = "none"
  implementation: str = "auto"

  def setup(self):
    c = self.cfg
    self.embedder = nn.Embed(c.vocab_size, c.width, dtype=self.dtype, param_dtype=self.param_dtype,
                             embedding_init=P(nn.initializers.normal(c.width ** -0.5), ("vocab", "embed")))
    block = Block
    if self.remat != "none":
      block = nn.remat(Block, policy=REMAT_POLICIES[self.remat], prevent_cse=not self.scan)
    args = (c, self.dtype, self.param_dtype, self.implementation)
    if self.scan:
      self.layers = nn.scan(
          block, variable_axes={"params": 0, "intermediates": 0, "perturbations": 0},
          split_rngs={"params": True}, in_axes=(0, 0, nn.broadcast, nn.broadcast, nn.broadcast),
          length=c.depth, metadata_params={nn.PARTITION_NAME: "layers"})(*args, name="layers")
    else:
      self.layers = [block(*args, name=f"layers_{i}") for i in range(c.depth)]
    self.final_norm = RMSNorm(c.norm_eps, c.gemma_norm, self.param_dtype)
    if not c.tie_embeddings:
      self.lm_head = nn.Dense(c.vocab_size, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                              kernel_init=P(dense_init(), ("embed", "vocab")))

  def embed(self, tokens_BT: Array) -> Array:
    x = self.embedder(tokens_BT)
    if self.cfg.scale_embeddings:  # HF: normalizer in the compute dtype
      x = x * jnp.asarray(self.cfg.width ** 0.5, self.dtype)
    return x

  def __call__(self, x_BTD, positions_BT, masks, kv_cache=None, cache_index=None):
    """Runs all blocks. masks = (global [B,T,S] bool, local [B,T,S] bool or None); positions [B,T]
    (or [B,T,3] M-RoPE streams).

    kv_cache: (k, v) from `init_cache` (head-major, [depth,B,K,S,H] or one [B,K,S,H] per layer) or
    None; written at `cache_index` along S.
    Returns (hidden [B,T,D] before the final norm is applied by `logits`, new kv_cache).
    """
    c = self.cfg
    x_BTD = nn.with_logical_constraint(x_BTD.astype(self.dtype), ("batch", "length", "embed"))
    ropes = (rope_cos_sin(positions_BT, c.head_dim, c.rope_theta, self.dtype, c.rope_scale, c.mrope_section),
             None if c.rope_local_theta is None else
             rope_cos_sin(positions_BT, c.head_dim, c.rope_local_theta, self.dtype))
    is_local_per_layer = jnp.array([is_local_layer(c, i) for i in range(c.depth)])
    if self.scan:
      return self.layers(x_BTD, is_local_per_layer, kv_cache, ropes, masks, cache_index)
    new_k, new_v = [], []
    for i, layer in enumerate(self.layers):
      layer_cache = None if kv_cache is None else (kv_cache[0][i], kv_cache[1][i])
      x_BTD, layer_cache = layer(x_BTD, is_local_layer(c, i), layer_cache, ropes, masks, cache_index)
      if layer_cache is not None:
        new_k.append(layer_cache[0])
        new_v.append(layer_cache[1])
    return x_BTD, (None if kv_cache is None else (tuple(new_k), tuple(new_v)))

  def init_cache(self, batch: int, length: int):
    """Empty KV cache (k, v), head-major: [depth,B,K,S,H] arrays with scanned layers, else a tuple
    of [B,K,S,H] per layer, so each layer's cache is its own buffer and a decode step writes one
    slot of it in place (no per-step slicing or restacking of the whole cache)."""
    c = self.cfg
    shape = (batch, c.num_kv_heads, length, c.head_dim)
    if self.scan:
      zeros = lambda: jnp.zeros((c.depth, *shape), self.dtype)  # noqa: E731
    else:
      zeros = lambda: tuple(jnp.zeros(shape, self.dtype) for _ in range(c.depth))  # noqa: E731
    return zeros(), zeros()

  def logits(self, x_BTD: Array) -> Array:
    """Final norm + head; float32 logits [B,T,V] (soft-capped when final_logit_softcap is set)."""
    x_BTD = self.final_norm(x_BTD)
    if self.cfg.tie_embeddings:
      logits = self.embedder.attend(x_BTD)
    else:
      logits = self.lm_head(x_BTD)
    logits = logits.astype(jnp.float32)
    if self.cfg.final_logit_softcap is not None:
      cap = self.cfg.final_logit_softcap
      logits = jnp.tanh(logits / cap) * cap
    return nn.with_logical_constraint(logits, ("batch", "length", "vocab"))
