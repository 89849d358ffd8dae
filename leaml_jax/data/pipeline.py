"""From examples to fixed-shape numpy batches with grain.

records (plain dicts {"image", "prompt", "target", "id", ...}, one per
training sequence) -> grain MapDataset over row ids -> per-host shard ->
seeded shuffle (reshuffled every epoch) -> repeat -> encode -> batch.

An *encoder* turns one (image, prompt, target) into fixed-shape arrays: `TextEncoder`
(synthetic: our BPE tokenizer, images already at the model size) or, for real families,
data/hf_encode.HFEncoder (the checkpoint's transformers processor). `encoder_for(tok)` picks
it from the tokenizer the run uses. A batch is a flat dict (B = batch, L = text_len):
  image      float32 [B, H, W, 3] in [-1, 1]  ([B, n, H, W, 3]: n images / frames / tiles)
  text       int32 [B, L]  [bos] prompt "\\n" target [eos] [pad ...]
  mask_ar    int32 [B, L]  0 on the prefix (full attention), 1 on the suffix and pad
  mask_loss  int32 [B, L]  1 on target tokens and eos
  mask_input int32 [B, L]  1 on real tokens, 0 on padding
  index      int32 [B]     row id into the records the batch came from
  (source    int32 [B]     which dataset of a mixture, only from `mix`)

Truncation rule (sequences longer than L): the target and its eos are kept
and the prompt is cut from its end (bos and the "\\n" separator stay); if even
the target does not fit, the target is cut and eos is still written as the
last token. Both cases are counted in `TRUNCATIONS` and logged (warning) the
first time they happen, never silent.

Iterators come from `iter(dataset)`; `it.get_state()` is a small JSON-able
dict and `it.set_state(state)` resumes at the same batch (checkpoint it with
the weights).
"""
import collections
import logging

import grain
import jax
import numpy as np

from leaml_jax.data import prompts
from leaml_jax.data.errors import DataError

TRUNCATIONS = collections.Counter()  # {"prompt": n, "target": n}


def _warn_truncation(kind: str, example_id, detail: str):
  if TRUNCATIONS[kind] == 0:
    logging.warning("truncating %s of example %r (%s); further %s truncations are "
                    "only counted in pipeline.TRUNCATIONS", kind, example_id, detail, kind)
  TRUNCATIONS[kind] += 1


def layout(pre, sep, suf, text_len: int, *, eos_id: int, pad_id: int, example_id=None,
           causal: bool = False) -> dict:
  """Token ids and masks (int32 [L] each) from prefix / separator / suffix ids (suffix ends with
  eos), cut by the truncation rule above. causal: mask_ar 1 everywhere (no bidirectional prefix)."""
  pre, sep, suf = list(pre), list(sep), list(suf)
  if len(suf) > text_len - len(sep) - 1:
    keep = max(text_len - len(sep) - 2, 0)
    _warn_truncation("target", example_id, f"{len(suf)} target tokens, keeping {keep} + eos")
    suf = suf[:keep] + [eos_id]
  room = text_len - len(suf) - len(sep)
  if len(pre) > room:
    _warn_truncation("prompt", example_id, f"{len(pre)} prompt tokens, room for {room}")
    pre = pre[:max(room, 1)]
  prefix = pre + sep
  n_pad = text_len - len(prefix) - len(suf)
  text = np.asarray(prefix + suf + [pad_id] * n_pad, np.int32)
  mask_ar = np.asarray([int(causal)] * len(prefix) + [1] * (len(suf) + n_pad), np.int32)
  mask_loss = np.asarray([0] * len(prefix) + [1] * len(suf) + [0] * n_pad, np.int32)
  mask_input = np.asarray([1] * (len(prefix) + len(suf)) + [0] * n_pad, np.int32)
  return {"text": text, "mask_ar": mask_ar, "mask_loss": mask_loss, "mask_input": mask_input}


def encode_text(prompt: str, target: str, tok, text_len: int, example_id=None):
  """Token ids and masks (int32 [L] each) for one prefix-LM sequence (synthetic layout)."""
  return layout([tok.bos_id] + tok.encode(prompt), tok.encode("\n"), tok.encode(target) + [tok.eos_id],
                text_len, eos_id=tok.eos_id, pad_id=tok.pad_id, example_id=example_id)


