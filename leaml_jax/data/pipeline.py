"""Grain datasets of encoded records: fixed-shape numpy batches for training and evaluation.

records (plain dicts {"image", "prompt", "target", "id", ...}, one per training sequence;
records.py) -> grain MapDataset over row ids -> seeded shuffle (reshuffled every epoch) ->
repeat -> encode (an encoder from encoders/, given) -> batch.

Several processes: `batch_size` is the global batch, and every process sees the same global
order; process i reads and encodes only rows [i*b, (i+1)*b) of each global batch (b =
batch_size / process count), so the global batch that `sharding.shard_batch` assembles from the
processes' parts is the same whatever the number of processes.

A batch is a flat dict (B = batch, L = the encoder's text_len):
  image      float32 [B, H, W, 3] in [-1, 1]  ([B, n, H, W, 3]: n images / frames / tiles)
  text       int32 [B, L]  [bos] prompt "\\n" target [eos] [pad ...]  (packing.py)
  mask_ar    int32 [B, L]  0 on the prefix (full attention), 1 on the suffix and pad
  mask_loss  int32 [B, L]  1 on target tokens and eos
  mask_input int32 [B, L]  1 on real tokens, 0 on padding
  index      int32 [B]     row id into the records the batch came from
  (source    int32 [B]     which dataset of a mixture, only from `mix`)

Iterators come from `iter(dataset)`; `it.get_state()` is a small JSON-able
dict and `it.set_state(state)` resumes at the same batch (checkpoint it with
the weights).
"""
import grain
import jax
import numpy as np

from leaml_jax import processes


class _Encode(grain.transforms.Map):
  def __init__(self, records, encoder):
    self.records, self.encoder = records, encoder

  def map(self, row):
    r = self.records[row]
    out = self.encoder.encode_example(r["image"], r["prompt"], r["target"], r.get("id", row))
    out["index"] = np.int32(row)
    return out


def batch(ds: grain.MapDataset, batch_size: int, *, drop_remainder: bool = True,
          prefetch: int = 2, shard_index: int | None = None,
          shard_count: int | None = None) -> grain.IterDataset:
  """Batches an unbatched MapDataset into an IterDataset reading `prefetch`
  batches ahead; batch_size is the global batch, of which this process
  (shard_index of shard_count; default: jax's process) gets its slice. Use
  this rather than `ds.batch(...)` + iter(): grain's default read-ahead (16
  threads, 500 elements) would hold hundreds of float32 image batches and
  fight the train step for a small CPU. prefetch=0 reads synchronously."""
  shard_index = jax.process_index() if shard_index is None else shard_index
  shard_count = jax.process_count() if shard_count is None else shard_count
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
  local = processes.local_batch_size(batch_size, shard_count)
  if shard_count > 1:
    if not drop_remainder and len(ds) % batch_size:
      raise ValueError(f"{len(ds)} rows do not fill global batches of {batch_size}: with "
                       f"{shard_count} processes every batch must be full (drop_remainder=True)")
    ds = grain.MapDataset.range(len(ds) // batch_size * local).map(
        _ProcessRows(ds, batch_size, local, shard_index))
  return ds.batch(local, drop_remainder=drop_remainder).to_iter_dataset(
      grain.ReadOptions(num_threads=1 if prefetch else 0, prefetch_buffer_size=prefetch))


class _ProcessRows(grain.transforms.Map):
  """Local row j of process i -> row (j // b) * B + i * b + j % b of the global order."""

  def __init__(self, ds, global_batch: int, local_batch: int, index: int):
    self.ds, self.global_batch, self.local_batch, self.index = ds, global_batch, local_batch, index

  def map(self, j):
    step, offset = divmod(int(j), self.local_batch)
    return self.ds[step * self.global_batch + self.index * self.local_batch + offset]


def make_dataset(records, encoder, *, batch_size: int | None, seed: int,
                 shuffle: bool = True, num_epochs: int | None = None,
                 shard_index: int | None = None, shard_count: int | None = None,
                 drop_remainder: bool = True, prefetch: int = 2):
  """Encoded examples of `records`: batched, an IterDataset reading `prefetch`
  batches ahead; with batch_size=None, an unbatched MapDataset (to `mix`).
  encoder: what lays each record out (`encoders.encoder_for(tok, text_len)`).

  Rows are shuffled with `seed` (a new order each epoch; the same on every
  process), then batched: process shard_index of shard_count reads its part of
  each global batch of `batch_size` (see `batch`). num_epochs=None repeats
  forever."""
  if not hasattr(encoder, "encode_example"):
    raise TypeError(f"make_dataset takes an encoder (encoders.encoder_for(tok, text_len)), "
                    f"got {type(encoder).__name__}")
  ds = grain.MapDataset.range(len(records))
  if shuffle:
    ds = ds.shuffle(seed=seed)
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)
  ds = ds.map(_Encode(records, encoder))
  if batch_size is None:
    return ds
  return batch(ds, batch_size, drop_remainder=drop_remainder, prefetch=prefetch,
               shard_index=shard_index, shard_count=shard_count)


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
