"""Pseudo QA: from the generator's texts to the pseudo QA the VQA model trains on. Pure functions.

  1. `candidates`: parse each sampled "<question> answer: <answer>" text; drop the unparsable ones,
     repeats of a question already asked of the same image, and those over `max_per_image`;
  2. (the stage may re-answer each kept question greedily: `answer_start` is the text the
     generator then continues, "<question> answer:");
  3. `keep`: validate each against the dataset's rule (what the labelled set reveals: question
     templates, answer sets, option format) and drop answers whose probability is under
     `min_confidence`.
Every sample is kept or dropped for exactly one counted reason; odd model output never raises.

A rule is `rule(question, answer, options, rng) -> {"question", "answer", "options", "type"} | None`
(None = invalid); the dataset registry builds it from the labelled examples.
"""
from __future__ import annotations

import math

from leaml_jax.data import prompts

DROP_REASONS = ("unparsable", "duplicate", "per_image_cap", "invalid", "low_confidence")


def candidates(image_ids, texts, logprobs, *, max_per_image: int) -> tuple[list[dict], dict]:
  """Parsed, de-duplicated samples -> ([{"image_id", "question", "answer", "options", "logprob"}],
  drop counts)."""
  dropped = dict.fromkeys(DROP_REASONS, 0)
  out, asked = [], {}
  for image_id, text, logprob in zip(image_ids, texts, logprobs):
    parsed = prompts.parse_qa_gen(text)
    if parsed is None:
      dropped["unparsable"] += 1
      continue
    question, answer, options = parsed
    seen = asked.setdefault(image_id, set())
    key = question.strip().lower()
    if key in seen:
      dropped["duplicate"] += 1
      continue
    if len(seen) >= max_per_image:
      dropped["per_image_cap"] += 1
      continue
    seen.add(key)
    out.append({"image_id": image_id, "question": question, "answer": answer, "options": options,
                "logprob": logprob})
  return out, dropped


def answer_start(candidate: dict) -> str:
  """The text after which the generator writes the candidate question's answer."""
  return prompts.qa_gen_target(candidate["question"], "", candidate["options"]).rstrip()


def validate(question: str, answer: str, options, rule, rng) -> dict | None:
  """The rule's verdict; a rule that raises on odd input counts as invalid, never crashes."""
  try:
    return rule(question, answer, options, rng)
  except (ValueError, KeyError, TypeError):
    return None


def parse_pseudo_qa(text: str, rule, rng) -> dict | str:
  """One generated text -> a validated QA dict, or the reason it is dropped ("unparsable" |
  "invalid")."""
  parsed = prompts.parse_qa_gen(text)
  if parsed is None:
    return "unparsable"
  return validate(*parsed, rule, rng) or "invalid"


def keep(cands, rule, rng, *, min_confidence: float, dropped: dict) -> list[dict]:
  """Validated candidates with confidence = exp(answer log-probability) >= min_confidence, as
  pseudo_qa.jsonl rows; `dropped` counts the rest."""
  kept = []
  for c in cands:
    # Re-parsed as written, so a re-answered text is held to the same format as a sampled one.
    qa = parse_pseudo_qa(prompts.qa_gen_target(c["question"], c["answer"], c["options"]), rule, rng)
    if isinstance(qa, str):
      dropped[qa] += 1
      continue
    confidence = math.exp(min(c["logprob"], 0.0))
    if confidence < min_confidence:
      dropped["low_confidence"] += 1
      continue
    kept.append({"image_id": c["image_id"], **qa, "confidence": round(confidence, 4)})
  return kept