def encode_image(image_uint8, example_id=None) -> np.ndarray:
  """uint8 [H, W, 3] (or [N, H, W, 3]: N frames, N image-token blocks) -> float32 in [-1, 1]."""
  image = np.asarray(image_uint8)
  if image.dtype != np.uint8 or image.ndim not in (3, 4) or image.shape[-1] != 3:
    raise DataError(example_id, f"image must be uint8 [H, W, 3] or frames [N, H, W, 3], got "
                    f"{image.dtype} {image.shape}")
  return image.astype(np.float32) / 127.5 - 1.0


class TextEncoder:
  """The synthetic layout: any `Tokenizer`, images already at the model's size, scaled to [-1, 1]."""

  def __init__(self, tok, text_len: int):
    self.tokenizer, self.text_len = tok, text_len

  def example(self, image_uint8, prompt: str, target: str, example_id=None) -> dict:
    out = encode_text(prompt, target, self.tokenizer, self.text_len, example_id)
    out["image"] = encode_image(image_uint8, example_id)
    return out


def encoder_for(tok, text_len: int):
  """The encoder for a tokenizer: an `HFTokenizer` that carries its processor -> the real family's
  layout (data/hf_encode.py); any other tokenizer -> the synthetic layout. Encoders pass through."""
  if hasattr(tok, "example"):
    return tok
  if getattr(tok, "processor", None) is not None:
    from leaml_jax.data import hf_encode  # pylint: disable=import-outside-toplevel
    return hf_encode.HFEncoder(tok.processor, text_len)
  return TextEncoder(tok, text_len)


def encode_example(image_uint8, prompt: str, target: str, tok, text_len: int,
                   example_id=None) -> dict:
  return encoder_for(tok, text_len).example(image_uint8, prompt, target, example_id)


def prompt_batch(records, tok, text_len: int) -> dict:
  """Prompt-only batch (what generation continues) of records {"image", "prompt", "id"?,
  "forced"?}: each row's prompt tokens (no loss, no answer), right-padded to text_len; causal
  families keep mask_ar 1 on the prompt, prefix-LM ones 0. A record's `forced` text is laid out
  as the start of its answer (causal, as in training, without the EOS): generation continues it."""
  enc = encoder_for(tok, text_len)
  rows = [enc.example(r["image"], r["prompt"], r.get("forced", ""), r.get("id")) for r in records]
  b = {k: np.stack([e[k] for e in rows]) for k in ("image", "text", "mask_ar", "mask_loss", "mask_input")}
  keep = b["mask_input"] * (1 - b["mask_loss"])
  for i, r in enumerate(records):
    if r.get("forced"):  # every real token but the answer's EOS (the row's last real token)
      keep[i] = b["mask_input"][i]
      keep[i, np.nonzero(keep[i])[0][-1]] = 0
  return {"image": b["image"], "text": b["text"] * keep, "mask_ar": b["mask_ar"] * keep, "mask_input": keep}


# --- records: one row per training sequence --------------------------------------

def _check_qa(ex, q):
  if not str(q.get("question", "")).strip():
    raise DataError(ex["id"], "empty question")
  if not str(q.get("answer", "")).strip():
    raise DataError(ex["id"], f"empty answer to {q['question']!r}")


def vqa_records(examples, mc_target: str = "letter") -> list[dict]:
  """One record per QA. Multiple-choice targets are the option letter
  (`mc_target="letter"`, as SPORTU) or the option text ("text")."""
  if mc_target not in ("letter", "text"):
    raise ValueError(f"mc_target must be 'letter' or 'text', got {mc_target!r}")
  out = []
  for ex in examples:
    for k, q in enumerate(ex["qa"]):
      _check_qa(ex, q)
      target = q["answer"]
      if q.get("options") and mc_target == "text":
        target = q["options"][q["answer"]]
      out.append({"image": ex["image"], "prompt": prompts.vqa_prompt(q["question"], q.get("options")),
                  "target": target, "id": f"{ex['id']}#{k}", "image_id": ex["id"], **q})
  return out


def qa_gen_records(examples, mc_as_text: bool = True) -> list[dict]:
  """One record per QA: image -> 'question answer: ...'.

  With `mc_as_text` a multiple-choice QA is written as its question and the answer's option
  *text*: options are format, not knowledge, and the pseudo-QA stage draws them again from
  the domain's option set. Without it the options and letter are part of the target."""
  out = []
  for ex in examples:
    for k, q in enumerate(ex["qa"]):
      _check_qa(ex, q)
      if q.get("options") and mc_as_text:
        target = prompts.qa_gen_target(q["question"], q["options"][q["answer"]])
      else:
        target = prompts.qa_gen_target(q["question"], q["answer"], q.get("options"))
      out.append({"image": ex["image"], "prompt": prompts.qa_gen_prompt(), "target": target,
                  "id": f"{ex['id']}#{k}", "image_id": ex["id"]})
  return out


