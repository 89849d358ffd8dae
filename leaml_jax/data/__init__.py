"""Data layer, in the order data flows:

  datasets/    the registry (the one place that names datasets) and one builder per dataset:
               base.py (ArrayRecord storage, local-file builders), kvasir.py, sportu.py,
               synthetic/ (the three generated worlds and their builders)
  frames.py    images and clip frames: resize, JPEG, video sampling, tiles / blocks
  prompts.py   every prompt template, and the parser of generated QA
  records.py   examples -> records {"image", "prompt", "target", ...} per task
  tokenizer.py our BPE tokenizer and the transformers adapter
  packing.py   prefix-LM token layout and truncation
  encoders/    one record -> fixed-shape arrays (synthetic layout, or a HF processor's)
  pipeline.py  grain datasets: shard, shuffle, encode, batch, mix
  scoring.py   accuracy, BLEU, ROUGE-L
"""
from leaml_jax.errors import DataError, DataSizeError, MissingDataError

__all__ = ["DataError", "DataSizeError", "MissingDataError"]
