"""Confidence intervals for accuracies over seeds and test images (percentile bootstrap).

The test questions are the same for every method and seed (the test split is fixed by the
dataset build); questions on one image are not independent, so the resampling unit is the test
*image*. One replicate draws seeds with replacement and test images with replacement, and gives
every method its accuracy on exactly that draw: the methods are resampled jointly, so the
interval of a difference between two methods is a *paired* interval. With one seed only the
images are resampled.

Inputs per method: `correct[seed]` 0/1 per test question (same question order everywhere) and the
test image of each question.
"""
from __future__ import annotations

import numpy as np


def _per_image(correct, image_ids):
  """-> (correct counts [seeds, images], questions per image [images]) over sorted image ids."""
  _, image_index = np.unique(np.asarray(image_ids), return_inverse=True)
  n_images = int(image_index.max()) + 1
  counts = np.stack([np.bincount(image_index, weights=np.asarray(c, np.float64), minlength=n_images)
                     for c in correct])
  return counts, np.bincount(image_index, minlength=n_images).astype(np.float64)


def bootstrap(correct: dict, image_ids, *, num_samples: int = 2000, seed: int = 0) -> dict:
  """Replicates of every method's accuracy: {method: float [num_samples]}.

  correct: {method: [per seed: 0/1 per question]} (every method has the same number of seeds)."""
  methods = list(correct)
  per_image = {m: _per_image(correct[m], image_ids) for m in methods}
  n_seeds = {len(correct[m]) for m in methods}
  if len(n_seeds) != 1:
    raise ValueError(f"every method needs the same seeds; got {[(m, len(correct[m])) for m in methods]}")
  n_seeds = n_seeds.pop()
  n_images = len(per_image[methods[0]][1])
  rng = np.random.default_rng(seed)
  seed_draws = rng.integers(0, n_seeds, (num_samples, n_seeds)) if n_seeds > 1 else np.zeros(
      (num_samples, 1), int)
  image_weights = np.stack([np.bincount(rng.integers(0, n_images, n_images), minlength=n_images)
                            for _ in range(num_samples)]).astype(np.float64)  # [samples, images]
  out = {}
  for m in methods:
    counts, questions = per_image[m]
    acc_by_seed = (image_weights @ counts.T) / (image_weights @ questions)[:, None]  # [samples, seeds]
    out[m] = np.take_along_axis(acc_by_seed, seed_draws, axis=1).mean(axis=1)
  return out


def interval(samples, level: float = 0.95) -> list[float]:
  """Percentile interval of bootstrap replicates."""
  lo, hi = np.quantile(np.asarray(samples), [(1 - level) / 2, (1 + level) / 2])
  return [float(lo), float(hi)]


def summarize(correct: dict, image_ids, pairs=(), *, num_samples: int = 2000, seed: int = 0) -> dict:
  """{"methods": {m: {"accuracy", "ci95", "per_seed"}}, "paired": {"a-b": {"mean", "ci95"}}}.
  `pairs`: (a, b) method names whose difference a - b gets a paired interval."""
  reps = bootstrap(correct, image_ids, num_samples=num_samples, seed=seed)
  methods = {}
  for m, per_seed in correct.items():
    accs = [float(np.mean(c)) for c in per_seed]
    methods[m] = {"accuracy": float(np.mean(accs)), "ci95": interval(reps[m]), "per_seed": accs}
  paired = {f"{a}-{b}": {"mean": methods[a]["accuracy"] - methods[b]["accuracy"],
                         "ci95": interval(reps[a] - reps[b])}
            for a, b in pairs if a in correct and b in correct}
  return {"methods": methods, "paired": paired}
