"""Qwen2.5-VL (the paper's teacher family) and Qwen2-VL / Qwen2.5-VL video against transformers:
logits on single and several images, windowed attention that really cuts, greedy generation, video
(temporal patches, M-RoPE temporal positions, Qwen2.5-VL's tokens_per_second scaling), save ->
from_pretrained, both checkpoint key layouts, the full-size presets (tests/hf_families.py: tiny
random Qwen2.5-VL; its processor is emulated, as Qwen2_5_VLProcessor needs torchvision)."""
import dataclasses
import shutil

import jax
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from leaml_jax import generate as gen
from leaml_jax.models import count_params, hf, presets
from leaml_jax.models.hf import config_json
from leaml_jax.models.hf.processor_inputs import inline_inputs
from leaml_jax.models.vlm import VLM, dummy_inputs, mrope_positions
from tests.hf_batches import batch_from_hf_inputs
from tests.hf_families import family, images, words

TOL = 1e-4
NEW_TOKENS = 16
IMG = "<|vision_start|><|image_pad|><|vision_end|>"
VID = "<|vision_start|><|video_pad|><|vision_end|>"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:transformers")


def _images_batch(f, sizes, padding_side="right", seed=0):
  """Row 0: two images between words, row 1: one image then words (sizes: three (h, w))."""
  rng = np.random.default_rng(seed)
  f.processor.tokenizer.padding_side = padding_side
  return f.processor(images=[images(rng, sizes[:2]), images(rng, sizes[2:])],
                     text=[f"{words(rng, 3)}{IMG}{words(rng, 2)}{IMG}{words(rng, 4)}", f"{IMG}{words(rng, 9)}"])


def _video_batch(f, padding_side="right", seed=1, fps=3.0):
  """Row 0: an image, then a 4-temporal-patch video; row 1: a 2-patch video. At 3 fps a temporal
  patch lasts 2/3 s, so Qwen2.5-VL's temporal step is 2 x 2/3 = 1.33 positions (truncated)."""
  rng = np.random.default_rng(seed)
  f.processor.tokenizer.padding_side = padding_side
  clips = [[rng.integers(0, 256, (n, 56, 84, 3), dtype=np.uint8)] for n in (8, 4)]
  return f.processor(images=[images(rng, [(56, 84)]), []], videos=clips, fps=fps,
                     text=[f"{words(rng, 2)}{IMG}{words(rng, 2)}{VID}{words(rng, 3)}", f"{VID}{words(rng, 5)}"])


def _delta(f, inputs, model=None, params=None):
  with torch.no_grad():
    ref = f.hf_model(**inputs).logits.numpy()
  model, params = model or f.loaded[0], params or f.loaded[1]
  valid = inputs["attention_mask"].numpy().astype(bool)
  return np.abs(hf.logits_from_hf_inputs(model, params, **inputs) - ref)[valid].max()


@pytest.mark.parametrize("sizes", [[(56, 84)] * 3, [(112, 84)] * 3], ids=["56x84", "112x84"])
def test_logits_match_transformers(sizes):
  f = family("qwen2_5_vl")
  delta = _delta(f, _images_batch(f, sizes))
  print(f"qwen2_5_vl {sizes[0]} images (2 + 1 per row): max |Δlogit| = {delta:.2e}")
  assert delta <= TOL


def test_single_image_rows_match_transformers():
  f = family("qwen2_5_vl")
  rng = np.random.default_rng(3)
  f.processor.tokenizer.padding_side = "right"
  inputs = f.processor(images=[images(rng, [(112, 84)]), images(rng, [(112, 84)])],
                       text=[f"{words(rng, 2)}{IMG}{words(rng, 12)}", f"{IMG}{words(rng, 3)}"])
  delta = _delta(f, inputs)
  print(f"qwen2_5_vl single 112x84 images: max |Δlogit| = {delta:.2e}")
  assert delta <= TOL


def test_windows_cut_attention():
  """112x84 images have four windows; with every block attending over the whole image the logits
  move far from transformers', so the parity above does test the windows."""
  f = family("qwen2_5_vl")
  model, params, _ = f.loaded
  everywhere = VLM(dataclasses.replace(model.cfg, vit=dataclasses.replace(model.cfg.vit,
                                                                          full_attention_blocks=(0, 1, 2, 3))))
  assert _delta(f, _images_batch(f, [(112, 84)] * 3), everywhere, params) > 100 * TOL


