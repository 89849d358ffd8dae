"""sportu_video: SPORTU-video (1,701 slow-motion clips, 7 sports, 12,048 multiple-choice QA)
from local files.

Input (config.data.path, see SportuVideo.LAYOUT): SportU_Video_mc.json, a list of items
  {"id": "Basketball_85_1", "question": ..., "options": {"A": ..., "D": ...}, "answer": "B",
   "difficulty level": "easy" | "medium" | "hard"}
and the clips anywhere below, named <clip id>.<mp4|mov|avi|mkv|webm>. An item's clip is
the file named like its id, or like its id without the trailing _<n> question variant
(Basketball_85_1 -> Basketball_85). One record per clip with all its QA; `num_frames`
frames are sampled uniformly at build time (PyAV) and stored as one JPEG strip.

Options may number 2 to 8 (letters A..H) and be integers (stored as text); the answer is
kept as its option letter, given either as a letter or as the option's text. Every QA has
type "multiple_choice", difficulty from "difficulty level", and category = the sport (the id
prefix, lower case: Basketball_85_1 -> basketball), so per-category accuracy is per sport.
"""
import json
import os
import re

from leaml_jax.data import frames
from leaml_jax.data.datasets import base
from leaml_jax.data.datasets.synthetic.qa_common import mc_options
from leaml_jax.errors import DataSizeError, MissingDataError
from leaml_jax.data.prompts import OPTION_LETTERS
from leaml_jax.data.scoring import option_letter

QUESTION_TYPES = ("multiple_choice",)
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
_VARIANT = re.compile(r"(.+_\d+)_\d+")
_SPORT = re.compile(r"([A-Za-z][A-Za-z_ -]*?)[_ -]*\d")


def sport_of(item_id: str) -> str:
  """'Basketball_85_1' -> 'basketball', 'american_football_12_0' -> 'american_football'."""
  m = _SPORT.match(item_id)
  return m.group(1).lower().replace(" ", "_").replace("-", "_") if m else ""


def clip_candidates(item: dict) -> list[str]:
  """Clip ids an item may refer to, most specific first."""
  item_id = str(item.get("id", "")).strip()
  out = [os.path.splitext(os.path.basename(str(item[k])))[0]
         for k in ("video", "video_id", "clip", "video_path") if item.get(k)]
  out.append(item_id)
  m = _VARIANT.fullmatch(item_id)
  if m:
    out.append(m.group(1))
  return out


def parse_options(raw) -> dict | None:
  """{"A": text, ...} with letters A..H in order, or None when malformed (fewer than 2,
  unknown letters, empty text)."""
  if isinstance(raw, list):
    raw = dict(zip(OPTION_LETTERS, raw))
  if not isinstance(raw, dict):
    return None
  options = {str(k).strip().upper(): str(v).strip() for k, v in raw.items() if v is not None}
  letters = sorted(options)
  if (len(options) != len(raw) or len(options) < 2
      or letters != list(OPTION_LETTERS[:len(letters)]) or not all(options.values())):
    return None
  return {k: options[k] for k in letters}


def _load_items(path: str) -> list:
  with open(path) as f:
    data = json.load(f)
  if isinstance(data, dict):
    data = data.get("data", list(data.values()))
  if not isinstance(data, list):
    raise MissingDataError(f"{path}: expected a JSON list of items, got {type(data).__name__}")
  return data


