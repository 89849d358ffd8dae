"""Three procedural, seeded, offline VQA domains (the embedded default).

  synthetic_general    everyday scenes, stills and 4-frame clips; the demo's base model is
                       pre-trained here
  synthetic_endoscopy  GI-endoscopy look, Kvasir-VQA-like questions
  synthetic_sports     4-frame clips (a strip of frames), SPORTU-like 4-option questions

Every example is a dict
  {"id", "image": uint8 [H, W, 3], "qa": [{"question", "answer", "type",
   "category", "difficulty", "options": dict | None}], "facts": dict,
   "caption": str (teacher: imperfect), "gt_caption": str (same words, no errors),
   "caption_claims": [{"fact", "said", "true"}]}.
Example i of a (domain, split, seed) depends on nothing else, so generating
more examples only appends; facts, image, QA and caption draw from separate
random streams, so changing `caption_error_rate` changes captions only.

Pseudo-QA validity (`pseudo_qa_rule`) knows only what the labelled examples reveal: the
templates asked there, with the slot values and answers seen there, never the world's lists.

Look at a domain:
  python -m leaml_jax.data.datasets.synthetic --show synthetic_endoscopy --out grid.png
Time generation:
  python -m leaml_jax.data.datasets.synthetic --time synthetic_sports --num 20000
(the TFDS builders of the domains are in builder.py, the command line in __main__.py)
"""
import collections
import dataclasses
import textwrap

import numpy as np

from leaml_jax.data import frames, prompts
from leaml_jax.data.datasets.synthetic import endoscopy, general, sports
from leaml_jax.data.datasets.synthetic.qa_common import MULTI_SEP, Template, mc_options

DOMAINS = ("synthetic_general", "synthetic_endoscopy", "synthetic_sports")
SPLITS = ("train", "validation", "test")
_MODULES = dict(zip(DOMAINS, (general, endoscopy, sports)))
DEFAULT_IMAGE_SIZE = 32
DEFAULT_QA_PER_IMAGE = 5


def _module(domain: str):
  if domain not in _MODULES:
    raise ValueError(f"unknown synthetic domain {domain!r}; expected one of {DOMAINS}")
  return _MODULES[domain]


def domain_module(domain: str):
  """The module of one world (facts, rendering, templates, QA candidates, captions)."""
  return _module(domain)


def templates(domain: str) -> tuple[Template, ...]:
  return _module(domain).TEMPLATES


def question_types(domain: str) -> tuple[str, ...]:
  return tuple(dict.fromkeys(t.type for t in templates(domain)))


def answer_vocab(domain: str) -> dict[str, list[str]]:
  """Atomic answers per question type. Multi-answer types (several atoms joined
  by "; ") list the atoms; 4-option types list the option texts (the answer
  itself is then a letter A-D naming one of the options)."""
  vocab: dict[str, set] = {}
  for t in templates(domain):
    vocab.setdefault(t.type, set()).update(t.answers)
  return {k: sorted(v) for k, v in vocab.items()}


def teacher_missing_terms(domain: str) -> tuple[str, ...]:
  """Domain words the teacher captioner does not know (never in captions)."""
  return _module(domain).TEACHER_MISSING_TERMS


def num_frames(domain: str) -> int:
  """Frames per example: 1 for still images, else the clip's frame count (a strip of frames)."""
  return _module(domain).NUM_FRAMES


def _matching(candidates, question: str) -> Template | None:
  question = question.strip()
  return next((t for t in candidates if t.pattern().match(question)), None)


def match_template(domain: str, question: str) -> Template | None:
  """The template a question was written from, or None."""
  return _matching(templates(domain), question)


def validate_qa(domain: str, question: str, answer: str, options=None) -> str | None:
  """Type of a QA whose question, answer and options are well formed for this domain's world
  (any slot value and answer it can produce), else None."""
  t = match_template(domain, question)
  return None if t is None else _qa_type(t, answer, options)


