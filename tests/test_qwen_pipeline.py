"""Qwen2.5-VL in the data pipeline and the stages, against transformers (PyTorch, CPU, offline).

A tiny random Qwen2.5-VL with a byte-level BPE tokenizer (trained here on the synthetic worlds'
text, Qwen's special tokens and chat template added; no <bos>, as Qwen's) and its image processor
is saved with `save_pretrained`. Our encoder's batches are compared with what transformers'
tokenizer, chat template and image processor give (laid out as Qwen2_5_VLProcessor lays them out:
tests/hf_families.py `Qwen2VLInputs`, since that processor needs torchvision, which does not
install against this CPU build of torch), our logits and loss with what its model computes, and a
`--config.model.path` run goes through the stages with it as base model and as caption teacher
(captions == transformers' greedy `generate` on the same videos).
"""
import functools
import json
import os
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from flax import traverse_util
from PIL import Image
from transformers import (PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLConfig,
                          Qwen2VLForConditionalGeneration)
from transformers import Qwen2VLImageProcessorPil

from leaml_jax import losses, main, neurons
from leaml_jax.data import encoders, pipeline, prompts, tokenizer
from leaml_jax.models import hf
from leaml_jax.stages import artifacts, context
from tests.hf_families import Qwen2VLInputs, randomise
from tests.test_hf_pipeline import _config, check_imported_run

TOL = 1e-4
TEXT_LEN = 96
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:transformers", "ignore::UserWarning")

# Qwen2-VL / Qwen2.5-VL-Instruct's chat template (add_vision_id left in).
QWEN_CHAT = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
            "<|video_pad|>"]


def qwen_tokenizer():
  bpe = tokenizer.synthetic_tokenizer(vocab_size=400, num_per_domain=30)
  tok = PreTrainedTokenizerFast(tokenizer_object=bpe.tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"})
  tok.add_special_tokens({"additional_special_tokens": SPECIALS})
  tok.chat_template = QWEN_CHAT
  return tok


MODELS = {"qwen2_5_vl": (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration),
          "qwen2_vl": (Qwen2VLConfig, Qwen2VLForConditionalGeneration)}


@functools.lru_cache(maxsize=None)
def qwen_bpe(family: str = "qwen2_5_vl") -> Path:
  """Directory with a tiny Qwen2.5-VL (or Qwen2-VL) (config + safetensors), its tokenizer, image
  processor and chat template. 14-px patches, 2x2 merged; Qwen2.5-VL: two tower blocks, the first
  within 56-px windows (an 84-px image has four, three cut by its edges), the second over the whole
  image; tokens_per_second 2 (as the released checkpoints). Small, so the pipeline run stays short."""
  tok = qwen_tokenizer()
  ip = Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=112 * 112)
  ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIALS}
  V = 512
  assert len(tok) <= V and tok.bos_token_id is None
  text = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
              vocab_size=V, rope_parameters=dict(rope_type="default", rope_theta=1e6, mrope_section=[2, 2, 2]),
              pad_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], bos_token_id=None)
  vision = dict(depth=2, hidden_size=32, intermediate_size=40, num_heads=4, out_hidden_size=48, patch_size=14,
                window_size=56, fullatt_block_indexes=[1], tokens_per_second=2)
  if family == "qwen2_vl":
    vision = dict(depth=2, embed_dim=32, hidden_size=48, num_heads=4, mlp_ratio=2, patch_size=14)
  config_cls, model_cls = MODELS[family]
  cfg = config_cls(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                         video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                         tie_word_embeddings=False, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
  model = randomise(model_cls(cfg), seed=23)
  directory = Path(tempfile.mkdtemp(prefix=f"hf_{family}_bpe_"))
  model.save_pretrained(directory, safe_serialization=True)
  tok.save_pretrained(directory)
  ip.save_pretrained(directory)
  (directory / "chat_template.jinja").write_text(QWEN_CHAT)
  return directory


@functools.lru_cache(maxsize=None)
def reference(directory: Path, family: str = "qwen2_5_vl"):
  """transformers' model and the processor's output built from its tokenizer + image processor."""
  model = MODELS[family][1].from_pretrained(directory).eval()
  tok = PreTrainedTokenizerFast.from_pretrained(directory)
  tok.padding_side = "right"
  return model, Qwen2VLInputs(Qwen2VLImageProcessorPil.from_pretrained(directory), tok,
                              with_seconds=family == "qwen2_5_vl")


def _chat(tok, prompt, target=None, media="image"):
  """The chat template's text (transformers' apply_chat_template): user turn, + the answer and <|im_end|>."""
  user = {"role": "user", "content": [{"type": media}, {"type": "text", "text": prompt}]}
  text = tok.apply_chat_template([user], add_generation_prompt=True, tokenize=False)
  return text if target is None else text + target + "<|im_end|>"


def _bicubic(image, size):
  return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))


