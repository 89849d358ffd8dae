"""Packing one prefix-LM sequence into fixed-length token ids and masks (L = text_len).

  text       [bos] prompt "\\n" target [eos] [pad ...]
  mask_ar    0 on the prefix (full attention), 1 on the suffix and pad (all 1: causal)
  mask_loss  1 on target tokens and eos
  mask_input 1 on real tokens, 0 on padding

Truncation rule (sequences longer than L): the target and its eos are kept and the prompt is
cut from its end (bos and the "\\n" separator stay); if even the target does not fit, the
target is cut and eos is still written as the last token. Both cases are counted in
`TRUNCATIONS` and logged (warning) the first time they happen, never silent.
"""
import collections
import logging

import numpy as np

TRUNCATIONS = collections.Counter()  # {"prompt": n, "target": n}


def warn_truncation(kind: str, example_id, detail: str):
  """Counts a truncation of `kind` ("prompt" | "target"); logs the first one of each kind."""
  if TRUNCATIONS[kind] == 0:
    logging.warning("truncating %s of example %r (%s); further %s truncations are "
                    "only counted in packing.TRUNCATIONS", kind, example_id, detail, kind)
  TRUNCATIONS[kind] += 1


def layout(pre, sep, suf, text_len: int, *, eos_id: int, pad_id: int, example_id=None,
           causal: bool = False) -> dict:
  """Token ids and masks (int32 [L] each) from prefix / separator / suffix ids (suffix ends with
  eos), cut by the truncation rule above. causal: mask_ar 1 everywhere (no bidirectional prefix)."""
  pre, sep, suf = list(pre), list(sep), list(suf)
  if len(suf) > text_len - len(sep) - 1:
    keep = max(text_len - len(sep) - 2, 0)
    warn_truncation("target", example_id, f"{len(suf)} target tokens, keeping {keep} + eos")
    suf = suf[:keep] + [eos_id]
  room = text_len - len(suf) - len(sep)
  if len(pre) > room:
    warn_truncation("prompt", example_id, f"{len(pre)} prompt tokens, room for {room}")
    pre = pre[:max(room, 1)]
  prefix = pre + sep
  n_pad = text_len - len(prefix) - len(suf)
  text = np.asarray(prefix + suf + [pad_id] * n_pad, np.int32)
  mask_ar = np.asarray([int(causal)] * len(prefix) + [1] * (len(suf) + n_pad), np.int32)
  mask_loss = np.asarray([0] * len(prefix) + [1] * len(suf) + [0] * n_pad, np.int32)
  mask_input = np.asarray([1] * (len(prefix) + len(suf)) + [0] * n_pad, np.int32)
  return {"text": text, "mask_ar": mask_ar, "mask_loss": mask_loss, "mask_input": mask_input}
