"""HF import/export against transformers (PyTorch, CPU).

On tiny random PaliGemma (Gemma), PaliGemma 2 (Gemma2), SmolVLM (Idefics3), Gemma 3 and Qwen2-VL checkpoints
(tests/hf_families.py: transformers' own classes, every weight randomised, real processors),
and on the real families' config.json files at full size without weights.
"""
import contextlib
import dataclasses
import json
import shutil
import struct
import weakref
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import pytest
import safetensors
import torch
from flax.traverse_util import flatten_dict
from jax.sharding import PartitionSpec as P
from safetensors.torch import load_file, save_file
from transformers import (Gemma3Config, Gemma3ForConditionalGeneration, Idefics3Config,
                          Idefics3ForConditionalGeneration, PaliGemmaConfig, PaliGemmaForConditionalGeneration,
                          Qwen2VLConfig, Qwen2VLForConditionalGeneration)

from leaml_jax import generate as gen
from leaml_jax import sharding as shd
from leaml_jax.errors import CheckpointError
from leaml_jax.models import hf, presets
from leaml_jax.models.hf import config_json, param_keys
from leaml_jax.models.vlm import VLM, dummy_inputs
from tests.hf_batches import batch_from_hf_inputs
from tests.hf_families import GEMMA3_WINDOW, TEXT, VISION, WINDOW, family, images, words

TOL = 1e-4      # max |Δlogit| in float32
NEW_TOKENS = 16
NAMES = ["paligemma", "paligemma2", "smolvlm", "gemma3", "qwen2_vl"]
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:transformers")


# ----------------------------------------------------------------------------- parity
@pytest.mark.parametrize("name", NAMES)
def test_logits_match_transformers(name):
  f = family(name)
  ref, ours, valid = f.logits
  assert ref.shape == ours.shape and (~valid).any()  # padded batch
  delta = np.abs(ref - ours)[valid].max()
  print(f"{name}: max |Δlogit| = {delta:.2e} over {valid.sum()} positions (|logit| up to {np.abs(ref).max():.1f})")
  assert delta <= TOL
  if name == "paligemma2":
    assert valid.sum(axis=1).max() > WINDOW + 10  # the local layers really cut attention
  if name == "gemma3":  # two images in a row; local layers cut attention, image blocks too
    assert valid.sum(axis=1).max() > 2 * f.hf_model.config.mm_tokens_per_image > 3 * GEMMA3_WINDOW
  if name != "qwen2_vl":  # its processor needs torchvision; the fixture saves none
    assert type(f.loaded[2]).__name__ == type(f.processor).__name__  # processor files -> a processor


@pytest.mark.parametrize("name", NAMES)
def test_greedy_generation_matches_transformers(name):
  f = family(name)
  inputs = f.batch("generate", "left")
  V = f.hf_model.config.text_config.vocab_size
  with torch.no_grad():
    ref = f.hf_model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                              eos_token_id=V + 1, pad_token_id=0)  # an id no model emits: no early stop
  ref = ref[:, inputs["input_ids"].shape[1]:].numpy()
  model, params, _ = f.loaded
  batch = batch_from_hf_inputs(model, **inputs)
  ours = gen.generate(model, params, batch, max_new_tokens=NEW_TOKENS, eos_id=V + 1, pad_id=0)
  assert ref.shape == (2, NEW_TOKENS) and len(set(ref.ravel().tolist())) > 3
  np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("name", NAMES)
def test_save_then_from_pretrained_gives_same_logits(name, tmp_path):
  f = family(name)
  model, params, processor = f.loaded
  hf.save(model, params, tmp_path, hf_config=f.directory)
  reloaded = type(f.hf_model).from_pretrained(tmp_path).eval()
  ref, ours, valid = f.logits
  inputs = f.batch("logits", "left" if name == "paligemma2" else "right")
  with torch.no_grad():
    again = reloaded(**inputs).logits.numpy()
  assert np.abs(again - ref)[valid].max() <= 1e-6  # float32 weights survive the trip exactly
  assert np.abs(again - ours)[valid].max() <= TOL
  assert (tmp_path / "tokenizer.json").is_file() or name == "qwen2_vl"  # processor files copied from the source
  if name != "paligemma":
    return
  # no source config, several shard files: the image token becomes the out-of-vocabulary id V
  bare = hf.save(model, params, tmp_path / "bare", max_shard_bytes=100_000)
  assert len(list(bare.glob("model-*.safetensors"))) >= 3 and not (bare / "tokenizer.json").exists()
  reloaded = type(f.hf_model).from_pretrained(bare).eval()
  V = reloaded.config.text_config.vocab_size
  assert reloaded.config.image_token_id == V
  ids = inputs["input_ids"].clone()
  ids[ids == f.processor.image_token_id] = V
  with torch.no_grad():
    again = reloaded(**{**inputs, "input_ids": ids}).logits.numpy()
  assert np.abs(again - ref)[valid].max() <= 1e-6
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, hf.load(bare, dtype="float32")[1]),
               jax.tree.map(np.asarray, params))


