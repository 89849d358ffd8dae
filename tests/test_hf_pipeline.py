"""Real families in the data pipeline and the stages, against transformers (PyTorch, CPU, offline).

A tiny random PaliGemma with a byte-level BPE tokenizer (trained here on the synthetic worlds'
text, so every prompt encodes) and a SigLIP image processor is saved with `save_pretrained`;
our encoder's batches are compared with what its processor returns, our logits and loss with
what its model computes, and a `--config.model.path` run goes through the stages with it as
base model and as caption teacher (captions == transformers' greedy `generate`).
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
from transformers import (PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor,
                          PreTrainedTokenizerFast, SiglipImageProcessor)

from leaml_jax import config_lib, losses, main
from leaml_jax.data import encoders, pipeline, tokenizer
from leaml_jax.models import hf
from leaml_jax.stages import artifacts, context
from tests.hf_families import VISION, family, randomise, words

TOL = 1e-4
TEXT_LEN = 64
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:transformers")


@functools.lru_cache(maxsize=None)
def paligemma_bpe() -> Path:
  """Directory with a tiny PaliGemma (config + safetensors) and its processor files."""
  bpe = tokenizer.synthetic_tokenizer(vocab_size=400, num_per_domain=30)
  tok = PreTrainedTokenizerFast(tokenizer_object=bpe.tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
  ip = SiglipImageProcessor(size={"height": 32, "width": 32})
  ip.image_seq_length = 16
  processor = PaliGemmaProcessor(image_processor=ip, tokenizer=tok)
  V = 1664
  assert len(processor.tokenizer) <= V
  text = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=1, head_dim=12, model_type="gemma", vocab_size=V)
  cfg = PaliGemmaConfig(vision_config=dict(VISION, vision_use_head=False), text_config=text,
                        image_token_index=processor.image_token_id, vocab_size=V, projection_dim=48, hidden_size=48)
  model = randomise(PaliGemmaForConditionalGeneration(cfg), seed=7)
  directory = Path(tempfile.mkdtemp(prefix="hf_paligemma_bpe_"))
  model.save_pretrained(directory, safe_serialization=True)
  processor.save_pretrained(directory)
  return directory


@functools.lru_cache(maxsize=None)
def reference(directory: Path):
  model = PaliGemmaForConditionalGeneration.from_pretrained(directory).eval()
  return model, PaliGemmaProcessor.from_pretrained(directory)


def _records(rng):
  return [{"image": rng.integers(0, 256, (40, 56, 3), dtype=np.uint8), "prompt": "Is there a polyp?",
           "target": "yes", "id": "a"},
          {"image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
           "prompt": "Which way does the ball move? A. up B. left C. right D. down", "target": "left", "id": "b"}]


def _ours(model, params, batch):
  logits = np.asarray(model.apply({"params": params}, batch["image"], batch["text"], batch["mask_ar"],
                                  batch["mask_input"])[0])
  loss, _ = losses.token_ce(logits, batch["text"], batch["mask_loss"])
  return logits, float(loss)


# ----------------------------------------------------------------------------- encoders
def test_paligemma_batch_is_the_processors_and_gives_transformers_logits_and_loss():
  directory = paligemma_bpe()
  ref_model, processor = reference(directory)
  model, params, ours_processor = hf.load(directory, dtype="float32")
  tok = tokenizer.HFTokenizer(ours_processor.tokenizer, processor=ours_processor)
  records = _records(np.random.default_rng(0))
  ds = pipeline.make_dataset(records, encoders.encoder_for(tok, TEXT_LEN), batch_size=2, seed=0, shuffle=False,
                             num_epochs=1, prefetch=0)
  batch = next(iter(ds))
  processor.tokenizer.padding_side = "right"
  inputs = processor(images=[r["image"] for r in records], text=["<image>" + r["prompt"] for r in records],
                     suffix=[r["target"] for r in records], return_tensors="pt", padding="longest")
  N, img = 16, processor.image_token_id
  assert batch["image"].shape == (2, 32, 32, 3) and batch["text"].shape == (2, TEXT_LEN)
  np.testing.assert_array_equal(batch["image"], inputs["pixel_values"].numpy().transpose(0, 2, 3, 1))
  for b in range(2):
    real = inputs["attention_mask"][b].numpy().astype(bool)
    ours = batch["mask_input"][b].astype(bool)
    np.testing.assert_array_equal(np.r_[[img] * N, batch["text"][b][ours]], inputs["input_ids"][b][real])
    np.testing.assert_array_equal(batch["mask_ar"][b][ours], inputs["token_type_ids"][b][real][N:])
    np.testing.assert_array_equal(batch["mask_loss"][b][ours], (inputs["labels"][b][real][N:] != -100))
  assert batch["text"][0][0] == processor.tokenizer.bos_token_id and batch["mask_loss"].sum(1).min() >= 2
  with torch.no_grad():
    out = ref_model(**inputs)
  logits, loss = _ours(model, params, batch)
  for b in range(2):
    n = int(batch["mask_input"][b].sum())
    assert np.abs(logits[b, :n] - out.logits[b, N:N + n].numpy()).max() <= TOL
  assert abs(loss - float(out.loss)) <= 1e-5  # loss on the answer (+ eos) only, as HF's labels


def test_paligemma_frames_are_image_token_blocks_in_order():
  directory = paligemma_bpe()
  ref_model, processor = reference(directory)
  model, params, ours_processor = hf.load(directory, dtype="float32")
  tok = tokenizer.HFTokenizer(ours_processor.tokenizer, processor=ours_processor)
  rng = np.random.default_rng(1)
  clip = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
  ex = encoders.encoder_for(tok, TEXT_LEN).encode_example(clip, "What happens next?", "the ball goes left", "clip")
  assert ex["image"].shape == (3, 32, 32, 3)
  inputs = processor(images=[list(clip)], text=["<image>" * 3 + "What happens next?"], suffix=["the ball goes left"],
                     return_tensors="pt")
  with torch.no_grad():
    out = ref_model(**inputs)
  batch = {k: v[None] for k, v in ex.items()}
  logits, loss = _ours(model, params, batch)
  n, N = int(ex["mask_input"].sum()), 3 * 16
  np.testing.assert_array_equal(np.r_[[processor.image_token_id] * N, ex["text"][:n]], inputs["input_ids"][0])
  assert np.abs(logits[0, :n] - out.logits[0, N:].numpy()).max() <= TOL and abs(loss - float(out.loss)) <= 1e-5


def test_smolvlm_batch_expands_images_like_the_processor():
  """Idefics3: several images per example, tiles padded to a fixed count; causal, loss on the answer."""
  f = family("smolvlm")
  model, params, processor = f.loaded
  tok = tokenizer.HFTokenizer(processor.tokenizer, processor=processor)
  rng = np.random.default_rng(2)
  records = [{"image": [rng.integers(0, 256, s, dtype=np.uint8) for s in ((40, 50, 3), (20, 30, 3))],
              "prompt": words(rng, 3), "target": words(rng, 4), "id": "x"},
             {"image": [rng.integers(0, 256, s, dtype=np.uint8) for s in ((30, 30, 3), (64, 20, 3))],
              "prompt": words(rng, 5), "target": words(rng, 2), "id": "y"}]
  L = 200
  batch = next(iter(pipeline.make_dataset(records, encoders.encoder_for(tok, L), batch_size=2, seed=0, shuffle=False,
                                          num_epochs=1, prefetch=0)))
  assert batch["image"].shape == (2, 10, 32, 32, 3)  # 2 images x (2x2 tiles + global), zero-padded
  processor.tokenizer.padding_side = "right"
  eos = processor.tokenizer.eos_token  # no chat template: <image>... prompt \n | target eos
  full = [f"<image><image>{r['prompt']}\n{r['target']}{eos}" for r in records]
  inputs = processor(images=[r["image"] for r in records], text=full, return_tensors="pt", padding="longest")
  with torch.no_grad():
    ref = f.hf_model(**inputs).logits.numpy()
  logits, _ = _ours(model, params, batch)
  for b, r in enumerate(records):
    real = inputs["attention_mask"][b].numpy().astype(bool)
    ours = batch["mask_input"][b].astype(bool)
    np.testing.assert_array_equal(batch["text"][b][ours], inputs["input_ids"][b][real])
    assert (batch["mask_ar"][b] == 1).all()  # causal throughout, as HF Idefics3
    answer = processor.tokenizer(r["target"], add_special_tokens=False)["input_ids"] + [tok.eos_id]
    np.testing.assert_array_equal(batch["text"][b][batch["mask_loss"][b] == 1], answer)
    n = int(ours.sum())
    tiles = inputs["pixel_values"][b].numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(batch["image"][b][:len(tiles)], tiles)
    assert np.abs(logits[b, :n] - ref[b, :n]).max() <= TOL
  with pytest.raises(Exception, match="text_len"):
    encoders.encoder_for(tok, 40).encode_example(records[0]["image"], records[0]["prompt"], "x", "x")


def test_synthetic_encoder_takes_frames_as_image_blocks():
  """The synthetic layout (TextEncoder) passes [N,H,W,3] frames through; the tiny VLM then sees N blocks."""
  from leaml_jax.models import presets
  from leaml_jax.models.vlm import VLM
  tok = tokenizer.train_tokenizer(["a ball moves left"], vocab_size=300)
  rng = np.random.default_rng(3)
  clip = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
  records = [{"image": clip, "prompt": "where?", "target": "left", "id": "c"}] * 2
  batch = next(iter(pipeline.make_dataset(records, encoders.encoder_for(tok, 16), batch_size=2, seed=0, num_epochs=1,
                                          prefetch=0)))
  np.testing.assert_array_equal(batch["image"][0], clip.astype(np.float32) / 127.5 - 1.0)
  cfg = presets.get("tiny", dtype="float32", lm=dict(vocab_size=tok.vocab_size))
  model = VLM(cfg)
  args = (batch["text"], batch["mask_ar"], batch["mask_input"])
  params = model.init(jax.random.key(0), batch["image"], *args)["params"]
  both = np.asarray(model.apply({"params": params}, batch["image"], *args)[0])
  first = np.asarray(model.apply({"params": params}, batch["image"][:, :1], *args)[0])
  np.testing.assert_allclose(first, model.apply({"params": params}, batch["image"][:, 0], *args)[0], atol=1e-6)
  assert both.shape == first.shape and np.abs(both - first).max() > 1e-3  # the second frame is seen


# ----------------------------------------------------------------------------- stages
def _config(directory, **overrides):
  cfg = config_lib.load_config_file("configs/demo.py:quick")
  small = {"model.path": str(directory), "captions.teacher_path": str(directory), "captions.batch_size": "8",
           "captions.max_new_tokens": "6", "data.num_train": "24", "data.num_test": "4",
           "data.label_fraction": "0.25", "base.num_images": "8", "data.text_len": str(TEXT_LEN), "qa_generator.steps": "1",
           "qa_generator.batch_size": "4", "qa_generator.distill_batch_size": "4", "vqa.steps": "2",
           "vqa.batch_size": "4", "neurons.batch_size": "4", "neurons.max_batches": "1",
           "pseudo_qa.samples_per_image": "1", "pseudo_qa.max_new_tokens": "8", "pseudo_qa.batch_size": "8",
           "eval.batch_size": "4", "eval.max_new_tokens": "4", "baselines.methods": "zero_shot",
           "stages": "prepare,base,captions,relevance,qa_generator,pseudo_qa,vqa,evaluate",
           "mesh.num_devices": "2", "progress": "False",
           "data.frames": "tile", "model.vit_frames": "1"}  # clips as one still image (the reference's input)
  small.update(overrides)
  for k, v in small.items():
    config_lib.apply_override(cfg, k, v)
  return cfg


@pytest.fixture(scope="module")
def model_path_run(tmp_path_factory):
  directory = paligemma_bpe()
  workdir = str(tmp_path_factory.mktemp("model_path_run"))
  cfg = _config(directory)
  timings = main.main(cfg, workdir)
  return directory, cfg, workdir, timings


def check_imported_run(directory, cfg, workdir, timings):
  """A --config.model.path run: every stage ran, base/params is the checkpoint itself (not a
  pre-trained tiny model), the VQA stage logged finite losses, zero-shot and LEAML were scored.
  -> (the run's Context, the checkpoint's params)."""
  assert list(timings) == list(cfg.stages)
  ctx = context.Context(cfg, workdir)
  _, params, _ = hf.load(directory, dtype="float32")
  params = jax.tree.map(np.asarray, params)
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, ctx.load_params("base")), params)
  metrics = [json.loads(line) for line in open(os.path.join(workdir, "vqa", "metrics.jsonl"))]
  assert metrics and all(np.isfinite(m["loss"]) for m in metrics)
  for method in ("zero_shot", "leaml"):
    result = json.load(open(os.path.join(workdir, "eval", f"{method}.json")))
    assert result["n"] >= 1 and 0.0 <= result["accuracy"] <= 1.0
  return ctx, params


def test_model_path_run_imports_base_and_adapts_it(model_path_run):
  directory, cfg, workdir, timings = model_path_run
  ctx, params = check_imported_run(directory, cfg, workdir, timings)
  assert ctx.model_cfg.lm.vocab_size == 1664 and type(ctx.tokenizer).__name__ == "HFTokenizer"
  vqa = jax.tree.map(np.asarray, ctx.load_params("vqa"))
  assert not np.array_equal(vqa["llm"]["embedder"]["embedding"], params["llm"]["embedder"]["embedding"])
  assert json.load(open(os.path.join(workdir, "pseudo_qa_stats.json")))["generated"] == 18


def test_teacher_captions_are_transformers_greedy_captions(model_path_run):
  directory, cfg, workdir, _ = model_path_run
  rows = [json.loads(line) for line in open(os.path.join(workdir, "data", "captions.jsonl"))]
  ctx = context.Context(cfg, workdir)
  pool = artifacts.examples(ctx, "unlabeled")
  assert [r["image_id"] for r in rows] == [ex["id"] for ex in pool]
  ref_model, processor = reference(directory)
  inputs = processor(images=[ex["image"] for ex in pool], text=["<image>caption en"] * len(pool), return_tensors="pt")
  with torch.no_grad():
    out = ref_model.generate(**inputs, max_new_tokens=6, do_sample=False)[:, inputs["input_ids"].shape[1]:]
  want = [processor.decode(o, skip_special_tokens=True).strip() for o in out]
  assert [r["caption"] for r in rows] == want and len(set(want)) > 1
