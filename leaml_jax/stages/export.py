"""Stage `export`: the adapted models as Hugging Face checkpoint directories -> export/<method>/.

config.export.methods names methods of `context.methods` (leaml, leaml_<ablation>, zero_shot,
finetune, lora; LoRA params are stored merged), looked up as if every stage ran, so
`--config.stages=export` after a finished run exports it. Each is written by `hf.save`:
safetensors shards, config.json and the processor files, which transformers' `from_pretrained`
loads. A `model.path` run keeps its checkpoint's config.json fields and processor files.

The synthetic base (no model.path) has PaliGemma's architecture exactly (SigLIP + Gemma, Gemma2
for the tiny_gemma2 preset; linear connector; image + prompt bidirectional, answer causal;
positions from 1), so it goes out as PaliGemma with a PaliGemmaProcessor built from the run's
tokenizer. Other synthetic models are refused before anything is written: a tubelet tower
(model.vit_frames > 1, the sports demo's default) and the tiny_llama / tiny_qwen2 presets, whose
image-prefix layout no transformers family of their LM has.

`check_config` makes the same refusal before any stage runs (leaml_jax.main calls it), so a run
that lists `export` does not train for hours and fail at its last stage.

Every process takes part (tensors are gathered one at a time); process 0 writes each method into
a temporary directory that is renamed into place, so a killed export is redone, never taken as
complete.
"""
from __future__ import annotations

import os
import shutil

import jax

from leaml_jax.defaults import ALL_STAGES
from leaml_jax.errors import CheckpointError, ConfigError
from leaml_jax.stages import context


def outputs(ctx) -> list[str]:
  return ["export"]


def run(ctx) -> None:
  c = ctx.config
  table = exportable_methods(c)
  unknown = [m for m in c.export.methods if m not in table]
  if unknown:
    raise ConfigError(f"config.export.methods={list(c.export.methods)}: {unknown} not among this config's "
                      f"methods {sorted(table)}")
  source, processor = _source(ctx)
  for method in c.export.methods:
    out = ctx.path("export", method)
    if os.path.isdir(out):  # finished before a kill; --config.force=export redoes all
      continue
    if not ctx.has_params(table[method]):
      raise CheckpointError(f"export {method}: {ctx.path(table[method], 'params')} missing; run the stage "
                            f"that trains it first (config.stages)")
    from leaml_jax.models import hf
    tmp = ctx.path("export", f".tmp_{method}")
    if jax.process_index() == 0:
      shutil.rmtree(tmp, ignore_errors=True)  # a killed attempt's leftovers
    hf.save(ctx.model, ctx.load_params(table[method]), tmp, hf_config=source, processor=processor,
            dtype=c.export.dtype or None)
    if jax.process_index() == 0:
      os.replace(tmp, out)
      print(f"[leaml] export {method}: {out} (transformers from_pretrained)")


def check_config(config) -> None:
  """Refuses, before any work, a run whose stages include `export` and whose synthetic base has no
  transformers twin (a model.path base is a transformers family already)."""
  m = config.model
  if "export" not in config.stages or m.path:
    return
  from leaml_jax.models import presets
  size = config.data.image_size
  try:
    cfg = presets.get(m.preset, vit=dict(image_size=(size, size), frames=m.vit_frames))
  except (KeyError, ValueError):  # an unknown preset or a bad size: the stage that builds the model says so
    return
  _synthetic_family(cfg, m)


def exportable_methods(config) -> dict[str, str]:
  """context.methods as if every stage were configured: method -> params directory."""
  every = config.copy_and_resolve_references()
  every.stages = ALL_STAGES
  return context.methods(every)


def _source(ctx):
  """(hf_config, processor) for hf.save: the model.path checkpoint directory (its config.json and
  processor files are copied), or for the synthetic base a PaliGemma config and processor."""
  from leaml_jax.models import hf
  m = ctx.config.model
  if m.path:
    return hf.resolve(m.path), None
  _synthetic_family(ctx.model_cfg, m)
  return _paligemma_processor(ctx)


def _synthetic_family(cfg, m) -> None:
  """The transformers family a synthetic model exports as (PaliGemma), or a ConfigError saying why none."""
  from leaml_jax.models.hf import config_json
  try:
    family = config_json.family_of(cfg)
  except ValueError as e:
    raise ConfigError(f"export: the synthetic model (model.preset={m.preset!r}, model.vit_frames={m.vit_frames}) "
                      f"has no exact transformers architecture ({e}). Exportable synthetic bases: the "
                      "tiny / tiny_gemma2 presets with model.vit_frames=1 (PaliGemma / PaliGemma 2); or "
                      "adapt a Hugging Face base (config.model.path)") from None
  assert family == "paligemma"  # the synthetic models have the image-prefix layout, PaliGemma's alone


def _paligemma_processor(ctx):
  """The run's BPE tokenizer and [-1, 1] image scaling as a PaliGemmaProcessor, and the config
  fields that go with it (its image token, one past our vocabulary, and the special token ids)."""
  from transformers import PaliGemmaProcessor, PreTrainedTokenizerFast, SiglipImageProcessor
  from leaml_jax.data import tokenizer as tok_lib
  tok = ctx.tokenizer
  hf_tok = PreTrainedTokenizerFast(tokenizer_file=ctx.path("data", "tokenizer.json"), bos_token=tok_lib.BOS,
                                   eos_token=tok_lib.EOS, pad_token=tok_lib.PAD)
  h, w = ctx.model_cfg.vit.image_size
  image_processor = SiglipImageProcessor(size={"height": h, "width": w}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
  image_processor.image_seq_length = ctx.model_cfg.num_image_tokens
  processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=hf_tok)
  ids = dict(bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
  return dict(ids, image_token_index=processor.image_token_id, text_config=ids), processor
