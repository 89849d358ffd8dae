"""Bootstrap intervals against cases whose bootstrap distribution is known by hand."""
import numpy as np
import pytest

from leaml_jax import stats

N = 8000  # replicates: frequencies within ~0.015 of their exact values


def _freq(samples, value):
  return float(np.mean(np.isclose(samples, value)))


def test_two_images_one_seed_gives_the_enumerated_distribution():
  # Image "a": 3 questions, all right; image "b": 1 question, wrong. A resample of two images is
  # {a, a} (p 1/4: accuracy 1), {a, b} (p 1/2: 3/4, counted per question), {b, b} (p 1/4: 0).
  reps = stats.bootstrap({"m": [[1, 1, 1, 0]]}, ["a", "a", "a", "b"], num_samples=N)["m"]
  assert _freq(reps, 1.0) == pytest.approx(0.25, abs=0.02)
  assert _freq(reps, 0.75) == pytest.approx(0.5, abs=0.02)
  assert _freq(reps, 0.0) == pytest.approx(0.25, abs=0.02)
  assert stats.interval(reps) == [0.0, 1.0]  # 2.5% and 97.5% quantiles fall in the end atoms


def test_paired_difference_resamples_methods_jointly():
  # a is right on image x only, b on image y only: a - b is +1 on {x,x}, 0 on {x,y}, -1 on {y,y}.
  correct = {"a": [[1, 0]], "b": [[0, 1]]}
  reps = stats.bootstrap(correct, ["x", "y"], num_samples=N)
  diff = reps["a"] - reps["b"]
  assert _freq(diff, 0.0) == pytest.approx(0.5, abs=0.02) and _freq(diff, 1.0) == pytest.approx(0.25, abs=0.02)
  # Identical methods: every replicate's difference is exactly 0 (an unpaired bootstrap would not be).
  out = stats.summarize({"a": [[1, 0, 1]], "b": [[1, 0, 1]]}, ["x", "y", "z"], pairs=[("a", "b")])
  assert out["paired"]["a-b"] == {"mean": 0.0, "ci95": [0.0, 0.0]}


def test_seeds_are_resampled_too():
  # Seed 0 gets everything right, seed 1 everything wrong: the seed draw alone decides,
  # 1 (p 1/4), 1/2 (p 1/2), 0 (p 1/4), whatever images are drawn.
  correct = {"m": [[1, 1, 1], [0, 0, 0]]}
  reps = stats.bootstrap(correct, ["x", "y", "z"], num_samples=N)["m"]
  assert _freq(reps, 0.5) == pytest.approx(0.5, abs=0.02)
  out = stats.summarize(correct, ["x", "y", "z"])["methods"]["m"]
  assert out["per_seed"] == [1.0, 0.0] and out["accuracy"] == 0.5 and out["ci95"] == [0.0, 1.0]


def test_unequal_seed_counts_are_refused():
  with pytest.raises(ValueError, match="same seeds"):
    stats.bootstrap({"a": [[1]], "b": [[1], [0]]}, ["x"])
