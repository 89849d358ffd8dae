"""Small shared test fixtures: a tiny model and random batches (no data pipeline needed)."""
import jax
import numpy as np

from leaml_jax import sharding as shd
from leaml_jax.models import presets
from leaml_jax.models.vlm import VLM


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
