"""The general world the demo's base is pre-trained on: stills and 4-frame clips that ask every
kind of question the target domains ask, checked against the facts and the pixels (not the QA
code); the one image layout stills and clips reach the model in; and the base's held-out general
split, disjoint from its training images."""
import collections
import functools
import hashlib
import json
import os

import numpy as np
import pytest

from leaml_jax import config_lib, main
from leaml_jax.data import datasets, frames
from leaml_jax.data.datasets import synthetic
from leaml_jax.data.datasets.synthetic import render
from leaml_jax.stages import artifacts, base, context

DOMAIN = "synthetic_general"
S = 32


@functools.lru_cache(maxsize=None)
def examples(n=240, split="train"):
  return synthetic.generate_examples(DOMAIN, split, n, seed=0, caption_error_rate=0.0)


def _split(exs):
  stills = [ex for ex in exs if ex["facts"]["num_frames"] == 1]
  return stills, [ex for ex in exs if ex["facts"]["num_frames"] > 1]


# ----------------------------------------------------------------------------- the world
def test_stills_and_clips_cover_every_kind_of_question():
  stills, clips = _split(examples())
  assert 0.35 < len(clips) / len(examples()) < 0.65
  types = lambda exs: collections.Counter(q["type"] for ex in exs for q in ex["qa"])
  want = {"presence", "count", "group_count", "color", "location", "objects", "scene",
          "direction", "holder", "action"}
  assert set(synthetic.question_types(DOMAIN)) == want
  assert set(types(stills)) == {"presence", "count", "group_count", "color", "location",
                                "objects", "scene"}
  assert set(types(clips)) == {"count", "group_count", "scene", "direction", "holder", "action"}
  assert min(types(examples()).values()) >= 60  # no type is rare
  answers = collections.defaultdict(set)
  for ex in clips:
    for q in ex["qa"]:
      answers[q["question"]].add(q["answer"])
  assert answers["Which way does the ball move?"] == {"left", "right", "up", "down"}
  assert answers["What does the person with the ball do?"] == {
      "gives it to a friend", "loses it", "runs with it", "kicks it away"}
  assert "nobody" in answers["Who has the ball at the end?"]
  assert "nobody" not in answers["Who has the ball at the start?"]
  counts = {a for ex in examples() for q in ex["qa"] if q["type"] == "group_count"
            for a in [q["answer"]]}
  assert {"0", "1", "2"} <= counts  # per-group counts, absent groups included


def test_clips_are_strips_of_frames_like_the_target_clips():
  stills, clips = _split(examples())
  sports = synthetic.generate_examples("synthetic_sports", "train", 1, seed=0)[0]
  for ex in clips:
    assert ex["facts"]["num_frames"] == sports["facts"]["num_frames"] == 4
    assert ex["image"].shape == sports["image"].shape == (4 * S, S, 3)
    strip = frames.from_strip(ex["image"], 4)
    assert not np.array_equal(strip[0], strip[-1]), ex["id"]  # something moves
  for ex in stills:
    assert ex["image"].shape == (S, S, 3)


def _ball_centre(frame, rgb):
  """Centroid (x, y) in frame units of the pixels within 30 of the ball's colour."""
  near = np.abs(frame.astype(int) - np.asarray(rgb)).max(-1) < 30
  ys, xs = np.nonzero(near)
  assert len(xs) >= 3, "ball not visible"
  return (xs.mean() + 0.5) / frame.shape[1], (ys.mean() + 0.5) / frame.shape[0]


def test_the_ball_moves_in_the_pixels_the_way_the_facts_say():
  _, clips = _split(examples())
  checked = 0
  for ex in clips:
    f = ex["facts"]
    dim = 1.0 if f["time"] == "day" else 0.65
    rgb = render.shade(render.PALETTE[f["ball_color"]], dim)
    strip = frames.from_strip(ex["image"], 4)
    people_rgb = [render.shade(render.PALETTE[c], dim) for c in f["groups"]]
    if min(np.abs(np.subtract(rgb, p)).max() for p in people_rgb) < 60:
      continue  # a ball near a shirt colour: the centroid would mix them
    (x0, y0), (x1, y1) = _ball_centre(strip[0], rgb), _ball_centre(strip[-1], rgb)
    dx, dy = x1 - x0, y1 - y0
    seen = ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
    assert seen == f["direction"], (ex["id"], dx, dy)
    assert max(abs(dx), abs(dy)) > 0.2, ex["id"]  # a move a 32-pixel frame shows
    checked += 1
  assert checked > 60


