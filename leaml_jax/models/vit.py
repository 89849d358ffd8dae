"""Vision tower (SigLIP, or Qwen2-VL's) with the VLM connector at `img/head`.

Axis letters as in models/__init__.py: P patch tokens, D the ViT width, F its mlp_dim, N its
heads, H head_dim, E the LM width the connector maps to.

SigLIP: patch conv (with bias) + learned position embedding, pre-LN encoder blocks
(self-attention with biases, gelu_tanh MLP fc1/fc2), final LayerNorm, no pooling.
Qwen2-VL (cfg.family): no position embedding, 2-D RoPE (height, width) in attention with a fused
`qkv`, quick_gelu, patch conv without bias over `frames` stacked frames; patches stay in
row-major order through the blocks (attention does not care) and are put in 2x2 windows for the
merger. The final LayerNorm is its merger's ln_q.
Qwen2.5-VL (family "qwen2_5_vl"): as Qwen2-VL with RMSNorms (ln_q too), a SwiGLU MLP with biases
(`GatedMLP`), and attention within square windows of window_size pixels (tiled from the top-left
over the merged grid; edge windows smaller) except in the blocks `full_attention_blocks`.
transformers gathers each window's patches together (its window_index permutation), attends per
window and undoes the permutation after the merger; here the patches stay in row-major order and a
same-window mask gives each query the same keys, so the result is the same (no FLOPs saved).
The connector is a Dense to the LM width: "linear" (PaliGemma, with bias),
"pixel_shuffle" (Idefics3/SmolVLM: space-to-depth by `factor`, Dense without bias),
"avg_pool" (Gemma 3: average over pool_factor x pool_factor patches, Gemma RMSNorm `head_norm`,
Dense without bias) or "patch_merger" (Qwen2-VL: factor x factor windows, `head_hidden` Dense +
exact GELU, then `head`, both with biases).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from leaml_jax.models.lm import REMAT_POLICIES, RMSNorm, activation, dense_init
from leaml_jax.models.presets import ViTConfig

P = nn.with_logical_partitioning
zeros_init = lambda names: P(nn.initializers.zeros, names)  # noqa: E731


class MLP(nn.Module):
  mlp_dim: int
  dtype: Any
  param_dtype: Any
  act: str = "gelu_tanh"

  @nn.compact
  def __call__(self, x_BPD):
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
    h_BPF = dense(self.mlp_dim, name="fc1", kernel_init=P(dense_init(), ("embed", "mlp")),
                  bias_init=zeros_init(("mlp",)))(x_BPD)
    h_BPF = activation(self.act)(h_BPF)
    h_BPF = nn.with_logical_constraint(h_BPF, ("batch", "length", "mlp"))
    h_BPF = self.perturb("mlp_hidden", h_BPF)  # relevance hooks (no-ops unless requested)
    self.sow("intermediates", "mlp_hidden", h_BPF)
    return dense(x_BPD.shape[-1], name="fc2", kernel_init=P(dense_init(), ("mlp", "embed")),
                 bias_init=zeros_init(("embed",)))(h_BPF)


class GatedMLP(nn.Module):
  """Qwen2.5-VL's vision MLP: down(silu(gate(x)) * up(x)), all three with biases; the hidden is the
  neuron axis (same hooks as `MLP`)."""
  mlp_dim: int
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, x_BPD):
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
    proj = lambda name: dense(self.mlp_dim, name=name, kernel_init=P(dense_init(), ("embed", "mlp")),  # noqa: E731
                              bias_init=zeros_init(("mlp",)))(x_BPD)
    h_BPF = jax.nn.silu(proj("gate_proj")) * proj("up_proj")
    h_BPF = nn.with_logical_constraint(h_BPF, ("batch", "length", "mlp"))
    h_BPF = self.perturb("mlp_hidden", h_BPF)
    self.sow("intermediates", "mlp_hidden", h_BPF)
    return dense(x_BPD.shape[-1], name="down_proj", kernel_init=P(dense_init(), ("mlp", "embed")),
                 bias_init=zeros_init(("embed",)))(h_BPF)


class SelfAttention(nn.Module):
  num_heads: int
  dtype: Any
  param_dtype: Any
  implementation: str = "auto"
  fused_qkv: bool = False  # Qwen2-VL: one `qkv` projection [D,3,N,H]

  @nn.compact
  def __call__(self, x_BPD, rope=None, mask_PP=None):
    """rope: (cos, sin) [P,H] of the 2-D RoPE (Qwen2-VL), applied in float32 as transformers does;
    mask_PP: which keys each query sees (Qwen2.5-VL windows), None = all."""
    D = x_BPD.shape[-1]
    H = D // self.num_heads
    dense = functools.partial(nn.DenseGeneral, dtype=self.dtype, param_dtype=self.param_dtype)
    if self.fused_qkv:
      qkv = dense((3, self.num_heads, H), name="qkv", kernel_init=P(dense_init(), ("embed", None, "heads", "head_dim")),
                  bias_init=zeros_init((None, "heads", "head_dim")))(x_BPD)
      q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
    else:
      proj = functools.partial(dense, (self.num_heads, H), kernel_init=P(dense_init(), ("embed", "heads", "head_dim")),
                               bias_init=zeros_init(("heads", "head_dim")))
      q, k, v = proj(name="q_proj")(x_BPD), proj(name="k_proj")(x_BPD), proj(name="v_proj")(x_BPD)
    if rope is not None:
      cos, sin = rope[0][:, None], rope[1][:, None]
      q, k = (apply_rope(t.astype(jnp.float32), cos, sin).astype(t.dtype) for t in (q, k))
    impl = None if self.implementation == "auto" else self.implementation
    mask = None if mask_PP is None else mask_PP[None, None]
    out = jax.nn.dot_product_attention(q, k, v, scale=H ** -0.5, mask=mask, implementation=impl)
    return nn.DenseGeneral(D, axis=(-2, -1), dtype=self.dtype, param_dtype=self.param_dtype,
                           kernel_init=P(dense_init(), ("heads", "head_dim", "embed")),
                           bias_init=zeros_init(("embed",)), name="out_proj")(out)


def apply_rope(x_BPNH, cos_PH, sin_PH):
  half = x_BPNH.shape[-1] // 2
  rotated = jnp.concatenate([-x_BPNH[..., half:], x_BPNH[..., :half]], axis=-1)
  return x_BPNH * cos_PH + rotated * sin_PH


def rope_2d(grid: tuple[int, int], head_dim: int, theta: float = 10000.0):
  """Qwen2-VL's axial RoPE for row-major patches: (cos, sin) [P,H] float32, the first quarter of
  each half turning with the row, the second with the column."""
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim // 2, 2, dtype=jnp.float32) / (head_dim // 2)))
  rows, cols = jnp.meshgrid(jnp.arange(grid[0]), jnp.arange(grid[1]), indexing="ij")
  freqs = jnp.concatenate([rows.reshape(-1, 1) * inv_freq, cols.reshape(-1, 1) * inv_freq], axis=-1)
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def window_mask(grid: tuple[int, int], side: int) -> np.ndarray:
  """[P,P] bool for row-major patches: both in the same side x side window (Qwen2.5-VL's windows,
  tiled from the top-left, smaller at the bottom and right edges)."""
  rows, cols = np.meshgrid(np.arange(grid[0]) // side, np.arange(grid[1]) // side, indexing="ij")
  window = (rows * -(-grid[1] // side) + cols).reshape(-1)
  return window[:, None] == window[None, :]


class EncoderBlock(nn.Module):
  cfg: ViTConfig
  dtype: Any
  param_dtype: Any
  implementation: str = "auto"

  @nn.compact
  def __call__(self, x_BPD, rope=None, window_PP=None, is_full=True):
    """window_PP / is_full (Qwen2.5-VL): this block attends within windows unless is_full."""
    c = self.cfg
    qwen, qwen25 = c.family != "siglip", c.family == "qwen2_5_vl"
    ln = _norm(c, self.dtype, self.param_dtype)
    mask_PP = None if window_PP is None else window_PP | is_full
    y = ln(name="layer_norm1")(x_BPD)
    x_BPD = x_BPD + SelfAttention(c.num_heads, self.dtype, self.param_dtype, self.implementation, qwen,
                                  name="self_attn")(y, rope, mask_PP)
    y = ln(name="layer_norm2")(x_BPD)
    if qwen25:
      y = GatedMLP(c.mlp_dim, self.dtype, self.param_dtype, name="mlp")(y)
    else:
      y = MLP(c.mlp_dim, self.dtype, self.param_dtype, "quick_gelu" if qwen else "gelu_tanh", name="mlp")(y)
    return nn.with_logical_constraint(x_BPD + y, ("batch", "length", "embed")), None


def _norm(c: ViTConfig, dtype, param_dtype):
  """LayerNorm (SigLIP, Qwen2-VL) or, for Qwen2.5-VL, RMSNorm (scale only, eps 1e-6 as transformers)."""
  if c.family == "qwen2_5_vl":
    return functools.partial(RMSNorm, 1e-6, False, param_dtype)
  return functools.partial(nn.LayerNorm, epsilon=c.norm_eps, dtype=dtype, param_dtype=param_dtype,
                           scale_init=P(nn.initializers.ones, ("embed",)), bias_init=zeros_init(("embed",)))


class Transformer(nn.Module):
  cfg: ViTConfig
  dtype: Any
  param_dtype: Any
  scan: bool = True
  remat: str = "none"
  implementation: str = "auto"

  @nn.compact
  def __call__(self, x_BPD, rope=None, window_PP=None):
    c = self.cfg
    is_full = np.array([i in c.full_attention_blocks for i in range(c.depth)])
    block = EncoderBlock
    if self.remat != "none":
      block = nn.remat(EncoderBlock, policy=REMAT_POLICIES[self.remat], prevent_cse=not self.scan)
    args = (c, self.dtype, self.param_dtype, self.implementation)
    if self.scan:
      x_BPD, _ = nn.scan(block, variable_axes={"params": 0, "intermediates": 0, "perturbations": 0},
                         split_rngs={"params": True}, in_axes=(nn.broadcast, nn.broadcast, 0), length=c.depth,
                         metadata_params={nn.PARTITION_NAME: "layers"})(*args, name="encoderblock")(
                             x_BPD, rope, window_PP, jnp.asarray(is_full))
    else:
      for i in range(c.depth):
        x_BPD, _ = block(*args, name=f"encoderblock_{i}")(x_BPD, rope, window_PP, bool(is_full[i]))
    return _norm(c, self.dtype, self.param_dtype)(name="encoder_norm")(x_BPD)


def pixel_shuffle(x_BPD: jax.Array, grid: tuple[int, int], factor: int) -> jax.Array:
  """Idefics3 space-to-depth, same element order as HF `Idefics3Connector.pixel_shuffle`:
  [B,P,D] -> [B, P / factor², D · factor²]."""
  B, _, D = x_BPD.shape
  gh, gw = grid
  s = factor
  x = x_BPD.reshape(B, gh, gw // s, D * s)
  x = x.transpose(0, 2, 1, 3).reshape(B, gw // s, gh // s, D * s * s)
  x = x.transpose(0, 2, 1, 3)
  return x.reshape(B, (gh // s) * (gw // s), D * s * s)


class ViT(nn.Module):
  """image [B,height,width,3·frames] in [-1,1] -> image tokens [B,P,E] after the connector `head`
  (P = num_image_tokens, E = out_width). The Qwen2-VL / Qwen2.5-VL towers take any height and width
  that patch_size · the merge factor divides (the grid is read off the image)."""
  cfg: ViTConfig
  out_width: int
  connector: str = "linear"
  pixel_shuffle_factor: int = 1
  dtype: Any = jnp.bfloat16
  param_dtype: Any = jnp.float32
  scan: bool = True
  remat: str = "none"
  implementation: str = "auto"
  pool_factor: int = 1

  @nn.compact
  def __call__(self, image):
    c = self.cfg
    qwen, p = c.family != "siglip", c.patch_size
    unit = p * (self.pixel_shuffle_factor if qwen else 1)
    if (image.shape[1:3] != c.image_size and not qwen) or image.shape[1] % unit or image.shape[2] % unit:
      raise ValueError(f"ViT expects images of size {c.image_size if not qwen else f'a multiple of {unit}'}, "
                       f"got {image.shape[1:3]}; resize in the data pipeline")
    grid = (image.shape[1] // p, image.shape[2] // p)
    x = nn.Conv(c.width, (p, p), strides=(p, p), padding="VALID", use_bias=not qwen, dtype=self.dtype,
                param_dtype=self.param_dtype, name="embedding",
                kernel_init=P(nn.initializers.lecun_normal(), (None, None, "channels", "embed")),
                bias_init=zeros_init(("embed",)))(image.astype(self.dtype))
    B = x.shape[0]
    x_BPD = x.reshape(B, -1, c.width)
    if not qwen:
      pos = self.param("pos_embedding", P(nn.initializers.normal(c.width ** -0.5), (None, "patch", "embed")),
                       (1, x_BPD.shape[1], c.width), self.param_dtype)
      x_BPD = x_BPD + pos.astype(self.dtype)
    rope = rope_2d(grid, c.width // c.num_heads) if qwen else None
    window_PP = None
    if c.family == "qwen2_5_vl":  # window side in patches: whole merged tokens, as transformers rounds it
      m = self.pixel_shuffle_factor
      window_PP = jnp.asarray(window_mask(grid, c.window_size // m // p * m))
    x_BPD = Transformer(c, self.dtype, self.param_dtype, self.scan, self.remat, self.implementation,
                        name="Transformer")(x_BPD, rope, window_PP)
    connector_in = x_BPD
    if self.connector == "pixel_shuffle":
      connector_in = pixel_shuffle(x_BPD, c.grid, self.pixel_shuffle_factor)
    elif self.connector == "avg_pool":  # HF Gemma3MultiModalProjector: patches in row-major order
      k = self.pool_factor
      pooled = nn.avg_pool(x_BPD.reshape(B, *c.grid, c.width), (k, k), strides=(k, k))
      connector_in = RMSNorm(c.norm_eps, True, self.param_dtype, name="head_norm")(
          pooled.reshape(B, -1, c.width))
    elif self.connector == "patch_merger":  # HF Qwen2(.5)-VL PatchMerger: m x m windows, (row, col) inside
      m = self.pixel_shuffle_factor
      windows = x_BPD.reshape(B, grid[0] // m, m, grid[1] // m, m, c.width).transpose(0, 1, 3, 2, 4, 5)
      connector_in = activation("gelu")(nn.Dense(
          m * m * c.width, dtype=self.dtype, param_dtype=self.param_dtype, name="head_hidden",
          kernel_init=P(dense_init(), (None, "mlp")), bias_init=zeros_init(("mlp",)))(
              windows.reshape(B, -1, m * m * c.width)))
    tokens_BPE = nn.Dense(self.out_width, use_bias=self.connector in ("linear", "patch_merger"), dtype=self.dtype,
                          param_dtype=self.param_dtype, name="head",
                          kernel_init=P(dense_init(), (None, "embed")),
                          bias_init=zeros_init(("embed",)))(connector_in)
    return tokens_BPE