# ----------------------------------------------------------------------------- layouts, dtypes, mesh
def rewrite(src: Path, dst: Path, rename=lambda k: k, edit=lambda d: d, dtype=None):
  dst.mkdir()
  shutil.copy(src / "config.json", dst / "config.json")
  tensors = {rename(k): v if dtype is None else v.to(dtype) for k, v in load_file(src / "model.safetensors").items()}
  save_file(edit(tensors), dst / "model.safetensors", metadata={"format": "pt"})
  return dst


def test_4x_5x_layouts_and_bf16_load_the_same_weights(tmp_path):
  f = family("paligemma2")
  stored = load_file(f.directory / "model.safetensors")
  layout_4x = lambda k: k.replace("vision_tower.", "vision_tower.vision_model.")  # noqa: E731
  layout_5x = lambda k: ("lm_head." + k[len("language_model.lm_head."):] if k.startswith("language_model.lm_head.")  # noqa: E731
                         else "model." + k.replace("language_model.model.", "language_model."))
  assert any(k.startswith("language_model.model.") for k in stored)
  base = jax.tree.map(np.asarray, f.loaded[1])
  unused_head = lambda t: {**t, "vision_tower.vision_model.head.probe": torch.zeros(1, 1, 32)}  # noqa: E731
  for name, rename in (("4x", layout_4x), ("5x", layout_5x)):
    d = rewrite(f.directory, tmp_path / name, rename, edit=unused_head if name == "4x" else lambda t: t)
    keys = list(load_file(d / "model.safetensors"))
    assert any(k.startswith("vision_tower.vision_model." if name == "4x" else "model.language_model.") for k in keys)
    _, params, processor = hf.load(d, dtype="float32")
    assert processor is None  # config.json + weights only
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, params), base)
  d = rewrite(f.directory, tmp_path / "bf16", dtype=torch.bfloat16)
  _, params, _ = hf.load(d, dtype="float32")
  want = stored["language_model.model.layers.1.mlp.up_proj.weight"].to(torch.bfloat16).float().numpy().T
  got = np.asarray(params["llm"]["layers"]["mlp"]["up_proj"]["kernel"][1])
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, want)


@contextlib.contextmanager
def counting_reads():
  """Wraps safetensors.safe_open: counts reads and how many read tensors are still alive at each read."""
  real_open, live, reads = safetensors.safe_open, [], {"calls": 0, "most_alive": 0}

  class Counting:
    def __init__(self, *args, **kwargs):
      self.file = real_open(*args, **kwargs)

    def __enter__(self):
      self.file.__enter__()
      return self

    def __exit__(self, *exc):
      return self.file.__exit__(*exc)

    def get_tensor(self, key):
      reads["calls"] += 1
      reads["most_alive"] = max(reads["most_alive"], sum(r() is not None for r in live))
      tensor = self.file.get_tensor(key)
      live.append(weakref.ref(tensor))
      return tensor

  safetensors.safe_open = Counting
  try:
    yield reads
  finally:
    safetensors.safe_open = real_open


