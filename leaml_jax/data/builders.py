"""TFDS builders (ArrayRecord) for the synthetic domains, read back with grain.

No TensorFlow is needed, on either side: TFDS 4.9 only calls TensorFlow to
encode `tfds.features.Image` (tf.image.encode_png), so images are stored as
PNG bytes in a `Tensor(shape=(), dtype=object)` feature (encoded here with
Pillow); every other feature is `Text`/`Tensor`, which TFDS serialises with
its own protobuf code. Reading goes through `builder.as_data_source()`
(ArrayRecord random access), wrapped in `Source`, which decodes and validates
each example on access.

  path = build("synthetic_endoscopy", data_dir, num_train=2000, num_test=300, seed=0,
               caption_error_rate=0.15, image_size=32)
  train = load_source(path, "train")     # grain-compatible: len() and [i]
  ds = grain.MapDataset.source(train)

Each built configuration is its own TFDS config, named after its
parameters, so differently sized builds never overwrite each other.
"""
import dataclasses
import io
import json
import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils
from PIL import Image

from leaml_jax.data import synthetic
from leaml_jax.data.errors import DataError

DEFAULT_NUM_TRAIN = {"synthetic_general": 4000, "synthetic_endoscopy": 2000,
                     "synthetic_sports": 2000}
_QA_TEXT_KEYS = ("question", "answer", "type", "category", "difficulty")


@dataclasses.dataclass(eq=False)
class SyntheticConfig(tfds.core.BuilderConfig):
  num_train: int = 2000
  num_test: int = 300
  seed: int = 0
  caption_error_rate: float = 0.15
  image_size: int = synthetic.DEFAULT_IMAGE_SIZE
  qa_per_image: int = synthetic.DEFAULT_QA_PER_IMAGE


def config_name(num_train, num_test, seed, caption_error_rate, image_size, qa_per_image):
  return (f"n{num_train}_t{num_test}_s{seed}_e{round(caption_error_rate * 1000)}"
          f"_i{image_size}_q{qa_per_image}")


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
      "image": tfds.features.Tensor(shape=(), dtype=np.object_),  # PNG bytes
      "qa": tfds.features.Sequence({**{k: text for k in _QA_TEXT_KEYS}, "options": text}),
      "facts": text, "caption": text, "gt_caption": text, "caption_claims": text})


class ArrayRecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of our builders: the `features()` records, written in generation order.
  Real-dataset builders (kvasir.py, sportu.py) derive from it too."""
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  DESCRIPTION = ""

  # TFDS's own lookup of this file needs the `importlib_resources` backport
  # (not a dependency of ours); the answer is simply this module.
  @tfds_utils.classproperty
  @classmethod
  def code_path(cls):
    return epath.Path(__file__)

  def _info(self):
    return self.dataset_info_from_configs(
        description=self.DESCRIPTION, features=features(), disable_shuffling=True,
        homepage="https://github.com/leaml_jax")


class _SyntheticBuilder(ArrayRecordBuilder, skip_registration=True):
  DOMAIN = ""
  DESCRIPTION = synthetic.__doc__
  BUILDER_CONFIGS = [SyntheticConfig(name="default")]

  def _split_generators(self, dl_manager):
    del dl_manager
    c = self.builder_config
    return {"train": self._generate_examples("train", c.num_train),
            "test": self._generate_examples("test", c.num_test)}

  def _generate_examples(self, split, num):
    c = self.builder_config
    for i in range(num):
      ex = synthetic.generate_example(self.DOMAIN, split, i, c.seed, c.caption_error_rate,
                                      image_size=c.image_size, qa_per_image=c.qa_per_image)
      yield i, to_record(ex)


class SyntheticGeneral(_SyntheticBuilder):
  DOMAIN = "synthetic_general"


class SyntheticEndoscopy(_SyntheticBuilder):
  DOMAIN = "synthetic_endoscopy"


class SyntheticSports(_SyntheticBuilder):
  DOMAIN = "synthetic_sports"


BUILDERS = {b.DOMAIN: b for b in (SyntheticGeneral, SyntheticEndoscopy, SyntheticSports)}


def build(domain_or_name: str, data_dir: str, *, num_train: int | None = None,
          num_test: int = 300, seed: int = 0, caption_error_rate: float = 0.15,
          image_size: int = synthetic.DEFAULT_IMAGE_SIZE,
          qa_per_image: int = synthetic.DEFAULT_QA_PER_IMAGE) -> str:
  """Builds (or finds already built) a synthetic domain; returns its directory."""
  domain = domain_or_name.split("/")[0]
  if domain not in BUILDERS:
    raise ValueError(f"no builder for {domain_or_name!r}; known: {sorted(BUILDERS)}")
  num_train = DEFAULT_NUM_TRAIN[domain] if num_train is None else num_train
  args = (num_train, num_test, seed, caption_error_rate, image_size, qa_per_image)
  config = SyntheticConfig(config_name(*args), version="1.0.0", num_train=num_train,
                           num_test=num_test, seed=seed, caption_error_rate=caption_error_rate,
                           image_size=image_size, qa_per_image=qa_per_image)
  builder = BUILDERS[domain](data_dir=data_dir, config=config, file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      verify_ssl=False))
  return os.fspath(builder.data_path)


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


def load_source(name: str, split: str, data_dir: str | None = None) -> Source:
  """`name`: a directory returned by `build`, or "<domain>/<config>" under
  `data_dir`."""
  path = name if os.path.exists(os.path.join(name, "dataset_info.json")) else None
  if path is None and data_dir is not None:
    domain, _, config = name.partition("/")
    root = os.path.join(data_dir, domain, config or "default")
    versions = sorted(os.listdir(root)) if os.path.isdir(root) else []
    path = os.path.join(root, versions[-1]) if versions else None
  if path is None or not os.path.exists(os.path.join(path, "dataset_info.json")):
    raise FileNotFoundError(
        f"no built dataset {name!r} (data_dir={data_dir!r}); build it first with "
        "leaml_jax.data.builders.build(domain, data_dir, ...)")
  builder = tfds.builder_from_directory(path)
  if split not in builder.info.splits:
    raise ValueError(f"dataset at {path} has no split {split!r}; has "
                     f"{sorted(builder.info.splits)}")
  domain = builder.info.name
  types = None
  for d in synthetic.DOMAINS:
    if d == domain:
      types = set(synthetic.question_types(d))
  return Source(builder.as_data_source(split=split), types)