def _ours(model, params, batch):
  logits = np.asarray(model.apply({"params": params}, batch["image"], batch["text"], batch["mask_ar"],
                                  batch["mask_input"])[0])
  loss, _ = losses.token_ce(logits, batch["text"], batch["mask_loss"])
  return logits, float(loss)


def _labels(inputs, tok, targets):
  """HF labels: -100 but on each row's answer tokens and its <|im_end|> (the last real tokens)."""
  labels = torch.full_like(inputs["input_ids"], -100)
  for b, t in enumerate(targets):
    n, k = int(inputs["attention_mask"][b].sum()), len(tok(t + "<|im_end|>", add_special_tokens=False)["input_ids"])
    labels[b, n - k:n] = inputs["input_ids"][b, n - k:n]
  return labels


def _check_rows(batch, inputs, tok, targets):
  for b, target in enumerate(targets):
    real = inputs["attention_mask"][b].numpy().astype(bool)
    ours = batch["mask_input"][b].astype(bool)
    np.testing.assert_array_equal(batch["text"][b][ours], inputs["input_ids"][b][real])
    assert (batch["mask_ar"][b] == 1).all()  # causal throughout, as transformers' Qwen2.5-VL
    answer = tok(target + "<|im_end|>", add_special_tokens=False)["input_ids"]
    np.testing.assert_array_equal(batch["text"][b][batch["mask_loss"][b] == 1], answer)


# ----------------------------------------------------------------------------- encoders
def _assert_transformers_logits_and_loss(what, model, params, batch, ref_model, inputs, hf_tok, targets):
  """Our logits on every real position of each row and our loss equal transformers' on its inputs."""
  with torch.no_grad():
    out = ref_model(**inputs, labels=_labels(inputs, hf_tok, targets))
  logits, loss = _ours(model, params, batch)
  delta = max(np.abs(logits[b, :int(batch["mask_input"][b].sum())]
                     - out.logits[b, :int(inputs["attention_mask"][b].sum())].numpy()).max() for b in range(len(logits)))
  print(f"{what}: max |Δlogit| = {delta:.2e}, loss {loss:.6f} vs {float(out.loss):.6f}")
  assert delta <= TOL and abs(loss - float(out.loss)) <= 1e-5


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl"])
def test_image_batch_is_the_processors_and_gives_transformers_logits_and_loss(family):
  """Two stills, 84x84 (the bucket: exactly the processor's) and 40x70 (resized to the bucket)."""
  directory = qwen_bpe(family)
  ref_model, ref = reference(directory, family)
  model, params, processor = hf.load(directory, dtype="float32")
  assert type(processor).__name__ in ("QwenVLParts", "Qwen2_5_VLProcessor", "Qwen2VLProcessor")
  tok = tokenizer.HFTokenizer(processor.tokenizer, processor=processor)
  rng = np.random.default_rng(0)
  records = [{"image": rng.integers(0, 256, (84, 84, 3), dtype=np.uint8), "prompt": "Is there a polyp?",
              "target": "yes", "id": "a"},
             {"image": rng.integers(0, 256, (40, 70, 3), dtype=np.uint8),
              "prompt": "Which way does the ball move? A. up B. left C. right D. down", "target": "left", "id": "b"}]
  ds = pipeline.make_dataset(records, encoders.encoder_for(tok, TEXT_LEN, image_size=84), batch_size=2, seed=0,
                             shuffle=False, num_epochs=1, prefetch=0)
  batch = next(iter(ds))
  assert batch["image"].shape == (2, 84, 84, 6) and batch["text"].shape == (2, TEXT_LEN)
  hf_tok = ref.tokenizer
  targets = [r["target"] for r in records]
  inputs = ref(images=[[records[0]["image"]], [_bicubic(records[1]["image"], 84)]],
               text=[_chat(hf_tok, r["prompt"], r["target"]) for r in records])
  _check_rows(batch, inputs, hf_tok, targets)
  assert (inputs["input_ids"] == processor.image_token_id).sum() == 2 * 9  # 84x84: 6x6 patches, 2x2 merged
  ip = ref.image_processor  # pixels: the bucket image normalised by the processor's mean / std
  for b, image in enumerate([records[0]["image"], _bicubic(records[1]["image"], 84)]):
    want = (image / 255.0 - np.array(ip.image_mean)) / np.array(ip.image_std)
    for frame in (batch["image"][b][..., :3], batch["image"][b][..., 3:]):
      np.testing.assert_allclose(frame, want, atol=1e-5)
  _assert_transformers_logits_and_loss(f"{family} pipeline image batch", model, params, batch, ref_model, inputs,
                                       hf_tok, targets)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl"])