# Where each kind's main colour sits, relative to the object's position (frame units).
BODY_OFFSET = {"person": (0, 0.01), "dog": (-0.03, 0.03), "ball": (0, 0.05), "car": (0, 0.04),
               "tree": (0, -0.05), "balloon": (0, -0.02), "bird": (0.02, 0.0)}


def test_still_objects_show_their_colour_in_their_grid_cell():
  stills, _ = _split(examples())
  for ex in stills:
    f = ex["facts"]
    dim = 1.0 if f["time"] == "day" else 0.65
    for o in f["objects"]:
      dx, dy = BODY_OFFSET[o["kind"]]
      px = ex["image"][int((o["xy"][1] + dy) * S), int((o["xy"][0] + dx) * S)].astype(float)
      want = np.asarray(render.shade(render.PALETTE[o["color"]], dim))
      assert np.abs(px - want).max() < 40, (ex["id"], o, px, want)
      row, col = int(o["xy"][1] * 3), int(o["xy"][0] * 3)
      names = [["upper-left", "upper-center", "upper-right"], ["center-left", "center", "center-right"],
               ["lower-left", "lower-center", "lower-right"]]
      assert o["cell"] == names[row][col]
      assert (row == 0) == (o["kind"] in ("balloon", "bird"))  # the sky is the upper row


def test_same_people_count_in_every_frame_and_holder_in_reach():
  _, clips = _split(examples())
  for ex in clips:
    f = ex["facts"]
    shirts = collections.Counter(p["color"] for p in f["people"])
    assert shirts == collections.Counter({c: n for c, n in f["counts"].items()}), ex["id"]
    for t in (0, -1):  # the ball is in someone's reach, or (kicked away) far from everyone
      d = min(np.hypot(*np.subtract(p["xy"][t], f["ball"][t])) for p in f["people"])
      holder = f["start_holder"] if t == 0 else f["end_holder"]
      assert (d < 0.15) == (holder != "nobody"), (ex["id"], t, d)
      if holder == "nobody":
        assert d > 0.25, (ex["id"], d)


def test_generation_is_fast():
  examples_needed = 200
  import time  # pylint: disable=import-outside-toplevel
  t0 = time.perf_counter()
  synthetic.generate_examples(DOMAIN, "validation", examples_needed, seed=3)
  per_ex = (time.perf_counter() - t0) / examples_needed
  assert per_ex < 0.01  # 20k in <= ~200 s even on a busy shared machine (idle: ~1.3 ms)


# ----------------------------------------------------------------------------- the layout
def _data_cfg(frames_mode, domain):
  cfg = config_lib.load_config_file("configs/demo.py" + (":endoscopy" if "endo" in domain else ""))
  cfg.data.frames, cfg.data.domain = frames_mode, domain
  return cfg.data


