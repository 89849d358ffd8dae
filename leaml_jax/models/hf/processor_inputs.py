"""Our model on exactly the dict a transformers processor returns: how we compare with transformers.

Axis letters as in models/__init__.py; here T is the processor's sequence length, image tokens
included. The processor's rows are fed in the inline layout (image features replace the
image-token positions of the text), so the model's text length L is T and its logits cover
every position transformers' do. Pixels come as the processor made them (NCHW, its own
normalisation) and are only transposed to the channels-last layout the ViT takes.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import numpy as np

from leaml_jax.models.hf.config_json import QWEN_FAMILIES, family_of
from leaml_jax.models.vlm import VLM, image_block_mask_ar

_INPUT_KEYS = ("input_ids", "attention_mask", "pixel_values", "token_type_ids", "pixel_attention_mask", "labels",
               "image_grid_thw", "mm_token_type_ids", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts")


def _to_numpy(x, dtype=None) -> np.ndarray:
  if hasattr(x, "detach"):  # a torch tensor; numpy has no bfloat16 there
    x = x.detach().cpu()
    x = (x.float() if x.is_floating_point() else x).numpy()
  x = np.asarray(x)
  return x if dtype is None else x.astype(dtype)


def inline_inputs(model: VLM, inputs: dict):
  """Processor dict -> (cfg with the image token id set, so the inline layout;
  image [B,I,height,width,3] (Qwen: [B,I,height,width,3·frames]), ids_BT, mask_ar_BT, valid_BT),
  after checking it fits the model."""
  unknown = sorted(set(inputs) - set(_INPUT_KEYS))
  if unknown:
    raise TypeError(f"hf: unsupported processor output(s) {unknown}; this family takes {_INPUT_KEYS}")
  if "input_ids" not in inputs or ("pixel_values" not in inputs and "pixel_values_videos" not in inputs):
    raise KeyError("hf: the processor dict needs input_ids and pixel_values (or pixel_values_videos)")
  cfg = model.cfg
  family = family_of(cfg)
  ids_BT = _to_numpy(inputs["input_ids"], np.int32)
  B = ids_BT.shape[0]
  valid_BT = _to_numpy(inputs["attention_mask"], np.int32) if "attention_mask" in inputs else np.ones_like(ids_BT)
  if family in QWEN_FAMILIES:  # causal throughout, images and videos included
    cfg, image = _qwen_media(inputs, ids_BT, cfg)
    return cfg, image, ids_BT, np.ones_like(ids_BT), valid_BT
  if "pixel_values" not in inputs:
    raise KeyError(f"hf: {family} takes images (pixel_values), not videos")
  pixels = _to_numpy(inputs["pixel_values"], np.float32)
  P = cfg.num_image_tokens
  if family == "gemma3":  # images of all rows in one batch, rows may hold different numbers
    pixels = _per_row(pixels, (ids_BT == cfg.image_token_id).sum(axis=1), P)
  elif pixels.ndim == 4 and pixels.shape[0] % B == 0:  # PaliGemma: images of all rows in one batch
    pixels = pixels.reshape(B, pixels.shape[0] // B, *pixels.shape[1:])
  if pixels.ndim != 5 or pixels.shape[:1] != (B,) or pixels.shape[2] != 3:
    raise ValueError(f"hf: pixel_values {pixels.shape} should be [B,3,height,width] or "
                     f"[B,images,3,height,width] with B={B}")
  I = pixels.shape[1]
  real_BI = np.ones((B, I), bool)
  if family == "gemma3":  # causal, each image's tokens one bidirectional block (token_type_ids 1)
    tt = inputs.get("token_type_ids")  # HF: none = causal throughout
    mask_ar_BT = image_block_mask_ar(_to_numpy(tt) == 1) if tt is not None else np.ones_like(ids_BT)
    token = cfg.image_token_id
    real_BI = np.arange(I)[None] < ((ids_BT == token).sum(axis=1) // P)[:, None]
  elif family == "paligemma":
    tt = inputs.get("token_type_ids")
    mask_ar_BT = _to_numpy(tt, np.int32) if tt is not None else np.ones_like(ids_BT)  # HF: none = causal
    token = cfg.image_token_id if cfg.image_token_id is not None else _leading_token(ids_BT, valid_BT, P * I)
  else:  # Idefics3 is causal throughout; all-zero images are the processor's padding (HF drops them)
    mask_ar_BT, token = np.ones_like(ids_BT), cfg.image_token_id
    real_BI = ~(pixels == 0).all(axis=(2, 3, 4))
    pam = inputs.get("pixel_attention_mask")
    if pam is not None and not _to_numpy(pam, bool)[real_BI].all():
      raise ValueError("hf: images with padded pixels (pixel_attention_mask partly 0) are not supported; "
                       "they come from processor settings that do not resize to the vision tower's size")
  counts_B = (ids_BT == token).sum(axis=1)
  if (counts_B != real_BI.sum(axis=1) * P).any():
    raise ValueError(f"hf: rows hold {counts_B.tolist()} image tokens (id {token}) but their images need "
                     f"{(real_BI.sum(axis=1) * P).tolist()} ({P} per image)")
  image = pixels.transpose(0, 1, 3, 4, 2)
  return dataclasses.replace(cfg, image_token_id=token), image, ids_BT, mask_ar_BT, valid_BT


def _qwen_media(inputs: dict, ids_BT, cfg):
  """Qwen2-VL / Qwen2.5-VL: the processor's flat patches of images (pixel_values, image_grid_thw)
  and videos (pixel_values_videos, video_grid_thw, second_per_grid_ts) -> (cfg for this batch, media
  [B,I,height,width,3·frames]): each row's images and videos in text order, a video as its
  temporal patches, all-zero entries after. The tower takes any size, so cfg's image size follows
  the batch; one grid per batch (images and videos alike), and for Qwen2.5-VL one
  second_per_grid_ts, which sets cfg.seconds_per_patch."""
  p, m, T = cfg.vit.patch_size, cfg.connector_factor, cfg.vit.frames
  items, grids = {}, set()
  for kind, px_key, grid_key in (("image", "pixel_values", "image_grid_thw"),
                                 ("video", "pixel_values_videos", "video_grid_thw")):
    if px_key not in inputs:
      items[kind] = []
      continue
    if grid_key not in inputs:
      raise ValueError(f"hf: {family_of(cfg)} needs {grid_key} with {px_key}")
    grid_thw = _to_numpy(inputs[grid_key]).astype(int)
    grids |= {tuple(g[1:]) for g in grid_thw.tolist()}
    patches = _to_numpy(inputs[px_key], np.float32)
    if len(patches) != int(grid_thw.prod(axis=1).sum()) or patches.shape[1:] != (3 * T * p * p,):
      raise ValueError(f"hf: {px_key} {patches.shape} do not match {grid_key} {grid_thw.tolist()}")
    starts = np.cumsum(grid_thw.prod(axis=1)) - grid_thw.prod(axis=1)
    items[kind] = [patches_to_frames(patches[s:s + t * h * w], (t, h, w), p, m, T) for s, (t, h, w) in zip(starts, grid_thw)]
  if len(grids) != 1:
    raise ValueError(f"hf: {family_of(cfg)} takes images and videos of one size per batch (all grids' h, w "
                     f"equal); got grids {sorted(grids)}")
  if "second_per_grid_ts" in inputs and cfg.tokens_per_second is not None:
    seconds = {float(s) for s in np.asarray(_to_numpy(inputs["second_per_grid_ts"]), np.float32).reshape(-1)}
    if len(seconds) != 1:
      raise ValueError(f"hf: videos of one second_per_grid_ts per batch (one fps); got {sorted(seconds)}")
    cfg = dataclasses.replace(cfg, seconds_per_patch=seconds.pop())
  gh, gw = grids.pop()
  cfg = dataclasses.replace(cfg, vit=dataclasses.replace(cfg.vit, image_size=(gh * p, gw * p)))
  P = cfg.num_image_tokens
  token = {"image": cfg.image_token_id, "video": cfg.video_token_id}
  queue = {kind: iter(v) for kind, v in items.items()}
  rows = []
  for ids in ids_BT:
    row = []
    kind_T = np.where(ids == token["image"], 1, np.where(ids == token["video"], 2, 0)) if token["video"] is not None \
        else (ids == token["image"]).astype(int)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], kind_T, [0]])))
    for start, end in zip(edges[:-1], edges[1:]):
      if kind_T[start] == 0:
        continue
      kind = "image" if kind_T[start] == 1 else "video"
      media = next(queue[kind], None)
      if media is None or len(media) * P != end - start:
        raise ValueError(f"hf: a run of {end - start} {kind} tokens does not match the next {kind} "
                         f"({'none left' if media is None else f'{len(media)} x {P} tokens'})")
      row.extend(media)
    rows.append(row)
  if any(next(q, None) is not None for q in queue.values()):
    raise ValueError("hf: more images / videos than the rows' image and video tokens take")
  out = np.zeros((len(rows), max(1, max(map(len, rows))), gh * p, gw * p, 3 * T), np.float32)
  for b, row in enumerate(rows):
    out[b, :len(row)] = row
  return cfg, out


def patches_to_frames(patches, grid_thw, p, m, T) -> np.ndarray:
  """One image's or video's flat patches [t·h·w, 3·T·p·p] (per temporal patch: m x m windows in
  row-major order, each row-major inside) -> its temporal patches [t,height,width,3·T], the T frames
  stacked frame-major along channels (a still image is T equal frames)."""
  t, gh, gw = grid_thw
  x = patches.reshape(t, gh // m, gw // m, m, m, 3, T, p, p)
  x = x.transpose(0, 1, 3, 7, 2, 4, 8, 6, 5)  # t, gh/m, m, p, gw/m, m, p, T, 3
  return x.reshape(t, gh * p, gw * p, T * 3)


def _per_row(pixels, counts_B, P) -> np.ndarray:
  """[N,3,height,width] images of all rows, in order -> [B,I,3,height,width], each row's own
  images first and all-zero ones after (I = the most any row holds; a row's count is its image
  tokens / P)."""
  if pixels.ndim != 4 or (counts_B % P).any() or counts_B.sum() != P * len(pixels):
    raise ValueError(f"hf: pixel_values {pixels.shape} do not match the rows' image tokens {counts_B.tolist()} "
                     f"({P} per image)")
  n_B = counts_B // P
  out = np.zeros((len(n_B), max(int(n_B.max()), 1), *pixels.shape[1:]), pixels.dtype)
  for b, (start, n) in enumerate(zip(np.cumsum(n_B) - n_B, n_B)):
    out[b, :n] = pixels[start:start + n]
  return out


def _leading_token(ids_BT, valid_BT, count) -> int:
  """PaliGemma layout: each row's first `count` real tokens are one image token id."""
  first = [row[v.astype(bool)][:count] for row, v in zip(ids_BT, valid_BT)]
  found = {int(t) for f in first for t in f}
  if len(found) != 1 or any(len(f) != count for f in first):
    raise ValueError(f"hf: expected every row to start with {count} copies of the image token "
                     f"(PaliGemma layout); found ids {sorted(found)[:5]}")
  return found.pop()