def test_sharded_checkpoint_loads_onto_8_device_mesh(tmp_path):
  f = family("paligemma2")
  f.hf_model.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="100KB")
  assert len(list(tmp_path.glob("*.safetensors"))) >= 3 and (tmp_path / "model.safetensors.index.json").is_file()
  mesh = shd.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  with counting_reads() as reads:
    model, params, processor = hf.load(tmp_path, mesh=mesh, dtype="float32")
  assert processor is None
  n_tensors = sum(len(header(file)[1]) - 1 for file in tmp_path.glob("*.safetensors"))
  assert reads["calls"] == n_tensors and reads["most_alive"] <= 1  # tensor by tensor, each once
  emb = params["llm"]["embedder"]["embedding"]   # [vocab, embed] -> (tensor, fsdp)
  q = params["llm"]["layers"]["attn"]["q_proj"]["kernel"]  # [layers, embed, heads, head_dim]
  assert emb.sharding.spec == P("tensor", "fsdp") and len(emb.sharding.device_set) == 8
  assert q.sharding.spec == P(None, "fsdp", "tensor", None)
  assert emb.addressable_shards[0].data.shape == (1280 // 2, 48 // 2)
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, params),
               jax.tree.map(np.asarray, f.loaded[1]))
  ref, _, valid = f.logits
  ours = hf.logits_from_hf_inputs(model, params, **f.batch("logits", "left"))
  assert np.abs(ours - ref)[valid].max() <= TOL


# ----------------------------------------------------------------------------- real sizes (no weights)
# config.json of google/paligemma-3b-pt-224, google/paligemma2-3b-pt-224,
# HuggingFaceTB/SmolVLM-256M-Instruct, google/gemma-3-4b-it and Qwen/Qwen2-VL-2B-Instruct, as sparse
# as on the hub (transformers fills the defaults).
_SIGLIP = dict(hidden_size=1152, intermediate_size=4304, num_attention_heads=16, num_hidden_layers=27,
               patch_size=14, projection_dim=2048, vision_use_head=False, model_type="siglip_vision_model")
