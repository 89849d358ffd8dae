"""Pieces shared by the three synthetic domains: question templates, the
teacher's fallible fact-teller, and grid locations."""
import dataclasses
import re

import numpy as np

MULTI_SEP = "; "  # Kvasir-VQA joins several answers with "; " (sorted).
NUMBER_WORDS = ("no", "one", "two", "three", "four", "five")


@dataclasses.dataclass(frozen=True)
class Template:
  """One question template. `slots` lists the values each {slot} may take."""
  key: str
  text: str
  type: str
  difficulty: str
  answers: tuple[str, ...]      # atomic answers (multi-answer types: parts)
  slots: tuple[tuple[str, tuple[str, ...]], ...] = ()
  multi: bool = False           # answer may be several atoms joined by MULTI_SEP
  options: bool = False         # 4-option multiple choice (answer is a letter)

  def fill(self, **values) -> str:
    return self.text.format(**values)

  def pattern(self) -> re.Pattern:
    """Regex that matches any filled version of this template."""
    out = re.escape(self.text)
    for name, values in self.slots:
      alt = "|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))
      out = out.replace(re.escape("{" + name + "}"), f"(?P<{name}>{alt})")
    return re.compile(out + r"\Z")


def article(word: str) -> str:
  return "an" if word[:1] in ("a", "e", "i", "o", "u") else "a"


def join_multi(values) -> str:
  return MULTI_SEP.join(sorted(set(values)))


class Teller:
  """Says facts like a big generic captioner: each stated fact is wrong with
  probability `error_rate` (replaced by another value of the same attribute).
  Every statement is recorded in `claims` so the error rate can be audited."""

  def __init__(self, rng: np.random.Generator, error_rate: float):
    if not 0.0 <= error_rate <= 1.0:
      raise ValueError(f"caption_error_rate must be in [0, 1], got {error_rate}")
    self.rng, self.error_rate, self.claims = rng, error_rate, []

  def say(self, fact: str, true, choices):
    said = true
    if self.rng.random() < self.error_rate:
      wrong = [c for c in choices if c != true]
      said = wrong[self.rng.integers(len(wrong))]
    self.claims.append({"fact": fact, "said": said, "true": true})
    return said


# A 3x3 grid of image regions, named as in Kvasir-VQA.
GRID_NAMES = (("upper-left", "upper-center", "upper-right"),
              ("center-left", "center", "center-right"),
              ("lower-left", "lower-center", "lower-right"))
GRID_LOCATIONS = tuple(n for row in GRID_NAMES for n in row)


def grid_cell_center(name: str) -> tuple[float, float]:
  """(x, y) in [0, 1] of a grid cell's centre."""
  i = GRID_LOCATIONS.index(name)
  return ((i % 3) + 0.5) / 3, ((i // 3) + 0.5) / 3


def grid_location(x: float, y: float) -> str:
  return GRID_NAMES[min(int(y * 3), 2)][min(int(x * 3), 2)]


def mc_options(rng: np.random.Generator, answer: str, distractors, n: int = 4):
  """Shuffled `n`-option dict {"A": ...} holding `answer`; returns (letter, options)."""
  pool = [d for d in dict.fromkeys(distractors) if d != answer]
  if len(pool) < n - 1:
    raise ValueError(f"need {n - 1} distractors for {answer!r}, got {pool}")
  picks = [pool[i] for i in rng.permutation(len(pool))[:n - 1]]
  values = [answer] + picks
  order = rng.permutation(n)
  letters = "ABCDEFGH"[:n]
  options = {letters[k]: values[j] for k, j in enumerate(order)}
  letter = next(k for k, v in options.items() if v == answer)
  return letter, options