def test_greedy_generation_matches_transformers():
  f = family("qwen2_5_vl")
  inputs = _images_batch(f, [(112, 84)] * 3, "left", seed=5)
  ref = _hf_generate(f, inputs)
  model, params, _ = f.loaded
  ours = gen.generate(model, params, batch_from_hf_inputs(model, **inputs), max_new_tokens=NEW_TOKENS,
                      eos_id=129, pad_id=0)
  assert ref.shape == (2, NEW_TOKENS) and len(set(ref.ravel().tolist())) > 3
  np.testing.assert_array_equal(ours, ref)


def _hf_generate(f, inputs):
  with torch.no_grad():  # eos 129: an id no model emits, so no early stop
    out = f.hf_model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                              eos_token_id=129, pad_token_id=0)
  return out[:, inputs["input_ids"].shape[1]:].numpy()


# ----------------------------------------------------------------------------- video
@pytest.mark.parametrize("name", ["qwen2_vl", "qwen2_5_vl"])
def test_video_logits_match_transformers(name):
  f = family(name)
  inputs = _video_batch(f)
  assert inputs["video_grid_thw"].tolist() == [[4, 4, 6], [2, 4, 6]]
  delta = _delta(f, inputs)
  print(f"{name} image + 8-frame video / 4-frame video: max |Δlogit| = {delta:.2e}")
  assert delta <= TOL


@pytest.mark.parametrize("name", ["qwen2_vl", "qwen2_5_vl"])
def test_video_mrope_positions_are_transformers_rope_index(name):
  f = family(name)
  inputs = _video_batch(f, "left")
  extra = {"second_per_grid_ts": inputs["second_per_grid_ts"]} if name == "qwen2_5_vl" else {}
  want, _ = f.hf_model.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"], inputs["image_grid_thw"],
                                            inputs["video_grid_thw"], attention_mask=inputs["attention_mask"], **extra)
  cfg, _, ids, _, valid = inline_inputs(f.loaded[0], inputs)
  step = 1.0 if cfg.tokens_per_second is None else np.float32(cfg.tokens_per_second) * np.float32(cfg.seconds_per_patch)
  is_media = (ids == cfg.image_token_id) | (ids == cfg.video_token_id)
  ours = np.asarray(mrope_positions(is_media, valid.astype(bool), (2, 3), step))
  real = valid.astype(bool)
  want = want.numpy().transpose(1, 2, 0)
  np.testing.assert_array_equal(ours[real], want[real])
  if name == "qwen2_5_vl":  # temporal patches 0..3 of the first video at 0, 1, 2, 4 past its start
    first = np.flatnonzero(ids[0] == cfg.video_token_id)[::6]
    assert (want[0, first, 0] - want[0, first[0], 0]).tolist() == [0, 1, 2, 4]


@pytest.mark.parametrize("name", ["qwen2_vl", "qwen2_5_vl"])
def test_video_greedy_generation_matches_transformers(name):
  """The clips' fps is one value per batch (cfg.seconds_per_patch, set from second_per_grid_ts)."""
  f = family(name)
  inputs = _video_batch(f, "left", seed=7)
  ref = _hf_generate(f, inputs)
  model, params, _ = f.loaded
  cfg = inline_inputs(model, inputs)[0]
  ours = gen.generate(VLM(dataclasses.replace(model.cfg, seconds_per_patch=cfg.seconds_per_patch)), params,
                      batch_from_hf_inputs(model, **inputs), max_new_tokens=NEW_TOKENS, eos_id=129, pad_id=0)
  assert len(set(ref.ravel().tolist())) > 3
  np.testing.assert_array_equal(ours, ref)


def test_videos_of_several_fps_in_one_batch_are_refused():
  f = family("qwen2_5_vl")
  inputs = dict(_video_batch(f))
  inputs["second_per_grid_ts"] = torch.tensor([0.5, 1.0])
  with pytest.raises(ValueError, match="one second_per_grid_ts per batch"):
    hf.logits_from_hf_inputs(*f.loaded[:2], **inputs)


def test_images_of_different_sizes_in_one_batch_are_refused():
  f = family("qwen2_5_vl")
  with pytest.raises(ValueError, match="one size per batch"):
    hf.logits_from_hf_inputs(*f.loaded[:2], **_images_batch(f, [(56, 84), (112, 84), (56, 84)]))