def test_stills_and_clips_reach_the_model_in_the_runs_one_layout():
  stills, clips = _split(examples(40))
  blocks = _data_cfg("blocks", "synthetic_sports")   # the sports demo: 4-frame tubelets
  tile = _data_cfg("tile", "synthetic_endoscopy")     # the endoscopy demo: one image
  assert datasets.frames_per_example(blocks) == 4 and datasets.frames_per_example(tile) == 1
  still, clip = stills[0], clips[0]
  v = artifacts.model_view(still, blocks)["image"]
  assert v.shape == (4, S, S, 3) and all(np.array_equal(f, still["image"]) for f in v)
  v = artifacts.model_view(clip, blocks)["image"]
  np.testing.assert_array_equal(v, clip["image"].reshape(4, S, S, 3))
  assert artifacts.model_view(still, tile)["image"] is still["image"]
  v = artifacts.model_view(clip, tile)["image"]
  assert v.shape == (S, S, 3)
  frame1 = clip["image"][S:2 * S]  # frame 1 sits top-right, halved
  np.testing.assert_array_equal(v[:S // 2, S // 2:], frames.resize(frame1, S // 2))
  for cfg in (blocks, tile):  # one shape per batch
    shapes = {artifacts.model_view(ex, cfg)["image"].shape for ex in examples(40)}
    assert len(shapes) == 1, shapes


# ----------------------------------------------------------------------------- the held-out split
def _hashes(exs):
  return {hashlib.sha1(np.ascontiguousarray(ex["image"]).tobytes()).hexdigest() for ex in exs}


def test_base_is_measured_on_general_images_it_never_trained_on(tmp_path):
  cfg = config_lib.load_config_file("configs/demo.py:quick")
  for k, v in {"stages": "prepare,base", "data.num_train": "40", "data.num_test": "10",
               "base.num_images": "120", "base.eval_images": "30", "base.steps": "2",
               "base.batch_size": "8", "mesh.num_devices": "2"}.items():
    config_lib.apply_override(cfg, k, v)
  workdir = str(tmp_path / "run")
  main.main(cfg, workdir)
  ctx = context.Context(cfg, workdir)
  train, test = base.general_examples(ctx, "train"), base.general_examples(ctx, "test")
  assert len(train) == 120 and len(test) == 30
  assert not {ex["id"] for ex in train} & {ex["id"] for ex in test}
  assert not _hashes(train) & _hashes(test)
  # ...and no test image equals a training image frame by frame either (a still in a clip)
  frames_of = lambda exs: _hashes([{"image": f} for ex in exs for f in ex["image"]])
  assert not frames_of(train) & frames_of(test)
  result = json.load(open(os.path.join(workdir, "base", base.GENERAL_EVAL)))
  assert result["n"] == sum(len(ex["qa"]) for ex in test)
  assert 0.0 <= result["accuracy"] <= 1.0
  assert set(result["per_type"]) == set(synthetic.question_types(DOMAIN))
  assert all(0.0 <= v <= 1.0 for v in result["per_type"].values())


def test_image_shuffled_control_asks_every_question_of_another_examples_image(tmp_path, monkeypatch):
  """A model that reads the image (answers right only when shown the question's own image) scores
  1.0 with its own images and 0.0 on the control; one that ignores the image scores the same on both."""
  cfg = config_lib.load_config_file("configs/demo.py:quick")
  for k, v in {"stages": "prepare,base", "data.num_train": "40", "data.num_test": "10", "base.num_images": "40",
               "base.eval_images": "9", "base.steps": "1", "base.batch_size": "8", "mesh.num_devices": "1"}.items():
    config_lib.apply_override(cfg, k, v)
  fake = lambda answer: lambda model, params, records, **kw: ([answer(r) for r in records], None)  # noqa: E731
  monkeypatch.setattr(base.generate, "generate_texts", fake(lambda r: r["answer"]))
  workdir = str(tmp_path / "run")
  main.main(cfg, workdir)  # builds the general world and trains the base one step
  ctx = context.Context(cfg, workdir)
  own = {ex["id"]: _hashes([ex]) for ex in base.general_examples(ctx, "test")}
  reads_image = lambda r: r["answer"] if _hashes([r]) == own[r["image_id"]] else "no such answer"  # noqa: E731
  for answer, want in ((reads_image, (1.0, 0.0)), (lambda r: r["answer"], (1.0, 1.0))):
    monkeypatch.setattr(base.generate, "generate_texts", fake(answer))
    result = base.evaluate_general(ctx, params=None)
    assert result["n"] > 9  # several questions per image
    assert (result["accuracy"], result["image_shuffled"]["accuracy"]) == want
    assert set(result["image_shuffled"]["per_type"]) == set(result["per_type"])


def test_claim_base_trains_longer_without_slowing_the_demo_or_quick():
  """The comparison's base (trained once per sweep) gets the budget general competence needs;
  the 15-minute demo and the 3-minute smoke run keep theirs."""
  load = lambda arg: config_lib.load_config_file(f"configs/demo.py{arg}")
  demo, quick = load(""), load(":quick")
  assert (demo.base.steps, quick.base.steps) == (400, 60)
  for arg in (":claim", ":claim,endoscopy"):
    claim = load(arg)
    assert claim.base.steps >= 6 * demo.base.steps
    # only the budget changes: the same general world, batch and lr as the demo's
    assert (claim.base.batch_size, claim.base.lr, claim.base.num_images) == (
        demo.base.batch_size, demo.base.lr, demo.base.num_images)
