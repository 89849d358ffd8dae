"""Data layer: synthetic domains, TFDS builders, tokenizer, prompts, grain pipeline, scoring."""
from leaml_jax.data.errors import DataError

__all__ = ["DataError"]