# ----------------------------------------------------------------------------- checkpoints
def test_save_then_from_pretrained_gives_same_logits(tmp_path):
  f = family("qwen2_5_vl")
  model, params, _ = f.loaded
  hf.save(model, params, tmp_path, hf_config=f.directory)
  reloaded = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path).eval()
  for inputs in (_images_batch(f, [(112, 84)] * 3), _video_batch(f)):
    with torch.no_grad():
      ref, again = f.hf_model(**inputs).logits.numpy(), reloaded(**inputs).logits.numpy()
    valid = inputs["attention_mask"].numpy().astype(bool)
    assert np.abs(again - ref)[valid].max() <= 1e-6  # float32 weights survive the trip exactly
    assert np.abs(again - hf.logits_from_hf_inputs(model, params, **inputs))[valid].max() <= TOL
  bare = hf.save(model, params, tmp_path / "bare")  # no source config.json: ours alone describes the model
  reloaded = Qwen2_5_VLForConditionalGeneration.from_pretrained(bare).eval()
  assert reloaded.config.vision_config.fullatt_block_indexes == [1, 3]
  assert reloaded.config.vision_config.window_size == 56 and reloaded.config.vision_config.tokens_per_second == 2
  inputs = _video_batch(f)
  with torch.no_grad():
    assert np.abs(reloaded(**inputs).logits.numpy() - f.hf_model(**inputs).logits.numpy()).max() <= 1e-6


def test_4x_and_5x_key_layouts_load_the_same_weights(tmp_path):
  f = family("qwen2_5_vl")
  stored = load_file(f.directory / "model.safetensors")
  assert any(k.startswith("visual.blocks.0.mlp.gate_proj") for k in stored)
  assert any(k.startswith("model.layers.") for k in stored) and "lm_head.weight" in stored
  to_5x = lambda k: ("model." + k if k.startswith("visual.") else  # noqa: E731
                     k.replace("model.", "model.language_model.", 1) if k.startswith("model.") else k)
  d = tmp_path / "5x"
  d.mkdir()
  shutil.copy(f.directory / "config.json", d / "config.json")
  save_file({to_5x(k): v for k, v in stored.items()}, d / "model.safetensors", metadata={"format": "pt"})
  assert any(k.startswith("model.visual.") for k in load_file(d / "model.safetensors"))
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, hf.load(d, dtype="float32")[1]),
               jax.tree.map(np.asarray, f.loaded[1]))


# Published config.json fields (Qwen/Qwen2.5-VL-{3B,7B,72B}-Instruct) and parameter counts.
_VISION = dict(depth=32, hidden_size=1280, hidden_act="silu", num_heads=16, patch_size=14, spatial_merge_size=2,
               temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2)
_TEXT = dict(rms_norm_eps=1e-6, hidden_act="silu", rope_parameters=dict(rope_type="default", rope_theta=1e6,
                                                                         mrope_section=[16, 24, 24]))
REAL = {
    "qwen2_5_vl_3b": (3.75e9, dict(intermediate_size=3420, out_hidden_size=2048), dict(
        vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
        num_key_value_heads=2), True),
    "qwen2_5_vl_7b": (8.29e9, dict(intermediate_size=3420, out_hidden_size=3584), dict(
        vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
        num_key_value_heads=4), False),
    "qwen2_5_vl_72b": (73.4e9, dict(intermediate_size=3456, out_hidden_size=8192), dict(
        vocab_size=152064, hidden_size=8192, intermediate_size=29568, num_hidden_layers=80, num_attention_heads=64,
        num_key_value_heads=8), False),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_configs_give_the_presets_of_the_published_size(name):
  size, vision, text, tie = REAL[name]
  hf_cfg = Qwen2_5_VLConfig(vision_config=dict(_VISION, **vision), text_config=dict(_TEXT, **text),
                            tie_word_embeddings=tie, image_token_id=151655, video_token_id=151656)
  cfg, fam = config_json.vlm_config(hf_cfg)
  assert fam == "qwen2_5_vl" and cfg == presets.get(name)
  abstract = jax.eval_shape(lambda: VLM(cfg).init(jax.random.key(0), *dummy_inputs(cfg, 1, 4))["params"])
  n = count_params(abstract)
  print(f"{name}: {n:,} parameters")
  assert cfg.num_image_tokens == 256 and abs(n - size) / size < 0.005, n
