"""Generation engine: greedy vs teacher-forced argmax, EOS handling, nucleus sampling, sharded params."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from leaml_jax import generate as gen
from leaml_jax import sharding as shd
from leaml_jax.models.vlm import dummy_inputs
from tests.helpers import forward_fn, make, make_uncached

M = 10           # new tokens
LENGTHS = [5, 3]  # real prompt length per row; prompts right-padded to 6


@functools.lru_cache(maxsize=None)
def setup():
  model, cfg, params = make("tiny_gemma2")  # sliding window 5: shorter than the sequences
  rng = np.random.default_rng(0)
  B, P = len(LENGTHS), 6
  h, w = cfg.vit.image_size
  batch = {"image": rng.uniform(-1, 1, (B, h, w, 3)).astype(np.float32),
           "text": np.zeros((B, P), np.int32), "mask_ar": np.zeros((B, P), np.int32),
           "mask_input": np.zeros((B, P), np.int32)}
  for b, n in enumerate(LENGTHS):
    batch["text"][b, :n] = rng.integers(1, cfg.lm.vocab_size, n)
    batch["mask_input"][b, :n] = 1
  never = cfg.lm.vocab_size  # an id the model cannot emit: no early stop
  greedy = gen.generate(model, params, batch, max_new_tokens=M, eos_id=never, pad_id=0, bucket=4)
  return model, cfg, params, batch, greedy


def teacher_forced_argmax(model, params, batch):
  """Reference decoder: full forward over prompt + tokens so far, append the argmax, repeat."""
  fwd = forward_fn(model)
  B = len(LENGTHS)
  L = max(LENGTHS) + M
  text = np.zeros((B, L), np.int32)
  mask_ar = np.ones((B, L), np.int32)
  mask_input = np.zeros((B, L), np.int32)  # not-yet-generated slots are padding
  for b, n in enumerate(LENGTHS):
    text[b, :n] = batch["text"][b, :n]
    mask_ar[b, :n] = batch["mask_ar"][b, :n]
    mask_input[b, :n] = 1
  out = np.zeros((B, M), np.int32)
  for g in range(M):
    logits = np.asarray(fwd(params, batch["image"], text, mask_ar, mask_input))
    for b, n in enumerate(LENGTHS):
      out[b, g] = text[b, n + g] = np.argmax(logits[b, n + g - 1])
      mask_input[b, n + g] = 1
  return out


def test_greedy_equals_teacher_forced_argmax():
  model, _, params, batch, greedy = setup()
  assert greedy.shape == (len(LENGTHS), M) and greedy.dtype == np.int32
  np.testing.assert_array_equal(greedy, teacher_forced_argmax(model, params, batch))


def test_eos_ends_each_row_with_padding():
  model, _, params, batch, greedy = setup()
  row = list(greedy[0])
  k = next(i for i in range(2, M) if row.index(row[i]) == i)  # a token first emitted at step k >= 2
  eos, pad = int(row[k]), 7
  out = gen.generate(model, params, batch, max_new_tokens=M, eos_id=[eos, 10**6], pad_id=pad, bucket=4)
  for b in range(len(LENGTHS)):
    hits = np.nonzero(greedy[b] == eos)[0]
    stop = hits[0] + 1 if len(hits) else M
    expect = np.concatenate([greedy[b, :stop], np.full(M - stop, pad)])
    np.testing.assert_array_equal(out[b], expect)
  # every row stops at once: only the first token survives
  first = int(greedy[0, 0])
  out = gen.generate(model, params, {**batch, "text": batch["text"][:1], "mask_ar": batch["mask_ar"][:1],
                                     "mask_input": batch["mask_input"][:1], "image": batch["image"][:1]},
                     max_new_tokens=M, eos_id=first, pad_id=pad, bucket=4)
  np.testing.assert_array_equal(out, [[first] + [pad] * (M - 1)])


def test_top_p_samples_only_from_the_nucleus():
  probs = np.array([0.5, 0.3, 0.1, 0.05, 0.03, 0.02])
  n = 4000
  logits = jnp.tile(jnp.log(jnp.asarray(probs, jnp.float32)), (n, 1))
  key = jax.random.key(1)
  for top_p, nucleus in [(0.75, {0, 1}), (0.85, {0, 1, 2}), (0.3, {0})]:
    draws = np.asarray(gen.sample_top_p(logits, 1.0, top_p, key))
    assert set(draws.tolist()) == nucleus, (top_p, set(draws.tolist()))
    renorm = probs[sorted(nucleus)] / probs[sorted(nucleus)].sum()
    freq = np.bincount(draws, minlength=6)[sorted(nucleus)] / n
    np.testing.assert_allclose(freq, renorm, atol=0.03)
  # temperature sharpens p -> p**(1/T), renormalised
  draws = np.asarray(gen.sample_top_p(logits, 0.5, 1.0, key))
  sharp = probs ** 2 / (probs ** 2).sum()
  np.testing.assert_allclose(np.bincount(draws, minlength=6) / n, sharp, atol=0.03)


def test_sampling_in_the_engine():
  model, cfg, params, batch, greedy = setup()
  kw = dict(max_new_tokens=M, eos_id=cfg.lm.vocab_size, pad_id=0, bucket=4)
  n_compiled = len(gen._COMPILED)
  a = gen.generate(model, params, batch, temperature=1.0, top_p=0.9, rng=jax.random.key(3), **kw)
  b = gen.generate(model, params, batch, temperature=1.0, top_p=0.9, rng=jax.random.key(3), **kw)
  np.testing.assert_array_equal(a, b)
  assert ((a >= 0) & (a < cfg.lm.vocab_size)).all()
  # a vanishing nucleus keeps only the most likely token: sampling collapses to greedy
  c = gen.generate(model, params, batch, temperature=1.0, top_p=1e-6, rng=jax.random.key(4), **kw)
  np.testing.assert_array_equal(c, greedy)
  assert len(gen._COMPILED) == n_compiled + 1  # one sampling fn, reused for all three calls


def test_generate_over_sharded_params():
  model, cfg, params, batch, greedy = setup()
  mesh = shd.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), *dummy_inputs(cfg, 1, 4))["params"])
  shardings = shd.param_shardings(abstract, mesh)
  sharded = jax.device_put(params, shardings)
  assert any(len(x.sharding.device_set) > 1 and not x.sharding.is_fully_replicated
             for x in jax.tree.leaves(sharded))
  out = gen.generate(model, sharded, batch, max_new_tokens=M, eos_id=cfg.lm.vocab_size, pad_id=0, bucket=4)
  np.testing.assert_array_equal(out, greedy)


def test_bad_arguments_fail_loudly():
  model, _, params, batch, _ = setup()
  with pytest.raises(KeyError, match="mask_input"):
    gen.generate(model, params, {k: v for k, v in batch.items() if k != "mask_input"},
                 max_new_tokens=2, eos_id=1, pad_id=0)
  with pytest.raises(ValueError, match="top_p"):
    gen.generate(model, params, batch, max_new_tokens=2, eos_id=1, pad_id=0, temperature=1.0, top_p=0.0)


def test_several_images_per_row_greedy_equals_teacher_forced_argmax():
  """image [B,I,height,width,3] (I image-token blocks in the prefix): the cache holds all I·P prefix tokens."""
  model, cfg, params, batch, greedy = setup()
  frames = np.stack([batch["image"], -batch["image"]], axis=1)
  two = {**batch, "image": frames}
  out = gen.generate(model, params, two, max_new_tokens=M, eos_id=cfg.lm.vocab_size, pad_id=0, bucket=4)
  np.testing.assert_array_equal(out, teacher_forced_argmax(model, params, two))
  assert (out != greedy).any()  # the second frame is seen


def test_logprobs_are_the_teacher_forced_log_probabilities_of_the_emitted_tokens():
  """Reference: a full forward over prompt + greedy tokens, log-softmax, summed over what was
  emitted up to and including the first EOS."""
  model, _, params, batch, greedy = setup()
  eos = int(greedy[1, 3])  # row 1 stops at its 4th token (or earlier, if it emitted eos before)
  tokens, lp = gen.generate(model, params, batch, max_new_tokens=M, eos_id=eos, pad_id=0, bucket=4,
                            return_logprobs=True)
  fwd = forward_fn(model)
  B, L = len(LENGTHS), max(LENGTHS) + M
  text, mask_ar = np.zeros((B, L), np.int32), np.ones((B, L), np.int32)
  mask_input = np.zeros((B, L), np.int32)
  for b, n in enumerate(LENGTHS):
    text[b, :n], mask_ar[b, :n], mask_input[b, :n] = batch["text"][b, :n], batch["mask_ar"][b, :n], 1
    text[b, n:n + M], mask_input[b, n:n + M] = greedy[b], 1
  logp = np.asarray(jax.nn.log_softmax(fwd(params, batch["image"], text, mask_ar, mask_input), -1))
  for b, n in enumerate(LENGTHS):
    hits = np.nonzero(greedy[b] == eos)[0]
    stop = hits[0] + 1 if len(hits) else M
    np.testing.assert_array_equal(tokens[b, :stop], greedy[b, :stop])
    ref = sum(logp[b, n + g - 1, greedy[b, g]] for g in range(stop))
    np.testing.assert_allclose(lp[b], ref, rtol=1e-4, atol=1e-4)


def test_tubelet_clip_greedy_equals_teacher_forced_argmax():
  """A [B, frames, height, width, 3] clip into a tubelet tower is one image: the cache fits its P prefix tokens."""
  model, cfg, params = make_uncached("tiny", vit=dict(frames=4), param_dtype="float32")
  _, _, _, batch, _ = setup()
  rng = np.random.default_rng(1)
  h, w = cfg.vit.image_size
  text = np.where(batch["mask_input"] == 1, batch["text"] % cfg.lm.vocab_size, 0).astype(np.int32)
  clip = {**batch, "text": text,
          "image": rng.uniform(-1, 1, (len(LENGTHS), 4, h, w, 3)).astype(np.float32)}
  out = gen.generate(model, params, clip, max_new_tokens=M, eos_id=cfg.lm.vocab_size, pad_id=0, bucket=4)
  np.testing.assert_array_equal(out, teacher_forced_argmax(model, params, clip))
