"""Real datasets (Kvasir-VQA, SPORTU-video) built from small fixture files written here in the
real formats (HF parquet with image bytes, images + CSV, SportU_Video_mc.json + video clips),
then the pipeline's prepare -> evaluate path on them with the tiny model.

Expected types, answers, categories, kept/dropped ids and sampled frames are written out by
hand from the fixture tables below, never read back from the builders.
"""
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from leaml_jax import config_lib, main
from leaml_jax.data import DataError, MissingDataError, datasets, frames
from leaml_jax.data.datasets import base, kvasir, sportu, synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32
COLOR_Q = "What color is the abnormality? If more than one separate with ;"
FINDINGS_Q = "Are there any abnormalities in the image? Check all that are present."
INSTR_Q = "Are there any instruments in the image? Check all that are present."

# img_id -> (source, [(question, raw answer, expected type, expected stored answer)], category)
KVASIR = {
    "img_polyp1": ("hyper-kvasir", [
        ("What type of procedure is the image taken from?", "Colonoscopy", "single_choice",
         "Colonoscopy"),
        (FINDINGS_Q, "polyp", "multiple_choice", "polyp"),
        ("How many polyps are in the image?", "1", "count", "1"),
        (COLOR_Q, "red;pink", "color", "pink; red"),
        ("Where in the image is the abnormality?", "upper-left; center", "location",
         "center; upper-left")], "polyp"),
    "img_polyp2": ("hyper-kvasir", [
        (FINDINGS_Q, "polyp; oesophagitis", "multiple_choice", "oesophagitis; polyp"),
        ("Is there a green/black box artefact?", "Yes", "yes_no", "Yes")], "polyp"),
    "img_instr": ("kvasir-instrument", [
        (INSTR_Q, "biopsy forceps", "multiple_choice", "biopsy forceps"),
        ("How many instrumnets are in the image?", "1", "count", "1")], "instrument"),
    "img_infl": ("hyper-kvasir", [
        (FINDINGS_Q, "ulcerative colitis", "multiple_choice", "ulcerative colitis"),
        ("Is there text?", "No", "yes_no", "No")], "inflammation"),
    "img_barrett": ("hyper-kvasir", [
        (FINDINGS_Q, "barretts", "multiple_choice", "barretts")], "other_finding"),
    "img_normal1": ("hyper-kvasir", [
        (FINDINGS_Q, "none", "multiple_choice", "none"),
        ("Have all polyps been removed?", "", None, None),  # empty answer: dropped, reported
        (INSTR_Q, "none", "multiple_choice", "none")], "normal"),
    "img_normal2": ("hyper-kvasir", [
        ("Where in the image is the anatomical landmark?", "center", "location", "center"),
        ("Is the bowel preparation adequate?", "yes", "yes_no", "yes")], "normal"),  # untemplated
    "img_corrupt": ("hyper-kvasir", [
        ("Is there text?", "No", "yes_no", "No")], None),
}
GOOD_IMAGES = sorted(k for k, v in KVASIR.items() if v[2])


def _jpeg(value: int, size=(40, 30)) -> bytes:
  buf = io.BytesIO()
  Image.new("RGB", size, (value, 255 - value, 90)).save(buf, format="JPEG")
  return buf.getvalue()


def _image_bytes(k: int, img_id: str) -> bytes:
  return b"\xff\xd8\xff garbage, not a jpeg" if img_id == "img_corrupt" else _jpeg(25 * k)


def write_kvasir_parquet(root):
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  rows = [{"image": {"bytes": _image_bytes(k, img_id), "path": f"{img_id}.jpg"},
           "source": source, "question": q, "answer": a, "img_id": img_id}
          for k, (img_id, (source, qa, _)) in enumerate(KVASIR.items()) for q, a, _, _ in qa]
  os.makedirs(root / "data", exist_ok=True)
  half = len(rows) // 2  # two files, several row groups each
  for i, part in enumerate((rows[:half], rows[half:])):
    pq.write_table(pa.Table.from_pylist(part), root / "data" / f"0000{i}.parquet",
                   row_group_size=4)


@pytest.fixture(scope="module")
def kvasir_built(tmp_path_factory):
  root = tmp_path_factory.mktemp("kvasir_files")
  write_kvasir_parquet(root)
  data_dir = str(tmp_path_factory.mktemp("kvasir_tfds"))
  path = base.build_local(kvasir.KvasirVQA, str(root), data_dir, image_size=SIZE, test_fraction=0.3,
                          seed=0)
  return root, path


