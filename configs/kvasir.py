r"""Kvasir-VQA: LEAML on GI-endoscopy images with a real base VLM (PaliGemma 2 3B, 224 px), 1% labels.

1. Data, once (Kvasir-VQA: 6,500 images, 58,849 QA; https://huggingface.co/datasets/SimulaMet-HOST/Kvasir-VQA):
     huggingface-cli download SimulaMet-HOST/Kvasir-VQA --repo-type dataset --local-dir data/kvasir_vqa
   giving data/kvasir_vqa/**/*.parquet (columns image, source, question, answer, img_id). A folder
   of <img_id>.jpg plus metadata.csv (source, question, answer, img_id) works too. Images are
   resized to 224 at build time; 20% of the images (by img_id, seeded) are the test split.
   Corrupt images and empty QA are skipped and listed in
   runs/.../data/tfds/kvasir_vqa/*/1.0.0/build_report.json.
2. Base model, once: a local Hugging Face checkpoint (gated: accept the licence on the model
   page, then `huggingface-cli login`):
     huggingface-cli download google/paligemma2-3b-pt-224 --local-dir ckpt/paligemma2-3b-pt-224
3. Teacher captions for the unlabelled images: a JSONL file of {"image_id": <img_id>, "caption"}
   (e.g. written by Qwen2.5-VL-72B, the paper's teacher), or a teacher checkpoint to run here:
     --config.captions.path=captions/kvasir.jsonl   |   --config.captions.teacher_path=ckpt/<vlm>
4. Run (a TPU v4-8 / v5e-8 host or one 80 GB GPU; the mesh is FSDP over all local devices):
     python -m leaml_jax.main --config=configs/kvasir.py --workdir=runs/kvasir \
         --config.captions.path=captions/kvasir.jsonl
   Other paths: --config.data.path=DIR --config.model.path=DIR; more labels:
   --config.data.label_fraction=0.05. Ablations: --config.ablations=no_mask,random_mask,no_distill.
   Scores: exact match (set match for colour/location/multiple-choice answers) per question type
   and per image class, plus BLEU and ROUGE-L (eval/<method>.json).

`configs/kvasir.py:tiny` is the same pipeline shrunk for tests (tiny model pre-trained on the
synthetic general domain, 32 px, a few steps); it still needs data.path and captions.path.
"""
from leaml_jax.defaults import base_config


def get_config(arg: str = ""):
  opts = set(filter(None, arg.split(",")))
  c = base_config()
  c.name = "kvasir"
  c.data.source = "kvasir_vqa"
  c.data.path = "data/kvasir_vqa"
  c.data.label_fraction = 0.01
  c.data.test_fraction = 0.2          # no official split: 20% of the images, by img_id
  c.data.image_size = 224
  c.data.text_len = 64                # question + answer ("; "-joined sets included)

  c.model.preset, c.model.path = "paligemma2_3b", "ckpt/paligemma2-3b-pt-224"
  c.model.dtype, c.model.param_dtype, c.model.remat = "bfloat16", "float32", "full"
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1

  c.base.steps = 0                    # stage `base` imports model.path
  c.neurons.batch_size, c.neurons.max_batches = 8, 8
  for t, lr in ((c.qa_generator, 2e-5), (c.vqa, 2e-5)):
    t.steps, t.batch_size, t.lr, t.warmup_steps, t.log_every = 300, 16, lr, 20, 10
  c.qa_generator.distill_batch_size = 16
  c.baselines.lora_rank, c.baselines.lora_lr = 16, 3e-4
  c.pseudo_qa.batch_size, c.pseudo_qa.max_new_tokens = 32, 48
  c.captions.batch_size, c.captions.max_new_tokens = 16, 64
  c.eval.batch_size, c.eval.max_new_tokens = 32, 24
  c.ablations = ()

  if "tiny" in opts:
    c.name = "kvasir_tiny"
    c.model.preset, c.model.path = "tiny", ""
    c.model.dtype, c.model.param_dtype, c.model.remat = "float32", "float32", "none"
    c.data.image_size, c.data.text_len, c.data.vocab_size = 32, 48, 512
    c.base.steps, c.base.num_images, c.base.batch_size = 20, 200, 16
    for t in (c.qa_generator, c.vqa):
      t.steps, t.batch_size, t.lr, t.warmup_steps = 10, 8, 1e-3, 2
    c.qa_generator.distill_batch_size = 8
    c.baselines.lora_lr = 3e-3
    c.pseudo_qa.batch_size, c.eval.batch_size = 16, 16
  return c
