r"""Demo: LEAML end to end on the embedded synthetic benchmark (offline, CPU).

    python -m leaml_jax.main --config=configs/demo.py --workdir=runs/demo            # sports (default)
    python -m leaml_jax.main --config=configs/demo.py:endoscopy --workdir=runs/endo  # endoscopy domain
    python -m leaml_jax.main --config=configs/demo.py:quick --workdir=runs/quick     # small, for CI
    python -m leaml_jax.main --config=configs/demo.py:claim --workdir=runs/claim     # the comparison
    python -m leaml_jax.main --config=configs/demo.py:claim,endoscopy --workdir=runs/claim_endo

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
  if "claim" in opts:
    claim(c)
  return c


def claim(c) -> None:
  """The comparison LEAML is judged by: every trained method tuned the same way on a dev split
  (2 lrs x 4 step counts), the compute-matched and connector baselines, the 100%-labels ceiling,
  at a VQA budget where that ceiling leaves room. Measured 2026-12-02 (seed 0, the 400-step demo
  base, 2-core CPU; --config.data.text_len=36 --config.data.dev_images=100
  --config.baselines.methods=zero_shot,finetune,oracle_100 and the steps / lrs below), test
  accuracy with 100% vs 1% of the labels:
    sports      --config.vqa.steps=1800 --config.tune.lrs=1e-3,3e-3: 63.3% vs 35.9% (27.4 points)
    endoscopy   --config.vqa.steps=4000 --config.tune.lrs=1e-3,: 77.9% vs 47.9% (30.0 points);
                dev at step 3,000 of that run 75.4% vs 44.0%, hence 3,000 steps here.
  Cost per seed on this 2-core machine, the base not counted, estimated from measured train steps
  (batch 32: 0.108 s of CPU; QA generator, 32 + 32: 0.22 s) and ~11 s per training run for
  compiling and dev scoring: sports about 60 min (54 without oracle_100), endoscopy about 95 min;
  with one lr (--config.tune.lrs=1e-3,) about 33 and 50 min."""
  endoscopy = c.data.domain == "synthetic_endoscopy"
  c.name = "demo_claim_endoscopy" if endoscopy else "demo_claim"
  # Cheaper steps: the longest sequence of either domain is 34 tokens (teacher captions; VQA 25),
  # so 36 text tokens instead of 48 drop only padding (train step at batch 32: 0.134 -> 0.108 s).
  c.data.text_len = 36
  c.data.dev_images = 100            # ~500 QA; drawn from the train pool, never trained on
  # The base LEAML assumes answers everyday questions; 400 steps leave it at 45% on the held-out
  # general split, so the comparison's (shared, once per sweep) base trains 6x longer. Measured
  # 2026-12-02, 2-core CPU (README, "The comparison's base"): 57.9% at 2,400 steps (scene 100,
  # objects 83, count 63, per-colour count 60, presence 58, colour 53, location 50, direction 30,
  # holder 29, action 27) -- short of >= 85% per type. It underfits (at step 1,200 training-image
  # accuracy equals held-out); the rarest types are ~3 of the 64 questions a batch holds.
  c.base.steps = 2400
  c.tune.lrs, c.tune.evals = (1e-3, 3e-3), 4
  # The endoscopy ceiling needs more steps to leave the room (measured above).
  c.vqa.steps = 3000 if endoscopy else 1800
  c.baselines.methods = ("zero_shot", "finetune", "lora", "finetune_matched", "lora_connector",
                         "oracle_100")
  c.ablations = ("no_mask", "random_mask")
