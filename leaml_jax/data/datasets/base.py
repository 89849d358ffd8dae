"""What every dataset builder shares: ArrayRecord storage without TensorFlow, decoding and
validation on read, and the base of the builders that read local files (with their build report).

No TensorFlow is needed, on either side: TFDS 4.9 only calls TensorFlow to encode
`tfds.features.Image` (tf.image.encode_png), so images are stored as encoded bytes (PNG made
here with Pillow, or the source's JPEG) in a `Tensor(shape=(), dtype=object)` feature; every
other feature is `Text`/`Tensor`, which TFDS serialises with its own protobuf code. Reading goes
through `builder.as_data_source()` (ArrayRecord random access), wrapped in `Source`, which
decodes and validates each example on access.

  train = load_source(path, "train")     # grain-compatible: len() and [i]
  ds = grain.MapDataset.source(train)

Datasets from local files (`LocalBuilder`) have no official train/test split: images (clips) are
split by id, seeded, so no image is in both. Bad input (a missing or unreadable clip, a corrupt
image, an answer that is not an option, an empty question) is never kept and never crashes the
build: it is counted, with the example ids, in <dataset dir>/build_report.json, and summarised
on stdout.
"""
import collections
import dataclasses
import io
import json
import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image
from tensorflow_datasets.core import utils as tfds_utils

from leaml_jax.errors import DataError, DataSizeError, MissingDataError

_QA_TEXT_KEYS = ("question", "answer", "type", "category", "difficulty")


# ----------------------------------------------------------------------------- records
def encode_png(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="PNG", compress_level=1)
  return buf.getvalue()


def to_record(ex: dict) -> dict:
  """Example dict -> TFDS feature dict (PNG bytes, JSON for nested data). An image
  given as bytes (already encoded, e.g. JPEG) is stored as is."""
  image = ex["image"] if isinstance(ex["image"], bytes) else encode_png(ex["image"])
  return {"id": ex["id"], "image": image,
          "qa": [{**{k: str(q[k]) for k in _QA_TEXT_KEYS},
                  "options": json.dumps(q.get("options"))} for q in ex["qa"]],
          "facts": json.dumps(ex.get("facts", {})), "caption": ex.get("caption", ""),
          "gt_caption": ex.get("gt_caption", ""),
          "caption_claims": json.dumps(ex.get("caption_claims", []))}


def features() -> tfds.features.FeaturesDict:
  text = tfds.features.Text()
  return tfds.features.FeaturesDict({
      "id": text,
      "image": tfds.features.Tensor(shape=(), dtype=np.object_),  # encoded image bytes
      "qa": tfds.features.Sequence({**{k: text for k in _QA_TEXT_KEYS}, "options": text}),
      "facts": text, "caption": text, "gt_caption": text, "caption_claims": text})


class ArrayRecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of our builders: the `features()` records, written in generation order. The TFDS
  name (from the class name, e.g. KvasirVQA -> kvasir_vqa) is the dataset's registry name."""
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  DESCRIPTION = ""

  # TFDS's own lookup of a builder's file needs the `importlib_resources` backport
  # (not a dependency of ours); the answer is simply this module.
  @tfds_utils.classproperty
  @classmethod
  def code_path(cls):
    return epath.Path(__file__)

  def _info(self):
    return self.dataset_info_from_configs(
        description=self.DESCRIPTION, features=features(), disable_shuffling=True,
        homepage="https://github.com/leaml_jax")


# ----------------------------------------------------------------------------- reading
def _text(x) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def decode_example(raw: dict, question_types=None) -> dict:
  """TFDS record -> example dict with a uint8 image; raises DataError naming
  the example for missing/corrupt image bytes, empty questions or unknown
  question types."""
  ex_id = _text(raw.get("id", "<no id>"))
  data = raw.get("image")
  if data is None or len(data) == 0:
    raise DataError(ex_id, "missing image bytes")
  try:
    with Image.open(io.BytesIO(bytes(data))) as im:
      image = np.asarray(im.convert("RGB"), np.uint8)
  except Exception as e:  # PIL raises many types for bad bytes
    raise DataError(ex_id, f"corrupt image bytes ({type(e).__name__}: {e})") from e
  qa_cols = raw.get("qa") or {}
  n = len(qa_cols.get("question", []))
  qa = []
  for k in range(n):
    q = {key: _text(qa_cols[key][k]) for key in _QA_TEXT_KEYS}
    q["options"] = json.loads(_text(qa_cols["options"][k]))
    if not q["question"].strip():
      raise DataError(ex_id, f"empty question (qa #{k})")
    if question_types is not None and q["type"] not in question_types:
      raise DataError(ex_id, f"unknown question type {q['type']!r} (qa #{k}); "
                      f"known: {sorted(question_types)}")
    qa.append(q)
  return {"id": ex_id, "image": image, "qa": qa,
          "facts": json.loads(_text(raw.get("facts", b"{}")) or "{}"),
          "caption": _text(raw.get("caption", b"")), "gt_caption": _text(raw.get("gt_caption", b"")),
          "caption_claims": json.loads(_text(raw.get("caption_claims", b"[]")) or "[]")}


