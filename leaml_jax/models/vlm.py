"""Vision-language model: image tokens (prefix) + text, prefix-LM attention, KV-cache decoding.

Axis letters as in models/__init__.py: T = I·P image-prefix tokens + L text tokens (T = L when
the image tokens sit inside the text, cfg.image_token_id), S the cache length, D the LM width.

Attention follows big_vision's PaliGemma `mask_ar` rule: with c = cumsum(mask_ar) over the
full sequence (image tokens have mask_ar = 0), query i may attend key j iff c[j] <= c[i]
and key j is real (mask_input = 1). Position ids count real tokens only, starting at
`cfg.position_offset`, so right-padded rows of different lengths get correct positions.
Sliding-window (Gemma2 local) layers keep the keys within the window *or in the query's own
bidirectional block* (same c): the whole image + prompt prefix stays visible to every prefix
token however long it is, as transformers' PaliGemma 2 does (its `blockwise_overlay` is OR-ed
onto the sliding causal mask). Decoded tokens are causal, so they see only the window.
With cfg.local_sees_block False (Gemma 3) the window cuts blocks too, as transformers ANDs it
onto causal-or-block there.

Gemma 3 is causal with each run of image tokens one bidirectional block: `image_block_mask_ar`
writes that as mask_ar (1 everywhere but on an image token that follows another), so the same
cumsum rule covers it. Qwen2-VL / Qwen2.5-VL (cfg.lm.mrope_section) are causal and positions are
M-RoPE streams [B,T,3] (`mrope_positions`, the image grid read off the image); decoding continues
one past the largest. A video is its temporal patches as consecutive images ([..., 3·frames]
channels), its tokens `cfg.video_token_id`.

`image` is [B,height,width,3] or [B,I,height,width,3]: I images (e.g. video frames) per row,
each encoded on its own; in the prefix layout their tokens are concatenated in order (I·P
prefix tokens).

Parameter tree: `img` (ViT, connector at `img/head`) and `llm` (LM).
Typical use:
  model = VLM(cfg); params = model.init(rng, *dummy_inputs(cfg))["params"]
  logits_BLV, aux = model.apply({"params": params}, image, text, mask_ar, mask_input)
  logits_BV, cache = model.apply({"params": params}, image, text, mask_ar, mask_input,
                                 cache_len=S, method=VLM.prefill)
  logits_BV, cache = model.apply({"params": params}, tokens_B, cache, method=VLM.decode_step)
Relevance hooks: apply with `mutable=["intermediates"]` to get every MLP hidden
(`intermediates/.../mlp/mlp_hidden` = (h [depth,B,T,F],) under scan), and pass a
"perturbations" collection of zeros (from `mutable=["perturbations"]`) to take dL/dh.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from leaml_jax.models.lm import LM
from leaml_jax.models.presets import VLMConfig
from leaml_jax.models.vit import ViT

Cache = dict[str, Any]  # k, v (LM.init_cache); key_mask [B,S] bool; key_pos [B,S]; index (); pos [B]


def prefix_lm_mask(mask_ar_BT: jax.Array, valid_BT: jax.Array) -> jax.Array:
  """[B,T,T] bool: query i sees key j iff cumsum(mask_ar)[j] <= cumsum(mask_ar)[i] and j is real."""
  c = jnp.cumsum(mask_ar_BT, axis=1)
  return (c[:, None, :] <= c[:, :, None]) & valid_BT[:, None, :]


def same_block(mask_ar_BT: jax.Array) -> jax.Array:
  """[B,T,T] bool: query i and key j lie in one bidirectional block (equal cumsum(mask_ar))."""
  c = jnp.cumsum(mask_ar_BT, axis=1)
  return c[:, :, None] == c[:, None, :]


def image_block_mask_ar(is_image_BT) -> np.ndarray:
  """mask_ar of a causal sequence in which each run of image tokens is one bidirectional block
  (transformers' Gemma 3 `token_type_ids` rule): 0 on an image token that follows an image
  token, 1 elsewhere."""
  is_image_BT = np.asarray(is_image_BT, bool)
  follows = np.concatenate([np.zeros_like(is_image_BT[..., :1]), is_image_BT[..., :-1]], axis=-1)
  return (~(is_image_BT & follows)).astype(np.int32)


def mrope_positions(is_image_BT, valid_BT, grid: tuple[int, int], time_step: float = 1.0) -> jax.Array:
  """[B,T,3] M-RoPE positions (temporal, height, width) as transformers' Qwen2-VL / Qwen2.5-VL
  `get_rope_index` gives them, for images and videos of `grid` (rows, cols) tokens per temporal
  patch. Each run of image (or video) tokens is one image or video: its k-th token sits at
  start + (floor(t · time_step), row, col) with t = k // (rows·cols); a text token's three streams
  are equal and count on from the previous token, and the text after a run starts at
  start + max(rows, cols) whatever the run's length. Padding is skipped."""
  P, side = grid[0] * grid[1], max(grid)
  img = is_image_BT & valid_BT
  txt = valid_BT & ~is_image_BT
  prev = jnp.concatenate([jnp.zeros_like(img[:, :1]), img[:, :-1]], axis=1)
  run_start = img & ~prev
  text_before = jnp.cumsum(txt, axis=1, dtype=jnp.int32) - txt
  img_before = jnp.cumsum(img, axis=1, dtype=jnp.int32) - img
  runs_before = jnp.cumsum(run_start, axis=1, dtype=jnp.int32) - img
  start = text_before + runs_before * side
  k = jnp.where(img, img_before - jax.lax.cummax(jnp.where(run_start, img_before, 0), axis=1), 0)
  t = (jnp.asarray(k // P, jnp.float32) * jnp.float32(time_step)).astype(jnp.int32)
  k = k % P
  return jnp.stack([start + t, start + k // grid[1], start + k % grid[1]], axis=-1)


def dummy_inputs(cfg: VLMConfig, batch: int = 1, text_len: int = 4):
  """(image, text, mask_ar, mask_input) placeholders for `init` / `eval_shape`."""
  h, w = cfg.vit.image_size
  return (jnp.zeros((batch, h, w, 3), jnp.float32), jnp.zeros((batch, text_len), jnp.int32),
          jnp.zeros((batch, text_len), jnp.int32), jnp.ones((batch, text_len), jnp.int32))


class VLM(nn.Module):
  cfg: VLMConfig

  def setup(self):
    c = self.cfg
    dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
    self.img = ViT(c.vit, c.lm.width, c.connector, c.pixel_shuffle_factor, dtype, param_dtype,
                   c.scan, c.remat, c.attention, c.pool_factor)
    self.llm = LM(c.lm, dtype, param_dtype, c.scan, c.remat, c.attention)

  # ------------------------------------------------------------------ helpers
  def _inputs(self, image, text, mask_ar, mask_input):
    """Embeds image + text; returns x [B,T,D], mask_ar [B,T], valid [B,T] bool, positions [B,T] and
    the number of image-prefix tokens (I·P, or 0 in the inline layout)."""
    if text.ndim != 2 or mask_ar.shape != text.shape:
      raise ValueError(f"text {text.shape} and mask_ar {mask_ar.shape} must both be [B, L]")
    if mask_input is None:
      mask_input = jnp.ones_like(text)
    z_txt = self.llm.embed(text)
    if self.cfg.image_token_id is not None:
      return self._inline_inputs(image, text, z_txt, mask_ar, mask_input)
    z_img = self._encode_images(image)
    B, prefix_len = z_img.shape[:2]
    x = jnp.concatenate([z_img.astype(z_txt.dtype), z_txt], axis=1)
    ar = jnp.concatenate([jnp.zeros((B, prefix_len), jnp.int32), mask_ar.astype(jnp.int32)], axis=1)
    valid = jnp.concatenate([jnp.ones((B, prefix_len), bool), mask_input.astype(bool)], axis=1)
    positions = self.cfg.position_offset + jnp.cumsum(valid, axis=1, dtype=jnp.int32) - 1
    return x, ar, valid, positions, prefix_len

  def _inline_inputs(self, image, text, z_txt, mask_ar, mask_input):
    """HF Idefics3 layout: the k-th image-token position of a row gets the row's k-th image feature.

    image [B,height,width,3] or [B,I,height,width,3]; each row must hold exactly I·P image ids
    (P = num_image_tokens).
    """
    z_img = self._encode_images(image).astype(z_txt.dtype)
    is_img = text == self.cfg.image_token_id
    if self.cfg.video_token_id is not None:  # Qwen2-VL videos: their temporal patches are images in order
      is_img |= text == self.cfg.video_token_id
    idx = jnp.clip(jnp.cumsum(is_img, axis=1) - 1, 0, z_img.shape[1] - 1)
    x = jnp.where(is_img[..., None], jnp.take_along_axis(z_img, idx[..., None], axis=1), z_txt)
    valid = mask_input.astype(bool)
    if self.cfg.lm.mrope_section is not None:
      s = self.cfg.connector_factor
      grid = (image.shape[-3] // (self.cfg.vit.patch_size * s), image.shape[-2] // (self.cfg.vit.patch_size * s))
      step = 1.0 if self.cfg.tokens_per_second is None else (
          np.float32(self.cfg.tokens_per_second) * np.float32(self.cfg.seconds_per_patch))
      return x, mask_ar.astype(jnp.int32), valid, mrope_positions(is_img, valid, grid, step), 0
    positions = self.cfg.position_offset + jnp.cumsum(valid, axis=1, dtype=jnp.int32) - 1
    return x, mask_ar.astype(jnp.int32), valid, positions, 0

  def _encode_images(self, image):
    """[B,height,width,3] -> [B,P,D]; [B,I,height,width,3] -> [B,I·P,D] (each image encoded
    alone, tokens in order).

    With a tubelet tower (cfg.vit.frames > 1) a [B,frames,height,width,3] clip is one image whose
    frames are stacked along channels ([B,height,width,3·frames], frame-major), and a still
    [B,height,width,3] image is the clip of `frames` equal frames. Qwen2-VL's tower (temporal
    patches of `frames`) takes still images [..., 3], each as `frames` equal frames, or temporal
    patches of a video [..., 3·frames] (frames stacked frame-major along channels)."""
    frames = self.cfg.vit.frames
    tile = frames > 1 and image.shape[-1] == 3  # a still image; 3·frames channels: a video's temporal patch
    still = lambda im: self.img(jnp.tile(im, (1, 1, 1, frames)) if tile else im)  # noqa: E731
    if frames > 1 and self.cfg.vit.family == "siglip" and image.ndim != 4:
      if image.ndim != 5 or image.shape[1] != frames:
        raise ValueError(f"image {image.shape}: this tubelet tower takes clips [B, {frames}, height, width, 3] "
                         "or still images [B, height, width, 3]")
      B, _, height, width, channels = image.shape
      return self.img(image.transpose(0, 2, 3, 1, 4).reshape(B, height, width, frames * channels))
    if image.ndim == 4:
      return still(image)
    if image.ndim != 5:
      raise ValueError(f"image {image.shape} must be [B, height, width, 3] or [B, images, height, width, 3]")
    B, I = image.shape[:2]
    z_img = still(image.reshape(B * I, *image.shape[2:]))
    return z_img.reshape(B, I * z_img.shape[1], z_img.shape[2])

  def _local(self, mask_BTS, q_pos_BT, k_pos_BS, same_block_BTS=None):
    """Sliding-window variant of a mask (None when the LM has no local layers): keys within
    the window, or in the query's own bidirectional block (see the module docstring)."""
    w = self.cfg.lm.sliding_window
    if w is None:
      return None
    near = q_pos_BT[:, :, None] - k_pos_BS[:, None, :] < w
    if same_block_BTS is None or not self.cfg.local_sees_block:
      return mask_BTS & near
    return mask_BTS & (near | same_block_BTS)

  # ------------------------------------------------------------------ entry points
  def __call__(self, image, text, mask_ar, mask_input=None, *, train: bool = False):
    """Logits [B,L,V] float32 for the text positions; logits[:, t] predicts text[:, t+1].

    `train` is accepted for API symmetry; the model has no dropout.
    """
    del train
    x, ar, valid, pos, prefix_len = self._inputs(image, text, mask_ar, mask_input)
    mask = prefix_lm_mask(ar, valid)
    h, _ = self.llm(x, pos, (mask, self._local(mask, pos, pos, same_block(ar))))
    return self.llm.logits(h[:, prefix_len:]), {}

  def prefill(self, image, text, mask_ar, mask_input, cache_len: int):
    """Runs the (right-padded) prompt; returns (logits of each row's last real token [B,V], cache)."""
    x, ar, valid, pos, _ = self._inputs(image, text, mask_ar, mask_input)
    B, T = valid.shape
    if cache_len < T:
      raise ValueError(f"cache_len={cache_len} is shorter than image+prompt length {T}")
    pad = [(0, 0), (0, cache_len - T)]
    key_mask = jnp.pad(valid, pad)
    flat = pos.max(axis=-1) if pos.ndim == 3 else pos  # M-RoPE: decoding goes on past the largest stream
    key_pos = jnp.pad(flat, pad)
    to_cache = lambda m: jnp.pad(m, [(0, 0), (0, 0), (0, cache_len - T)])  # noqa: E731
    mask = to_cache(prefix_lm_mask(ar, valid))
    kv = self.llm.init_cache(B, cache_len)
    local = self._local(mask, flat, key_pos, to_cache(same_block(ar)))
    h, kv = self.llm(x, pos, (mask, local), kv, jnp.int32(0))
    last = jnp.max(jnp.where(valid, jnp.arange(T)[None], -1), axis=1)  # last real token per row
    h_last = jnp.take_along_axis(h, last[:, None, None], axis=1)
    logits = self.llm.logits(h_last)[:, 0]
    cache = dict(k=kv[0], v=kv[1], key_mask=key_mask, key_pos=key_pos, index=jnp.int32(T),
                 pos=jnp.max(jnp.where(valid, flat, -1), axis=1) + 1)
    return logits, cache

  def decode_step(self, tokens_B, cache: Cache):
    """Feeds one token per row at slot `cache["index"]`; returns (next-token logits [B,V], cache).

    All rows write the same slot; rows with shorter prompts keep their padding slots
    masked out, and positions continue from each row's own length.
    """
    idx, pos_B = cache["index"], cache["pos"]
    B = tokens_B.shape[0]
    key_mask = jax.lax.dynamic_update_slice(cache["key_mask"], jnp.ones((B, 1), bool), (0, idx))
    key_pos = jax.lax.dynamic_update_slice(cache["key_pos"], pos_B[:, None].astype(cache["key_pos"].dtype),
                                           (0, idx))
    mask = key_mask[:, None, :]
    q_pos = pos_B[:, None]
    x = self.llm.embed(tokens_B[:, None])
    h, kv = self.llm(x, q_pos, (mask, self._local(mask, q_pos, key_pos)), (cache["k"], cache["v"]), idx)
    logits = self.llm.logits(h)[:, 0]
    return logits, dict(k=kv[0], v=kv[1], key_mask=key_mask, key_pos=key_pos, index=idx + 1, pos=pos_B + 1)


def count_params(tree) -> int:
  """Number of scalars in a (possibly boxed / ShapeDtypeStruct) parameter tree."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nn.meta.unbox(tree))))