def _examples(path):
  return {split: {ex["id"]: ex for ex in (datasets.load_source(path, split)[i] for i in
                                          range(len(datasets.load_source(path, split))))}
          for split in ("train", "test")}


def test_kvasir_parquet_build(kvasir_built):
  _, path = kvasir_built
  exs = _examples(path)
  assert not set(exs["train"]) & set(exs["test"])
  assert sorted({**exs["train"], **exs["test"]}) == GOOD_IMAGES
  assert len(exs["test"]) == round(0.3 * len(GOOD_IMAGES))
  for ex in {**exs["train"], **exs["test"]}.values():
    source, qa, category = KVASIR[ex["id"]]
    want = [(q, t, a) for q, _, t, a in qa if t]
    assert [(q["question"], q["type"], q["answer"]) for q in ex["qa"]] == want, ex["id"]
    assert {q["category"] for q in ex["qa"]} == {category}
    assert all(q["options"] is None and q["difficulty"] == "" for q in ex["qa"])
    assert ex["image"].shape == (SIZE, SIZE, 3) and ex["facts"]["source"] == source
  report = json.load(open(os.path.join(path, "build_report.json")))
  problems = {k: v["ids"] for k, v in report["problems"].items()}
  assert problems == {"corrupt_image": ["img_corrupt"], "empty_question_or_answer": ["img_normal1"],
                      "untemplated_question": ["img_normal2"]}
  assert report["counts"]["train_images"] + report["counts"]["test_images"] == len(GOOD_IMAGES)


def test_kvasir_image_folder_with_csv(tmp_path):
  root = tmp_path / "files"
  (root / "images").mkdir(parents=True)
  rows = ["img_id,source,question,answer"]
  for k, img_id in enumerate(("a1", "a2", "a3", "gone")):
    if img_id != "gone":
      (root / "images" / f"{img_id}.jpg").write_bytes(_jpeg(60 * k, size=(50, 20)))
    rows.append(f'{img_id},hyper-kvasir,"{COLOR_Q}","white; red"')
  (root / "metadata.csv").write_text("\n".join(rows) + "\n")
  path = base.build_local(kvasir.KvasirVQA, str(root), str(tmp_path / "tfds"), image_size=24,
                          test_fraction=0.3, seed=0)
  exs = _examples(path)
  assert sorted({**exs["train"], **exs["test"]}) == ["a1", "a2", "a3"]
  ex = next(iter(exs["train"].values()))
  assert ex["image"].shape == (24, 24, 3)
  assert ex["qa"][0]["answer"] == "red; white" and ex["qa"][0]["type"] == "color"
  report = json.load(open(os.path.join(path, "build_report.json")))
  assert report["problems"]["missing_image"]["ids"] == ["gone"]


@pytest.mark.parametrize("question,qtype,key", [
    ("What type of procedure is the image taken from?", "single_choice", "procedure"),
    ("Have all polyps been removed?", "yes_no", "polyps_removed"),
    ("Is this finding easy to detect?", "yes_no", "easy_to_detect"),
    ("Is there a green/black box artefact?", "yes_no", "box_artefact"),
    ("Is there text?", "yes_no", "text"),
    ("Does this image contain any finding?", "yes_no", "any_finding"),
    ("What type of polyp is present?", "single_choice", "polyp_type"),
    ("What is the size of the polyp?", "single_choice", "polyp_size"),
    ("How many polyps are in the image?", "count", "n_polyps"),
    ("How many findings are present?", "count", "n_findings"),
    ("How many instrumnets are in the image?", "count", "n_instruments"),
    (COLOR_Q, "color", "abnormality_color"),
    ("What color is the anatomical landmark? If more than one separate with ;", "color",
     "landmark_color"),
    ("Where in the image is the abnormality?", "location", "abnormality_where"),
    ("Where in the image is the instrument?", "location", "instrument_where"),
    ("Where in the image is the anatomical landmark?", "location", "landmark_where"),
    (FINDINGS_Q, "multiple_choice", "abnormalities"),
    ("Are there any anatomical landmarks in the image? Check all that are present.",
     "multiple_choice", "landmarks"),
    (INSTR_Q, "multiple_choice", "instruments"),
    ("  how many   POLYPS are in the image ", "count", "n_polyps"),
    ("How many lesions can you see?", "count", None),
    ("Is the lighting good?", "yes_no", None),
    ("Which side is the lumen on?", "single_choice", None),
])
def test_kvasir_question_types(question, qtype, key):
  assert kvasir.question_type(question) == (qtype, key)