REAL = {
    "paligemma_3b": (PaliGemmaConfig, PaliGemmaForConditionalGeneration, dict(
        hidden_size=2048, projection_dim=2048, image_token_index=257152, vision_config=_SIGLIP,
        text_config=dict(model_type="gemma", hidden_size=2048, intermediate_size=16384, num_attention_heads=8,
                         num_hidden_layers=18, num_key_value_heads=1, vocab_size=257216))),
    "paligemma2_3b": (PaliGemmaConfig, PaliGemmaForConditionalGeneration, dict(
        hidden_size=2304, projection_dim=2304, image_token_index=257152, vision_config=dict(_SIGLIP, projection_dim=2304),
        text_config=dict(model_type="gemma2", hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                         num_attention_heads=8, num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256,
                         sliding_window=4096, vocab_size=257216, final_logit_softcapping=30.0,
                         attn_logit_softcapping=50.0, hidden_activation="gelu_pytorch_tanh"))),
    "smolvlm_256m": (Idefics3Config, Idefics3ForConditionalGeneration, dict(
        image_token_id=49190, scale_factor=4, tie_word_embeddings=False,
        text_config=dict(model_type="llama", head_dim=64, hidden_size=576, intermediate_size=1536,
                         num_attention_heads=9, num_hidden_layers=30, num_key_value_heads=3, rms_norm_eps=1e-5,
                         rope_theta=100000, vocab_size=49280, tie_word_embeddings=False),
        vision_config=dict(model_type="idefics3_vision", hidden_size=768, image_size=512, intermediate_size=3072,
                           num_attention_heads=12, num_hidden_layers=12, patch_size=16))),
    "gemma3_4b": (Gemma3Config, Gemma3ForConditionalGeneration, dict(
        boi_token_index=255999, eoi_token_index=256000, image_token_index=262144, mm_tokens_per_image=256,
        text_config=dict(model_type="gemma3_text", hidden_size=2560, intermediate_size=10240, num_hidden_layers=34,
                         rope_scaling=dict(factor=8.0, rope_type="linear"), sliding_window=1024),
        vision_config=dict(_SIGLIP, image_size=896))),
    "qwen2_vl_2b": (Qwen2VLConfig, Qwen2VLForConditionalGeneration, dict(
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, tie_word_embeddings=True,
        text_config=dict(hidden_size=1536, intermediate_size=8960, num_attention_heads=12, num_hidden_layers=28,
                         num_key_value_heads=2, rms_norm_eps=1e-6, vocab_size=151936, tie_word_embeddings=True,
                         rope_scaling=dict(type="mrope", mrope_section=[16, 24, 24]), rope_theta=1e6),
        vision_config=dict(depth=32, embed_dim=1280, mlp_ratio=4, num_heads=16, in_chans=3, hidden_size=1536,
                           patch_size=14, spatial_merge_size=2, spatial_patch_size=14, temporal_patch_size=2))),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_configs_give_the_presets_and_every_hf_tensor(name):
  config_cls, model_cls, fields = REAL[name]
  hf_cfg = config_cls(**fields)
  cfg, _ = config_json.vlm_config(hf_cfg)
  want = presets.get(name)
  assert cfg == (dataclasses.replace(want, image_token_id=49190) if name == "smolvlm_256m" else want)
  with torch.device("meta"):  # full-size module tree, no memory
    theirs = {param_keys.canonical(k): tuple(v.shape) for k, v in model_cls(hf_cfg).state_dict().items()}
  abstract = jax.eval_shape(lambda: VLM(cfg).init(jax.random.key(0), *dummy_inputs(cfg, 1, 4))["params"])
  ours = {}
  for path, leaf in flatten_dict(nn.meta.unbox(abstract)).items():
    keys, stacked, transform = param_keys.source(cfg, path)
    ours.update({k: param_keys.TRANSFORMS[transform][2](leaf.shape[1:] if stacked else leaf.shape) for k in keys})
  if cfg.lm.tie_embeddings:
    assert theirs.pop("lm_head.weight") == theirs["text.embed_tokens.weight"]
  assert ours == theirs


# ----------------------------------------------------------------------------- failures
def header(file: Path) -> tuple[int, dict]:
  n = struct.unpack("<Q", file.read_bytes()[:8])[0]
  return n, json.loads(file.read_bytes()[8:8 + n])


def test_broken_checkpoints_fail_naming_the_tensor(tmp_path):
  src = family("paligemma").directory
  up = "language_model.model.layers.1.mlp.up_proj.weight"

  d = rewrite(src, tmp_path / "truncated")
  n, meta = header(d / "model.safetensors")
  last = max((k for k in meta if k != "__metadata__"), key=lambda k: meta[k]["data_offsets"][1])
  cut = 8 + n + meta[last]["data_offsets"][0] + 4
  (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:cut])
  with pytest.raises(CheckpointError, match=f"truncated.*{last}"):
    hf.load(d)

  def shrink(t):
    t[up] = t[up][:-1]
    return t
  d = rewrite(src, tmp_path / "shape", edit=shrink)
  with pytest.raises(CheckpointError, match=rf"{up}.*\[95, 48\].*\[96, 48\]"):
    hf.load(d)
  d = rewrite(src, tmp_path / "missing", edit=lambda t: {k: v for k, v in t.items() if k != up})
  with pytest.raises(CheckpointError, match="lacks.*layers.1.mlp.up_proj.weight"):
    hf.load(d)
  d = rewrite(src, tmp_path / "extra", edit=lambda t: {**t, "language_model.model.layers.7.mlp.up_proj.weight": t[up].clone()})
  with pytest.raises(CheckpointError, match="layers.7.mlp.up_proj.weight"):
    hf.load(d)

  (tmp_path / "pickle").mkdir()
  shutil.copy(src / "config.json", tmp_path / "pickle")
  (tmp_path / "pickle" / "pytorch_model.bin").write_bytes(b"not read")
  with pytest.raises(FileNotFoundError, match="Only safetensors"):
    hf.load(tmp_path / "pickle")
  with pytest.raises(FileNotFoundError, match="does not exist"):
    hf.load(tmp_path / "nowhere" / "model")


def test_unsupported_configs_are_refused():
  text = dict(TEXT, model_type="llama", vocab_size=128)
  # a 19x19 patch grid: transformers' Idefics3 float32 bucketing puts some patches at the wrong position
  cfg = Idefics3Config(vision_config=dict(VISION, image_size=19 * 8), text_config=text, scale_factor=1)
  with pytest.raises(ValueError, match="position ids"):
    config_json.vlm_config(cfg)
  cfg = Idefics3Config(vision_config=dict(VISION, image_size=16 * 8), text_config=text, scale_factor=2)
  assert config_json.vlm_config(cfg)[0].vit.grid == (16, 16)
  rope = dict(text, rope_parameters=dict(rope_type="llama3", rope_theta=1e4, factor=8.0, low_freq_factor=1.0,
                                         high_freq_factor=4.0, original_max_position_embeddings=64))
  with pytest.raises(ValueError, match="RoPE type 'llama3'"):
    config_json.vlm_config(Idefics3Config(vision_config=VISION, text_config=rope, scale_factor=2))


