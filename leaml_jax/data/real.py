"""Real datasets from local files: what each is, where to get it, how it must lie on
disk; the checks run before any work; the shared TFDS builder and its build report.

  path = build("sportu_video", "data/sportu", data_dir, image_size=224, num_frames=4,
               test_fraction=0.2, seed=0)
  train = builders.load_source(path, "train")   # same example dicts as the synthetic sources

Neither dataset has an official train/test split: images (clips) are split by id, seeded,
so no image is in both. Each record is one image or clip with all its QA; a clip's frames
are stored as one JPEG strip (frames.py) with facts["num_frames"]. Bad input (a missing or
unreadable clip, a corrupt image, an answer that is not an option, an empty question) is
never kept and never crashes the build: it is counted, with the example ids, in
<dataset dir>/build_report.json, and summarised on stdout.
"""
import collections
import dataclasses
import json
import os

import numpy as np
import tensorflow_datasets as tfds

from leaml_jax.config_lib import ConfigError
from leaml_jax.data import builders, frames

SOURCES = {
    "kvasir_vqa": dict(
        get="Hugging Face dataset SimulaMet-HOST/Kvasir-VQA (https://huggingface.co/datasets/"
            "SimulaMet-HOST/Kvasir-VQA), e.g. `huggingface-cli download SimulaMet-HOST/Kvasir-VQA "
            "--repo-type dataset --local-dir data/kvasir_vqa`",
        layout="DIR/**/*.parquet (the HF export: columns image{bytes,path}, source, question, "
               "answer, img_id), or DIR/metadata.csv (or any .csv/.json/.jsonl with columns "
               "source, question, answer, img_id) plus DIR/**/<img_id>.jpg"),
    "sportu_video": dict(
        get="SPORTU (https://github.com/chili-lab/SPORTU): SportU_Video_mc.json from the GitHub "
            "repository, the video clips from the download link in its README",
        layout="DIR/**/SportU_Video_mc.json and the clips anywhere under DIR as "
               "<clip id>.mp4 (.mov/.avi/.mkv/.webm), e.g. DIR/videos/Basketball/Basketball_85.mp4; "
               "the clip id is the item id, or the item id without its trailing _<n> variant"),
}


class MissingDataError(FileNotFoundError):
  """The dataset's files are not where the config says (a user error: exit 2)."""


class DataSizeError(MissingDataError):
  """Too little usable data to build the dataset."""


def where_to_get(source: str, path: str, problem: str) -> str:
  s = SOURCES[source]
  return (f"{problem}\n  get it: {s['get']}\n  expected layout (DIR = config.data.path = {path!r}): "
          f"{s['layout']}\n  no data at hand? `python -m leaml_jax.main --config=configs/demo.py` "
          f"runs the whole pipeline on the embedded synthetic benchmark")


def check_config(config, workdir: str) -> None:
  """Before any work: the real dataset's files are there (unless `prepare` already ran), the
  frame options are valid, the base checkpoint directory exists, and a caption source is set.
  Raises MissingDataError / ConfigError."""
  d = config.data
  if d.source not in SOURCES:
    raise ConfigError(f"config.data.source={d.source!r} must be 'synthetic' or one of "
                      f"{sorted(SOURCES)}")
  if d.frames not in frames.FRAME_MODES:
    raise ConfigError(f"config.data.frames={d.frames!r} must be one of {frames.FRAME_MODES}")
  if d.num_frames < 1 or not 0.0 < d.test_fraction < 1.0:
    raise ConfigError(f"config.data.num_frames={d.num_frames} must be >= 1 and "
                      f"config.data.test_fraction={d.test_fraction} in (0, 1)")
  prepared = os.path.exists(os.path.join(workdir, "status", "prepare.json"))
  redo = {"prepare", "all"} & set(str(config.force).split(","))
  if "prepare" in config.stages and (not prepared or redo):
    present(d.source, d.path)
  m = config.model.path
  if m and "base" in config.stages and not os.path.isdir(os.path.expanduser(m)):
    raise MissingDataError(f"config.model.path={m!r}: no such directory; put the base model's "
                           f"Hugging Face checkpoint there (config.json, *.safetensors, tokenizer "
                           f"and processor files; the config file's docstring has the download "
                           f"command), or point --config.model.path at it")
  c = config.captions
  if "captions" in config.stages and not (c.path or c.teacher_path):
    raise ConfigError(f"{d.source} has no captions of its own: set --config.captions.path="
                      f"FILE.jsonl (lines {{\"image_id\", \"caption\"}}) or "
                      f"--config.captions.teacher_path=HF_CHECKPOINT_DIR (a teacher VLM)")