def test_clips_are_videos_and_give_transformers_logits_and_loss(family):
  """A 4-frame clip (2 temporal patches) and a 3-frame one (its last frame repeated, as the video
  processor pads); Qwen2.5-VL's temporal M-RoPE step at 2 fps (second_per_grid_ts 1.0)."""
  directory = qwen_bpe(family)
  ref_model, ref = reference(directory, family)
  model, params, processor = hf.load(directory, dtype="float32")
  tok = tokenizer.HFTokenizer(processor.tokenizer, processor=processor)
  rng = np.random.default_rng(1)
  clips = [rng.integers(0, 256, (4, 56, 56, 3), dtype=np.uint8), rng.integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)]
  prompts_ = ["What happens next?", "Where does the ball go?"]
  targets = ["the ball goes left", "up"]
  encoder = encoders.encoder_for(tok, TEXT_LEN, image_size=56)
  rows = [encoder.encode_example(c, p, t, str(i)) for i, (c, p, t) in enumerate(zip(clips, prompts_, targets))]
  batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
  assert batch["image"].shape == (2, 2, 56, 56, 6)
  hf_tok = ref.tokenizer
  second = [_bicubic(f, 56) for f in clips[1]]
  inputs = ref(videos=[[clips[0]], [np.stack(second + second[-1:])]], fps=2.0,
               text=[_chat(hf_tok, p, t, media="video") for p, t in zip(prompts_, targets)])
  _check_rows(batch, inputs, hf_tok, targets)
  _assert_transformers_logits_and_loss(f"{family} pipeline video batch", model, params, batch, ref_model, inputs,
                                       hf_tok, targets)


def test_qwen_encoder_needs_a_bucket_and_fits_the_prompt():
  directory = qwen_bpe()
  processor = hf.processor(directory)
  with pytest.raises(ValueError, match="image_size"):
    encoders.HFEncoder(processor, TEXT_LEN)
  encoder = encoders.HFEncoder(processor, 40, image_size=56)
  with pytest.raises(Exception, match="text_len"):
    encoder.encode_example(np.zeros((56, 56, 3), np.uint8), "Is there a polyp?", "yes", "x")


