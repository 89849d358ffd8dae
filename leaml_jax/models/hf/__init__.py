"""Hugging Face checkpoints: load into sharded params, compare with transformers, save back.

  model, params, processor = hf.load("ckpt/paligemma2-3b-pt-224", mesh=mesh, dtype="float32")
  inputs = processor(images=images, text=prompts, return_tensors="np", padding="longest")
  logits = hf.logits_from_hf_inputs(model, params, **inputs)   # == transformers' logits
  hf.save(model, params, "out/", hf_config="ckpt/paligemma2-3b-pt-224", processor=processor)

Families: PaliGemma / PaliGemma 2 (SigLIP + Gemma / Gemma2), Idefics3 (SmolVLM), Gemma 3
(SigLIP + average-pool projector + Gemma3), Qwen2-VL and Qwen2.5-VL (their towers + 2x2 patch
merger + Qwen2 with M-RoPE; images and videos, one size per batch). Only safetensors are read
(never pickle, never remote code). Images are channels-last in [-1, 1], which is what their
processors produce (mean 0.5, std 0.5).

  directory.py          finding a checkpoint directory (`resolve`), its files, its processor
  loader.py             `load`, `config`: streaming the tensors into sharded params
  exporter.py           `save`: params -> safetensors + config.json in the hub key layout
  processor_inputs.py   `logits_from_hf_inputs`: our model on a processor's output dict
  config_json.py        config.json <-> VLMConfig, the supported families (`VLM_FAMILIES`)
  param_keys.py         our param paths <-> canonical / per-family HF keys, weight transforms
  safetensors_index.py  which file holds which tensor (headers only, checked against sizes)
"""

from leaml_jax.models.hf.directory import processor, resolve  # noqa: F401
from leaml_jax.models.hf.exporter import save  # noqa: F401
from leaml_jax.models.hf.loader import config, load  # noqa: F401
from leaml_jax.models.hf.processor_inputs import logits_from_hf_inputs  # noqa: F401
