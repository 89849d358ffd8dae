"""The synthetic layout: our BPE tokenizer (any `Tokenizer`), images already at the model's size.

  prefix = [bos] + tokens(prompt) + tokens("\\n")   mask_ar 0 (full attention), no loss
  suffix = tokens(target) + [eos]                   mask_ar 1 (causal), loss on
packed and truncated by packing.layout.
"""
import numpy as np

from leaml_jax.data import packing
from leaml_jax.errors import DataError


def encode_text(prompt: str, target: str, tok, text_len: int, example_id=None):
  """Token ids and masks (int32 [L] each) for one prefix-LM sequence."""
  return packing.layout([tok.bos_id] + tok.encode(prompt), tok.encode("\n"),
                        tok.encode(target) + [tok.eos_id], text_len, eos_id=tok.eos_id,
                        pad_id=tok.pad_id, example_id=example_id)


def encode_image(image_uint8, example_id=None) -> np.ndarray:
  """uint8 [H, W, 3] (or [N, H, W, 3]: N frames, N image-token blocks) -> float32 in [-1, 1]."""
  image = np.asarray(image_uint8)
  if image.dtype != np.uint8 or image.ndim not in (3, 4) or image.shape[-1] != 3:
    raise DataError(example_id, f"image must be uint8 [H, W, 3] or frames [N, H, W, 3], got "
                    f"{image.dtype} {image.shape}")
  return image.astype(np.float32) / 127.5 - 1.0


class TextEncoder:
  """Any `Tokenizer` and images already at the model's size, scaled to [-1, 1]."""

  def __init__(self, tok, text_len: int):
    self.tokenizer, self.text_len = tok, text_len

  def encode_example(self, image_uint8, prompt: str, target: str, example_id=None) -> dict:
    out = encode_text(prompt, target, self.tokenizer, self.text_len, example_id)
    out["image"] = encode_image(image_uint8, example_id)
    return out
