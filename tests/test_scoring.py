"""Scoring: hand-computed cases for every matching rule and the aggregates."""
import pytest

from leaml_jax.data import scoring

MC = {"A": "left", "B": "right", "C": "up", "D": "down"}


@pytest.mark.parametrize("raw,norm", [
    ("  Yes. ", "yes"), ("Two", "2"), ("\"polyp\"", "polyp"), ("UPPER-LEFT", "upper-left"),
    ("polyp ;ulcer", "polyp; ulcer"), ("a  b", "a b"), ("<5mm", "<5mm"), ("3", "3"),
])
def test_normalize(raw, norm):
  assert scoring.normalize(raw) == norm


@pytest.mark.parametrize("pred,gold,ok", [
    ("yes", "yes", True), ("Yes.", "yes", True), ("no", "yes", False),
    ("two", "2", True), ("5-10MM", "5-10mm", True), ("<5mm", "5-10mm", False),
    ("", "yes", False), ("yes no", "yes", False),
])
def test_exact_match(pred, gold, ok):
  assert scoring.is_correct(pred, gold, "yes_no") is ok


@pytest.mark.parametrize("pred,gold,ok", [
    ("polyp; ulcer", "polyp; ulcer", True), ("ulcer;polyp", "polyp; ulcer", True),
    ("Ulcer; Polyp.", "polyp; ulcer", True), ("polyp", "polyp; ulcer", False),
    ("polyp; ulcer; inflammation", "polyp; ulcer", False),
    ("center; upper-left", "center; upper-left", True), ("center", "center; upper-left", False),
])
def test_set_match(pred, gold, ok):
  assert scoring.is_correct(pred, gold, "multiple_choice") is ok


@pytest.mark.parametrize("pred,ok", [
    ("B", True), ("b", True), ("(B)", True), ("B.", True), ("B)", True), ("B. right", True),
    ("right", True), ("Right.", True),
    ("A", False), ("left", False), ("B. left", False), ("E", False), ("", False),
    ("right left", False),
])
def test_option_match(pred, ok):
  assert scoring.is_correct(pred, "B", "direction", MC) is ok
  assert scoring.is_correct(pred, "right", "direction", MC) is ok  # gold given as text


def test_gold_outside_options_raises():
  with pytest.raises(ValueError, match="not one of the options"):
    scoring.is_correct("A", "sideways", "direction", MC)


def test_accuracy_overall_and_groups():
  golds = [
      {"answer": "yes", "type": "yes_no", "category": "polyp", "difficulty": "easy"},
      {"answer": "2", "type": "count", "category": "polyp", "difficulty": "medium"},
      {"answer": "polyp; ulcer", "type": "multiple_choice", "category": "normal",
       "difficulty": "hard"},
      {"answer": "C", "type": "direction", "category": "soccer", "difficulty": "hard",
       "options": MC},
      {"answer": "no", "type": "yes_no", "category": "normal", "difficulty": "easy"},
  ]
  preds = ["yes", "3", "ulcer; polyp", "up", "yes"]  # right, wrong, right, right, wrong
  acc = scoring.accuracy(preds, golds)
  assert acc["n"] == 5
  assert acc["accuracy"] == pytest.approx(3 / 5)
  assert acc["per_category"] == {"normal": 0.5, "polyp": 0.5, "soccer": 1.0}
  assert acc["per_difficulty"] == {"easy": 0.5, "hard": 1.0, "medium": 0.0}
  assert acc["per_type"] == {"count": 0.0, "direction": 1.0, "multiple_choice": 1.0,
                             "yes_no": 0.5}


def test_accuracy_rejects_bad_input():
  with pytest.raises(ValueError, match="2 predictions for 1"):
    scoring.accuracy(["a", "b"], [{"answer": "a"}])
  with pytest.raises(ValueError, match="no predictions"):
    scoring.accuracy([], [])


# --- BLEU / ROUGE-L (hand-computed) ------------------------------------------------

def test_bleu_hand_computed():
  # p1 = 5/6 (the x2, cat, on, mat), p2 = 3/5 (the cat, on the, the mat), no 4-gram match
  pred, ref = "The cat sat on the mat", "the cat is on the mat"
  assert scoring.bleu([pred], [ref], max_order=2) == pytest.approx((5 / 6 * 3 / 5) ** 0.5)
  assert scoring.bleu([pred], [ref]) == 0.0
  # corpus: every n-gram precision 1, c = 6 < r = 8 -> BP = exp(1 - 8/6)
  assert scoring.bleu(["a b c d", "x y"], ["a b c d e", "x y z"]) == pytest.approx(
      0.7165313105737893)
  assert scoring.bleu(["the the the the"], ["the cat"], max_order=1) == pytest.approx(0.25)  # clipped
  assert scoring.bleu(["polyp; ulcer"], ["ulcer;polyp"], max_order=1) == pytest.approx(1.0)
  assert scoring.bleu([""], ["yes"]) == 0.0


@pytest.mark.parametrize("pred,ref,f", [
    ("a b c d", "a c d e", 0.75),        # LCS a c d: P = R = 3/4
    ("polyp; ulcer", "ulcer", 0.5),      # tokens polyp ; ulcer -> P = 1/3, R = 1
    ("A B", "a b", 1.0), ("", "yes", 0.0), ("no", "yes", 0.0),
    ("x a y b", "a b", 2 * 0.5 * 1.0 / 1.5),
])
def test_rouge_l_hand_computed(pred, ref, f):
  assert scoring.rouge_l(pred, ref) == pytest.approx(f)


def test_text_metrics_means_rouge_over_pairs():
  m = scoring.text_metrics(["a b c d", "no"], ["a c d e", "yes"])
  assert m["rouge_l"] == pytest.approx((0.75 + 0.0) / 2)
  assert m["bleu"] == 0.0


# --- SPORTU: the answer maps to an option by letter or by text ------------------------

@pytest.mark.parametrize("pred,ok", [("B", True), ("(b)", True), ("No", True), ("no.", True),
                                     ("B. No", True), ("A", False), ("Yes", False), ("C", False)])
def test_two_option_mapping(pred, ok):
  assert scoring.is_correct(pred, "B", "multiple_choice", {"A": "Yes", "B": "No"}) is ok


@pytest.mark.parametrize("pred,ok", [("C", True), ("3", True), ("three", True), ("C. 3", True),
                                     ("C) 3", True), ("2", False), ("B", False), ("C. 2", False)])
def test_integer_option_mapping(pred, ok):
  assert scoring.is_correct(pred, "C", "multiple_choice", {"A": 1, "B": 2, "C": 3}) is ok
  assert scoring.option_letter(3, {"A": 1, "B": 2, "C": 3}) == "C"
