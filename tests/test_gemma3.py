"""Gemma 3 against transformers beyond the shared parity tests of test_hf.py: single-image rows,
both checkpoint key layouts, the full-size preset, and the chat layout the data pipeline feeds
it as a base model and as a caption teacher (tests/hf_families.py: tiny random Gemma 3 whose
sliding window is shorter than one image's tokens)."""
import dataclasses
import shutil
from types import SimpleNamespace

import jax
import numpy as np
import pytest
import torch
from ml_collections import ConfigDict
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import Gemma3Config

from leaml_jax import losses
from leaml_jax.data import encoders, prompts, tokenizer
from leaml_jax.models import count_params, hf, presets
from leaml_jax.models.hf import config_json
from leaml_jax.models.vlm import VLM, dummy_inputs
from leaml_jax.stages import captions
from tests.hf_families import TEXT, VISION, family, images, words

TOL = 1e-4
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:transformers")


def test_single_image_rows_match_transformers():
  f = family("gemma3")
  rng = np.random.default_rng(4)
  f.processor.tokenizer.padding_side = "right"
  text = [f"{words(rng, 3)}<start_of_image>{words(rng, 12)}", f"<start_of_image>{words(rng, 4)}"]
  inputs = f.processor(images=[images(rng, [(48, 32)]), images(rng, [(32, 32)])], text=text, return_tensors="pt",
                       padding="longest")
  with torch.no_grad():
    ref = f.hf_model(**inputs).logits.numpy()
  model, params, _ = f.loaded
  valid = inputs["attention_mask"].numpy().astype(bool)
  delta = np.abs(hf.logits_from_hf_inputs(model, params, **inputs) - ref)[valid].max()
  print(f"gemma3 single images: max |Δlogit| = {delta:.2e}")
  assert delta <= TOL and (~valid).any()


def _layout(src, dst, rename):
  dst.mkdir()
  shutil.copy(src / "config.json", dst / "config.json")
  save_file({rename(k): v for k, v in load_file(src / "model.safetensors").items()}, dst / "model.safetensors",
            metadata={"format": "pt"})
  return dst


def test_4x_and_5x_key_layouts_load_the_same_weights(tmp_path):
  f = family("gemma3")
  stored = list(load_file(f.directory / "model.safetensors"))
  assert any(k.startswith("language_model.model.") for k in stored)
  layouts = {  # transformers 4.x (the hub's files) and 5.x (its module tree)
      "4x": lambda k: k.replace("vision_tower.", "vision_tower.vision_model."),
      "5x": lambda k: "model." + k.replace("language_model.model.", "language_model."),
  }
  base = jax.tree.map(np.asarray, f.loaded[1])
  for name, rename in layouts.items():
    d = _layout(f.directory, tmp_path / name, rename)
    keys = list(load_file(d / "model.safetensors"))
    assert any(k.startswith({"4x": "vision_tower.vision_model.", "5x": "model.language_model."}[name]) for k in keys)
    assert any(k.startswith({"4x": "multi_modal_projector.", "5x": "model.multi_modal_projector."}[name]) for k in keys)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, hf.load(d, dtype="float32")[1]), base)


def test_gemma3_4b_preset_has_the_published_size():
  cfg = presets.get("gemma3_4b")
  abstract = jax.eval_shape(lambda: VLM(cfg).init(jax.random.key(0), *dummy_inputs(cfg, 1, 4))["params"])
  n = count_params(abstract)
  assert cfg.num_image_tokens == 256 and abs(n - 4.30e9) / 4.30e9 < 0.005, n


