r"""SPORTU-video: LEAML on real sports clips with a real base VLM (PaliGemma 2 3B, 224 px), 1% labels.

1. Data, once (SPORTU, ICLR 2025: https://github.com/chili-lab/SPORTU). Put the annotation file
   from the GitHub repository and the clips from the video download linked in its README under
   one directory (any depth; a clip's file name is its id):
     data/sportu/SportU_Video_mc.json
     data/sportu/videos/Basketball/Basketball_85.mp4   (also .mov/.avi/.mkv/.webm)
   An item "Basketball_85_1" uses Basketball_85_1.mp4 or else Basketball_85.mp4. Frames are
   sampled uniformly at build time (PyAV); missing or broken clips and answers that are not an
   option are skipped and listed in runs/.../data/tfds/sportu_video/*/1.0.0/build_report.json.
2. Base model, once: a local Hugging Face checkpoint (gated: accept the licence on the model
   page, then `huggingface-cli login`):
     huggingface-cli download google/paligemma2-3b-pt-224 --local-dir ckpt/paligemma2-3b-pt-224
3. Teacher captions for the unlabelled clips: a JSONL file of {"image_id": <clip id>, "caption"}
   (e.g. written by Qwen2.5-VL-72B, the paper's teacher), or a teacher checkpoint to run here:
     --config.captions.path=captions/sportu.jsonl   |   --config.captions.teacher_path=ckpt/<vlm>
4. Run (a TPU v4-8 / v5e-8 host or one 80 GB GPU; the mesh is FSDP over all local devices):
     python -m leaml_jax.main --config=configs/sports.py --workdir=runs/sports \
         --config.captions.path=captions/sportu.jsonl
   Other paths: --config.data.path=DIR --config.model.path=DIR. Frames as separate image-token
   blocks instead of one 2x2 tiled image: --config.data.frames=blocks --config.data.num_frames=8.
   Ablations: --config.ablations=no_mask,random_mask,no_distill.

Qwen2.5-VL-72B (the paper's teacher) as the caption teacher, its parameters sharded over the
whole mesh (fsdp over every chip; `hf.load` streams each tensor straight into its shard), run as a
stage of its own so the teacher may keep bfloat16 parameters while training keeps float32:
     huggingface-cli download Qwen/Qwen2.5-VL-72B-Instruct --local-dir ckpt/Qwen2.5-VL-72B-Instruct
     python -m leaml_jax.main --config=configs/sports.py --workdir=gs://BUCKET/runs/sports \
         --config.stages=prepare,captions --config.model.param_dtype=bfloat16 \
         --config.captions.teacher_path=ckpt/Qwen2.5-VL-72B-Instruct --config.captions.batch_size=32
   then the run above without captions.path (the captions stage is complete, so it is skipped).
   Not runnable yet: data/encoders/hf.py has no data layout for the Qwen2-VL / Qwen2.5-VL
   processors, so the captions stage stops naming the processor. The model side is done and
   tested on tiny checkpoints: loading, parity with transformers, video, sharded greedy generation.
   Per-device memory this implies, computed (not measured) with `jax.eval_shape` of the
   qwen2_5_vl_72b preset (73.4B parameters) under sharding.RULES, KV cache for a batch of 32 x 512
   positions in bfloat16; activations and the layer weights FSDP gathers per step are not counted
   (tests/test_teacher_sharded.py recomputes these lines):
     v5p-64 (32 chips, 95 GB each), fsdp 32, float32 params: parameters 8.6 GiB + KV cache 0.16 GiB
     v5p-64 (32 chips, 95 GB each), fsdp 32, bfloat16 params: parameters 4.3 GiB + KV cache 0.16 GiB
     8 x 80 GB GPUs, fsdp 8, float32 params: parameters 34.3 GiB + KV cache 0.62 GiB
     8 x 80 GB GPUs, fsdp 8, bfloat16 params: parameters 17.1 GiB + KV cache 0.62 GiB

`configs/sports.py:tiny` is the same pipeline shrunk for tests (tiny model pre-trained on the
synthetic general domain, 32 px, a few steps); it still needs data.path and captions.path.
"""
from leaml_jax.defaults import base_config


def get_config(arg: str = ""):
  opts = set(filter(None, arg.split(",")))
  c = base_config()
  c.name = "sports"
  c.data.source = "sportu_video"
  c.data.path = "data/sportu"
  c.data.label_fraction = 0.01
  c.data.test_fraction = 0.2          # no official split: 20% of the clips, by clip id
  c.data.num_frames, c.data.frames = 4, "tile"
  c.data.image_size = 224
  c.data.text_len = 128               # question + up to 4 options + answer

  c.model.preset, c.model.path = "paligemma2_3b", "ckpt/paligemma2-3b-pt-224"
  c.model.dtype, c.model.param_dtype, c.model.remat = "bfloat16", "float32", "full"
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1

  c.base.steps = 0                    # stage `base` imports model.path
  c.neurons.batch_size, c.neurons.max_batches = 8, 8
  for t, lr in ((c.qa_generator, 2e-5), (c.vqa, 2e-5)):
    t.steps, t.batch_size, t.lr, t.warmup_steps, t.log_every = 300, 16, lr, 20, 10
  c.qa_generator.distill_batch_size = 16
  c.baselines.lora_rank, c.baselines.lora_lr = 16, 3e-4
  c.pseudo_qa.batch_size, c.pseudo_qa.max_new_tokens = 32, 64
  c.captions.batch_size, c.captions.max_new_tokens = 16, 64
  c.eval.batch_size, c.eval.max_new_tokens = 32, 16
  c.ablations = ()

  if "tiny" in opts:
    c.name = "sports_tiny"
    c.model.preset, c.model.path = "tiny", ""
    c.model.dtype, c.model.param_dtype, c.model.remat = "float32", "float32", "none"
    c.data.image_size, c.data.text_len, c.data.vocab_size = 32, 64, 512
    c.base.steps, c.base.num_images, c.base.batch_size = 20, 200, 16
    for t in (c.qa_generator, c.vqa):
      t.steps, t.batch_size, t.lr, t.warmup_steps = 10, 8, 1e-3, 2
    c.qa_generator.distill_batch_size = 8
    c.baselines.lora_lr = 3e-3
    c.pseudo_qa.batch_size, c.eval.batch_size = 16, 16
  return c
