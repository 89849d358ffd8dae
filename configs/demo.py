r"""Demo: LEAML end to end on the embedded synthetic benchmark (offline, CPU).

    python -m leaml_jax.main --config=configs/demo.py --workdir=runs/demo            # sports (default)
    python -m leaml_jax.main --config=configs/demo.py:endoscopy --workdir=runs/endo  # endoscopy domain
    python -m leaml_jax.main --config=configs/demo.py:quick --workdir=runs/quick     # small, for CI

Pre-trains the tiny base VLM on `synthetic_general`, then adapts it to the target domain with
1% of the labels: relevance mask -> QA generator with caption distillation -> pseudo QA -> VQA
fine-tune, against zero-shot / full fine-tune / LoRA baselines and the ablations.
Overrides: --config.seed=1 --config.data.label_fraction=0.02 ...
"""
from leaml_jax.defaults import base_config


def get_config(arg: str = ""):
  opts = set(filter(None, arg.split(",")))
  c = base_config()
  c.name = "demo"
  c.data.domain = "synthetic_endoscopy" if "endoscopy" in opts else "synthetic_sports"
  if c.data.domain == "synthetic_sports":
    # Clips reach the tiny model as 4 frames stacked in each patch (ViViT tubelets): motion
    # (ball direction, passes) is then visible inside a patch. Measured on direction questions
    # alone, 600 steps: 58% with the frames tiled 2x2 into one image, 92% with tubelets.
    c.data.frames, c.model.vit_frames = "blocks", 4
  # Step budget sized so the full demo (base + LEAML + 2 baselines + 3 ablations) fits 15 min on
  # 2 CPU cores (measured 756 s); every method trains the same number of steps.
  c.base.steps = 400
  c.qa_generator.steps = c.vqa.steps = 200
  if "quick" in opts:
    c.name = "demo_quick"
    c.data.num_train, c.data.num_test = 600, 100
    c.base.num_images = 1200
    # A smoke run for CI (<= 3 min): every stage and method, too few steps to learn much.
    c.base.steps, c.qa_generator.steps, c.vqa.steps = 60, 40, 40
    for t in (c.base, c.qa_generator, c.vqa):
      t.warmup_steps = 5
    c.ablations = ()
  return c