def test_kvasir_names_follow_synthetic_endoscopy():
  assert len(kvasir.TEMPLATES) == 19
  assert set(kvasir.QUESTION_TYPES) == set(synthetic.question_types("synthetic_endoscopy"))
  assert {t for _, t, _ in kvasir.TEMPLATES} == set(kvasir.QUESTION_TYPES)


# ----------------------------------------------------------------------------- SPORTU
def write_clip(path, num=10, size=(48, 32)):
  """Frame i is flat grey 20 * i, so a sampled frame tells which index it was."""
  import av  # pylint: disable=import-outside-toplevel
  with av.open(str(path), "w") as c:
    s = c.add_stream("mpeg4", rate=10)
    s.width, s.height, s.pix_fmt, s.bit_rate = size[0], size[1], "yuv420p", 4_000_000
    for i in range(num):
      img = np.full((size[1], size[0], 3), 20 * i, np.uint8)
      for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
        c.mux(p)
    for p in s.encode():
      c.mux(p)


MC4 = {"A": "basketball", "B": "soccer", "C": "tennis", "D": "golf"}
SPORTU_ITEMS = [  # the raw items of SportU_Video_mc.json
    {"id": "Basketball_1_0", "question": "What sport is this?", "options": MC4, "answer": "A",
     "difficulty level": "easy"},
    {"id": "Basketball_1_1", "question": "Is there a foul?", "options": {"A": "Yes", "B": "No"},
     "answer": "B", "difficulty level": "hard"},
    {"id": "Basketball_2_0", "question": "How many passes?", "options": {"A": 1, "B": 2, "C": 3},
     "answer": "C", "difficulty level": "medium"},
    {"id": "soccer_1_0", "question": "What sport is this?", "options": MC4, "answer": "soccer",
     "difficulty level": "easy"},
    {"id": "soccer_1_1", "question": "Who scores?", "options": MC4, "answer": "E",
     "difficulty level": "hard"},
    {"id": "soccer_2", "question": "What sport is this?", "options": MC4, "answer": "B",
     "difficulty level": "easy"},
    {"id": "american_football_1_0", "question": "Is it a touchdown?",
     "options": {"A": "Yes", "B": "No"}, "answer": "A", "difficulty level": "medium"},
    {"id": "american_football_1_1", "question": "What sport is this?", "options": MC4,
     "answer": "D", "difficulty level": "easy"},
    {"id": "american_football_2_0", "question": "Is it a touchdown?",
     "options": {"A": "Yes", "B": "No"}, "answer": "B", "difficulty level": "medium"},
    {"id": "volleyball_9_0", "question": "What sport is this?", "options": MC4, "answer": "A",
     "difficulty level": "easy"},
    {"id": "tennis_1_0", "question": "What sport is this?", "options": MC4, "answer": "C",
     "difficulty level": "easy"},
]
# clip -> [(question, letter, difficulty)] kept; sport = category
SPORTU_KEPT = {
    "Basketball_1": [("What sport is this?", "A", "easy"), ("Is there a foul?", "B", "hard")],
    "Basketball_2": [("How many passes?", "C", "medium")],
    "soccer_1": [("What sport is this?", "B", "easy")],
    "soccer_2": [("What sport is this?", "B", "easy")],
    "american_football_1": [("Is it a touchdown?", "A", "medium"),
                            ("What sport is this?", "D", "easy")],
    "american_football_2": [("Is it a touchdown?", "B", "medium")],
}
SPORT = {"Basketball_1": "basketball", "Basketball_2": "basketball", "soccer_1": "soccer",
         "soccer_2": "soccer", "american_football_1": "american_football",
         "american_football_2": "american_football"}


def write_sportu(root, clips=True):
  (root / "videos" / "Basketball").mkdir(parents=True)
  (root / "SportU_Video_mc.json").write_text(json.dumps(SPORTU_ITEMS))
  if clips:
    for clip in SPORTU_KEPT:
      sub = "Basketball" if clip.startswith("Basketball") else ""
      write_clip(root / "videos" / sub / f"{clip}.mp4")
    (root / "videos" / "tennis_1.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated clip")