def caption_records(examples, key: str = "caption") -> list[dict]:
  """One record per image: image -> its (teacher) caption."""
  out = []
  for ex in examples:
    if not str(ex.get(key, "")).strip():
      raise DataError(ex["id"], f"empty {key}")
    out.append({"image": ex["image"], "prompt": prompts.caption_prompt(), "target": ex[key],
                "id": ex["id"], "image_id": ex["id"]})
  return out


# --- grain datasets -------------------------------------------------------------

class _Encode(grain.transforms.Map):
  def __init__(self, records, encoder):
    self.records, self.encoder = records, encoder

  def map(self, row):
    r = self.records[row]
    out = self.encoder.example(r["image"], r["prompt"], r["target"], r.get("id", row))
    out["index"] = np.int32(row)
    return out


def batch(ds: grain.MapDataset, batch_size: int, *, drop_remainder: bool = True,
          prefetch: int = 2) -> grain.IterDataset:
  """Batches an unbatched MapDataset into an IterDataset reading `prefetch`
  batches ahead. Use this rather than `ds.batch(...)` + iter(): grain's
  default read-ahead (16 threads, 500 elements) would hold hundreds of
  float32 image batches and fight the train step for a small CPU.
  prefetch=0 reads synchronously."""
  return ds.batch(batch_size, drop_remainder=drop_remainder).to_iter_dataset(
      grain.ReadOptions(num_threads=1 if prefetch else 0, prefetch_buffer_size=prefetch))


def make_dataset(records, tok, *, batch_size: int | None, text_len: int, seed: int,
                 shuffle: bool = True, num_epochs: int | None = None,
                 shard_index: int | None = None, shard_count: int | None = None,
                 drop_remainder: bool = True, prefetch: int = 2):
  """Encoded examples of `records`: batched, an IterDataset reading `prefetch`
  batches ahead; with batch_size=None, an unbatched MapDataset (to `mix`).
  tok: a Tokenizer or an encoder (`encoder_for`): the synthetic layout, or the real
  family's processor (HFTokenizer with its processor, data/hf_encode.HFEncoder).

  Rows are split across hosts first (host i takes rows i, i+n, ...), then
  shuffled with `seed` (a new order each epoch). num_epochs=None repeats
  forever."""
  shard_index = jax.process_index() if shard_index is None else shard_index
  shard_count = jax.process_count() if shard_count is None else shard_count
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
  if len(records) < shard_count:
    raise ValueError(f"{len(records)} records cannot feed {shard_count} shards")
  ds = grain.MapDataset.range(len(records))[shard_index::shard_count]
  if shuffle:
    ds = ds.shuffle(seed=seed)
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)
  ds = ds.map(_Encode(records, encoder_for(tok, text_len)))
  if batch_size is None:
    return ds
  return batch(ds, batch_size, drop_remainder=drop_remainder, prefetch=prefetch)


def mix(datasets, weights, *, batch_size: int | None = None,
        drop_remainder: bool = True, prefetch: int = 2):
  """Weighted mixture of unbatched datasets (e.g. labelled + pseudo QA);
  each element gains `source` (its dataset's position in `datasets`). The
  interleaving is deterministic and follows the weights exactly; shuffle the
  inputs (make_dataset does) to randomise what each slot draws. Batched:
  an IterDataset like make_dataset's; unbatched: a MapDataset."""
  if len(datasets) != len(weights) or not datasets:
    raise ValueError(f"need one weight per dataset, got {len(datasets)} and {len(weights)}")
  if any(w <= 0 for w in weights):
    raise ValueError(f"mixture weights must be > 0, got {list(weights)}")
  tagged = [ds.map(_Tag(k)) for k, ds in enumerate(datasets)]
  ds = grain.MapDataset.mix(tagged, weights=[float(w) for w in weights])
  if batch_size is None:
    return ds
  return batch(ds, batch_size, drop_remainder=drop_remainder, prefetch=prefetch)


class _Tag(grain.transforms.Map):
  def __init__(self, source: int):
    self.source = source

  def map(self, element):
    return {**element, "source": np.int32(self.source)}