class Source:
  """Random-access source of decoded, validated examples (grain-compatible)."""

  def __init__(self, raw, question_types=None):
    self.raw, self.question_types = raw, question_types

  def __len__(self) -> int:
    return len(self.raw)

  def __getitem__(self, index: int) -> dict:
    return decode_example(self.raw[int(index)], self.question_types)

  def ids(self) -> list[str]:
    """Example ids without decoding any image."""
    return [_text(self.raw[i]["id"]) for i in range(len(self))]

  def __repr__(self):
    return f"Source({len(self)} examples)"


def load_source(name: str, split: str, data_dir: str | None = None,
                question_types=None) -> Source:
  """`name`: a directory returned by a build, or "<dataset>/<config>" under `data_dir`.
  question_types: the built dataset's name -> its question types (or None), which every
  example is checked against on access (the registry's `load_source` passes its own)."""
  path = name if os.path.exists(os.path.join(name, "dataset_info.json")) else None
  if path is None and data_dir is not None:
    dataset, _, config = name.partition("/")
    root = os.path.join(data_dir, dataset, config or "default")
    versions = sorted(os.listdir(root)) if os.path.isdir(root) else []
    path = os.path.join(root, versions[-1]) if versions else None
  if path is None or not os.path.exists(os.path.join(path, "dataset_info.json")):
    raise FileNotFoundError(
        f"no built dataset {name!r} (data_dir={data_dir!r}); build it first with "
        "leaml_jax.data.datasets.build(name, data_dir, config.data, seed=...)")
  builder = tfds.builder_from_directory(path)
  if split not in builder.info.splits:
    raise ValueError(f"dataset at {path} has no split {split!r}; has "
                     f"{sorted(builder.info.splits)}")
  types = question_types(builder.info.name) if question_types else None
  return Source(builder.as_data_source(split=split), types)


# ----------------------------------------------------------------------------- local files
def find_files(root: str, endings) -> list[str]:
  """Files under `root` (recursive, sorted) whose lower-cased name ends with one of `endings`."""
  out = []
  for dirpath, _, names in os.walk(root):
    out += [os.path.join(dirpath, n) for n in names
            if n.lower().endswith(tuple(endings)) and not n.startswith(".")]
  return sorted(out)


class BuildReport:
  """What a build kept and what it dropped, by kind, with the example ids."""

  def __init__(self, source: str, manual_dir: str):
    self.source, self.manual_dir = source, manual_dir
    self.counts = collections.Counter()
    self.problems = collections.defaultdict(list)  # kind -> [{"id", "detail"}]

  def problem(self, kind: str, example_id: str, detail: str = "") -> None:
    self.problems[kind].append({"id": example_id, "detail": detail})

  def to_json(self) -> dict:
    return {"source": self.source, "manual_dir": self.manual_dir, "counts": dict(self.counts),
            "problems": {k: {"count": len(v), "ids": [p["id"] for p in v],
                             "details": v[:20]} for k, v in sorted(self.problems.items())}}

  def summary(self) -> str:
    kept = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
    lines = [f"[leaml] built {self.source} from {self.manual_dir}: {kept}"]
    for kind, items in sorted(self.problems.items()):
      ids = ", ".join(p["id"] for p in items[:5]) + (", ..." if len(items) > 5 else "")
      lines.append(f"[leaml]   {kind}: {len(items)} ({ids})")
    return "\n".join(lines)


def split_ids(ids, test_fraction: float, seed: int) -> tuple[list, list]:
  """Seeded split of image ids into (train, test); both non-empty."""
  ids = sorted(ids)
  if len(ids) < 2:
    raise DataSizeError(f"{len(ids)} usable image(s): need at least 2 to split train/test")
  order = np.random.default_rng(seed).permutation(len(ids))
  n_test = min(max(1, int(round(test_fraction * len(ids)))), len(ids) - 1)
  return (sorted(ids[i] for i in order[n_test:]), sorted(ids[i] for i in order[:n_test]))


