"""Stage `export`: transformers loads export/<method>/ and answers the test questions exactly as
our model did in `evaluate` (greedy), for a `--config.model.path` run on a tiny PaliGemma 2 and
for the synthetic base (exported as PaliGemma); refusals for what has no transformers twin."""
import functools
import json
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest
import torch
from ml_collections import ConfigDict
from transformers import (AutoProcessor, PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor,
                          PreTrainedTokenizerFast, SiglipImageProcessor)

from leaml_jax import config_lib, main
from leaml_jax.data import encoders, tokenizer
from leaml_jax.errors import ConfigError
from leaml_jax.models import hf, presets
from leaml_jax.stages import artifacts, context, export
from tests.hf_families import VISION, randomise

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:transformers")


@functools.lru_cache(maxsize=None)
def paligemma2_bpe() -> Path:
  """A tiny PaliGemma 2 (sliding window, soft-capping) with a byte-level BPE trained on the synthetic
  worlds' text, so every prompt encodes; special token ids in config.json are the tokenizer's."""
  bpe = tokenizer.synthetic_tokenizer(vocab_size=400, num_per_domain=30)
  tok = PreTrainedTokenizerFast(tokenizer_object=bpe.tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
  ip = SiglipImageProcessor(size={"height": 32, "width": 32})
  ip.image_seq_length = 16
  processor = PaliGemmaProcessor(image_processor=ip, tokenizer=tok)
  V = 1664
  ids = dict(bos_token_id=bpe.bos_id, eos_token_id=bpe.eos_id, pad_token_id=bpe.pad_id)
  text = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
              head_dim=12, model_type="gemma2", vocab_size=V, sliding_window=16, query_pre_attn_scalar=12,
              attn_logit_softcapping=50.0, final_logit_softcapping=30.0, **ids)
  cfg = PaliGemmaConfig(vision_config=dict(VISION, vision_use_head=False), text_config=text,
                        image_token_index=processor.image_token_id, vocab_size=V, projection_dim=48, hidden_size=48,
                        **ids)
  model = randomise(PaliGemmaForConditionalGeneration(cfg), seed=9)
  directory = Path(tempfile.mkdtemp(prefix="hf_paligemma2_bpe_"))
  model.save_pretrained(directory, safe_serialization=True)
  processor.save_pretrained(directory)
  return directory


def _config(spec, **overrides):
  cfg = config_lib.load_config_file(spec)
  small = {"data.num_train": "24", "data.num_test": "4", "data.label_fraction": "0.25", "base.num_images": "8",
           "base.steps": "2", "qa_generator.steps": "1", "qa_generator.batch_size": "4",
           "qa_generator.distill_batch_size": "4", "vqa.steps": "2", "vqa.batch_size": "4",
           "neurons.batch_size": "4", "neurons.max_batches": "1", "pseudo_qa.samples_per_image": "1",
           "pseudo_qa.max_new_tokens": "8", "pseudo_qa.batch_size": "8", "eval.batch_size": "4",
           "eval.max_new_tokens": "4", "mesh.num_devices": "2", "progress": "False", "data.frames": "tile",
           "model.vit_frames": "1"}
  small.update(overrides)
  for k, v in small.items():
    config_lib.apply_override(cfg, k, v)
  return cfg


def _transformers_answers(directory: Path, records, max_new_tokens: int) -> list[str]:
  """Greedy answers of the exported directory through transformers alone (its own processor and
  generation config), one question at a time."""
  model = PaliGemmaForConditionalGeneration.from_pretrained(directory).eval()
  processor = AutoProcessor.from_pretrained(directory)
  answers = []
  for r in records:
    frames = encoders.hf.frame_list(r["image"])
    inputs = processor(images=[frames], text=["<image>" * len(frames) + r["prompt"]], return_tensors="pt")
    with torch.no_grad():
      out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    answers.append(processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
  return answers


def _check_export(workdir, cfg, method, params_dir):
  out = Path(workdir, "export", method)
  assert (out / "config.json").is_file() and list(out.glob("*.safetensors")) and (out / "tokenizer.json").is_file()
  assert not list(Path(workdir, "export").glob(".tmp_*"))
  ctx = context.Context(cfg, workdir)
  _, params, _ = hf.load(out, dtype="float32")  # the weights are the method's (LoRA merged)
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, params),
               jax.tree.map(np.asarray, ctx.load_params(params_dir)))
  ours = json.load(open(os.path.join(workdir, "eval", f"{method}.json")))["examples"]
  test = artifacts.vqa_records(ctx, "test")
  assert [e["id"] for e in ours] == [r["id"] for r in test][:len(ours)]
  theirs = _transformers_answers(out, test[:len(ours)], cfg.eval.max_new_tokens)
  print(f"export {method}: transformers answers {theirs}")
  assert theirs == [e["pred"] for e in ours]
  return theirs


@pytest.fixture(scope="module")
def model_path_run(tmp_path_factory):
  directory = paligemma2_bpe()
  workdir = str(tmp_path_factory.mktemp("export_run"))
  cfg = _config("configs/demo.py:quick", **{
      "model.path": str(directory), "data.text_len": "64", "baselines.methods": "zero_shot,lora",
      "stages": "prepare,base,captions,relevance,qa_generator,pseudo_qa,vqa,baselines,evaluate,export",
      "export.methods": "leaml,lora"})
  main.main(cfg, workdir)
  return cfg, workdir