def _qa_type(t: Template, answer, options) -> str | None:
  """t.type when `answer` and `options` are well formed for template `t`, else None."""
  if not isinstance(answer, str):
    return None
  if t.options:
    if not options or answer not in options or len(options) != 4:
      return None
    values = list(options.values())
    ok = len(set(values)) == 4 and all(v in t.answers for v in values)
    return t.type if ok else None
  if options:
    return None
  parts = answer.split(MULTI_SEP) if t.multi else [answer]
  if (not all(p in t.answers for p in parts) or len(set(parts)) != len(parts)
      or (t.multi and parts != sorted(parts)) or (len(parts) > 1 and {"none", "nothing"} & set(parts))):
    return None
  return t.type


# --- pseudo-QA validity from the labelled examples --------------------------------

def seen_templates(domain: str, labeled_examples) -> list[Template]:
  """The domain's templates as the labelled QA reveal them: only those asked there, each slot
  restricted to the values filled in there and the answers to those given there (multiple
  choice: every option text shown there, as SPORTU's rule uses its labelled option texts)."""
  slots, answers = collections.defaultdict(set), collections.defaultdict(set)
  for ex in labeled_examples:
    for q in ex["qa"]:
      t = match_template(domain, q["question"])
      if t is None:
        continue
      for name, value in t.pattern().match(q["question"].strip()).groupdict().items():
        slots[t.key, name].add(value)
      if t.options:
        answers[t.key].update((q.get("options") or {}).values())
      else:
        answers[t.key].update(q["answer"].split(MULTI_SEP) if t.multi else [q["answer"]])
  return [dataclasses.replace(t, answers=tuple(sorted(answers[t.key])),
                              slots=tuple((name, tuple(sorted(slots[t.key, name])))
                                          for name, _ in t.slots))
          for t in templates(domain) if answers[t.key]]


def pseudo_qa_rule(domain: str, labeled_examples):
  """`rule(question, answer, options, rng) -> {"question", "answer", "options", "type"} | None`
  for generated QA: the question must fill a template seen in the labelled QA with slot values
  seen there, and the answer be one seen there for that template (the format of the domain:
  sorted, distinct parts for multi-answer types; 4 distinct options holding the answer for
  multiple choice). A multiple-choice QA generated with its answer's text (no options) gets 4
  options drawn with `rng` from that template's seen answers; fewer than 4 seen: None."""
  seen = seen_templates(domain, labeled_examples)

  def rule(question, answer, options, rng):
    t = _matching(seen, question)
    if t is None:
      return None
    if t.options and options is None:
      if answer not in t.answers or len(t.answers) < 4:
        return None
      answer, options = mc_options(rng, answer, t.answers)
    qtype = _qa_type(t, answer, options)
    if qtype is None:
      return None
    return {"question": question, "answer": answer, "options": options, "type": qtype}

  return rule


def generate_example(domain: str, split: str, index: int, seed: int,
                     caption_error_rate: float = 0.15, *,
                     image_size: int = DEFAULT_IMAGE_SIZE,
                     qa_per_image: int = DEFAULT_QA_PER_IMAGE) -> dict:
  mod = _module(domain)
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
  seq = np.random.SeedSequence([seed, DOMAINS.index(domain), SPLITS.index(split), index])
  facts_rng, image_rng, qa_rng, caption_rng = (np.random.default_rng(s) for s in seq.spawn(4))
  facts = mod.sample_facts(facts_rng)
  image = mod.render_image(facts, image_size, image_rng)
  candidates = mod.qa_candidates(facts, qa_rng)
  keep = sorted(qa_rng.choice(len(candidates), min(qa_per_image, len(candidates)),
                              replace=False).tolist())
  by_key = {t.key: t for t in mod.TEMPLATES}
  qa = []
  for key, slots, answer, options, category in (candidates[i] for i in keep):
    t = by_key[key]
    qa.append({"question": t.fill(**slots), "answer": answer, "type": t.type,
               "category": category, "difficulty": t.difficulty, "options": options})
  text, claims = mod.caption(facts, caption_rng, caption_error_rate)
  gt_text, _ = mod.caption(facts, np.random.default_rng(0), 0.0)
  return {"id": f"{domain.removeprefix('synthetic_')}-{split}-{index:06d}", "image": image,
          "qa": qa, "facts": facts, "caption": text, "gt_caption": gt_text,
          "caption_claims": claims}


