"""Every prompt template of the system lives here.

Sequence layout (PaliGemma style), built by pipeline.encode_example:
  prefix = [bos] + tokens(prompt + "\\n")   mask_ar 0 (full attention), no loss
  suffix = tokens(target) + [eos]           mask_ar 1 (causal), loss on
Three tasks share one model and are told apart by the prompt:
  VQA        prompt = the question (+ options),   target = the answer
  caption    prompt = caption_prompt(),           target = the caption
  QA-gen     prompt = qa_gen_prompt(),            target = qa_gen_target(...)
"""
import re

OPTION_LETTERS = "ABCDEFGH"
_ANSWER_TAG = " answer: "
_OPTIONS_TAG = " options: "


def format_options(options: dict | None) -> str:
  """{"A": "left", "B": "up"} -> 'A. left B. up' (letters in order)."""
  if not options:
    return ""
  return " ".join(f"{k}. {v}" for k, v in sorted(options.items()))


def vqa_prompt(question: str, options: dict | None = None) -> str:
  """'Which way does the ball move? A. up B. left C. right D. down'."""
  opts = format_options(options)
  return f"{question} {opts}" if opts else question


def caption_prompt() -> str:
  return "caption en"


def qa_gen_prompt() -> str:
  return "generate question and answer"


def qa_gen_target(question: str, answer: str, options: dict | None = None) -> str:
  """'<question> answer: <answer>' or '<question> options: A. x B. y ... answer: B'."""
  opts = format_options(options)
  middle = f"{_OPTIONS_TAG}{opts}" if opts else ""
  return f"{question}{middle}{_ANSWER_TAG}{answer}"


_OPTION_RE = re.compile(r"([A-H])\.\s+(.*?)(?=\s+[A-H]\.\s|\Z)", re.S)


def parse_qa_gen(text) -> tuple[str, str, dict | None] | None:
  """Inverse of qa_gen_target for generated text: (question, answer, options)
  or None when the text is not a well-formed QA. Never raises."""
  if not isinstance(text, str) or _ANSWER_TAG not in text:
    return None
  head, _, answer = text.rpartition(_ANSWER_TAG)
  answer = answer.strip()
  options = None
  if _OPTIONS_TAG in head:
    head, _, opts = head.partition(_OPTIONS_TAG)
    found = _OPTION_RE.findall(opts.strip())
    letters = [k for k, _ in found]
    if (len(found) < 2 or letters != list(OPTION_LETTERS[:len(found)])
        or any(not v.strip() for _, v in found)
        or " ".join(f"{k}. {v}" for k, v in found) != opts.strip()):
      return None
    options = {k: v.strip() for k, v in found}
    if answer not in options:
      return None
  question = head.strip()
  if not question or not answer or _ANSWER_TAG.strip() in question:
    return None
  return question, answer, options