def test_unsupported_gemma3_configs_are_refused():
  text = dict(TEXT, num_hidden_layers=7, vocab_size=128)
  vision = dict(VISION, patch_size=2, vision_use_head=False)
  alternating = ["sliding_attention", "full_attention"] * 3 + ["sliding_attention"]
  cfg = Gemma3Config(vision_config=vision, mm_tokens_per_image=16, text_config=dict(text, layer_types=alternating))
  with pytest.raises(ValueError, match="every 6th layer global"):
    config_json.vlm_config(cfg)
  yarn = dict(rope_type="yarn", factor=8.0, original_max_position_embeddings=64)
  with pytest.raises(ValueError, match="RoPE type 'yarn'"):
    config_json.vlm_config(Gemma3Config(vision_config=vision, mm_tokens_per_image=16,
                                        text_config=dict(text, rope_scaling=yarn)))
  with pytest.raises(ValueError, match="mm_tokens_per_image 12"):
    config_json.vlm_config(Gemma3Config(vision_config=vision, mm_tokens_per_image=12, text_config=text))
  cfg, _ = config_json.vlm_config(Gemma3Config(vision_config=vision, mm_tokens_per_image=16, text_config=text))
  with pytest.raises(ValueError, match="local_sees_block=False"):
    config_json.family_of(dataclasses.replace(cfg, local_sees_block=True))
  processor = family("gemma3").processor
  processor.image_processor.do_pan_and_scan = True
  try:
    with pytest.raises(ValueError, match="do_pan_and_scan"):
      encoders.HFEncoder(processor, 64)
  finally:
    processor.image_processor.do_pan_and_scan = False


