"""Tokenizers behind one small interface.

`Tokenizer` is what the encoders and the generation code use:
  encode(text) -> list[int]  (no special tokens)
  decode(ids)  -> str        (stops at the first eos, skips special tokens)
  pad_id, bos_id, eos_id, vocab_size
The synthetic worlds get a real Hugging Face `tokenizers` byte-level BPE
trained on their corpus (saved as tokenizer.json): every string round-trips
exactly, case included, and unseen words still encode (as smaller pieces).
Real families wrap their transformers tokenizer in `HFTokenizer`.
"""
from typing import Protocol, Sequence, runtime_checkable

import tokenizers
from etils import epath
from tokenizers import decoders, models, pre_tokenizers, trainers

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SPECIALS = (PAD, BOS, EOS)  # ids 0, 1, 2


@runtime_checkable
class Tokenizer(Protocol):
  pad_id: int
  bos_id: int
  eos_id: int
  vocab_size: int

  def encode(self, text: str) -> list[int]: ...

  def decode(self, ids: Sequence[int]) -> str: ...


def _cut_at_eos(ids, eos_id):
  ids = [int(i) for i in ids]
  return ids[:ids.index(eos_id)] if eos_id in ids else ids


class BPETokenizer:
  """A trained `tokenizers.Tokenizer` with <pad>=0, <bos>=1, <eos>=2."""

  def __init__(self, tok: tokenizers.Tokenizer):
    self.tok = tok
    ids = [tok.token_to_id(s) for s in SPECIALS]
    if None in ids:
      raise ValueError(f"tokenizer lacks special tokens {SPECIALS}: got ids {ids}")
    self.pad_id, self.bos_id, self.eos_id = ids
    self.vocab_size = tok.get_vocab_size()

  def encode(self, text: str) -> list[int]:
    return self.tok.encode(text, add_special_tokens=False).ids

  def decode(self, ids: Sequence[int]) -> str:
    return self.tok.decode(_cut_at_eos(ids, self.eos_id), skip_special_tokens=True)


def train_tokenizer(texts: Sequence[str], path: str | None = None,
                    vocab_size: int = 1024) -> BPETokenizer:
  """Byte-level BPE over `texts`; saved to `path` (a tokenizer.json) if given."""
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator(list(texts), trainer=trainer)
  if path:
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tok.to_str(pretty=True))
  return BPETokenizer(tok)


def load_tokenizer(path: str) -> BPETokenizer:
  path = epath.Path(path)
  if path.is_dir():
    path = path / "tokenizer.json"
  if not path.exists():
    raise FileNotFoundError(
        f"no tokenizer at {path}; train one with "
        "leaml_jax.data.tokenizer.synthetic_tokenizer(path) or train_tokenizer(texts, path)")
  return BPETokenizer(tokenizers.Tokenizer.from_str(path.read_text()))


def synthetic_tokenizer(path: str | None = None, vocab_size: int = 1024,
                        num_per_domain: int = 600) -> BPETokenizer:
  """The demo tokenizer: trained on the three synthetic worlds' text (all of
  it: prompts, questions, options, answers, captions). Loads `path` if it
  exists, else trains deterministically and saves there."""
  if path and epath.Path(path).exists():
    return load_tokenizer(path)
  from leaml_jax.data.datasets import synthetic  # pylint: disable=import-outside-toplevel
  return train_tokenizer(synthetic.corpus(num_per_domain), path, vocab_size)


class HFTokenizer:
  """Adapter: a transformers tokenizer behind the same interface.

  processor: the checkpoint's transformers processor, when the data pipeline should lay
  examples out through it (encoders.encoder_for -> encoders.HFEncoder).
  """

  def __init__(self, hf_tokenizer, processor=None):
    self.hf, self.processor = hf_tokenizer, processor
    self.bos_id = hf_tokenizer.bos_token_id
    self.eos_id = hf_tokenizer.eos_token_id
    pad = hf_tokenizer.pad_token_id
    self.pad_id = pad if pad is not None else self.eos_id
    if self.eos_id is None:  # no <bos> is fine (Qwen's tokenizers have none; no HF layout writes one itself)
      raise ValueError(f"{type(hf_tokenizer).__name__} has no eos token; set it before wrapping it")
    self.vocab_size = len(hf_tokenizer)

  def encode(self, text: str) -> list[int]:
    return list(self.hf(text, add_special_tokens=False)["input_ids"])

  def decode(self, ids: Sequence[int]) -> str:
    return self.hf.decode(_cut_at_eos(ids, self.eos_id), skip_special_tokens=True)
