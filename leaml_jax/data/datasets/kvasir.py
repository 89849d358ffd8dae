"""kvasir_vqa: the Kvasir-VQA dataset (GI endoscopy, 6,500 images, 58,849 QA) from local files.

Input (config.data.path, see KvasirVQA.LAYOUT): the Hugging Face export (parquet, columns
image{bytes,path}, source, question, answer, img_id) or a folder of <img_id>.jpg plus a
CSV/JSON(L) of source, question, answer, img_id. Images are resized (squashed) to
image_size at build time and stored as JPEG.

Question types use the synthetic_endoscopy names: the 19 Kvasir-VQA templates (TEMPLATES)
fall in yes_no, single_choice, multiple_choice, color, location and count; a question that
matches no template is typed by its first words and counted (`untemplated_question`).
color, location and multiple_choice answers are sets: their parts are joined with "; "
(sorted). Kvasir-VQA has no difficulty levels (difficulty ""). Every QA's category is its
image's class, as in synthetic_endoscopy: instrument (kvasir-instrument source or an
instrument present) > polyp > inflammation > other_finding > normal.
"""
import csv
import json
import os
import re

from leaml_jax.data import frames
from leaml_jax.data.datasets import base
from leaml_jax.data.datasets.synthetic.endoscopy import CATEGORIES as SYNTH_CATEGORIES
from leaml_jax.data.datasets.synthetic.qa_common import join_multi
from leaml_jax.errors import DataSizeError, MissingDataError

COLUMNS = ("img_id", "source", "question", "answer")
QUESTION_TYPES = ("yes_no", "single_choice", "multiple_choice", "color", "location", "count")
MULTI_TYPES = ("multiple_choice", "color", "location")
CATEGORIES = SYNTH_CATEGORIES + ("other_finding",)

# (key, type, pattern over the normalised question: lower case, single spaces, without the
# "check all that are present" / "if more than one separate with ;" tail and the "?").
TEMPLATES = (
    ("procedure", "single_choice", r"what type of procedure is the image taken from"),
    ("polyps_removed", "yes_no", r"have all polyps been removed"),
    ("easy_to_detect", "yes_no", r"is this finding easy to detect"),
    ("box_artefact", "yes_no", r"is there a green/black box artefact"),
    ("text", "yes_no", r"is there text"),
    ("any_finding", "yes_no", r"does this image contain any finding"),
    ("polyp_type", "single_choice", r"what type of polyp is present"),
    ("polyp_size", "single_choice", r"what is the size of the polyp"),
    ("n_polyps", "count", r"how many polyps are in the image"),
    ("n_findings", "count", r"how many findings are present"),
    ("n_instruments", "count", r"how many instrum\w* are in the image"),  # "instrumnets" in the data
    ("abnormality_color", "color", r"what colou?r is the abnormality"),
    ("landmark_color", "color", r"what colou?r is the anatomical landmark"),
    ("abnormality_where", "location", r"where in the image is the abnormality"),
    ("instrument_where", "location", r"where in the image is the instrument"),
    ("landmark_where", "location", r"where in the image is the anatomical landmark"),
    ("abnormalities", "multiple_choice", r"are there any abnormalities in the image"),
    ("landmarks", "multiple_choice", r"are there any anatomical landmarks in the image"),
    ("instruments", "multiple_choice", r"are there any instruments in the image"),
)
_TAIL = re.compile(r"[\s?.]*(check all that are present|if more than one,? separate (them )?"
                   r"with( a)? ;?)?[\s?.;]*$")
_YES_NO_START = ("is", "are", "does", "do", "has", "have", "was", "were", "can")
_NONE = {"", "no", "none", "0", "not relevant", "n/a"}
_INFLAMMATION = ("ulcerative colitis", "oesophagitis", "esophagitis", "inflammation", "ulcer")


def _norm_question(question: str) -> str:
  return _TAIL.sub("", re.sub(r"\s+", " ", question.strip().lower()))


