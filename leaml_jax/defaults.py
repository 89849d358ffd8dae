"""Defaults shared by every experiment config (configs/*.py start from `base_config()`)."""
from __future__ import annotations

from ml_collections import ConfigDict

ALL_STAGES = ("prepare", "base", "captions", "relevance", "qa_generator", "pseudo_qa", "vqa",
              "baselines", "evaluate", "report", "export")
# What a run does unless config.stages says otherwise: everything but `export`, which writes
# Hugging Face checkpoints only when asked (--config.stages=...,export, or =export after a run).
DEFAULT_STAGES = ALL_STAGES[:-1]

# Regex rules over parameter paths, first match wins; every parameter must match one.
TRAIN_ALL = ((".*", True),)


def train_section(*, steps: int, batch_size: int, lr: float, warmup_steps: int = 20,
                  weight_decay: float = 1e-4) -> ConfigDict:
  return ConfigDict(dict(
      steps=steps, batch_size=batch_size, grad_accum=1, lr=lr, warmup_steps=warmup_steps,
      end_lr_factor=0.0, weight_decay=weight_decay, b1=0.9, b2=0.999,
      clip_norm=1.0, trainable=TRAIN_ALL, log_every=10, save_every=100))


def base_config() -> ConfigDict:
  c = ConfigDict()
  c.name = "leaml"
  c.seed = 0
  c.seeds = ()  # a sweep: one run per seed under seed_<k>/ from one shared base, one combined report
  c.stages = DEFAULT_STAGES
  c.force = ""  # comma-separated stages to redo even if their outputs are complete ("all" = every one)
  # Several processes: found by itself on a Cloud TPU VM slice; elsewhere (CPU clusters, tests)
  # coordinator=HOST:PORT, num_processes=N, process_id=I on every process (processes.py).
  c.mesh = ConfigDict(dict(data=1, fsdp=-1, tensor=1, num_devices=0,  # num_devices 0 = all
                           coordinator="", num_processes=1, process_id=0))
  c.progress = True  # tqdm progress bars
  # STAGE:FIRST:NUM, e.g. "vqa:10:3": a jax.profiler trace of those steps under workdir/profile/
  # (leaml_jax/profiler.py says what counts as a step and how to open the trace).
  c.profile = ""

  c.data = ConfigDict(dict(
      source="synthetic",            # synthetic | kvasir_vqa | sportu_video
      domain="synthetic_sports",     # synthetic target domain
      path="",                       # local files for real datasets (manual_dir)
      label_fraction=0.01,
      dev_images=0,                  # train images held out to choose lr / steps (config.tune); 0 = none
      num_train=2000, num_test=300,  # synthetic sizes (images)
      caption_error_rate=0.15,
      image_size=32,
      text_len=48,                   # prompt + target tokens (fixed batch shape)
      vocab_size=1024,               # synthetic tokenizer size
      mc_answer="text",              # multiple choice: train/answer with the option text or letter
      test_fraction=0.2,             # real datasets without an official split: images held out (by id)
      num_frames=8,                  # frames sampled uniformly per clip (sportu_video)
      frames="tile",                 # several frames: tile (one grid image) | blocks ([N, H, W, 3])
  ))
  c.model = ConfigDict(dict(
      preset="tiny", path="",        # path: local HF checkpoint dir (real families)
      dtype="float32", param_dtype="float32", scan=True, remat="none", attention="auto",
      vit_frames=1,                  # tiny presets: tubelet length (frames per patch) for clips;
                                     # 1 = stills. HF families (path) take clips as image blocks.
  ))

  # Stage `base`: demo pre-training on the general domain (skipped when model.path is set).
  c.base = train_section(steps=600, batch_size=64, lr=3e-3)
  c.base.domain = "synthetic_general"
  c.base.num_images = 4000
  c.base.workdir = ""                # reuse this finished run's base (and built data) instead
  c.base.eval_images = 400           # held-out general images the trained base is measured on
  # Share of each batch per task: answering is the competence the base is measured on; writing
  # QA repeats the questions' words, one caption per image describes it.
  c.base.task_weights = ConfigDict(dict(vqa=0.65, caption=0.1, qa_gen=0.25))

  c.captions = ConfigDict(dict(
      path="",                       # JSONL {"image_id", "caption"}; empty = synthetic teacher
      teacher_path="",               # local HF checkpoint of a teacher VLM (generation engine)
      max_new_tokens=40, batch_size=32))

  c.neurons = ConfigDict(dict(
      score="taylor",                # taylor | activation
      fraction=0.1,                  # share of MLP neurons selected
      per_layer=False,               # top-fraction in every layer instead of globally
      towers=("llm",),               # which towers' MLPs have selectable neurons: llm, img
      non_neuron_params="frozen",    # frozen | trainable: params that are not MLP neurons, during distillation
      applies_to="distill",          # distill (paper) | all
      mask="relevance",              # relevance | random | none  (ablations)
      batch_size=32, max_batches=8))

  c.qa_generator = train_section(steps=300, batch_size=32, lr=1e-3)
  c.qa_generator.distill_batch_size = 32
  c.qa_generator.distill_weight = 1.0

  c.pseudo_qa = ConfigDict(dict(
      samples_per_image=2, temperature=0.7, top_p=0.9, max_new_tokens=32, batch_size=64,
      answer="greedy",               # greedy: re-answer each sampled question greedily | sampled
      answer_tokens=12,              # new tokens for the greedy answer
      min_confidence=0.0,            # drop pseudo QA whose answer probability is lower
      max_per_image=4,
      caption_probe=200))            # unlabelled images the generator also captions (mechanism report)

  c.vqa = train_section(steps=300, batch_size=32, lr=1e-3)
  c.vqa.pseudo_weight = 0.7          # share of each batch drawn from pseudo QA

  # Trained on the labelled data only: finetune, lora, lora_connector (LoRA + the connector
  # `img/head` trained fully), finetune_matched (as many examples seen as LEAML's generator + VQA
  # stages); oracle_100: every true label of the train pool (the ceiling), at the VQA budget.
  c.baselines = ConfigDict(dict(methods=("zero_shot", "finetune", "lora"), lora_rank=8,
                                lora_alpha=16.0, lora_lr=3e-3))
  # Every trained method (VQA stage of LEAML and each ablation, every trained baseline) picks its
  # lr and step count the same way: one run per lr in `lrs` to the method's step budget, greedy
  # dev accuracy at `evals` evenly spaced steps; the best (lr, steps) is kept (ties: fewer steps,
  # then lower lr) -> <method>/tuning.json. Empty lrs: the method's own lr and steps.
  c.tune = ConfigDict(dict(lrs=(), evals=4))
  c.ablations = ("no_mask", "random_mask", "no_distill")
  c.eval = ConfigDict(dict(batch_size=64, max_new_tokens=16))
  c.export = ConfigDict(dict(
      methods=("leaml",),            # any of leaml, leaml_<ablation>, zero_shot, finetune, lora
      dtype=""))                     # stored dtype: "" = as trained (model.param_dtype), bfloat16, float32
  return c