# ----------------------------------------------------------------------------- chat layout (base, teacher)
def _chat(processor, image_list, prompt, answer=None):
  """transformers' own chat path: apply_chat_template with the images in the user turn."""
  user = {"role": "user", "content": [{"type": "image", "image": Image.fromarray(im)} for im in image_list]
          + [{"type": "text", "text": prompt}]}
  turns = [user] if answer is None else [user, {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
  return processor.apply_chat_template(turns, tokenize=True, return_dict=True, return_tensors="pt",
                                       add_generation_prompt=answer is None)


def test_chat_batch_is_transformers_chat_and_gives_its_logits_and_loss():
  """As a base (--config.model.path): the encoder's sequence is transformers' chat rendering up to
  the <end_of_turn> that closes the answer; logits and answer loss are transformers'."""
  f = family("gemma3_chat")
  model, params, processor = f.loaded
  encoder = encoders.encoder_for(tokenizer.HFTokenizer(processor.tokenizer, processor=processor), 96)
  end = processor.tokenizer.convert_tokens_to_ids("<end_of_turn>")
  assert encoder.tokenizer.eos_id == end
  rng = np.random.default_rng(6)
  for image_list, prompt, answer in ((images(rng, [(40, 30)]), words(rng, 4), words(rng, 5)),
                                     (images(rng, [(32, 32), (20, 50)]), words(rng, 2), words(rng, 3))):
    ex = encoder.encode_example(image_list[0] if len(image_list) == 1 else image_list, prompt, answer, "x")
    inputs = _chat(processor, image_list, prompt, answer)
    ids = inputs["input_ids"][0].numpy()
    n = int(ex["mask_input"].sum())
    assert ids[0] == processor.tokenizer.bos_token_id and ids[1] != ids[0]  # one <bos>
    assert ids[n - 1] == end and n <= len(ids)  # the template's trailing "\n" after <end_of_turn> is not kept
    np.testing.assert_array_equal(ex["text"][:n], ids[:n])
    answer_ids = processor.tokenizer(answer, add_special_tokens=False)["input_ids"] + [end]
    np.testing.assert_array_equal(ex["text"][ex["mask_loss"] == 1], answer_ids)
    labels = torch.full_like(inputs["input_ids"][:, :n], -100)
    labels[0, ex["mask_loss"][:n] == 1] = inputs["input_ids"][0, :n][ex["mask_loss"][:n] == 1]
    cut = {k: v[:, :n] if k != "pixel_values" else v for k, v in inputs.items()}
    with torch.no_grad():
      out = f.hf_model(**cut, labels=labels)
    batch = {k: v[None] for k, v in ex.items()}
    logits = np.asarray(model.apply({"params": params}, batch["image"], batch["text"], batch["mask_ar"],
                                    batch["mask_input"])[0])
    loss, _ = losses.token_ce(logits, batch["text"], batch["mask_loss"])
    delta = np.abs(logits[0, :n] - out.logits[0].numpy()).max()
    print(f"gemma3 chat layout, {len(image_list)} image(s): max |Δlogit| = {delta:.2e}, "
          f"|Δloss| = {abs(float(loss) - float(out.loss)):.1e}")
    assert delta <= TOL and abs(float(loss) - float(out.loss)) <= 1e-5


def test_teacher_captions_are_transformers_chat_greedy_captions():
  """As a caption teacher (--config.captions.teacher_path): the captions stage's teacher path
  writes what transformers' greedy `generate` on its chat rendering writes, stopping at <end_of_turn>."""
  f = family("gemma3_chat")
  rng = np.random.default_rng(8)
  pool = [{"id": f"u{i}", "image": im} for i, im in enumerate(images(rng, [(32, 32), (40, 24), (24, 48)]))]
  ctx = SimpleNamespace(config=ConfigDict(dict(captions=dict(teacher_path=str(f.directory), batch_size=2,
                                                             max_new_tokens=8), data=dict(image_size=32))),
                        mesh=None, model_options=lambda: dict(dtype="float32"))
  rows = captions.teacher_captions(ctx, pool)
  processor = f.processor
  end = processor.tokenizer.convert_tokens_to_ids("<end_of_turn>")
  want = []
  for ex in pool:
    inputs = _chat(processor, [ex["image"]], prompts.caption_prompt("gemma3"))
    with torch.no_grad():
      out = f.hf_model.generate(**inputs, max_new_tokens=8, do_sample=False, eos_token_id=end, pad_token_id=0)
    new = out[0, inputs["input_ids"].shape[1]:].tolist()
    want.append(processor.decode(new[:new.index(end)] if end in new else new, skip_special_tokens=True).strip())
  assert len(set(want)) > 2  # distinct captions, one of them empty (<end_of_turn> first): that image gets none
  assert [(r["image_id"], r["caption"]) for r in rows] == [(ex["id"], w) for ex, w in zip(pool, want) if w]


def test_gemma3_runs_the_stages_as_base_and_teacher(tmp_path):
  """--config.model.path and --config.captions.teacher_path on Gemma 3: teacher captions, a
  fine-tune in its chat layout, evaluation, export."""
  import json
  import os
  from leaml_jax import config_lib, main
  f = family("gemma3_chat")
  cfg = config_lib.load_config_file("configs/demo.py:quick")
  for k, v in {"model.path": str(f.directory), "captions.teacher_path": str(f.directory), "captions.batch_size": "8",
               "captions.max_new_tokens": "4", "data.num_train": "16", "data.num_test": "2", "base.num_images": "8",
               "data.label_fraction": "0.25", "data.text_len": "128", "data.frames": "tile", "model.vit_frames": "1",
               "vqa.steps": "2", "vqa.batch_size": "4", "eval.batch_size": "4", "eval.max_new_tokens": "4",
               "baselines.methods": "zero_shot,finetune", "stages": "prepare,base,captions,baselines,evaluate,export",
               "export.methods": "finetune", "mesh.num_devices": "2", "progress": "False"}.items():
    config_lib.apply_override(cfg, k, v)
  workdir = str(tmp_path / "run")
  assert list(main.main(cfg, workdir)) == list(cfg.stages)
  assert len(open(os.path.join(workdir, "data", "captions.jsonl")).readlines()) >= 1
  assert json.load(open(os.path.join(workdir, "eval", "finetune.json")))["n"] >= 1
  exported = json.load(open(os.path.join(workdir, "export", "finetune", "config.json")))
  assert exported["architectures"] == ["Gemma3ForConditionalGeneration"]
