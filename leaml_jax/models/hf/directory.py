"""A Hugging Face checkpoint directory: finding it, which of its files we read, and its processor.

Only config.json, safetensors and the tokenizer / processor files are read: never pickles,
never remote code. A hub id is fetched (when online) with those files only.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np

_WHERE = ("Put config.json and the *.safetensors files (optionally the tokenizer/processor files) in one "
          "local directory, e.g. on a machine with internet `huggingface-cli download "
          "google/paligemma2-3b-pt-224 --local-dir ckpt/paligemma2-3b-pt-224`, copy it here, and pass that "
          "directory.")
_HUB_FILES = ["*.json", "*.safetensors", "tokenizer.model", "*.txt", "*.jinja"]  # no pickles, no code
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "tokenizer.json",
                   "tokenizer_config.json", "tokenizer.model")
# What `save` copies from a source checkpoint next to the weights it writes.
EXTRA_FILES = PROCESSOR_FILES + ("special_tokens_map.json", "generation_config.json", "chat_template.json",
                                 "chat_template.jinja", "added_tokens.json")


def resolve(path) -> Path:
  """A local checkpoint directory, or a hub snapshot of `path` (safetensors + json only)."""
  p = Path(path).expanduser()
  if p.is_dir():
    directory = p
  elif p.exists():
    raise FileNotFoundError(f"{path} is a file; pass its checkpoint directory. {_WHERE}")
  elif re.fullmatch(r"[\w-][\w.-]*/[\w.-]+", str(path)):
    try:
      import huggingface_hub
      directory = Path(huggingface_hub.snapshot_download(str(path), allow_patterns=_HUB_FILES))
    except Exception as e:  # noqa: BLE001 - offline, gated, unknown repo: all end the same way
      raise FileNotFoundError(f"{str(path)!r} is not a local directory and could not be fetched from the "
                              f"Hugging Face Hub ({type(e).__name__}: {str(e)[:200]}). {_WHERE}") from e
  else:
    raise FileNotFoundError(f"checkpoint directory {str(path)!r} does not exist. {_WHERE}")
  if not (directory / "config.json").is_file():
    raise FileNotFoundError(f"{directory} has no config.json. {_WHERE}")
  if not any(directory.glob("*.safetensors")):
    pickles = sorted(f.name for f in directory.iterdir() if f.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    raise FileNotFoundError(f"{directory} has no *.safetensors files{f' (only {pickles})' if pickles else ''}. "
                            "Only safetensors are read, never pickles: convert once with transformers "
                            "(`model.save_pretrained(dir, safe_serialization=True)`) where you trust the file. "
                            + _WHERE)
  return directory


def processor(path):
  """transformers' AutoProcessor of a checkpoint directory (tokenizer + image processor), or None."""
  return processor_of(resolve(path))


def processor_of(directory: Path):
  """`processor` of a directory `resolve` already checked."""
  if not any((directory / n).is_file() for n in PROCESSOR_FILES):
    return None
  from transformers import AutoProcessor
  try:
    processor = AutoProcessor.from_pretrained(directory, trust_remote_code=False)
  except ImportError as e:  # Qwen2-VL / Qwen2.5-VL: their video processor needs torchvision
    if "torchvision" not in str(e).lower() or _model_type(directory) not in QWEN_MODEL_TYPES:
      raise
    processor = QwenVLParts.from_directory(directory)
  ip = getattr(processor, "image_processor", None)
  if ip is not None and not (np.allclose(getattr(ip, "image_mean", None) or 0.5, 0.5)
                             and np.allclose(getattr(ip, "image_std", None) or 0.5, 0.5)):
    warnings.warn(f"{directory}: the processor normalises images with mean {ip.image_mean} / std "
                  f"{ip.image_std}, not to [-1, 1] as this package's data pipeline does; feed this model the "
                  "processor's own pixel_values (as data.hf_encode and logits_from_hf_inputs do)", stacklevel=3)
  return processor


QWEN_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")


def _model_type(directory: Path) -> str:
  return json.loads((directory / "config.json").read_text()).get("model_type", "")


class QwenVLParts:
  """What the data pipeline reads of a Qwen2VLProcessor / Qwen2_5_VLProcessor, for machines where
  transformers cannot build those (their video processor needs torchvision): the checkpoint's own
  image processor, tokenizer and chat template, and the image / video placeholder tokens. The
  layout (data/encoders/hf.py) uses only these parts, with the real processor too; what is missing
  is the processor's __call__ (videos go through the image processor frame by frame there)."""

  def __init__(self, image_processor, tokenizer, chat_template=None):
    self.image_processor, self.tokenizer = image_processor, tokenizer
    self.chat_template = chat_template if chat_template is not None else tokenizer.chat_template
    self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
    self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
    self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
    self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)

  @classmethod
  def from_directory(cls, directory: Path):
    from transformers import AutoImageProcessor, AutoTokenizer
    template = None
    if (directory / "chat_template.jinja").is_file():
      template = (directory / "chat_template.jinja").read_text()
    elif (directory / "chat_template.json").is_file():
      template = json.loads((directory / "chat_template.json").read_text())["chat_template"]
    return cls(AutoImageProcessor.from_pretrained(directory, trust_remote_code=False),
               AutoTokenizer.from_pretrained(directory, trust_remote_code=False), template)

  def apply_chat_template(self, conversation, **kwargs):
    if not self.chat_template:
      raise ValueError("this Qwen checkpoint has no chat template (chat_template.jinja / .json or in "
                       "tokenizer_config.json)")
    return self.tokenizer.apply_chat_template(conversation, chat_template=self.chat_template, **kwargs)