@dataclasses.dataclass(eq=False)
class LocalConfig(tfds.core.BuilderConfig):
  image_size: int = 224
  num_frames: int = 1
  test_fraction: float = 0.2
  seed: int = 0


class LocalBuilder(ArrayRecordBuilder, skip_registration=True):
  """A dataset from local files (manual_dir). Subclasses say where the files come from and
  how they lie (GET, LAYOUT, ANNOTATIONS) and give
    _index(root, report) -> {image id: item}   (annotations only, no pixels)
    _example(image_id, item) -> example dict with "image" (encoded bytes), or None when the
                                pixels are unusable (after reporting it)."""
  GET = ""           # where to get the files
  LAYOUT = ""        # how they must lie under config.data.path (DIR)
  ANNOTATIONS = ()   # lower-case name endings of its annotation files, in order of preference
  CLIPS = False      # examples are clips of config.data.num_frames frames (else still images)
  BUILDER_CONFIGS = [LocalConfig(name="default")]

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    cls.MANUAL_DOWNLOAD_INSTRUCTIONS = cls.LAYOUT  # TFDS shows this when manual_dir is missing

  @classmethod
  def where_to_get(cls, path: str, problem: str) -> str:
    return (f"{problem}\n  get it: {cls.GET}\n  expected layout (DIR = config.data.path = {path!r}): "
            f"{cls.LAYOUT}\n  no data at hand? `python -m leaml_jax.main --config=configs/demo.py` "
            f"runs the whole pipeline on the embedded synthetic benchmark")

  @classmethod
  def present(cls, path: str) -> str:
    """The annotation file (or first parquet file) under `path`; MissingDataError when absent."""
    if not path:
      raise MissingDataError(cls.where_to_get(path, f"config.data.path is empty: set "
                                              f"--config.data.path=DIR for {cls.name}"))
    root = os.path.expanduser(path)
    if not os.path.isdir(root):
      raise MissingDataError(cls.where_to_get(path, f"{cls.name}: directory {root!r} "
                                              f"(config.data.path) not found"))
    found = find_files(root, cls.ANNOTATIONS)
    if not found:
      raise MissingDataError(cls.where_to_get(path, f"{cls.name}: no annotation file "
                                              f"({' or '.join(cls.ANNOTATIONS)}) under {root!r}"))
    return found[0]

  def _split_generators(self, dl_manager):
    c = self.builder_config
    root = os.fspath(dl_manager.manual_dir)
    self.report = BuildReport(self.name, root)
    index = self._index(root, self.report)
    train, test = split_ids(index, c.test_fraction, c.seed)
    return {"train": self._generate_examples(index, set(train), "train"),
            "test": self._generate_examples(index, set(test), "test")}

  def _generate_examples(self, index, ids, split):
    for image_id in (i for i in index if i in ids):  # index order: the files' order
      ex = self._example(image_id, index[image_id])
      if ex is None:
        continue
      self.report.counts[f"{split}_images"] += 1
      self.report.counts[f"{split}_qa"] += len(ex["qa"])
      yield image_id, to_record(ex)

  @property
  def size(self) -> int:
    return self.builder_config.image_size


def build_local(builder_class, manual_dir: str, data_dir: str, *, image_size: int,
                num_frames: int = 1, test_fraction: float = 0.2, seed: int = 0) -> str:
  """Builds (or finds already built) a dataset from the files in `manual_dir`; returns its
  directory. A fresh build writes build_report.json there and prints its summary.
  num_frames counts only for clips (builder_class.CLIPS); still images have 1."""
  builder_class.present(manual_dir)
  num_frames = num_frames if builder_class.CLIPS else 1
  name = f"i{image_size}_f{num_frames}_t{round(test_fraction * 1000)}_s{seed}"
  config = LocalConfig(name, version="1.0.0", image_size=image_size, num_frames=num_frames,
                       test_fraction=test_fraction, seed=seed)
  builder = builder_class(data_dir=data_dir, config=config, file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=os.path.expanduser(manual_dir), verify_ssl=False))
  path = os.fspath(builder.data_path)
  report = getattr(builder, "report", None)
  if report is not None:
    with open(os.path.join(path, "build_report.json"), "w") as f:
      json.dump(report.to_json(), f, indent=1)
    print(report.summary(), flush=True)
  return path
