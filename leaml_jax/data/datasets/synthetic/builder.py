"""TFDS builders (ArrayRecord) of the synthetic domains, one TFDS config per build.

  path = build("synthetic_endoscopy", data_dir, num_train=2000, num_test=300, seed=0,
               caption_error_rate=0.15, image_size=32)
  train = datasets.load_source(path, "train")

Each built configuration is its own TFDS config, named after its parameters, so differently
sized builds never overwrite each other.
"""
import dataclasses
import os

import tensorflow_datasets as tfds

from leaml_jax.data.datasets import base, synthetic

DEFAULT_NUM_TRAIN = {"synthetic_general": 4000, "synthetic_endoscopy": 2000,
                     "synthetic_sports": 2000}


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


class _SyntheticBuilder(base.ArrayRecordBuilder, skip_registration=True):
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
      ex = synthetic.generate_example(self.name, split, i, c.seed, c.caption_error_rate,
                                      image_size=c.image_size, qa_per_image=c.qa_per_image)
      yield i, base.to_record(ex)


class SyntheticGeneral(_SyntheticBuilder):
  pass


class SyntheticEndoscopy(_SyntheticBuilder):
  pass


class SyntheticSports(_SyntheticBuilder):
  pass


BUILDERS = {b.name: b for b in (SyntheticGeneral, SyntheticEndoscopy, SyntheticSports)}


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