def generate_examples(domain: str, split: str, num: int, seed: int,
                      caption_error_rate: float = 0.15, *, start: int = 0,
                      image_size: int = DEFAULT_IMAGE_SIZE,
                      qa_per_image: int = DEFAULT_QA_PER_IMAGE) -> list[dict]:
  """Examples start .. start+num-1 of (domain, split, seed); deterministic."""
  return [generate_example(domain, split, i, seed, caption_error_rate,
                           image_size=image_size, qa_per_image=qa_per_image)
          for i in range(start, start + num)]


def corpus(num_per_domain: int = 600, seed: int = 0) -> list[str]:
  """Every kind of text the synthetic worlds produce (to train the tokenizer)."""
  texts = [prompts.caption_prompt(), prompts.qa_gen_prompt()]
  for domain in DOMAINS:
    for t in templates(domain):  # every slot value and answer, even if rare
      for name, values in t.slots:
        texts += [t.fill(**{name: v}) for v in values]
      texts += list(t.answers)
    for ex in generate_examples(domain, "train", num_per_domain, seed):
      texts += [ex["caption"], ex["gt_caption"]]
      for q in ex["qa"]:
        texts.append(prompts.vqa_prompt(q["question"], q["options"]))
        texts.append(prompts.qa_gen_target(q["question"], q["answer"], q["options"]))
  return texts


# --- looking at a domain -------------------------------------------------------

def show_grid(domain: str, out: str, *, num: int = 12, split: str = "train", seed: int = 0,
              caption_error_rate: float = 0.15, image_size: int = DEFAULT_IMAGE_SIZE,
              scale: int = 7, cols: int = 4) -> str:
  """A PNG grid: each example's model-size image (nearest-upscaled) with its
  QA and teacher caption printed underneath."""
  from PIL import Image, ImageDraw, ImageFont  # pylint: disable=import-outside-toplevel
  exs = generate_examples(domain, split, num, seed, caption_error_rate, image_size=image_size)
  font = ImageFont.load_default(size=13)
  side = image_size * scale
  tile_w = max(side, 360) + 16
  lines_per = []
  for ex in exs:
    lines = [f"{ex['id']}  [{ex['qa'][0]['category']}]"]
    for q in ex["qa"]:
      opts = " ".join(f"{k}) {v}" for k, v in q["options"].items()) if q["options"] else ""
      lines += textwrap.wrap(f"Q: {q['question']} {opts}", 52)
      lines.append(f"   -> {q['answer']}   ({q['type']}, {q['difficulty']})")
    lines += textwrap.wrap("teacher: " + ex["caption"], 52)
    lines_per.append(lines)
  tile_h = side + 16 + 16 * max(len(ls) for ls in lines_per)
  rows = -(-len(exs) // cols)
  sheet = Image.new("RGB", (cols * tile_w, rows * tile_h), "white")
  draw = ImageDraw.Draw(sheet)
  for k, (ex, lines) in enumerate(zip(exs, lines_per)):
    x0, y0 = (k % cols) * tile_w + 8, (k // cols) * tile_h + 8
    image = ex["image"]
    if ex["facts"].get("num_frames", 1) > 1:  # a clip's frame strip: show the frames 2x2
      n = ex["facts"]["num_frames"]
      image = frames.tile(frames.from_strip(image, n), frames.grid_side(n) * image.shape[1])
    big = Image.fromarray(image).resize((side, side), Image.NEAREST)
    sheet.paste(big, (x0, y0))
    for j, line in enumerate(lines):
      draw.text((x0, y0 + side + 4 + 16 * j), line, fill="black", font=font)
  sheet.save(out)
  return out