@pytest.fixture(scope="module")
def sportu_files(tmp_path_factory):
  root = tmp_path_factory.mktemp("sportu_files")
  write_sportu(root)
  return root


def test_sportu_build(sportu_files, tmp_path):
  path = base.build_local(sportu.SportuVideo, str(sportu_files), str(tmp_path), image_size=SIZE,
                          num_frames=4, test_fraction=0.34, seed=0)
  exs = _examples(path)
  assert not set(exs["train"]) & set(exs["test"]) and len(exs["test"]) == 2
  assert sorted({**exs["train"], **exs["test"]}) == sorted(SPORTU_KEPT)
  for ex in {**exs["train"], **exs["test"]}.values():
    assert [(q["question"], q["answer"], q["difficulty"]) for q in ex["qa"]] == SPORTU_KEPT[ex["id"]]
    assert {q["category"] for q in ex["qa"]} == {SPORT[ex["id"]]}
    assert all(q["type"] == "multiple_choice" and q["answer"] in q["options"] for q in ex["qa"])
    clip = frames.from_strip(ex["image"], ex["facts"]["num_frames"])
    assert clip.shape == (4, SIZE, SIZE, 3)
    # 10 frames, 4 samples at segment centres 1.25, 3.75, 6.25, 8.75 -> frames 1, 3, 6, 8
    np.testing.assert_allclose(clip.reshape(4, -1).mean(1), [20, 60, 120, 160], atol=6)
  b2 = {**exs["train"], **exs["test"]}["Basketball_2"]["qa"][0]
  assert b2["options"] == {"A": "1", "B": "2", "C": "3"}
  report = json.load(open(os.path.join(path, "build_report.json")))
  problems = {k: v["ids"] for k, v in report["problems"].items()}
  assert problems == {"missing_clip": ["volleyball_9"], "answer_not_in_options": ["soccer_1_1"],
                      "unreadable_clip": ["tennis_1"]}
  assert report["counts"]["qa_without_clip"] == 1


def test_sportu_zero_clips_fails_naming_the_directory(tmp_path):
  root = tmp_path / "only_json"
  write_sportu(root, clips=False)
  with pytest.raises(MissingDataError) as e:
    base.build_local(sportu.SportuVideo, str(root), str(tmp_path / "tfds"), image_size=SIZE,
                     num_frames=2)
  msg = str(e.value)
  assert str(root) in msg and "no video clips" in msg and "expected layout" in msg
  assert "SportU_Video_mc.json" in msg and "configs/demo.py" in msg


@pytest.mark.parametrize("raw,options", [
    ({"A": "x", "B": "y"}, {"A": "x", "B": "y"}),
    ({"a": 2, "b": 3, "c": 10}, {"A": "2", "B": "3", "C": "10"}),
    (["p", "q", "r", "s"], {"A": "p", "B": "q", "C": "r", "D": "s"}),
    ({"A": "x"}, None), ({"A": "x", "C": "y"}, None), ({"A": "x", "B": ""}, None), ("x", None),
])
def test_sportu_options(raw, options):
  assert sportu.parse_options(raw) == options


@pytest.mark.parametrize("item_id,sport,clips", [
    ("Basketball_85_1", "basketball", ["Basketball_85_1", "Basketball_85"]),
    ("american_football_12_0", "american_football",
     ["american_football_12_0", "american_football_12"]),
    ("soccer_3", "soccer", ["soccer_3"]),
])
def test_sportu_ids(item_id, sport, clips):
  assert sportu.sport_of(item_id) == sport
  assert sportu.clip_candidates({"id": item_id}) == clips


# ----------------------------------------------------------------------------- frames
def test_tile_and_blocks():
  vals = [10, 60, 110, 160, 210]
  strip = frames.to_strip([np.full((8, 8, 3), v, np.uint8) for v in vals])
  assert strip.shape == (40, 8, 3)
  tiled = frames.arrange(strip, 5, "tile", 30)  # 3x3 grid of 10 px cells, row-major
  for k, v in enumerate(vals):
    r, c = divmod(k, 3)
    assert (tiled[r * 10:(r + 1) * 10, c * 10:(c + 1) * 10] == v).all()
  assert (tiled[10:, 20:] == 0).all() and (tiled[20:, 10:] == 0).all()
  blocks = frames.arrange(strip, 5, "blocks", 16)
  assert blocks.shape == (5, 16, 16, 3) and (blocks[3] == 160).all()
  assert frames.arrange(np.zeros((8, 8, 3), np.uint8), 1, "blocks", 16).shape == (16, 16, 3)
  np.testing.assert_array_equal(frames.sample_indices(10, 4), [1, 3, 6, 8])
  np.testing.assert_array_equal(frames.sample_indices(2, 4), [0, 0, 1, 1])