@functools.lru_cache(maxsize=8)
def _forward(cfg):
  model = VLM(cfg)
  return jax.jit(lambda p, *a: model.apply({"params": p}, *a)[0])


def logits_from_hf_inputs(model: VLM, params, **inputs) -> np.ndarray:
  """float32 logits [B,T,V] for exactly the dict a transformers processor returns.

  PaliGemma: input_ids, attention_mask, pixel_values [B,3,height,width], token_type_ids
  (prefix 0, suffix 1; without them HF is causal throughout, and so is this). SmolVLM/Idefics3:
  pixel_values [B,I,3,height,width] (all-zero images are padding), pixel_attention_mask.
  Gemma 3: pixel_values [N,3,height,width] for the images of all rows in order, token_type_ids
  (1 on image tokens: each image's tokens attend to each other; without them causal throughout).
  Qwen2-VL / Qwen2.5-VL: pixel_values [patches, 3·2·14·14] + image_grid_thw and/or
  pixel_values_videos + video_grid_thw (+ second_per_grid_ts, Qwen2.5-VL), every image and video
  of one grid size per batch (and one second_per_grid_ts).
  Positions with attention_mask 0 hold meaningless values (as in transformers).
  """
  cfg, image, ids_BT, mask_ar_BT, valid_BT = inline_inputs(model, inputs)
  logits_BTV = _forward(cfg)(nn.meta.unbox(params), image, ids_BT, mask_ar_BT, valid_BT)
  return np.asarray(jax.device_get(logits_BTV), np.float32)
