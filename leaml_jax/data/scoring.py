"""Answer scoring shared by every method and evaluator.

is_correct rules (after `normalize` on both sides):
  * options given (4-option multiple choice): the prediction names an option
    by letter ("B", "(B)", "B.", "B. soccer") or by its text ("soccer"); it is
    right if that option is the gold one (gold may be a letter or the text).
  * several answers ("; "-joined, Kvasir-VQA style): set match, order-free.
  * otherwise: exact match.
`accuracy` aggregates overall and per category / difficulty / type (an empty group name,
e.g. Kvasir-VQA's missing difficulty, is no group). `text_metrics` adds corpus BLEU and
ROUGE-L for free-text answers.

BLEU and ROUGE-L read `tokens`: the `normalize`d answer split as mteval-v13a (sacrebleu's
default tokenizer) splits it, so punctuation is a token of its own ("polyp; ulcer" -> polyp ;
ulcer: the ";" of a multi-answer counts) while "-" inside a word ("upper-left") and "." / ","
between digits stay. How they relate to the reference implementations (tests hold both):
  * bleu(preds, refs) == sacrebleu.corpus_bleu(normalized preds, [normalized refs],
    smooth_method="none").score / 100: the same corpus BLEU-4 once both sides are
    `normalize`d (case, quotes, spacing, a trailing full stop, "two" -> "2"); no smoothing, so
    a corpus with no 4-gram match scores 0. (v13a's SGML-entity and "<skipped>" handling and
    its joining of "-\\n" line breaks are not copied: answers are plain text.)
  * rouge_l(pred, ref) == rouge_score's ROUGE-L F1 given these tokens (its `tokenizer`). Its
    default tokenizer drops every non-alphanumeric character (";" and "-" included, so
    "upper-left; center" reads "upper left center"); on the `normalize`d text with those
    characters replaced by spaces, the two agree. Both empty: 1.0 here, 0 there.
"""
import collections
import math
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
      if g.get(k) not in (None, ""):
        d[str(g[k])].append(ok)
  mean = lambda xs: float(sum(xs)) / len(xs)
  return {"accuracy": mean(hits), "n": len(hits),
          **{f"per_{k}": {name: mean(v) for name, v in sorted(d.items())}
             for k, d in groups.items()}}


# ----------------------------------------------------------------------------- BLEU, ROUGE-L
# mteval-v13a's punctuation rules, as sacrebleu's Tokenizer13a applies them.
_V13A = ((re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # punctuation
         (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # "." and "," after a non-digit
         (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # "." and "," before a non-digit
         (re.compile(r"([0-9])(-)"), r"\1 \2 "))        # "-" after a digit


def tokens(text) -> list[str]:
  """`normalize`d text split as mteval-v13a splits it (see the module docstring)."""
  line = f" {normalize(text)} "
  for pattern, repl in _V13A:
    line = pattern.sub(repl, line)
  return line.split()


def _ngrams(toks, n) -> collections.Counter:
  return collections.Counter(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))


def bleu(preds, refs, max_order: int = 4) -> float:
  """Corpus BLEU (Papineni et al. 2002), one reference per prediction, no smoothing:
  BP * exp(mean_n log p_n), p_n = clipped n-gram matches / predicted n-grams summed over the
  corpus, BP = min(1, exp(1 - r / c)) for total reference / prediction lengths r, c.
  0 when some order has no match (or there is no prediction text)."""
  matches, totals = [0] * max_order, [0] * max_order
  c = r = 0
  for pred, ref in zip(preds, refs, strict=True):
    p, g = tokens(pred), tokens(ref)
    c, r = c + len(p), r + len(g)
    for n in range(1, max_order + 1):
      pn, gn = _ngrams(p, n), _ngrams(g, n)
      matches[n - 1] += sum(min(k, gn[ng]) for ng, k in pn.items())
      totals[n - 1] += max(len(p) - n + 1, 0)
  if c == 0 or min(matches) == 0:
    return 0.0
  log_p = sum(math.log(m / t) for m, t in zip(matches, totals)) / max_order
  return math.exp(min(0.0, 1.0 - r / c) + log_p)


def _lcs(a, b) -> int:
  row = [0] * (len(b) + 1)
  for x in a:
    prev = 0
    for j, y in enumerate(b):
      prev, row[j + 1] = row[j + 1], prev + 1 if x == y else max(row[j + 1], row[j])
  return row[-1]


def rouge_l(pred, ref) -> float:
  """ROUGE-L F1 (Lin 2004): LCS of the token lists, F = 2PR / (P + R)."""
  p, g = tokens(pred), tokens(ref)
  lcs = _lcs(p, g)
  if lcs == 0:
    return float(not p and not g)
  prec, rec = lcs / len(p), lcs / len(g)
  return 2 * prec * rec / (prec + rec)


def text_metrics(preds, refs) -> dict:
  """{"bleu": corpus BLEU-4, "rouge_l": mean ROUGE-L F1} of free-text answers."""
  preds, refs = list(preds), list(refs)
  return {"bleu": bleu(preds, refs),
          "rouge_l": sum(map(rouge_l, preds, refs)) / max(len(refs), 1)}
