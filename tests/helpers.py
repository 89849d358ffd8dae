"""Small shared test fixtures: tiny models (initialised, or with cached random float32 params) and
random batches (no data pipeline needed)."""
import functools

import flax.linen as nn
import jax
import numpy as np

from leaml_jax import sharding as shd
from leaml_jax.models import presets
from leaml_jax.models.vlm import VLM, dummy_inputs


def tiny_model(name="tiny", vocab=64, **kw):
  cfg = presets.get(name, dtype="float32", lm=dict(vocab_size=vocab), **kw)
  return VLM(cfg), cfg


def random_batch(rng, cfg, batch=8, text_len=12, prompt_len=5):
  h, w = cfg.vit.image_size
  V = cfg.lm.vocab_size
  text = rng.integers(3, V, size=(batch, text_len)).astype(np.int32)
  mask_ar = np.zeros((batch, text_len), np.int32)
  mask_ar[:, prompt_len:] = 1
  mask_input = np.ones((batch, text_len), np.int32)
  lengths = rng.integers(prompt_len + 2, text_len + 1, size=batch)
  for i, n in enumerate(lengths):
    mask_input[i, n:] = 0
    text[i, n:] = 0
  mask_loss = (mask_ar * mask_input).astype(np.int32)
  return {"image": rng.uniform(-1, 1, size=(batch, h, w, 3)).astype(np.float32),
          "text": text, "mask_ar": mask_ar, "mask_input": mask_input, "mask_loss": mask_loss}


def init_params(model, cfg, mesh, seed=0):
  b = random_batch(np.random.default_rng(0), cfg, batch=1)
  init = lambda r: model.init(r, b["image"], b["text"], b["mask_ar"], b["mask_input"])
  variables, _ = shd.init_sharded(init, mesh, jax.random.key(seed))
  return variables["params"]


# ----------------------------------------------------------------------------- random float32 params
GEMMA2_WINDOW = dict(lm=dict(sliding_window=5))  # shorter than every test sequence


@functools.lru_cache(maxsize=None)
def _make(name, window):
  return make_uncached(name, **(GEMMA2_WINDOW if window else {}))


def make(name):
  """Model, config and float32 params for a tiny preset, shared between tests (compiles are slow)."""
  return _make(name, name == "tiny_gemma2")


def make_uncached(name, **kw):
  cfg = presets.get(name, dtype="float32", **kw)
  model = VLM(cfg)
  return model, cfg, random_params(model, cfg)


def random_params(model, cfg, seed=0):
  """Random float32 params shaped like `model.init`'s (compiling init costs ~5 s per model on CPU).

  Kernels ~ N(0, 1/fan_in); biases small; norm scales around their identity value.
  """
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), *dummy_inputs(cfg, 1, 4))["params"])
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    names = [k.key for k in path]
    shape = leaf.shape[1:] if {"layers", "encoderblock"} & set(names) else leaf.shape
    noise = rng.normal(size=leaf.shape).astype(np.float32)
    if len(shape) == 1:
      identity = names[-1] == "scale" and not (names[0] == "llm" and cfg.lm.gemma_norm)
      return 0.1 * noise + float(identity)
    return noise / np.sqrt(np.prod(shape[:-1]))

  return jax.tree_util.tree_map_with_path(draw, nn.meta.unbox(abstract))


def forward_fn(model):
  return jax.jit(lambda p, *a: model.apply({"params": p}, *a)[0])
