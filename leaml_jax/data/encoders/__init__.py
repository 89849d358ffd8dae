"""Encoders: one (image, prompt, target) -> fixed-shape arrays, as the model takes them.

An encoder has `text_len`, `tokenizer` and
  encode_example(image, prompt, target, example_id=None) -> {"image", "text", "mask_ar",
                                                             "mask_loss", "mask_input"}
(text arrays int32 [text_len], packed by packing.layout; image float32 [H, W, 3] or [n, H, W, 3]).
Two exist: `TextEncoder` (text.py: the synthetic layout, our BPE tokenizer, images already at the
model's size) and `HFEncoder` (hf.py: a real family's layout through its transformers
processor). `encoder_for(tok, text_len, image_size)` picks one from the tokenizer a run uses.
"""
import numpy as np

from leaml_jax.data.encoders.hf import HFEncoder
from leaml_jax.data.encoders.text import TextEncoder

__all__ = ["HFEncoder", "TextEncoder", "encoder_for", "prompt_batch"]


def encoder_for(tok, text_len: int, image_size: int | None = None):
  """The encoder for a tokenizer: an `HFTokenizer` that carries its processor -> the real
  family's layout (HFEncoder; image_size: the Qwen families' image bucket, see encoders/hf.py);
  any other tokenizer -> the synthetic layout (TextEncoder). Encoders pass through unchanged."""
  if isinstance(tok, (TextEncoder, HFEncoder)):
    return tok
  if getattr(tok, "processor", None) is not None:
    return HFEncoder(tok.processor, text_len, image_size)
  return TextEncoder(tok, text_len)


def prompt_batch(records, encoder) -> dict:
  """Prompt-only batch (what generation continues) of records {"image", "prompt", "id"?,
  "forced"?}: each row's prompt tokens (no loss, no answer), right-padded to the encoder's
  text_len; causal families keep mask_ar 1 on the prompt, prefix-LM ones 0. A record's `forced`
  text is laid out as the start of its answer (causal, as in training, without the EOS):
  generation continues it."""
  rows = [encoder.encode_example(r["image"], r["prompt"], r.get("forced", ""), r.get("id"))
          for r in records]
  b = {k: np.stack([e[k] for e in rows])
       for k in ("image", "text", "mask_ar", "mask_loss", "mask_input")}
  keep = b["mask_input"] * (1 - b["mask_loss"])
  for i, r in enumerate(records):
    if r.get("forced"):  # every real token but the answer's EOS (the row's last real token)
      keep[i] = b["mask_input"][i]
      keep[i, np.nonzero(keep[i])[0][-1]] = 0
  return {"image": b["image"], "text": b["text"] * keep, "mask_ar": b["mask_ar"] * keep,
          "mask_input": keep}