# ----------------------------------------------------------------------------- user boundary
def test_sports_config_without_data_exits_2_before_any_work(tmp_path):
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
  workdir = tmp_path / "run"
  r = subprocess.run([sys.executable, "-m", "leaml_jax.main",
                      f"--config={REPO}/configs/sports.py", f"--workdir={workdir}"],
                     cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
  assert r.returncode == 2, r.stderr
  for part in ("'data/sportu'", "not found", "github.com/chili-lab/SPORTU",
               "SportU_Video_mc.json", "expected layout", "configs/demo.py"):
    assert part in r.stderr, (part, r.stderr)
  assert "Traceback" not in r.stderr and not workdir.exists()


def test_real_config_needs_a_caption_source(tmp_path, sportu_files):
  cfg = config_lib.load_config_file(f"{REPO}/configs/sports.py:tiny")
  config_lib.apply_override(cfg, "data.path", str(sportu_files))
  with pytest.raises(config_lib.ConfigError, match="captions.path"):
    datasets.check_config(cfg, str(tmp_path))


# ----------------------------------------------------------------------------- pipeline
def _tiny(config, data_path, captions, **overrides):
  cfg = config_lib.load_config_file(f"{REPO}/configs/{config}.py:tiny")
  small = {"data.path": str(data_path), "captions.path": str(captions),
           "stages": "prepare,base,captions,baselines,evaluate,report",
           "baselines.methods": "zero_shot,finetune", "base.num_images": "16", "base.steps": "0",
           "base.batch_size": "8", "vqa.steps": "3", "data.label_fraction": "0.5",
           "mesh.num_devices": "1", "progress": "false", "eval.max_new_tokens": "6"}
  small.update(overrides)
  for k, v in small.items():
    config_lib.apply_override(cfg, k, v)
  return cfg


def _write_captions(path, ids):
  path.write_text("".join(json.dumps({"image_id": i, "caption": f"a clip of {i}"}) + "\n"
                          for i in ids))
  return path


def _check_run(workdir, image_ids, test_qa):
  splits = json.load(open(workdir / "data" / "splits.json"))
  lab, unl, test = (set(splits[k]) for k in ("labeled", "unlabeled", "test"))
  assert not lab & unl and not lab & test and not unl & test
  assert lab | unl | test == set(image_ids)
  rep = json.load(open(workdir / "report.json"))
  assert set(rep["methods"]) == {"zero_shot", "finetune"}
  assert rep["counts"]["test_qa"] == sum(test_qa[i] for i in test)
  for m in rep["methods"].values():
    assert 0.0 <= m["accuracy"] <= 1.0
  return rep, splits


def test_sports_pipeline_prepare_to_report(tmp_path, sportu_files):
  caps = _write_captions(tmp_path / "caps.jsonl", SPORTU_KEPT)
  cfg = _tiny("sports", sportu_files, caps)
  workdir = tmp_path / "run"
  main.main(cfg, str(workdir))
  rep, _ = _check_run(workdir, SPORTU_KEPT, {k: len(v) for k, v in SPORTU_KEPT.items()})
  assert rep["dataset"] == "sportu_video"
  for m in rep["methods"].values():
    assert set(m["per_category"]) <= {"basketball", "soccer", "american_football"}
    assert set(m["per_difficulty"]) <= {"easy", "medium", "hard"}
  assert os.path.exists(workdir / "data" / "tokenizer.json")


def test_kvasir_pipeline_prepare_to_evaluate(tmp_path, kvasir_built):
  root, _ = kvasir_built
  caps = _write_captions(tmp_path / "caps.jsonl", GOOD_IMAGES)
  cfg = _tiny("kvasir", root, caps, stages="prepare,base,evaluate,report",
              **{"baselines.methods": "zero_shot"})
  workdir = tmp_path / "run"
  main.main(cfg, str(workdir))
  n_qa = {k: sum(1 for _, _, t, _ in KVASIR[k][1] if t) for k in GOOD_IMAGES}
  rep = json.load(open(workdir / "report.json"))
  splits = json.load(open(workdir / "data" / "splits.json"))
  assert set(splits["labeled"]) | set(splits["unlabeled"]) | set(splits["test"]) == set(GOOD_IMAGES)
  assert not set(splits["test"]) & (set(splits["labeled"]) | set(splits["unlabeled"]))
  assert rep["counts"]["test_qa"] == sum(n_qa[i] for i in splits["test"])
  ev = json.load(open(workdir / "eval" / "zero_shot.json"))
  assert 0.0 <= ev["bleu"] <= 1.0 and 0.0 <= ev["rouge_l"] <= 1.0
  assert set(ev["per_type"]) <= set(kvasir.QUESTION_TYPES) and ev["per_difficulty"] == {}


@pytest.mark.parametrize("mode,shape", [("tile", (SIZE, SIZE, 3)),
                                        ("blocks", (4, SIZE, SIZE, 3))])
def test_prepare_gives_frames_as_configured(tmp_path, sportu_files, mode, shape):
  from leaml_jax.stages import artifacts, context  # pylint: disable=import-outside-toplevel
  cfg = _tiny("sports", sportu_files, "", stages="prepare", **{"data.frames": mode})
  workdir = tmp_path / "run"
  main.main(cfg, str(workdir))
  ctx = context.Context(cfg, str(workdir))
  exs = artifacts.examples(ctx, "labeled") + artifacts.examples(ctx, "test")
  assert exs and all(ex["image"].shape == shape and ex["image"].dtype == np.uint8 for ex in exs)
  if mode == "tile":  # frame k of the clip (grey 20 * {1, 3, 6, 8}[k]) in grid cell k of 2x2
    tl, br = exs[0]["image"][:SIZE // 2, :SIZE // 2], exs[0]["image"][SIZE // 2:, SIZE // 2:]
    assert abs(tl.mean() - 20) < 6 and abs(br.mean() - 160) < 6
  enc = ctx.encoder.encode_example(exs[0]["image"], "What sport is this?", "soccer", exs[0]["id"])
  assert enc["image"].shape == shape and enc["image"].dtype == np.float32


# ----------------------------------------------------------------------------- pseudo-QA rules
@pytest.mark.parametrize("question,answer,want", [
    ("How many polyps are in the image?", "2", ("count", "2")),
    ("How many polyps are in the image?", "two", None),
    ("Is there text?", "No", ("yes_no", "No")),
    ("Is there text?", "polyp", None),
    (COLOR_Q, "red;pink", ("color", "pink; red")),
    ("What is the weather like?", "sunny", None),      # no Kvasir-VQA template
    ("Is there text?", "", None),
])
def test_kvasir_pseudo_qa_rule(question, answer, want):
  rule = datasets.pseudo_qa_rule("kvasir_vqa", [])
  got = rule(question, answer, None, np.random.default_rng(0))
  assert (got and (got["type"], got["answer"])) == (want or None)
  assert rule("Is there text?", "A", {"A": "yes", "B": "no"}, None) is None


def test_sportu_pseudo_qa_rule():
  labeled = [{"qa": [{"question": "What sport is this?", "options": MC4},
                     {"question": "Is there a foul?", "options": {"A": "Yes", "B": "No"}}]}]
  rule = datasets.pseudo_qa_rule("sportu_video", labeled)
  rng = np.random.default_rng(0)
  qa = rule("What sport is this?", "golf", None, rng)
  assert len(qa["options"]) == 4 and set(qa["options"].values()) == set(MC4.values())
  assert qa["options"][qa["answer"]] == "golf"
  qa = rule("Is there a foul?", "No", None, rng)
  assert sorted(qa["options"].values()) == ["No", "Yes"] and qa["options"][qa["answer"]] == "No"
  assert rule("What sport is this?", "chess", None, rng) is None      # not an option text
  assert rule("Who wins the game?", "soccer", None, rng) is None      # never asked
  assert rule("Q?", "B", {"A": "x", "B": "y"}, rng)["answer"] == "B"  # generated options
  assert rule("Q?", "C", {"A": "x", "B": "y"}, rng) is None
