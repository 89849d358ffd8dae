"""Real families: examples -> fixed-shape arrays through the checkpoint's own transformers processor.

`HFEncoder(processor, text_len, image_size=None)` has the same interface as `text.TextEncoder` (the synthetic
layout): `encode_example(image, prompt, target, example_id)` -> {image, text, mask_ar, mask_loss,
mask_input}. Tokenisation, image resizing and normalisation, image-token expansion and special
tokens are all the processor's; this module only lays its output out as the model takes it:

  PaliGemma  processor("<image>"*n + prompt, suffix=target): [img]*N*n <bos> prompt \\n | target <eos>
             -> text = <bos> prompt \\n target <eos> [pad...] (image tokens are the model's prefix),
             mask_ar = token_type_ids (0 prefix, 1 answer), mask_loss = labels != -100,
             image [H,W,3] (one image) or [n,H,W,3] (n frames, n image-token blocks in order).
  Idefics3   (SmolVLM) the processor expands each <image> into its tile tokens inline; causal
             throughout (mask_ar = 1), loss on the answer tokens only; image [n_max,H,W,3]: the
             processor's tiles padded with all-zero tiles to the most it can produce (fixed shape).
  Gemma 3    the processor expands each <start_of_image> into \n\n<start_of_image> + its soft tokens
             + <end_of_image>\n\n inline; causal with each image's soft tokens one bidirectional block
             (mask_ar = models.vlm.image_block_mask_ar), loss on the answer tokens only; image
             [H,W,3] (one image) or [n,H,W,3]. Pan-and-scan crops (a varying image count) are refused.
  Qwen2-VL / Qwen2.5-VL  the chat template's user turn holds one image (one frame) or one video (a
             clip of n frames) and the prompt; its <|image_pad|> / <|video_pad|> is expanded to the
             t·h·w / merge² tokens the image processor's grid_thw gives, as Qwen2VLProcessor does;
             causal throughout, loss on the answer tokens + <|im_end|>. Every frame is first
             resized (PIL bicubic, the image processor's own resample) to ONE bucket, the size the
             image processor's rule (smart_resize: multiples of patch·merge, min/max pixels) gives an
             image_size x image_size image, so one jit shape serves every batch whatever the input
             sizes; for inputs already image_size square this is exactly the (PIL) processor's resize.
             image [H,W,3·T] (a still: T equal frames, as the processor repeats it) or, for a clip,
             [t,H,W,3·T]: the frames normalised by the image processor, T = temporal_patch_size per
             temporal patch (frame-major channels), the last frame repeated up to a multiple of T
             (as Qwen2VLVideoProcessor pads). M-RoPE positions the model derives from these tokens
             and the bucket's grid (models/vlm.py `mrope_positions`); a clip's time step is
             VLMConfig.seconds_per_patch (1.0: 2 fps).

With a chat template (Idefics3, Gemma 3) the prompt is the template's user turn and the answer
ends with the token that closes the assistant turn (Gemma 3: <end_of_turn>, not <eos>): it is
this encoder's tokenizer's eos_id, so training writes it and generation stops at it.

Position ids follow transformers (the model counts real tokens from `position_offset`).
Overlong sequences (packing.layout's rule): the answer is kept and the prompt cut from its end
(PaliGemma; bos and the "\\n" separator stay); an Idefics3 prompt, whose image tokens cannot be
cut, is refused with the text_len it needs.
"""
from __future__ import annotations

import math

import numpy as np

from leaml_jax.data import frames, packing, prompts
from leaml_jax.errors import DataError
from leaml_jax.data.tokenizer import HFTokenizer
from leaml_jax.models.hf.processor_inputs import patches_to_frames
from leaml_jax.models.vlm import image_block_mask_ar

# QwenVLParts (models/hf/directory.py): a Qwen processor's parts where transformers cannot build it.
PROCESSOR_FAMILIES = {"PaliGemmaProcessor": "paligemma", "Idefics3Processor": "idefics3",
                      "Gemma3Processor": "gemma3", "Qwen2VLProcessor": "qwen2_vl",
                      "Qwen2_5_VLProcessor": "qwen2_vl", "QwenVLParts": "qwen2_vl"}


def family_of(processor) -> str:
  """The family whose data layout a transformers processor gets (PROCESSOR_FAMILIES)."""
  name = type(processor).__name__
  if name not in PROCESSOR_FAMILIES:
    raise ValueError(f"{name}: no data layout for this processor; supported: "
                     f"{sorted(PROCESSOR_FAMILIES)}")
  return PROCESSOR_FAMILIES[name]