def question_type(question: str) -> tuple[str, str | None]:
  """(type, template key or None when no template matches and the type was guessed)."""
  q = _norm_question(question)
  for key, qtype, pattern in TEMPLATES:
    if re.fullmatch(pattern, q):
      return qtype, key
  lower = question.lower()
  first = q.split(" ", 1)[0]
  if "check all" in lower:
    return "multiple_choice", None
  if q.startswith("how many"):
    return "count", None
  if re.match(r"what colou?r", q):
    return "color", None
  if q.startswith("where"):
    return "location", None
  return ("yes_no" if first in _YES_NO_START else "single_choice"), None


def answer_text(answer: str, qtype: str) -> str:
  """Set-valued types: parts (";"-separated) stripped, deduplicated, sorted, joined "; "."""
  answer = re.sub(r"\s+", " ", str(answer).strip())
  if qtype in MULTI_TYPES:
    return join_multi(p.strip() for p in answer.split(";") if p.strip())
  return answer


def image_category(source: str, qa: list[dict]) -> str:
  """The image's class from its source and its answers (see the module docstring)."""
  by_key = {q["key"]: [p.lower() for p in q["answer"].split("; ")] for q in qa if q["key"]}
  absent = lambda key: set(by_key.get(key, [""])) <= _NONE
  if "instrument" in source.lower() or not absent("instruments") or not absent("n_instruments"):
    return "instrument"
  findings = [p for p in by_key.get("abnormalities", []) if p not in _NONE]
  if any("polyp" in p for p in findings) or not absent("n_polyps"):
    return "polyp"
  if any(w in p for p in findings for w in _INFLAMMATION):
    return "inflammation"
  return "other_finding" if findings else "normal"


# ----------------------------------------------------------------------------- reading
def _read_rows(root: str) -> list[dict]:
  """Annotation rows: dicts with COLUMNS and "_at", where the row's image is: a file path,
  (parquet file, row group, row), or None (not found)."""
  parquets = base.find_files(root, (".parquet",))
  if parquets:
    return _parquet_rows(parquets)
  rows = []
  for path in base.find_files(root, (".csv", ".json", ".jsonl")):
    table = _table(path)
    if table and all(k in table[0] for k in COLUMNS):
      rows += table
  if not rows:
    raise MissingDataError(KvasirVQA.where_to_get(
        root, f"kvasir_vqa: no parquet file and no CSV/JSON with columns {COLUMNS} under {root!r}"))
  images = {os.path.splitext(os.path.basename(p))[0]: p
            for p in base.find_files(root, (".jpg", ".jpeg", ".png"))}
  for r in rows:
    r["_at"] = images.get(str(r["img_id"]).strip())
  return rows


def _table(path: str) -> list[dict]:
  with open(path, newline="") as f:
    if path.lower().endswith(".csv"):
      return list(csv.DictReader(f))
    if path.lower().endswith(".jsonl"):
      return [json.loads(line) for line in f if line.strip()]
    data = json.load(f)
  return data if isinstance(data, list) and data and isinstance(data[0], dict) else []


def _parquet_rows(files: list[str]) -> list[dict]:
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  rows = []
  for path in files:
    pf = pq.ParquetFile(path)
    missing = [c for c in COLUMNS + ("image",) if c not in pf.schema_arrow.names]
    if missing:
      raise MissingDataError(f"{path}: parquet file lacks column(s) {missing}; has "
                             f"{pf.schema_arrow.names} (expected the Kvasir-VQA HF export)")
    for g in range(pf.num_row_groups):
      table = pf.read_row_group(g, columns=list(COLUMNS)).to_pylist()
      rows += [{**r, "_at": (path, g, i)} for i, r in enumerate(table)]
  return rows