def test_hub_id_offline_says_where_to_put_the_files(monkeypatch):
  import huggingface_hub
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
  with pytest.raises(FileNotFoundError, match="could not be fetched.*config.json and the \\*.safetensors"):
    hf.load("no-such-org/no-such-model")


def test_prefix_longer_than_sliding_window_matches_transformers():
  """PaliGemma 2 sliding layers: transformers ORs its bidirectional prefix block onto the sliding
  causal mask, so prefix tokens see the whole prefix; answer tokens and decoding see the window."""
  f = family("paligemma2")
  model, params, _ = f.loaded
  rng = np.random.default_rng(0)
  f.processor.tokenizer.padding_side = "right"
  kw = dict(images=images(rng, [(32, 32), (40, 24)]), text=["<image>" + words(rng, 12), "<image>" + words(rng, 3)],
            return_tensors="pt", padding="longest")
  inputs = f.processor(**kw, suffix=[words(rng, 20), words(rng, 4)])
  prefix = (inputs["token_type_ids"] == 0) & inputs["attention_mask"].bool()
  assert prefix.sum(axis=1).max() > WINDOW + 4 and (inputs["attention_mask"].sum(axis=1) > 2 * WINDOW).any()
  with torch.no_grad():
    ref = f.hf_model(**inputs).logits.numpy()
  ours = hf.logits_from_hf_inputs(model, params, **inputs)
  valid = inputs["attention_mask"].numpy().astype(bool)
  assert np.abs(ref - ours)[valid].max() <= TOL
  # greedy decoding after a long prefix (HF: sliding cache layers, mask without the prefix block)
  f.processor.tokenizer.padding_side = "left"
  prompts = f.processor(**kw)
  V = f.hf_model.config.text_config.vocab_size
  with torch.no_grad():
    ref = f.hf_model.generate(**prompts, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                              eos_token_id=V + 1, pad_token_id=0)[:, prompts["input_ids"].shape[1]:].numpy()
  ours = gen.generate(model, params, batch_from_hf_inputs(model, **prompts), max_new_tokens=NEW_TOKENS,
                      eos_id=V + 1, pad_id=0)
  np.testing.assert_array_equal(ours, ref)


def test_several_images_per_row_prefix_layout_matches_transformers():
  """PaliGemma with n images per prompt: our image [B,n,H,W,3] prefix (each image encoded alone,
  tokens in order) gives transformers' logits and greedy tokens."""
  f = family("paligemma")
  model, params, _ = f.loaded
  rng = np.random.default_rng(5)
  f.processor.tokenizer.padding_side = "right"
  imgs = [images(rng, [(32, 32), (40, 30)]), images(rng, [(20, 50), (32, 32)])]
  text = ["<image><image>" + words(rng, 4), "<image><image>" + words(rng, 2)]
  inputs = f.processor(images=imgs, text=text, suffix=[words(rng, 5), words(rng, 3)], return_tensors="pt",
                       padding="longest")
  assert (inputs["input_ids"] == f.processor.image_token_id).sum(axis=1).tolist() == [32, 32]
  with torch.no_grad():
    ref = f.hf_model(**inputs).logits.numpy()
  valid = inputs["attention_mask"].numpy().astype(bool)
  batch = batch_from_hf_inputs(model, **inputs)
  assert batch["image"].shape == (2, 2, 32, 32, 3)
  ours = np.asarray(model.apply({"params": params}, batch["image"], batch["text"], batch["mask_ar"],
                                batch["mask_input"])[0])
  N = 2 * model.cfg.num_image_tokens
  for b in range(2):
    n = int(batch["mask_input"][b].sum())
    assert np.abs(ours[b, :n] - ref[b, N:N + n]).max() <= TOL
  f.processor.tokenizer.padding_side = "left"
  prompts = f.processor(images=imgs, text=text, return_tensors="pt", padding="longest")
  V = f.hf_model.config.text_config.vocab_size
  with torch.no_grad():
    ref = f.hf_model.generate(**prompts, max_new_tokens=8, min_new_tokens=8, do_sample=False,
                              eos_token_id=V + 1, pad_token_id=0)[:, prompts["input_ids"].shape[1]:].numpy()
  ours = gen.generate(model, params, batch_from_hf_inputs(model, **prompts), max_new_tokens=8,
                      eos_id=V + 1, pad_id=0)
  np.testing.assert_array_equal(ours, ref)
