"""What the synthetic worlds' hidden facts say about model outputs: the true answer to a
(generated) question, and which facts a (generated) caption states correctly. These measure the
links of LEAML's chain — captions -> generator -> pseudo QA — against the ground truth, which
only a synthetic world has.
"""
import difflib

import numpy as np

_DRAWS = 64  # qa_candidates draws slot values at random: enough draws meet every (template, slot)


def true_answers(mod, facts: dict) -> dict[str, str]:
  """Every question the world's templates can ask of these facts -> its true answer as text
  (a multiple-choice answer as its option text)."""
  by_key = {t.key: t for t in mod.TEMPLATES}
  out = {}
  for k in range(_DRAWS):
    for key, slots, answer, options, _ in mod.qa_candidates(facts, np.random.default_rng(k)):
      out.setdefault(by_key[key].fill(**slots), options[answer] if options else answer)
  return out


class _ScriptedTeller:
  """A Teller that says `values[i]` at its i-th statement (the true value where None)."""

  def __init__(self, values=None):
    self.values, self.claims, self.calls = values, [], []

  def say(self, fact, true, choices):
    i = len(self.calls)
    said = true if self.values is None or self.values[i] is None else self.values[i]
    self.calls.append((fact, true, tuple(choices)))
    self.claims.append({"fact": fact, "said": said, "true": true})
    return said


def stated_facts(mod, facts: dict, text: str, passes: int = 2) -> list[dict]:
  """[{"fact", "said", "true"}] for each statement of the world's caption of `facts`: `said` is the
  value that best explains `text` (word-level similarity of the caption rendered with that value,
  the others held), or None where no value explains it better than another (not stated)."""
  probe = _ScriptedTeller()
  mod.caption(facts, None, 0.0, teller=probe)
  calls = probe.calls
  current = [true for _, true, _ in calls]
  said = [None] * len(calls)
  words = str(text).lower().split()

  def similarity(values):
    rendered, _ = mod.caption(facts, None, 0.0, teller=_ScriptedTeller(values))
    return difflib.SequenceMatcher(None, rendered.lower().split(), words).ratio()

  for _ in range(passes):
    for i, (_, _, choices) in enumerate(calls):
      scores = [similarity(current[:i] + [c] + current[i + 1:]) for c in choices]
      best = max(scores)
      winners = [c for c, s in zip(choices, scores) if s == best]
      said[i] = winners[0] if len(winners) == 1 else None
      if said[i] is not None:
        current[i] = said[i]
  return [{"fact": fact, "said": s, "true": true} for (fact, true, _), s in zip(calls, said)]
