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

The training recipe (base model, dtypes, mesh, steps, batch sizes, `:tiny` for tests) is
configs/sports.py's; only the dataset differs. Its docstring gives the command for Qwen2.5-VL-72B as
the caption teacher (sharded over the mesh; the same with --config=configs/kvasir.py) and the
per-device memory `jax.eval_shape` implies for it on v5p-64 and on 8 x 80 GB GPUs.
"""
import os
import runpy

_SPORTS = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "sports.py"))


def get_config(arg: str = ""):
  c = _SPORTS["get_config"](arg)
  c.name = c.name.replace("sports", "kvasir")
  c.data.source = "kvasir_vqa"
  c.data.path = "data/kvasir_vqa"
  c.data.test_fraction = 0.2          # no official split: 20% of the images, by img_id
  c.data.text_len = 64                # question + answer ("; "-joined sets)
  c.pseudo_qa.max_new_tokens = 48
  c.eval.max_new_tokens = 24          # set answers: "biopsy forceps; metal clip; ..."
  return c
