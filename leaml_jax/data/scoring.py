"""Answer scoring shared by every method and evaluator.

is_correct rules (after `normalize` on both sides):
  * options given (4-option multiple choice): the prediction names an option
    by letter ("B", "(B)", "B.", "B. soccer") or by its text ("soccer"); it is
    right if that option is the gold one (gold may be a letter or the text).
  * several answers ("; "-joined, Kvasir-VQA style): set match, order-free.
  * otherwise: exact match.
"""
import collections
import re

_WORD_NUMBERS = {w: str(i) for i, w in enumerate(
    ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"))}
_LETTER_RE = re.compile(r"^\(?([a-h])\)?(?:[.:)]\s*(.*))?$")


def normalize(ans) -> str:
  """Lower-case, trim, collapse spaces, drop trailing full stops and quotes,
  spell numbers as digits ("two" -> "2"); "; " separators made uniform."""
  s = str(ans).strip().lower()
  s = s.strip("\"'`").strip()
  s = re.sub(r"\s+", " ", s)
  s = re.sub(r"\s*;\s*", "; ", s)
  s = s.rstrip(".!").strip()
  return _WORD_NUMBERS.get(s, s)


def _parts(ans) -> frozenset:
  return frozenset(p for p in (normalize(x) for x in str(ans).split(";")) if p)


def option_letter(ans, options: dict) -> str | None:
  """Which option letter (upper case) `ans` names, or None."""
  s = normalize(ans)
  by_text = {normalize(v): k.upper() for k, v in options.items()}
  if s in by_text:
    return by_text[s]
  m = _LETTER_RE.match(s)
  if m and m.group(1).upper() in {k.upper() for k in options}:
    letter, rest = m.group(1).upper(), m.group(2)
    if not rest or normalize(options.get(letter, "")) == normalize(rest):
      return letter
  return None


def is_correct(pred, gold, qtype: str | None = None, options: dict | None = None) -> bool:
  del qtype  # the rule follows from the gold answer and options, not the type name
  if options:
    gold_letter = option_letter(gold, options)
    if gold_letter is None:
      raise ValueError(f"gold answer {gold!r} is not one of the options {options}")
    return option_letter(pred, options) == gold_letter
  if ";" in str(gold):
    return _parts(pred) == _parts(gold)
  return normalize(pred) == normalize(gold)


def accuracy(preds, golds) -> dict:
  """Accuracy of `preds` (strings) against `golds` (QA dicts with "answer",
  and optionally "type", "category", "difficulty", "options"), overall and
  per category / difficulty / type (fractions in [0, 1])."""
  preds, golds = list(preds), list(golds)
  if len(preds) != len(golds):
    raise ValueError(f"{len(preds)} predictions for {len(golds)} questions")
  if not golds:
    raise ValueError("no predictions to score")
  groups = {k: collections.defaultdict(list) for k in ("category", "difficulty", "type")}
  hits = []
  for p, g in zip(preds, golds):
    ok = is_correct(p, g["answer"], g.get("type"), g.get("options"))
    hits.append(ok)
    for k, d in groups.items():
      if g.get(k) is not None:
        d[str(g[k])].append(ok)
  mean = lambda xs: float(sum(xs)) / len(xs)
  return {"accuracy": mean(hits), "n": len(hits),
          **{f"per_{k}": {name: mean(v) for name, v in sorted(d.items())}
             for k, d in groups.items()}}