def present(source: str, path: str) -> str:
  """The annotation file (or first parquet file) of `source` under `path`."""
  if not path:
    raise MissingDataError(where_to_get(source, path, f"config.data.path is empty: set "
                                       f"--config.data.path=DIR for {source}"))
  root = os.path.expanduser(path)
  if not os.path.isdir(root):
    raise MissingDataError(where_to_get(source, path, f"{source}: directory {root!r} "
                                        f"(config.data.path) not found"))
  found = find_files(root, _ANNOTATIONS[source])
  if not found:
    raise MissingDataError(where_to_get(source, path, f"{source}: no annotation file "
                                        f"({' or '.join(_ANNOTATIONS[source])}) under {root!r}"))
  return found[0]


_ANNOTATIONS = {"kvasir_vqa": (".parquet", ".csv", ".json", ".jsonl"),
                "sportu_video": ("sportu_video_mc.json",)}


def find_files(root: str, endings) -> list[str]:
  """Files under `root` (recursive, sorted) whose lower-cased name ends with one of `endings`."""
  out = []
  for dirpath, _, names in os.walk(root):
    out += [os.path.join(dirpath, n) for n in names
            if n.lower().endswith(tuple(endings)) and not n.startswith(".")]
  return sorted(out)


# ----------------------------------------------------------------------------- build report
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


# ----------------------------------------------------------------------------- builder
@dataclasses.dataclass(eq=False)
class LocalConfig(tfds.core.BuilderConfig):
  image_size: int = 224
  num_frames: int = 1
  test_fraction: float = 0.2
  seed: int = 0


class LocalBuilder(builders.ArrayRecordBuilder, skip_registration=True):
  """A dataset from local files (manual_dir). Subclasses give
    _index(root, report) -> {image id: item}   (annotations only, no pixels)
    _example(image_id, item) -> example dict with "image" (encoded bytes), or None when the
                                pixels are unusable (after reporting it)."""
  SOURCE = ""
  BUILDER_CONFIGS = [LocalConfig(name="default")]

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    if cls.SOURCE:  # TFDS shows this when manual_dir is missing
      cls.MANUAL_DOWNLOAD_INSTRUCTIONS = SOURCES[cls.SOURCE]["layout"]

  def _split_generators(self, dl_manager):
    c = self.builder_config
    root = os.fspath(dl_manager.manual_dir)
    self.report = BuildReport(self.SOURCE, root)
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
      yield image_id, builders.to_record(ex)

  @property
  def size(self) -> int:
    return self.builder_config.image_size


def build(source: str, manual_dir: str, data_dir: str, *, image_size: int, num_frames: int = 1,
          test_fraction: float = 0.2, seed: int = 0) -> str:
  """Builds (or finds already built) a real dataset from `manual_dir`; returns its directory.
  A fresh build writes build_report.json there and prints its summary."""
  from leaml_jax.data import kvasir, sportu  # pylint: disable=import-outside-toplevel
  classes = {"kvasir_vqa": kvasir.KvasirVQA, "sportu_video": sportu.SportuVideo}
  present(source, manual_dir)
  num_frames = num_frames if source == "sportu_video" else 1
  name = f"i{image_size}_f{num_frames}_t{round(test_fraction * 1000)}_s{seed}"
  config = LocalConfig(name, version="1.0.0", image_size=image_size, num_frames=num_frames,
                       test_fraction=test_fraction, seed=seed)
  builder = classes[source](data_dir=data_dir, config=config, file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=os.path.expanduser(manual_dir), verify_ssl=False))
  path = os.fspath(builder.data_path)
  report = getattr(builder, "report", None)
  if report is not None:
    with open(os.path.join(path, "build_report.json"), "w") as f:
      json.dump(report.to_json(), f, indent=1)
    print(report.summary(), flush=True)
  return path


def pseudo_qa_rule(source: str, labeled_examples):
  """`rule(question, answer, options, rng) -> QA dict | None` for generated QA of a real dataset
  (the pseudo_qa stage's validity check; None = invalid). SPORTU's options are drawn from the
  option texts its labelled examples were asked with."""
  from leaml_jax.data import kvasir, sportu  # pylint: disable=import-outside-toplevel
  if source == "kvasir_vqa":
    return kvasir.pseudo_qa
  sets = sportu.option_sets(labeled_examples)
  return lambda question, answer, options, rng: sportu.pseudo_qa(question, answer, options, rng, sets)
