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