def test_relevance_mask_selects_whole_qwen_neurons():
  """Relevance on a Qwen2.5-VL batch covers the tower's SwiGLU MLP (with biases) and the LM's MLP; the
  param mask holds each selected neuron whole (gate / up column and bias entry, down row) and nothing
  else (the down bias, attention, norms: 0), and a gradient through `mask_gradients` reaches exactly
  those entries."""
  directory = qwen_bpe()
  model, params, processor = hf.load(directory, dtype="float32")
  tok = tokenizer.HFTokenizer(processor.tokenizer, processor=processor)
  encoder = encoders.encoder_for(tok, TEXT_LEN, image_size=84)
  rng = np.random.default_rng(4)
  rows = [encoder.encode_example(rng.integers(0, 256, (84, 84, 3), dtype=np.uint8), "Is there a polyp?", t, t)
          for t in ("yes", "no")]
  batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
  scores = neurons.relevance(model, params, [batch], score="taylor")
  vision, lm = "img/Transformer/encoderblock/mlp", "llm/layers/mlp"
  assert sorted(scores) == [vision, lm] and scores[vision].shape == (2, 40) and scores[lm].shape == (3, 96)
  masks, tree = neurons.select(scores, 0.25, per_layer=True, params=params)
  sel = {k: masks[k].astype(bool) for k in (vision, lm)}
  assert all(0 < m.sum() < m.size for m in sel.values())

  def loss(p):
    logits, _ = model.apply({"params": neurons.mask_gradients(p, tree)}, batch["image"], batch["text"],
                            batch["mask_ar"], batch["mask_input"])
    return losses.token_ce(logits, batch["text"], batch["mask_loss"])[0]

  grads = jax.grad(loss)(params)
  flat_tree, flat_grad = (traverse_util.flatten_dict(t, sep="/") for t in (tree, grads))
  for path, p in traverse_util.flatten_dict(params, sep="/").items():
    m = np.broadcast_to(np.asarray(flat_tree[path]), p.shape)
    module, _, leaf = path.rpartition("/")
    module, _, proj = module.rpartition("/")
    if module in sel and proj in ("gate_proj", "up_proj"):  # [Ly, D, F] kernel, [Ly, F] bias: neuron j = last axis
      want = np.broadcast_to(sel[module][:, None, :] if leaf == "kernel" else sel[module], p.shape)
    elif module in sel and proj == "down_proj" and leaf == "kernel":  # [Ly, F, D]: neuron j = row j
      want = np.broadcast_to(sel[module][:, :, None], p.shape)
    else:
      want = np.zeros(p.shape, bool)
    np.testing.assert_array_equal(m, want.astype(np.float32), err_msg=path)
    g = np.asarray(flat_grad[path])
    assert (g[~want] == 0).all(), path  # masked entries get no gradient
    if want.any():
      assert (g[want] != 0).mean() > 0.9, path  # the selected neurons' entries do


# ----------------------------------------------------------------------------- stages
@pytest.fixture(scope="module")
def model_path_run(tmp_path_factory):
  """The synthetic sports clips (4 frames each: Qwen videos of 2 temporal patches) at 56 px, the tiny
  Qwen2.5-VL as base and as teacher."""
  directory = qwen_bpe()
  workdir = str(tmp_path_factory.mktemp("qwen_model_path_run"))
  cfg = _config(directory, **{"data.frames": "blocks", "data.image_size": "56", "data.text_len": "128",
                              "data.num_train": "8", "data.num_test": "1", "eval.batch_size": "8"})
  timings = main.main(cfg, workdir)
  return directory, cfg, workdir, timings


def test_model_path_run_imports_base_and_adapts_it(model_path_run):
  ctx, params = check_imported_run(*model_path_run)
  assert ctx.encoder.family == "qwen2_vl" and tuple(ctx.encoder.bucket) == (56, 56)
  vqa = jax.tree.map(np.asarray, ctx.load_params("vqa"))
  changed = jax.tree.leaves(jax.tree.map(lambda a, b: not np.array_equal(a, b), vqa, params))
  assert any(changed)


def test_teacher_captions_are_transformers_greedy_captions(model_path_run):
  directory, cfg, workdir, _ = model_path_run
  rows = [json.loads(line) for line in open(os.path.join(workdir, "data", "captions.jsonl"))]
  ctx = context.Context(cfg, workdir)
  pool = artifacts.examples(ctx, "unlabeled")
  assert all(np.shape(ex["image"]) == (4, 56, 56, 3) for ex in pool)
  ref_model, ref = reference(directory)
  ref.tokenizer.padding_side = "left"
  try:
    text = _chat(ref.tokenizer, prompts.caption_prompt("qwen2_vl"), media="video")
    inputs = ref(videos=[[ex["image"]] for ex in pool], fps=2.0, text=[text] * len(pool))
  finally:
    ref.tokenizer.padding_side = "right"
  with torch.no_grad():
    out = ref_model.generate(**inputs, max_new_tokens=6, do_sample=False)[:, inputs["input_ids"].shape[1]:]
  want = [ref.tokenizer.decode(o, skip_special_tokens=True).strip() for o in out]
  assert {r["image_id"]: r["caption"] for r in rows} == {ex["id"]: w for ex, w in zip(pool, want) if w}
  assert len(set(want)) > 1
