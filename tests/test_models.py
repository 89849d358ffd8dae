"""Model layer: real-size shapes, prefix-LM masking, scan equivalence, KV cache, relevance hooks."""
import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from leaml_jax.models import presets
from leaml_jax.models.vlm import VLM, count_params, dummy_inputs, prefix_lm_mask
from tests.helpers import forward_fn, make, make_uncached

TINY_PRESETS = ["tiny", "tiny_gemma2", "tiny_llama", "tiny_qwen2"]


def inputs(cfg, rng, B, L):
  h, w = cfg.vit.image_size
  image = rng.uniform(-1, 1, (B, h, w, 3)).astype(np.float32)
  text = rng.integers(1, cfg.lm.vocab_size, (B, L)).astype(np.int32)
  return image, text


# ----------------------------------------------------------------------------- configs

def hf_param_count(vit: presets.ViTConfig, lm: presets.LMConfig, connector_in: int, connector_bias: bool):
  """Independent count from the HF module list (SigLIP vision tower + projector + decoder)."""
  D, F, p = vit.width, vit.mlp_dim, vit.patch_size
  n_patches = (vit.image_size[0] // p) * (vit.image_size[1] // p)
  vit_layer = 4 * (D * D + D) + (D * F + F) + (F * D + D) + 2 * 2 * D
  vision = (3 * p * p * D + D) + n_patches * D + vit.depth * vit_layer + 2 * D
  E, N, K, H = lm.width, lm.num_heads, lm.num_kv_heads, lm.head_dim
  attn = E * N * H + 2 * E * K * H + N * H * E + (N * H + 2 * K * H if lm.qkv_bias else 0)
  norms = (4 if lm.post_norms else 2) * E
  text = lm.vocab_size * E + lm.depth * (attn + 3 * E * lm.mlp_dim + norms) + E
  if not lm.tie_embeddings:
    text += E * lm.vocab_size
  projector = connector_in * E + (E if connector_bias else 0)
  return vision + text + projector


@pytest.mark.parametrize("name,published", [
    ("paligemma_3b", 2.92e9), ("paligemma2_3b", 3.03e9), ("smolvlm_256m", 2.56e8)])
def test_real_preset_param_counts(name, published):
  cfg = presets.get(name)
  abstract = jax.eval_shape(lambda: VLM(cfg).init(jax.random.key(0), *dummy_inputs(cfg, 1, 4)))
  n = count_params(abstract["params"])
  s = cfg.pixel_shuffle_factor if cfg.connector == "pixel_shuffle" else 1
  assert n == hf_param_count(cfg.vit, cfg.lm, cfg.vit.width * s * s, cfg.connector == "linear")
  assert abs(n - published) / published < 0.005, n
  # params carry logical axis names, with the scan axis named "layers"
  specs = nn.get_partition_spec(abstract["params"])
  assert tuple(specs["llm"]["layers"]["mlp"]["gate_proj"]["kernel"]) == ("layers", "embed", "mlp")
  assert tuple(specs["img"]["Transformer"]["encoderblock"]["mlp"]["fc1"]["kernel"]) == ("layers", "embed", "mlp")


def test_config_roundtrip_and_overrides():
  cfg = presets.get("paligemma2_3b", scan=False, lm=dict(vocab_size=300))
  assert cfg.lm.vocab_size == 300 and not cfg.scan and cfg.lm.family == "gemma2"
  assert presets.config_from_dict(json.loads(json.dumps(presets.to_dict(cfg)))) == cfg
  assert dataclasses.replace(cfg.lm, vocab_size=7).vocab_size == 7
  with pytest.raises(KeyError, match="Unknown model preset"):
    presets.get("nope")
  with pytest.raises(KeyError, match="Unknown VLMConfig field"):
    presets.get("tiny", widht=3)
  with pytest.raises(ValueError, match="family"):
    dataclasses.replace(cfg.lm, family="gpt")
  assert presets.get("smolvlm_256m").num_image_tokens == 64
  assert presets.get("paligemma_3b").num_image_tokens == 256


# ----------------------------------------------------------------------------- masking

def test_prefix_lm_mask_matches_hand_example():
  mask_ar = jnp.array([[0, 0, 1, 1, 1]])
  valid = jnp.array([[1, 1, 1, 1, 0]], bool)
  expect = np.array([[1, 1, 0, 0, 0],
                     [1, 1, 0, 0, 0],
                     [1, 1, 1, 0, 0],
                     [1, 1, 1, 1, 0],
                     [1, 1, 1, 1, 0]], bool)
  np.testing.assert_array_equal(prefix_lm_mask(mask_ar, valid)[0], expect)


def test_prefix_lm_masking_and_padding_invariance():
  model, cfg, params = make("tiny")
  fwd = forward_fn(model)
  rng = np.random.default_rng(0)
  image, text = inputs(cfg, rng, 1, 10)
  mask_ar = np.array([[0, 0, 0, 0, 1, 1, 1, 1, 1, 1]], np.int32)
  mask_input = np.array([[1] * 8 + [0, 0]], np.int32)
  base = np.asarray(fwd(params, image, text, mask_ar, mask_input))

  def changed(pos, **kw):
    t = text.copy()
    t[0, pos] = (t[0, pos] + 7) % cfg.lm.vocab_size
    out = np.asarray(fwd(params, image, t, kw.get("mask_ar", mask_ar), mask_input))
    return np.abs(out - base).max(axis=-1)[0]  # per position

  d = changed(6)  # causal token: earlier positions unchanged, itself and later change
  assert d[:6].max() == 0 and d[6:8].min() > 1e-4
  d = changed(2)  # prefix token: every prefix position sees it, including earlier ones
  assert d[:2].min() > 1e-4
  d = changed(9)  # padding token: nothing real changes
  assert d[:8].max() == 0
  ar2 = mask_ar.copy()
  ar2[0, 8:] = 0
  out = np.asarray(fwd(params, image, text, ar2, mask_input))
  assert np.abs(out - base)[0, :8].max() == 0  # mask_ar of padding does not matter either
  # the image is a prefix: changing it changes every position
  out = np.asarray(fwd(params, -image, text, mask_ar, mask_input))
  assert np.abs(out - base).max(axis=-1)[0, :8].min() > 1e-4


def unstack(tree, depth, name):
  out = {k: v for k, v in tree.items() if k != name}
  for i in range(depth):
    out[f"{name}_{i}"] = jax.tree.map(lambda x: x[i], tree[name])
  return out


def test_scan_and_unrolled_layers_agree():
  model, cfg, params = make("tiny_gemma2")
  flat = dict(params)
  flat["llm"] = unstack(params["llm"], cfg.lm.depth, "layers")
  flat["img"] = dict(params["img"], Transformer=unstack(params["img"]["Transformer"], cfg.vit.depth,
                                                        "encoderblock"))
  unrolled = VLM(dataclasses.replace(cfg, scan=False))
  abstract = jax.eval_shape(lambda: unrolled.init(jax.random.key(0), *dummy_inputs(cfg, 1, 4))["params"])
  assert jax.tree.structure(nn.meta.unbox(abstract)) == jax.tree.structure(flat)
  rng = np.random.default_rng(1)
  image, text = inputs(cfg, rng, 2, 12)
  mask_ar = np.repeat([[0] * 5 + [1] * 7], 2, 0).astype(np.int32)
  a = forward_fn(model)(params, image, text, mask_ar, np.ones_like(text))
  b = forward_fn(unrolled)(flat, image, text, mask_ar, np.ones_like(text))
  np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- KV cache

@pytest.mark.parametrize("name", TINY_PRESETS)
def test_kv_cache_matches_full_forward(name):
  model, cfg, params = make(name)
  rng = np.random.default_rng(2)
  B, prompt_len, steps = 2, 6, 5
  lengths = [6, 3]
  image, full = inputs(cfg, rng, B, prompt_len + steps)
  prompt = np.zeros((B, prompt_len), np.int32)
  mask_input = np.zeros((B, prompt_len), np.int32)
  mask_ar = np.zeros((B, prompt_len), np.int32)
  mask_ar[0, 4:] = 1  # row 0's prompt already ends with two causal tokens
  # teacher-forced reference: each row's real prompt immediately followed by its `steps` tokens
  ref_text = np.zeros((B, prompt_len + steps), np.int32)
  ref_ar = np.ones((B, prompt_len + steps), np.int32)
  ref_in = np.zeros((B, prompt_len + steps), np.int32)
  for b, n in enumerate(lengths):
    prompt[b, :n], mask_input[b, :n] = full[b, :n], 1
    ref_text[b, :n + steps] = full[b, :n + steps]
    ref_ar[b, :n] = mask_ar[b, :n]
    ref_in[b, :n + steps] = 1
  ref = np.asarray(forward_fn(model)(params, image, ref_text, ref_ar, ref_in))

  cache_len = cfg.num_image_tokens + prompt_len + steps
  prefill = jax.jit(lambda p, *a: model.apply({"params": p}, *a, cache_len=cache_len, method=VLM.prefill))
  step = jax.jit(lambda p, t, c: model.apply({"params": p}, t, c, method=VLM.decode_step))
  logits, cache = prefill(params, image, prompt, mask_ar, mask_input)
  for b, n in enumerate(lengths):
    np.testing.assert_allclose(logits[b], ref[b, n - 1], atol=1e-5, rtol=1e-5)
  for g in range(steps):
    tok = np.array([full[b, n + g] for b, n in enumerate(lengths)], np.int32)
    logits, cache = step(params, tok, cache)
    for b, n in enumerate(lengths):
      np.testing.assert_allclose(logits[b], ref[b, n + g], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- relevance hooks

def test_intermediates_and_perturbation_grads():
  model, cfg, params = make("tiny")
  rng = np.random.default_rng(3)
  B, L = 2, 6
  image, text = inputs(cfg, rng, B, L)
  mask_ar = np.array([[0, 0, 0, 1, 1, 1]] * B, np.int32)
  args = (image, text, mask_ar, np.ones_like(text))
  T = cfg.num_image_tokens + L
  w_BLV = jnp.asarray(rng.normal(size=(B, L, cfg.lm.vocab_size)), jnp.float32)

  _, state = jax.jit(lambda p: model.apply({"params": p}, *args, mutable=["intermediates"]))(params)
  h_llm = state["intermediates"]["llm"]["layers"]["mlp"]["mlp_hidden"][0]
  h_img = state["intermediates"]["img"]["Transformer"]["encoderblock"]["mlp"]["mlp_hidden"][0]
  assert h_llm.shape == (cfg.lm.depth, B, T, cfg.lm.mlp_dim)
  assert h_img.shape == (cfg.vit.depth, B, cfg.num_image_tokens, cfg.vit.mlp_dim)
  # the caller's recipe for perturbation shapes: abstract apply with the collection mutable
  _, zeros = jax.eval_shape(lambda p: model.apply({"params": p}, *args, mutable=["perturbations"]), params)
  perturb = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zeros["perturbations"])

  @jax.jit
  def loss(perturb):
    logits, _ = model.apply({"params": params, "perturbations": perturb}, *args)
    return jnp.sum(logits * w_BLV)

  grads = jax.jit(jax.grad(loss))(perturb)
  g_llm = grads["llm"]["layers"]["mlp"]["mlp_hidden"]
  g_img = grads["img"]["Transformer"]["encoderblock"]["mlp"]["mlp_hidden"]
  assert g_llm.shape == h_llm.shape and g_img.shape == h_img.shape
  # zero perturbations change nothing
  plain = forward_fn(model)(params, *args)
  np.testing.assert_allclose(loss(perturb), jnp.sum(plain * w_BLV), rtol=1e-6)
  # central finite differences on a few neurons (LM text/image positions, ViT)
  eps = 1e-2
  for path, idx in [(("llm", "layers", "mlp", "mlp_hidden"), (1, 0, T - 2, 5)),
                    (("llm", "layers", "mlp", "mlp_hidden"), (0, 1, 3, 17)),
                    (("img", "Transformer", "encoderblock", "mlp", "mlp_hidden"), (0, 1, 2, 9))]:
    def bump(delta):
      def f(p, keypath):
        names = tuple(k.key for k in keypath)
        return p.at[idx].add(delta) if names == path else p
      return jax.tree_util.tree_map_with_path(lambda kp, p: f(p, kp), perturb)
    fd = (loss(bump(eps)) - loss(bump(-eps))) / (2 * eps)
    g = grads
    for k in path:
      g = g[k]
    np.testing.assert_allclose(g[idx], fd, rtol=2e-2, atol=2e-3)


def test_inline_image_tokens_match_prefix_layout():
  """Idefics3-style placement (image ids inside the text) == prefix placement when the ids lead."""
  model, cfg, params = make("tiny_llama")
  img_id = 5
  inline = VLM(dataclasses.replace(cfg, image_token_id=img_id))
  P = cfg.num_image_tokens
  rng = np.random.default_rng(4)
  image, text = inputs(cfg, rng, 2, 7)
  text[text == img_id] = img_id + 1
  mask_ar = np.array([[0, 0, 0, 1, 1, 1, 1]] * 2, np.int32)
  mask_input = np.array([[1] * 7, [1] * 5 + [0] * 2], np.int32)
  ref = forward_fn(model)(params, image, text, mask_ar, mask_input)
  lead = lambda a, v: np.concatenate([np.full((2, P), v, np.int32), a], axis=1)  # noqa: E731
  out = forward_fn(inline)(params, image, lead(text, img_id), lead(mask_ar, 0), lead(mask_input, 1))
  np.testing.assert_allclose(out[:, P:], ref, atol=1e-5, rtol=1e-5)

  # two images per row: the k-th image fills the k-th block of image ids
  two = np.stack([image, -image], axis=1)
  seq = np.concatenate([np.full((2, P), img_id), text[:, :3], np.full((2, P), img_id), text[:, 3:]], 1)
  ar = np.concatenate([np.zeros((2, P + 3)), np.ones((2, P + 4))], 1).astype(np.int32)
  f = forward_fn(inline)
  base = np.asarray(f(params, two, seq, ar, np.ones_like(seq)))
  other2 = np.asarray(f(params, np.stack([image, image], 1), seq, ar, np.ones_like(seq)))
  other1 = np.asarray(f(params, np.stack([-image, -image], 1), seq, ar, np.ones_like(seq)))
  assert np.abs(other2 - base)[:, :P + 3].max() == 0
  assert np.abs(other2 - base)[:, P + 3:].max(axis=-1).min() > 1e-4
  assert np.abs(other1 - base)[:, :P + 3].max(axis=-1).min() > 1e-4


# ----------------------------------------------------------------------------- tubelets

def test_tubelet_tower_stacks_frames_in_each_patch():
  """vit.frames = 4: a clip whose only non-zero frame is t is encoded like that frame as a still
  image by a frames=1 tower holding kernel channels [3t, 3t+3) (all else shared); a still image
  is the clip of 4 equal frames; frame order matters."""
  model, cfg, params = make_uncached("tiny", vit=dict(frames=4), param_dtype="float32")
  still_model = VLM(presets.get("tiny", dtype="float32", param_dtype="float32"))
  rng = np.random.default_rng(0)
  image, text = inputs(cfg, rng, 2, 6)
  clip = rng.uniform(-1, 1, (2, 4, *image.shape[1:])).astype(np.float32)
  encode = lambda m, p, x: np.asarray(m.apply({"params": p}, x, method=lambda mm, y: mm._encode_images(y)))  # noqa: E731
  for t in range(4):
    only_t = np.zeros_like(clip)
    only_t[:, t] = clip[:, t]
    kernel = params["img"]["embedding"]["kernel"][:, :, 3 * t:3 * t + 3]
    still_params = {**params, "img": {**params["img"], "embedding": {
        **params["img"]["embedding"], "kernel": kernel}}}
    np.testing.assert_allclose(encode(model, params, only_t),
                               encode(still_model, still_params, clip[:, t]), rtol=1e-5, atol=1e-5)
  mask_ar = np.zeros_like(text)
  fwd = forward_fn(model)
  np.testing.assert_array_equal(np.asarray(fwd(params, image, text, mask_ar)),
                                np.asarray(fwd(params, np.repeat(image[:, None], 4, 1), text, mask_ar)))
  assert np.abs(np.asarray(fwd(params, clip, text, mask_ar))
                - np.asarray(fwd(params, clip[:, ::-1], text, mask_ar))).max() > 1e-3
  with pytest.raises(ValueError, match="tubelet"):
    fwd(params, clip[:, :3], text, mask_ar)