def turn_end(chat, hf_tok) -> str | None:
  """The token a chat template closes an assistant turn with (Gemma 3 <end_of_turn>, SmolVLM
  <end_of_utterance>), read off the template's rendering of a one-word answer; None if it adds none."""
  user = {"role": "user", "content": [{"type": "text", "text": "question"}]}
  asked = chat([user], add_generation_prompt=True, tokenize=False)
  full = chat([user, {"role": "assistant", "content": [{"type": "text", "text": "answer"}]}], tokenize=False)
  after = full[len(asked):].partition("answer")[2] if full.startswith(asked) else ""
  ids = hf_tok(after, add_special_tokens=False)["input_ids"]
  return hf_tok.convert_ids_to_tokens(ids[0]) if ids else None


def frame_list(image) -> list[np.ndarray]:
  """A record's image: uint8 [H,W,3] (one image) or [n,H,W,3] / a list (n frames)."""
  if isinstance(image, (list, tuple)):
    return [np.asarray(f) for f in image]
  image = np.asarray(image)
  return list(image) if image.ndim == 4 else [image]


class HFEncoder:
  """The checkpoint's processor behind the encoder interface (see module docstring)."""

  def __init__(self, processor, text_len: int, image_size: int | None = None):
    """image_size: the square whose processed size is the Qwen families' image bucket (the run's
    config.data.image_size); the other families' processors fix the size themselves."""
    self.processor, self.text_len = processor, text_len
    self.family = family_of(processor)
    self.tokenizer = HFTokenizer(processor.tokenizer, processor=processor)
    hf_tok = processor.tokenizer
    if self.family == "qwen2_vl":
      self.image_token_id = processor.image_token_id
      self.bucket = qwen_bucket(processor.image_processor, image_size)
    else:
      self.image_token_id = processor.image_token_ids[0]  # the id image features replace
    self.sep = hf_tok("\n", add_special_tokens=False)["input_ids"]
    self.chat = processor.apply_chat_template if getattr(processor, "chat_template", None) else None
    self.answer_end = hf_tok.eos_token
    if self.chat is not None:
      self.answer_end = turn_end(self.chat, hf_tok) or hf_tok.eos_token
      self.tokenizer.eos_id = hf_tok.convert_tokens_to_ids(self.answer_end)
    if self.family == "gemma3" and getattr(processor.image_processor, "do_pan_and_scan", False):
      raise ValueError("Gemma3Processor with do_pan_and_scan makes a varying number of crops per image, which "
                       "fixed-shape batches cannot hold; set image_processor.do_pan_and_scan = False")
    if self.family == "idefics3":
      ip = processor.image_processor
      tiles = 1
      if ip.do_image_splitting:
        tiles += math.ceil(ip.size["longest_edge"] / ip.max_image_size["longest_edge"]) ** 2
      self.tiles_per_image = tiles

  # -- the processor -----------------------------------------------------------
  def _process(self, image, prompt: str, target: str | None):
    images = frame_list(image)
    for f in images:
      if f.dtype != np.uint8 or f.ndim != 3 or f.shape[-1] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3] (or frames [n, H, W, 3]), got {f.dtype} {f.shape}")
    if self.family == "qwen2_vl":
      return self._qwen(images, prompt, target)
    text, suffix = prompts.hf_prompt(self.family, prompt, target, n_images=len(images),
                                     image_token=self.processor.image_token, eos_token=self.answer_end,
                                     chat=self.chat)
    kw = dict(images=[images], text=[text], return_tensors="np")
    bos = self.processor.tokenizer.bos_token
    if bos and text.startswith(bos):  # the chat template wrote <bos> (Gemma 3): no second one
      kw["add_special_tokens"] = False
    if self.family == "paligemma":
      out = self.processor(**kw, suffix=None if suffix is None else [suffix])
      return len(images), out
    out = self.processor(**kw)
    if suffix is not None:
      extra = self.processor.tokenizer(suffix, add_special_tokens=False)["input_ids"]
      out["suffix_ids"] = np.asarray(extra, np.int64)
    return len(images), out

  def encode_example(self, image, prompt: str, target: str, example_id=None) -> dict:
    """Arrays for one sequence: image, text [L], mask_ar, mask_loss, mask_input (int32)."""
    try:
      n, out = self._process(image, prompt, target)
    except DataError:
      raise
    except Exception as e:  # noqa: BLE001 - an unreadable image or text belongs to its example
      raise DataError(example_id, f"the processor refused it ({type(e).__name__}: {str(e)[:200]})") from e
    ids = out["input_ids"][0].astype(np.int64)
    tok = self.tokenizer
    if self.family == "paligemma":
      is_img = ids == self.image_token_id
      prefix = ids[(out["token_type_ids"][0] == 0) & ~is_img].tolist()
      suffix = ids[out["token_type_ids"][0] == 1].tolist()
      sep = self.sep if prefix[-len(self.sep):] == self.sep else []
      enc = packing.layout(prefix[:len(prefix) - len(sep)], sep, suffix, self.text_len,
                            eos_id=tok.eos_id, pad_id=tok.pad_id, example_id=example_id)
      pixels = out["pixel_values"].transpose(0, 2, 3, 1)
      enc["image"] = pixels[0] if n == 1 else pixels
      return enc
    prefix, suffix = ids.tolist(), out["suffix_ids"].tolist()
    if len(prefix) + 1 > self.text_len:
      raise DataError(example_id, f"its prompt with image tokens is {len(prefix)} tokens, longer than "
                                  f"text_len={self.text_len}; raise config.data.text_len to at least "
                                  f"{len(prefix) + len(suffix)}")
    if len(prefix) + len(suffix) > self.text_len:  # cut the answer, never the prompt's image tokens
      keep = self.text_len - len(prefix) - 1
      packing.warn_truncation("target", example_id, f"{len(suffix)} target tokens, keeping {keep} + eos")
      suffix = suffix[:keep] + [tok.eos_id]
    enc = packing.layout(prefix, [], suffix, self.text_len, eos_id=tok.eos_id, pad_id=tok.pad_id,
                          example_id=example_id, causal=True)
    if self.family == "qwen2_vl":
      enc["image"] = out["media"]
      return enc
    if self.family == "gemma3":
      enc["mask_ar"] = image_block_mask_ar(enc["text"] == self.image_token_id)
      pixels = out["pixel_values"].transpose(0, 2, 3, 1)
      if len(pixels) != n:
        raise DataError(example_id, f"the processor made {len(pixels)} images of {n} (pan-and-scan crops?)")
      enc["image"] = pixels[0] if n == 1 else pixels
      return enc
    tiles = out["pixel_values"][0].transpose(0, 2, 3, 1)
    most = n * self.tiles_per_image
    if len(tiles) > most:
      raise DataError(example_id, f"the processor made {len(tiles)} image tiles, more than the {most} expected")
    enc["image"] = np.concatenate([tiles, np.zeros((most - len(tiles), *tiles.shape[1:]), tiles.dtype)])
    return enc

  def _qwen(self, images, prompt: str, target: str | None):
    """Qwen2-VL / Qwen2.5-VL: one image, or a clip as one video (see the module docstring)."""
    p = self.processor
    ip = p.image_processor
    resized = [frames.resize(f, self.bucket) for f in images]
    out = ip(images=resized, return_tensors="np")
    grids = np.asarray(out["image_grid_thw"])
    if (grids[:, 1:] * ip.patch_size != self.bucket).any():
      raise ValueError(f"the image processor resized the {self.bucket} bucket to grids {grids.tolist()}")
    _, gh, gw = grids[0]
    T, per_frame = ip.temporal_patch_size, gh * gw
    pixels = np.asarray(out["pixel_values"], np.float32)
    media = [patches_to_frames(pixels[i * per_frame:(i + 1) * per_frame], (1, gh, gw), ip.patch_size, ip.merge_size,
                               T)[0] for i in range(len(resized))]  # [H, W, 3·T] each: T equal copies
    if len(resized) == 1:
      kind, pad, t, media = "image", p.image_token, 1, media[0]
    else:
      clip = [m[..., :3] for m in media]
      clip += clip[-1:] * (-len(clip) % T)
      t = len(clip) // T
      kind, pad = "video", p.video_token
      media = np.stack([np.concatenate(clip[k * T:(k + 1) * T], axis=-1) for k in range(t)])
    text, suffix = prompts.hf_prompt(self.family, prompt, target, n_images=1, media=kind,
                                     image_token=f"<|vision_start|>{pad}<|vision_end|>",
                                     eos_token=self.answer_end, chat=self.chat)
    if text.count(pad) != 1:
      raise ValueError(f"the Qwen prompt should hold one {pad}, holds {text.count(pad)}: {text[:200]!r}")
    text = text.replace(pad, pad * (t * per_frame // ip.merge_size ** 2))
    tok = p.tokenizer
    out = {"input_ids": np.asarray([tok(text)["input_ids"]], np.int64), "media": media}
    if suffix is not None:
      out["suffix_ids"] = np.asarray(tok(suffix, add_special_tokens=False)["input_ids"], np.int64)
    return len(images), out


def qwen_bucket(image_processor, image_size: int | None) -> np.ndarray:
  """(height, width) every Qwen image and frame is resized to: what the image processor's own size
  rule makes of an image_size x image_size image."""
  if not image_size:
    raise ValueError("Qwen2-VL / Qwen2.5-VL batches need one image size: pass image_size (the run's "
                     "config.data.image_size), whose processed size is the bucket every image is resized to")
  out = image_processor(images=[np.zeros((image_size, image_size, 3), np.uint8)], return_tensors="np")
  return np.asarray(out["image_grid_thw"])[0, 1:] * image_processor.patch_size