@pytest.mark.parametrize("method,params_dir", [("leaml", "vqa"), ("lora", "baselines/lora")])
def test_model_path_export_answers_like_our_model(model_path_run, method, params_dir):
  cfg, workdir = model_path_run
  answers = _check_export(workdir, cfg, method, params_dir)
  assert len(answers) >= 4 and any(a.strip() for a in answers)
  source = json.loads((paligemma2_bpe() / "config.json").read_text())
  exported = json.loads(Path(workdir, "export", method, "config.json").read_text())
  assert exported["text_config"]["model_type"] == "gemma2"
  assert exported["image_token_index"] == source["image_token_index"]


def test_export_after_the_run_and_unknown_methods(model_path_run):
  """--config.stages=export after a finished run exports its methods; unknown ones are refused."""
  cfg, workdir = model_path_run
  cfg = _config("configs/demo.py:quick", **{"model.path": cfg.model.path, "data.text_len": "64",
                                             "baselines.methods": "zero_shot,lora", "stages": "export",
                                             "export.methods": "zero_shot", "force": "export"})
  main.main(cfg, workdir)
  assert sorted(os.listdir(os.path.join(workdir, "export"))) == ["zero_shot"]  # forced: cleared, redone
  config_lib.apply_override(cfg, "export.methods", "finetune")
  with pytest.raises(ConfigError, match=r"\['finetune'\] not among"):
    export.run(context.Context(cfg, workdir))


def test_synthetic_base_exports_as_paligemma(tmp_path):
  workdir = str(tmp_path / "synthetic")
  cfg = _config("configs/demo.py:endoscopy,quick", **{
      "stages": "prepare,base,evaluate,export", "baselines.methods": "zero_shot", "export.methods": "zero_shot"})
  main.main(cfg, workdir)
  exported = json.loads(Path(workdir, "export", "zero_shot", "config.json").read_text())
  assert exported["architectures"] == ["PaliGemmaForConditionalGeneration"]
  assert exported["text_config"]["model_type"] == "gemma"
  _check_export(workdir, cfg, "zero_shot", "base")
  # The answers of a barely trained base say little; its logits on question + answer do: the
  # exported processor lays out and tokenizes exactly as our synthetic encoder.
  ctx = context.Context(cfg, workdir)
  out = Path(workdir, "export", "zero_shot")
  theirs_model = PaliGemmaForConditionalGeneration.from_pretrained(out).eval()
  processor = AutoProcessor.from_pretrained(out)
  params = ctx.load_params("base")
  for r in artifacts.vqa_records(ctx, "test")[:3]:
    ex = ctx.encoder.encode_example(r["image"], r["prompt"], r["answer"], r["id"])
    ours = np.asarray(ctx.model.apply({"params": params}, *(ex[k][None] for k in
                                                             ("image", "text", "mask_ar", "mask_input")))[0])
    frames = encoders.hf.frame_list(r["image"])
    inputs = processor(images=[frames], text=["<image>" * len(frames) + r["prompt"]], suffix=[r["answer"]],
                       return_tensors="pt")
    n, N = int(ex["mask_input"].sum()), ctx.model_cfg.num_image_tokens * len(frames)
    np.testing.assert_array_equal(inputs["input_ids"][0, N:].numpy(), ex["text"][:n])
    with torch.no_grad():
      theirs = theirs_model(**inputs).logits[0, N:].numpy()
    assert np.abs(theirs - ours[0, :n]).max() <= 1e-4


@pytest.mark.parametrize("preset,frames,match", [
    ("tiny", 4, "tubelet vision tower"), ("tiny_llama", 1, "llama LM with a pixel_shuffle connector"),
    ("tiny_qwen2", 1, "qwen2 LM with a linear connector")])
def test_synthetic_models_without_a_transformers_twin_are_refused(tmp_path, preset, frames, match):
  config = ConfigDict(dict(model=dict(path="", preset=preset, vit_frames=frames), stages=("export",),
                           export=dict(methods=("zero_shot",), dtype=""), baselines=dict(methods=("zero_shot",)),
                           ablations=()))
  model_cfg = presets.get(preset, vit=dict(frames=frames))
  ctx = SimpleNamespace(config=config, model_cfg=model_cfg, path=lambda *p: str(tmp_path.joinpath(*p)))
  with pytest.raises(ConfigError, match=f"no exact transformers architecture.*{match}"):
    export.run(ctx)
  assert not (tmp_path / "export").exists()


def test_save_in_bfloat16(tmp_path):
  """export.dtype=bfloat16: weights stored as the bf16 cast of ours, and transformers loads them."""
  from safetensors.numpy import load_file
  from tests.hf_families import family
  f = family("paligemma")
  model, params, _ = f.loaded
  out = hf.save(model, params, tmp_path, hf_config=f.directory, dtype="bfloat16")
  assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
  stored = load_file(out / "model.safetensors")["language_model.model.layers.1.mlp.up_proj.weight"]
  ours = np.asarray(params["llm"]["layers"]["mlp"]["up_proj"]["kernel"][1]).T
  np.testing.assert_array_equal(stored, ours.astype(jax.numpy.bfloat16))
  reloaded = PaliGemmaForConditionalGeneration.from_pretrained(out)
  assert reloaded.dtype == torch.bfloat16


def test_an_export_the_synthetic_base_cannot_make_is_refused_before_any_stage_runs(tmp_path):
  """stages with export and the sports demo's tubelet tower: refused at config time, nothing built."""
  cfg = _config("configs/demo.py:quick", **{"model.vit_frames": "4", "data.frames": "blocks",
                                             "stages": "prepare,base,export"})
  with pytest.raises(ConfigError, match="no exact transformers architecture.*tubelet vision tower"):
    main.main(cfg, str(tmp_path / "run"))
  assert not (tmp_path / "run" / "data").exists() and not (tmp_path / "run" / "base").exists()
