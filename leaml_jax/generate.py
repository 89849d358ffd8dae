"""Text generation: prefill + KV-cache decode in one jitted `lax.while_loop`.

Axis legend: B batch, L prompt length (after bucketing), M max_new_tokens, V vocab.

`generate(model, params, batch, ...)` pads the prompt length up to a multiple of
`bucket` (after dropping columns that are padding in every row), so one compiled
function serves all prompts of similar length. Compiled functions are cached per
(model config, max_new_tokens, eos/pad ids, greedy-or-sampling, shardings); jax.jit
then caches per input shape. With sharded params the loop is jitted with the params'
own shardings as `in_shardings` (no copy).

`generate_texts` splits its records over the processes: each encodes its part of every global
batch, the parts become one batch-sharded array, and every process receives all the texts, so
the output does not depend on the number of processes.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from leaml_jax import processes, profiler, sharding as shd
from leaml_jax.data import encoders
from leaml_jax.errors import ConfigError
from leaml_jax.metrics import progress
from leaml_jax.models.vlm import VLM

BATCH_KEYS = ("image", "text", "mask_ar", "mask_input")
_COMPILED: dict[Any, Any] = {}


def sample_top_p(logits_BV: jax.Array, temperature, top_p, key) -> jax.Array:
  """Temperature + nucleus sampling: draw among the smallest set of most likely tokens whose
  probability mass reaches top_p (the most likely token is always in the set)."""
  logits = logits_BV.astype(jnp.float32) / temperature
  order_BV = jnp.argsort(-logits, axis=-1)
  sorted_logits = jnp.take_along_axis(logits, order_BV, axis=-1)
  probs = jax.nn.softmax(sorted_logits, axis=-1)
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  keep = mass_before < top_p
  choice = jax.random.categorical(key, jnp.where(keep, sorted_logits, -jnp.inf), axis=-1)
  return jnp.take_along_axis(order_BV, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)


def _decode_loop(model: VLM, params, batch, temperature, top_p, rng, *, max_new_tokens: int,
                 eos_ids: tuple[int, ...], pad_id: int, sample: bool):
  M = max_new_tokens
  B, L = batch["text"].shape
  n_images = batch["image"].shape[1] if batch["image"].ndim == 5 and model.cfg.vit.frames == 1 else 1
  cache_len = model.cfg.num_prefix_tokens * n_images + L + M
  variables = {"params": params}
  logits, cache = model.apply(variables, batch["image"], batch["text"], batch["mask_ar"],
                              batch["mask_input"], cache_len=cache_len, method=VLM.prefill)

  def pick(logits_BV, key):
    if sample:
      return sample_top_p(logits_BV, temperature, top_p, key)
    return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)

  def is_eos(tok_B):
    return jnp.isin(tok_B, jnp.asarray(eos_ids, jnp.int32))

  rng, key = jax.random.split(rng)
  tok = pick(logits, key)
  out = jnp.full((B, M), pad_id, jnp.int32).at[:, 0].set(tok)
  # Sum of the model's log-probabilities (temperature 1) of the emitted tokens, EOS included.
  logp = lambda logits_BV, tok_B: jnp.take_along_axis(  # noqa: E731
      jax.nn.log_softmax(logits_BV.astype(jnp.float32), -1), tok_B[:, None], -1)[:, 0]

  def cond(state):
    step, _, _, done, _, _, _ = state
    return (step < M) & ~jnp.all(done)

  def body(state):
    step, tok, cache, done, out, lp, rng = state
    logits, cache = model.apply(variables, tok, cache, method=VLM.decode_step)
    rng, key = jax.random.split(rng)
    new = jnp.where(done, pad_id, pick(logits, key))
    out = jax.lax.dynamic_update_slice(out, new[:, None], (0, step))
    lp = lp + jnp.where(done, 0.0, logp(logits, new))
    return step + 1, new, cache, done | is_eos(new), out, lp, rng

  state = (jnp.int32(1), tok, cache, is_eos(tok), out, logp(logits, tok), rng)
  _, _, _, _, out, lp, _ = jax.lax.while_loop(cond, body, state)
  return out, lp


def make_generate_fn(model: VLM, *, max_new_tokens: int, eos_id: int | Sequence[int], pad_id: int,
                     sample: bool = False, param_shardings=None, batch_shardings=None):
  """Jitted fn(params, batch, temperature, top_p, rng) -> (tokens [B, M] int32, sum of the
  emitted tokens' log-probabilities [B] float32) (cached).

  param_shardings / batch_shardings: pytrees of `jax.sharding.Sharding` (or None = let jit
  follow the arguments). Outputs are replicated when a mesh is in use.
  """
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  eos_ids = tuple(int(e) for e in np.atleast_1d(eos_id))
  flat_sh = tuple(jax.tree.leaves(param_shardings)) + tuple(jax.tree.leaves(batch_shardings))
  key = (type(model), model.cfg, max_new_tokens, eos_ids, int(pad_id), bool(sample),
         jax.tree.structure(param_shardings), jax.tree.structure(batch_shardings), flat_sh)
  if key not in _COMPILED:
    fn = functools.partial(_decode_loop, model, max_new_tokens=max_new_tokens, eos_ids=eos_ids,
                           pad_id=int(pad_id), sample=bool(sample))
    if param_shardings is None:
      _COMPILED[key] = jax.jit(fn)
    else:
      mesh = _mesh_of(param_shardings)
      replicated = NamedSharding(mesh, PartitionSpec()) if mesh is not None else None
      if batch_shardings is None:
        batch_shardings = {k: replicated for k in BATCH_KEYS}
      _COMPILED[key] = jax.jit(fn, in_shardings=(param_shardings, batch_shardings, replicated,
                                                 replicated, replicated),
                               out_shardings=replicated)
  return _COMPILED[key]


def _mesh_of(shardings):
  for s in jax.tree.leaves(shardings):
    if isinstance(s, NamedSharding):
      return s.mesh
  raise ValueError("param shardings must be NamedShardings over one mesh (from leaml_jax.sharding)")


def _bucketed(batch: dict, bucket: int | None, pad_id: int, used: int | None = None) -> dict:
  """Drops all-padding prompt columns, then right-pads the length up to a multiple of bucket
  (`used`: the prompt columns to keep, when several processes agreed on it)."""
  missing = [k for k in BATCH_KEYS if k not in batch]
  if missing:
    raise KeyError(f"generate: batch lacks {missing}; it needs {BATCH_KEYS} (prompt part only)")
  arrays = {k: batch[k] for k in BATCH_KEYS}
  if not all(getattr(a, "is_fully_addressable", True) for a in arrays.values()) or not bucket:
    return arrays  # multi-host global arrays: keep the caller's fixed shape
  mask_input = np.asarray(arrays["mask_input"])
  if not mask_input.any(axis=1).all():
    raise ValueError("generate: every row needs at least one real prompt token (mask_input = 1)")
  used = used or _used_columns(mask_input)
  length = -(-used // bucket) * bucket
  out = {"image": arrays["image"]}
  for k, fill in (("text", pad_id), ("mask_ar", 1), ("mask_input", 0)):
    a = np.asarray(arrays[k])[:, :used].astype(np.int32)
    out[k] = np.pad(a, [(0, 0), (0, length - used)], constant_values=fill)
  return out


def _used_columns(mask_input) -> int:
  return int(np.max(np.nonzero(np.asarray(mask_input).any(axis=0))[0])) + 1


def _global_batch(local: dict, mesh, bucket: int, pad_id: int):
  """This process's prompt rows -> one batch-sharded global batch; the prompt length is bucketed
  from the longest prompt over all processes. -> (arrays, their shardings)."""
  used = _used_columns(local["mask_input"])
  if jax.process_count() > 1:
    used = int(np.max(multihost_utils.process_allgather(np.int32(used))))
  host = _bucketed(local, bucket, pad_id, used=used)
  shardings = {k: shd.batch_sharding(mesh, np.ndim(host[k])) for k in BATCH_KEYS}
  arrays = {k: jax.make_array_from_process_local_data(shardings[k], np.asarray(host[k]))
            for k in BATCH_KEYS}
  return arrays, shardings


def _params_mesh(params):
  leaves = jax.tree.leaves(nn.meta.unbox(params))
  if leaves and all(isinstance(x, jax.Array) and isinstance(x.sharding, NamedSharding) for x in leaves):
    return leaves[0].sharding.mesh
  return None


def generate(model: VLM, params, batch: dict, *, max_new_tokens: int, eos_id: int | Sequence[int],
             pad_id: int, temperature: float = 0.0, top_p: float = 1.0, rng=None,
             bucket: int | None = 16, shardings=None, batch_shardings=None,
             return_logprobs: bool = False):
  """Greedy (temperature == 0) or temperature + top-p sampling; returns [B, max_new_tokens] int32
  (and, with `return_logprobs`, each row's summed log-probability of its emitted tokens, EOS
  included, under the model's untempered distribution: [B] float32).

  batch: image [B,H,W,3] or [B,n,H,W,3], text [B,L] right-padded prompt, mask_ar, mask_input (prompt part only).
  Tokens after a row's first EOS are `pad_id`; the loop stops once every row has hit EOS.
  shardings: the params' shardings (default: their own `.sharding` when they live on a mesh).
  """
  if temperature < 0 or not 0 < top_p <= 1:
    raise ValueError(f"generate: need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
  params = nn.meta.unbox(params)
  if shardings is None:
    leaves = jax.tree.leaves(params)
    if leaves and all(isinstance(x, jax.Array) and isinstance(x.sharding, NamedSharding) for x in leaves):
      shardings = jax.tree.map(lambda x: x.sharding, params)
  batch = _bucketed(batch, bucket, pad_id)
  sample = temperature > 0
  fn = make_generate_fn(model, max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id,
                        sample=sample, param_shardings=shardings, batch_shardings=batch_shardings)
  rng = jax.random.PRNGKey(0) if rng is None else rng
  with profiler.generation_call(), shd.with_mesh_rules(None if shardings is None else _mesh_of(shardings)):
    tokens, logprobs = fn(params, batch, jnp.float32(max(temperature, 1e-6)), jnp.float32(top_p), rng)
    tokens, logprobs = jax.device_get((tokens, logprobs))
  tokens = np.asarray(tokens).astype(np.int32)
  if return_logprobs:
    return tokens, np.asarray(logprobs, np.float32)
  return tokens


def generate_texts(model: VLM, params, records, *, encoder, batch_size: int, max_new_tokens: int,
                   temperature: float = 0.0, top_p: float = 1.0, rng=None, desc: str = "generate"):
  """Texts for records {"image", "prompt", "forced"?, "id"?} in fixed-shape batches (the last one
  padded with copies of its last record), laid out by `encoder` (data.encoders.prompt_batch: a
  `forced` text is written as the answer's start and generation continues it).
  -> (texts, each text's summed log-probability as in `generate`).

  batch_size is the global batch: with params on a mesh whose batch axes divide it, each process
  encodes only its rows and the batch is sharded over the devices (required with several
  processes); every process gets all texts."""
  tok = encoder.tokenizer
  mesh = _params_mesh(params)
  sharded = mesh is not None and batch_size % (mesh.shape["data"] * mesh.shape["fsdp"]) == 0
  if jax.process_count() > 1 and not sharded:
    raise ConfigError(
        f"{desc}: batch_size={batch_size} must be a multiple of the mesh's data x fsdp devices "
        f"({'no mesh' if mesh is None else mesh.shape['data'] * mesh.shape['fsdp']}) to split "
        f"generation over {jax.process_count()} processes")
  local = processes.local_batch_size(batch_size, what=f"{desc} batch_size")
  mine = slice(jax.process_index() * local, (jax.process_index() + 1) * local)
  texts, logprobs = [], []
  for start in progress(range(0, len(records), batch_size), desc=desc, leave=False):
    chunk = records[start:start + batch_size]
    padded = chunk + [chunk[-1]] * (batch_size - len(chunk))
    kw = dict(max_new_tokens=max_new_tokens, eos_id=tok.eos_id, pad_id=tok.pad_id,
              temperature=temperature, top_p=top_p, return_logprobs=True,
              rng=None if rng is None else jax.random.fold_in(rng, start))
    if sharded:
      batch, batch_sh = _global_batch(encoders.prompt_batch(padded[mine], encoder), mesh, 16,
                                      tok.pad_id)
      tokens, lp = generate(model, params, batch, bucket=None, batch_shardings=batch_sh, **kw)
    else:
      tokens, lp = generate(model, params, encoders.prompt_batch(padded, encoder), **kw)
    texts += [tok.decode(list(t)) for t in tokens[:len(chunk)]]
    logprobs += [float(x) for x in lp[:len(chunk)]]
  return texts, logprobs