class KvasirVQA(base.LocalBuilder):
  """Kvasir-VQA from local files (HF parquet export or images + CSV/JSON)."""
  DESCRIPTION = __doc__
  GET = ("Hugging Face dataset SimulaMet-HOST/Kvasir-VQA (https://huggingface.co/datasets/"
         "SimulaMet-HOST/Kvasir-VQA), e.g. `huggingface-cli download SimulaMet-HOST/Kvasir-VQA "
         "--repo-type dataset --local-dir data/kvasir_vqa`")
  LAYOUT = ("DIR/**/*.parquet (the HF export: columns image{bytes,path}, source, question, "
            "answer, img_id), or DIR/metadata.csv (or any .csv/.json/.jsonl with columns "
            "source, question, answer, img_id) plus DIR/**/<img_id>.jpg")
  ANNOTATIONS = (".parquet", ".csv", ".json", ".jsonl")

  def _index(self, root, report):
    index = {}
    for n, row in enumerate(_read_rows(root)):
      img_id = str(row.get("img_id") or "").strip()
      question, answer = (str(row.get(k) or "").strip() for k in ("question", "answer"))
      if not img_id:
        report.problem("row_without_img_id", f"row {n}", question)
        continue
      item = index.setdefault(img_id, {"source": str(row.get("source") or ""), "qa": [],
                                       "at": row["_at"]})
      if not question or not answer:
        report.problem("empty_question_or_answer", img_id, f"{question!r} -> {answer!r}")
        continue
      qtype, key = question_type(question)
      if key is None:
        report.problem("untemplated_question", img_id, f"{question!r} typed {qtype}")
      if any(q["question"] == question for q in item["qa"]):
        report.problem("duplicate_question", img_id, question)
        continue
      item["qa"].append({"question": question, "answer": answer_text(answer, qtype),
                         "type": qtype, "key": key})
    for img_id in [i for i, item in index.items() if item["at"] is None or not item["qa"]]:
      kind = "missing_image" if index[img_id]["at"] is None else "image_without_qa"
      report.problem(kind, img_id)
      del index[img_id]
    if not index:
      raise DataSizeError(self.where_to_get(root, f"kvasir_vqa: no image with QA found under "
                                            f"{root!r}"))
    return index

  def _example(self, img_id, item):
    try:
      image = self._decode(item["at"])
    except Exception as e:  # PIL/pyarrow raise many types for bad bytes
      self.report.problem("corrupt_image", img_id, f"{type(e).__name__}: {e}")
      return None
    category = image_category(item["source"], item["qa"])
    qa = [{"question": q["question"], "answer": q["answer"], "type": q["type"],
           "category": category, "difficulty": "", "options": None} for q in item["qa"]]
    return {"id": img_id, "image": frames.encode_jpeg(image), "qa": qa,
            "facts": {"source": item["source"], "num_frames": 1}, "caption": ""}

  def _decode(self, at):
    if isinstance(at, str):
      with open(at, "rb") as f:
        return frames.decode_resized(f.read(), self.size)
    path, group, i = at
    cached = getattr(self, "_group", None)
    if cached is None or cached[0] != (path, group):
      import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
      col = pq.ParquetFile(path).read_row_group(group, columns=["image"]).column("image")
      self._group = cached = ((path, group), col.to_pylist())
    cell = cached[1][i] or {}
    data = cell.get("bytes")
    if not data and cell.get("path"):
      local = os.path.join(os.path.dirname(path), cell["path"])
      with open(local if os.path.exists(local) else cell["path"], "rb") as f:
        data = f.read()
    if not data:
      raise ValueError("no image bytes in the parquet row")
    return frames.decode_resized(data, self.size)


# ----------------------------------------------------------------------------- pseudo QA
_YES_NO = {"yes", "no", "not relevant"}


def pseudo_qa(question: str, answer: str, options, rng=None) -> dict | None:
  """A generated (question, answer) as a QA dict when it is well formed for Kvasir-VQA: one of
  the 19 templates, no options, a count that is a number, a yes/no answer; else None."""
  del rng  # no options to draw
  qtype, key = question_type(question)
  answer = answer_text(answer, qtype)
  if options or key is None or not answer:
    return None
  if (qtype == "count" and not answer.isdigit()) or (
      qtype == "yes_no" and answer.lower() not in _YES_NO):
    return None
  return {"question": question.strip(), "answer": answer, "options": None, "type": qtype}


def pseudo_qa_rule(labeled_examples):
  """The pseudo-QA validity rule (`pseudo_qa`). It checks the format of Kvasir-VQA's published
  question templates and holds no answer list, so the labelled examples add nothing to it."""
  del labeled_examples
  return pseudo_qa
