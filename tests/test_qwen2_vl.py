"""Qwen2-VL against transformers beyond the shared parity tests of test_hf.py: M-RoPE positions,
another image bucket, both checkpoint key layouts, the full-size preset (tests/hf_families.py:
tiny random Qwen2-VL; its processor is emulated, as Qwen2VLProcessor needs torchvision). Its
video tests are in test_qwen25_vl.py, beside Qwen2.5-VL's."""
import shutil

import jax
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from leaml_jax.models import count_params, hf, presets
from leaml_jax.models.hf.processor_inputs import inline_inputs
from leaml_jax.models.vlm import VLM, dummy_inputs, mrope_positions
from tests.hf_families import family, images, words

TOL = 1e-4
IMG = "<|vision_start|><|image_pad|><|vision_end|>"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:transformers")


def _inputs(f, sizes, padding_side, seed):
  rng = np.random.default_rng(seed)
  f.processor.tokenizer.padding_side = padding_side
  return f.processor(images=[images(rng, sizes[:2]), images(rng, sizes[2:])], return_tensors="pt",
                     text=[f"{words(rng, 3)}{IMG}{words(rng, 2)}{IMG}{words(rng, 4)}", f"{IMG}{words(rng, 9)}"])


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_mrope_positions_are_transformers_rope_index(padding_side):
  f = family("qwen2_vl")
  inputs = _inputs(f, [(56, 84)] * 3, padding_side, seed=1)
  want, _ = f.hf_model.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"], inputs["image_grid_thw"],
                                            attention_mask=inputs["attention_mask"])
  model, _, _ = f.loaded
  _, _, ids, _, valid = inline_inputs(model, inputs)
  ours = np.asarray(mrope_positions(ids == model.cfg.image_token_id, valid.astype(bool), (2, 3)))
  real = valid.astype(bool)
  np.testing.assert_array_equal(ours[real], want.numpy().transpose(1, 2, 0)[real])


def test_another_image_bucket_matches_transformers():
  """Portrait 84x56 images (3x2 tokens): the tower reads the grid off the image, one compile per size."""
  f = family("qwen2_vl")
  inputs = _inputs(f, [(84, 56)] * 3, "right", seed=2)
  assert inputs["image_grid_thw"][:, 1:].tolist() == [[6, 4]] * 3
  with torch.no_grad():
    ref = f.hf_model(**inputs).logits.numpy()
  model, params, _ = f.loaded
  valid = inputs["attention_mask"].numpy().astype(bool)
  delta = np.abs(hf.logits_from_hf_inputs(model, params, **inputs) - ref)[valid].max()
  print(f"qwen2_vl 84x56 images: max |Δlogit| = {delta:.2e}")
  assert delta <= TOL


def test_images_of_different_sizes_in_one_batch_are_refused():
  f = family("qwen2_vl")
  model, params, _ = f.loaded
  with pytest.raises(ValueError, match="one size per batch"):
    hf.logits_from_hf_inputs(model, params, **_inputs(f, [(56, 84), (84, 56), (56, 84)], "right", seed=3))


def test_4x_and_5x_key_layouts_load_the_same_weights(tmp_path):
  f = family("qwen2_vl")
  stored = load_file(f.directory / "model.safetensors")
  assert any(k.startswith("visual.blocks.") for k in stored) and any(k.startswith("model.layers.") for k in stored)
  to_5x = lambda k: ("model." + k if k.startswith("visual.") else  # noqa: E731
                     k.replace("model.", "model.language_model.", 1) if k.startswith("model.") else k)
  d = tmp_path / "5x"
  d.mkdir()
  shutil.copy(f.directory / "config.json", d / "config.json")
  save_file({to_5x(k): v for k, v in stored.items()}, d / "model.safetensors", metadata={"format": "pt"})
  assert any(k.startswith("model.visual.") for k in load_file(d / "model.safetensors"))
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, hf.load(d, dtype="float32")[1]),
               jax.tree.map(np.asarray, f.loaded[1]))


def test_qwen2_vl_2b_preset_has_the_published_size():
  cfg = presets.get("qwen2_vl_2b")
  abstract = jax.eval_shape(lambda: VLM(cfg).init(jax.random.key(0), *dummy_inputs(cfg, 1, 4))["params"])
  n = count_params(abstract)
  assert cfg.num_image_tokens == 256 and abs(n - 2.209e9) / 2.209e9 < 0.005, n
