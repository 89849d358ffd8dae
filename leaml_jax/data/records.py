"""From examples to records: plain dicts {"image", "prompt", "target", "id", "image_id", ...},
one per training sequence, for the three tasks the model learns (VQA, QA generation, captions).

Multiple-choice answers are written in one of two modes, `mc_answer` (config.data.mc_answer):
"letter" (the option letter, as SPORTU scores them) or "text" (the option's text).
"""
from leaml_jax.data import prompts
from leaml_jax.errors import DataError

MC_ANSWER_MODES = ("text", "letter")


def _check_mc_answer(mc_answer: str) -> None:
  if mc_answer not in MC_ANSWER_MODES:
    raise ValueError(f"mc_answer must be one of {MC_ANSWER_MODES}, got {mc_answer!r}")


def _check_qa(ex, q):
  if not str(q.get("question", "")).strip():
    raise DataError(ex["id"], "empty question")
  if not str(q.get("answer", "")).strip():
    raise DataError(ex["id"], f"empty answer to {q['question']!r}")


def vqa_records(examples, mc_answer: str = "letter") -> list[dict]:
  """One record per QA: image + question (+ options) -> answer; the QA's fields ride along
  (answer, type, category, difficulty, options) for the evaluators."""
  _check_mc_answer(mc_answer)
  out = []
  for ex in examples:
    for k, q in enumerate(ex["qa"]):
      _check_qa(ex, q)
      target = q["answer"]
      if q.get("options") and mc_answer == "text":
        target = q["options"][q["answer"]]
      out.append({"image": ex["image"], "prompt": prompts.vqa_prompt(q["question"], q.get("options")),
                  "target": target, "id": f"{ex['id']}#{k}", "image_id": ex["id"], **q})
  return out


def qa_gen_records(examples, mc_answer: str = "text") -> list[dict]:
  """One record per QA: image -> 'question answer: ...'.

  With mc_answer="text" a multiple-choice QA is written as its question and the answer's option
  text: options are format, not knowledge, and the pseudo-QA rule draws them again from the
  options the labelled set shows. With "letter" the options and letter are part of the target."""
  _check_mc_answer(mc_answer)
  out = []
  for ex in examples:
    for k, q in enumerate(ex["qa"]):
      _check_qa(ex, q)
      if q.get("options") and mc_answer == "text":
        target = prompts.qa_gen_target(q["question"], q["options"][q["answer"]])
      else:
        target = prompts.qa_gen_target(q["question"], q["answer"], q.get("options"))
      out.append({"image": ex["image"], "prompt": prompts.qa_gen_prompt(), "target": target,
                  "id": f"{ex['id']}#{k}", "image_id": ex["id"]})
  return out


def caption_records(examples, key: str = "caption") -> list[dict]:
  """One record per image: image -> its (teacher) caption."""
  out = []
  for ex in examples:
    if not str(ex.get(key, "")).strip():
      raise DataError(ex["id"], f"empty {key}")
    out.append({"image": ex["image"], "prompt": prompts.caption_prompt(), "target": ex[key],
                "id": ex["id"], "image_id": ex["id"]})
  return out