class SportuVideo(base.LocalBuilder):
  """SPORTU-video from SportU_Video_mc.json and local clips."""
  DESCRIPTION = __doc__
  GET = ("SPORTU (https://github.com/chili-lab/SPORTU): SportU_Video_mc.json from the GitHub "
         "repository, the video clips from the download link in its README")
  LAYOUT = ("DIR/**/SportU_Video_mc.json and the clips anywhere under DIR as "
            "<clip id>.mp4 (.mov/.avi/.mkv/.webm), e.g. DIR/videos/Basketball/Basketball_85.mp4; "
            "the clip id is the item id, or the item id without its trailing _<n> variant")
  ANNOTATIONS = ("sportu_video_mc.json",)
  CLIPS = True

  def _index(self, root, report):
    items = _load_items(self.present(root))
    clips = {os.path.splitext(os.path.basename(p))[0].lower(): p
             for p in base.find_files(root, VIDEO_EXTENSIONS)}
    if not clips:
      raise DataSizeError(self.where_to_get(
          root, f"sportu_video: no video clips ({', '.join(VIDEO_EXTENSIONS)}) "
          f"found under {root!r} (searched recursively)"))
    index, missing = {}, set()
    for n, item in enumerate(items):
      item = item if isinstance(item, dict) else {}
      item_id = str(item.get("id", "")).strip() or f"item {n}"
      names = clip_candidates(item)
      found = next((c for c in names if c.lower() in clips), None)
      if found is None:
        report.counts["qa_without_clip"] += 1
        if names[-1] not in missing:
          missing.add(names[-1])
          report.problem("missing_clip", names[-1], f"no file named {' or '.join(names)}.*")
        continue
      path = clips[found.lower()]
      clip_id = os.path.splitext(os.path.basename(path))[0]
      question = str(item.get("question") or "").strip()
      options = parse_options(item.get("options"))
      if not question:
        report.problem("empty_question", item_id)
        continue
      if options is None:
        report.problem("bad_options", item_id, repr(item.get("options"))[:200])
        continue
      letter = option_letter(str(item.get("answer", "")), options)
      if letter is None:
        report.problem("answer_not_in_options", item_id,
                       f"answer {item.get('answer')!r} not in {options}")
        continue
      sport = sport_of(clip_id)
      if not sport:
        report.problem("sport_not_in_id", item_id, "category set to 'unknown'")
      difficulty = str(item.get("difficulty level", item.get("difficulty", ""))).strip().lower()
      entry = index.setdefault(clip_id, {"path": path, "sport": sport or "unknown", "qa": []})
      entry["qa"].append({"question": question, "answer": letter, "type": "multiple_choice",
                          "category": entry["sport"], "difficulty": difficulty,
                          "options": options, "item_id": item_id})
    if not index:
      raise DataSizeError(self.where_to_get(
          root, f"sportu_video: {len(clips)} clip file(s) under {root!r} but none "
          f"belongs to an item of SportU_Video_mc.json with a valid question"))
    return index

  def _example(self, clip_id, entry):
    c = self.builder_config
    try:
      clip = frames.sample_video(entry["path"], c.num_frames, c.image_size)
    except Exception as e:  # PyAV raises many types for broken files
      self.report.problem("unreadable_clip", clip_id, f"{type(e).__name__}: {e}"[:300])
      return None
    qa = [{k: v for k, v in q.items() if k != "item_id"} for q in entry["qa"]]
    return {"id": clip_id, "image": frames.encode_jpeg(frames.to_strip(clip)), "qa": qa,
            "facts": {"sport": entry["sport"], "num_frames": c.num_frames,
                      "items": [q["item_id"] for q in entry["qa"]]}, "caption": ""}


# ----------------------------------------------------------------------------- pseudo QA
def option_sets(examples) -> dict[str, list[str]]:
  """Question -> every option text it was asked with in `examples` (the labelled pool)."""
  out = {}
  for ex in examples:
    for q in ex["qa"]:
      pool = out.setdefault(q["question"].strip(), [])
      pool += [v for v in q["options"].values() if v not in pool]
  return out


def pseudo_qa(question: str, answer: str, options, rng, sets: dict) -> dict | None:
  """A generated QA as a QA dict, or None. The generator writes a multiple-choice question with
  its answer's text (options are format, not knowledge): the question must be one asked in the
  labelled pool and the answer one of its option texts; the options (up to 4) are drawn here
  from that question's option texts. Generated options must be 2-8 letters holding the answer."""
  question = question.strip()
  if options is not None:
    options = parse_options(options)
    ok = options is not None and answer in options
    return {"question": question, "answer": answer, "options": options,
            "type": "multiple_choice"} if ok else None
  pool = sets.get(question, [])
  if answer not in pool or len(pool) < 2:
    return None
  letter, drawn = mc_options(rng, answer, pool, n=min(4, len(pool)))
  return {"question": question, "answer": letter, "options": drawn, "type": "multiple_choice"}


def pseudo_qa_rule(labeled_examples):
  """`pseudo_qa` with the option texts each question was asked with in `labeled_examples`."""
  sets = option_sets(labeled_examples)
  return lambda question, answer, options, rng: pseudo_qa(question, answer, options, rng, sets)
