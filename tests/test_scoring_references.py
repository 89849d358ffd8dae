"""BLEU and ROUGE-L against the reference implementations (sacrebleu, rouge-score) on answers
written like Kvasir-VQA's, in the relationships the scoring module's docstring states."""
import re

import pytest
from hypothesis import given, settings, strategies as st
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

from leaml_jax.data import scoring

# (prediction, reference): Kvasir-VQA answer shapes ("; "-joined sets, grid locations, counts,
# colours, procedures, polyp sizes) and free text of several sentences.
PAIRS = [
    ("polyp; ulcerative colitis", "polyp; ulcerative colitis"),
    ("ulcerative colitis", "polyp; ulcerative colitis"),
    ("upper-left; center", "center; upper-center; upper-left"),
    ("1", "1"), ("2", "1"), ("Two", "2"),
    ("pink; red", "red"), ("Pink", "pink; red"),
    ("Colonoscopy", "colonoscopy"), ("Gastroscopy.", "Colonoscopy"),
    ("11-20mm", "5-10mm"), ("Yes", "No"),
    ("The image shows a red polyp in the upper-left. No instruments are visible.",
     "A red polyp is visible in the upper-left region. There are no instruments in the image."),
    ("There is a green/black box artefact in the lower-left corner, and text.",
     "A green/black box artefact is present in the lower-left; there is text."),
    ("The polyp measures 5.5 mm, and it is pink. It was removed with biopsy forceps.",
     "The polyp measures 5.5 mm, and it is red. It was removed with a snare."),
]


def _sacrebleu(preds, refs, max_order=4) -> float:
  bleu = BLEU(smooth_method="none", max_ngram_order=max_order)
  return bleu.corpus_score([scoring.normalize(p) for p in preds],
                           [[scoring.normalize(r) for r in refs]]).score / 100


class _Tokens:
  """Our tokens as rouge-score's `tokenizer`."""

  def tokenize(self, text):
    return scoring.tokens(text)


def _alphanumeric(text) -> str:
  """The normalized text as rouge-score's default tokenizer reads it: non-alphanumerics gone."""
  return re.sub(r"[^a-z0-9]+", " ", scoring.normalize(text))


def test_tokens_are_v13a_tokens_of_the_normalized_answer():
  from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
  v13a = Tokenizer13a()
  for pred, ref in PAIRS:
    for text in (pred, ref):
      assert scoring.tokens(text) == v13a(scoring.normalize(text)).split(), text
  assert scoring.tokens("polyp; ulcerative colitis") == ["polyp", ";", "ulcerative", "colitis"]
  assert scoring.tokens("upper-left; center") == ["upper-left", ";", "center"]


@pytest.mark.parametrize("max_order", [1, 2, 4])
def test_bleu_equals_sacrebleu_on_normalized_answers(max_order):
  preds, refs = zip(*PAIRS)
  ours = scoring.bleu(preds, refs, max_order=max_order)
  assert 0.0 < ours < 1.0
  assert ours == pytest.approx(_sacrebleu(preds, refs, max_order), rel=1e-12)
  for k in range(len(PAIRS)):  # sub-corpora, some with no 4-gram match (both 0)
    sub = PAIRS[k:k + 3]
    got = scoring.bleu(*zip(*sub), max_order=max_order)
    assert got == pytest.approx(_sacrebleu(*zip(*sub), max_order), rel=1e-12, abs=1e-15), sub


def test_rouge_l_equals_rouge_score():
  with_our_tokens = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Tokens())
  default = rouge_scorer.RougeScorer(["rougeL"])
  for pred, ref in PAIRS:
    ours = scoring.rouge_l(pred, ref)
    assert ours == pytest.approx(with_our_tokens.score(ref, pred)["rougeL"].fmeasure, rel=1e-12)
    theirs = default.score(scoring.normalize(ref), scoring.normalize(pred))["rougeL"].fmeasure
    assert scoring.rouge_l(_alphanumeric(pred), _alphanumeric(ref)) == pytest.approx(theirs)
  # The tokenisations differ where the docstring says: here "upper-left" is one token and ";"
  # is a token; rouge-score's default tokenizer reads "upper left" and drops ";".
  assert scoring.rouge_l("upper-left", "upper-center") == 0.0
  assert default.score("upper-center", "upper-left")["rougeL"].fmeasure == pytest.approx(0.5)
  assert scoring.rouge_l("polyp; ulcer", "polyp ulcer") == pytest.approx(2 * (2 / 3) / (5 / 3))
  assert default.score("polyp ulcer", "polyp; ulcer")["rougeL"].fmeasure == pytest.approx(1.0)
  assert scoring.rouge_l("", "") == 1.0 and default.score("", "")["rougeL"].fmeasure == 0.0


_WORDS = ["polyp", "red", "pink", "center", "upper-left", "lower-right", "5-10mm", "5.5", "the",
          "is", "a", "no", ";", ".", ",", "/", "Colonoscopy", "biopsy", "forceps", "1", "2"]
_ANSWER = st.lists(st.sampled_from(_WORDS), min_size=1, max_size=12).map(" ".join)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_ANSWER, _ANSWER), min_size=1, max_size=5))
def test_bleu_and_rouge_l_match_the_references_on_random_answers(pairs):
  preds, refs = zip(*pairs)
  assert scoring.bleu(preds, refs) == pytest.approx(_sacrebleu(preds, refs), rel=1e-12, abs=1e-15)
  scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Tokens())
  for pred, ref in pairs:
    if scoring.tokens(pred) and scoring.tokens(ref):
      assert scoring.rouge_l(pred, ref) == pytest.approx(
          scorer.score(ref, pred)["rougeL"].fmeasure, rel=1e-12)
