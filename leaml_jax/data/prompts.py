"""Every prompt template of the system lives here.

Sequence layout (PaliGemma style), built by encoders.TextEncoder (packing.py):
  prefix = [bos] + tokens(prompt + "\\n")   mask_ar 0 (full attention), no loss
  suffix = tokens(target) + [eos]           mask_ar 1 (causal), loss on
Real families (encoders/hf.py) wrap the same prompts in their own layout (`hf_prompt`).
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


def caption_prompt(family: str = "synthetic") -> str:
  """The caption task's prompt; real families get the one they were trained with."""
  return _CAPTION.get(family, "caption en")


_CAPTION = {"paligemma": "caption en", "idefics3": "Describe the image in one sentence.",
            "gemma3": "Describe the image in one sentence.", "qwen2_vl": "Describe the image in one sentence."}


def hf_prompt(family: str, prompt: str, target: str | None, *, n_images: int, image_token: str,
              eos_token: str, chat=None, media: str = "image") -> tuple[str, str | None]:
  """(text, suffix) for a real family's processor (encoders/hf.py).

  paligemma: text = <image>*n + prompt (the processor adds <bos> and "\n"), suffix = target
    (the processor adds <eos>).
  idefics3, gemma3: with a chat template (`chat` = processor.apply_chat_template) the user turn
    holds the n images and the prompt, the assistant turn the target, cut after its first
    `eos_token` (the token that ends the turn: <end_of_utterance>, Gemma 3's <end_of_turn>);
    without one: <image>*n + prompt + "\n", suffix = target + eos (image_token is Gemma 3's
    <start_of_image>, which its processor expands). qwen2_vl: as these; media="video" makes the
    user turn's n items videos (its chat template writes their placeholders).
  """
  if family == "paligemma":
    return image_token * n_images + prompt, target
  if chat is None:
    return image_token * n_images + prompt + "\n", None if target is None else target + eos_token
  user = {"role": "user", "content": [{"type": media}] * n_images + [{"type": "text", "text": prompt}]}
  text = chat([user], add_generation_prompt=True, tokenize=False)
  if target is None:
    return text, None
  full = chat([user, {"role": "assistant", "content": [{"type": "text", "text": target}]}], tokenize=False)
  if not full.startswith(text):
    raise ValueError("the chat template's assistant turn does not extend its generation prompt")
  suffix = full[len(text):]
  cut = suffix.find(eos_token)
  return text, suffix[:cut + len(eos_token)] if cut >= 0 else suffix + eos_token


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
