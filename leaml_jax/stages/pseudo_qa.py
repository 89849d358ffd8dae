"""Stage `pseudo_qa`: pseudo QA for every unlabelled image with each generator's own sharded
params -> <variant>/pseudo_qa.jsonl and pseudo_qa_stats.json.

1. sample `samples_per_image` "question answer: ..." texts per image (temperature, top-p);
2. parse; drop unparsable ones, repeated questions of an image, those over `max_per_image`;
3. with answer="greedy", answer each kept question again greedily (the generator continues
   "<question> answer:"); confidence = the answer's probability (its tokens and EOS);
4. validate against what the labelled set reveals; drop answers under `min_confidence`.
Parsing, validation and filtering are the pure library `leaml_jax.pseudo_qa`.
"""
from __future__ import annotations

import os

import numpy as np

from leaml_jax import generate, pseudo_qa
from leaml_jax.data import datasets, prompts
from leaml_jax.stages import artifacts, context


def outputs(ctx) -> list[str]:
  return [os.path.join(v.directory, f) for v in context.variants(ctx.config)
          for f in ("pseudo_qa.jsonl", "pseudo_qa_stats.json", "generator_captions.jsonl")]


def run(ctx) -> None:
  for variant in context.variants(ctx.config):
    if not artifacts.exists(ctx.path(variant.directory, "pseudo_qa.jsonl")):
      write_pseudo_qa(ctx, variant)


def write_pseudo_qa(ctx, variant: context.Variant) -> None:
  c = ctx.config.pseudo_qa
  params = ctx.load_params(os.path.join(variant.directory, "qa_generator"))
  gen = lambda records, **kw: generate.generate_texts(ctx.model, params, records, encoder=ctx.encoder,
                                                      batch_size=c.batch_size, **kw)
  prompt = prompts.qa_gen_prompt()
  records = [{"image": ex["image"], "prompt": prompt, "id": ex["id"]}
             for ex in artifacts.examples(ctx, "unlabeled") for _ in range(c.samples_per_image)]
  texts, logprobs = gen(records, max_new_tokens=c.max_new_tokens, temperature=c.temperature,
                        top_p=c.top_p, rng=ctx.rng(os.path.join(variant.directory, "pseudo_qa/sample")),
                        desc="pseudo-QA")
  cands, dropped = pseudo_qa.candidates([r["id"] for r in records], texts, logprobs,
                                        max_per_image=c.max_per_image)
  if c.answer == "greedy" and cands:
    images = {r["id"]: r["image"] for r in records}
    forced = [{"image": images[x["image_id"]], "prompt": prompt, "forced": pseudo_qa.answer_start(x)}
              for x in cands]
    answers, logprobs = gen(forced, max_new_tokens=c.answer_tokens, desc="pseudo-QA answers")
    for x, answer, logprob in zip(cands, answers, logprobs):
      x["answer"], x["logprob"] = answer.strip(), logprob
  rng = np.random.default_rng(ctx.seed(os.path.join(variant.directory, "pseudo_qa/options")))
  rule = datasets.pseudo_qa_rule(datasets.name_of(ctx.config.data), artifacts.examples(ctx, "labeled"))
  kept = pseudo_qa.keep(cands, rule, rng, min_confidence=c.min_confidence, dropped=dropped)
  if c.caption_probe:  # the generator's own captions, for the mechanism report
    probe = artifacts.examples(ctx, "unlabeled")[:c.caption_probe]
    caption_prompt = prompts.caption_prompt(getattr(ctx.encoder, "family", "synthetic"))
    captions, _ = gen([{"image": ex["image"], "prompt": caption_prompt, "id": ex["id"]} for ex in probe],
                      max_new_tokens=ctx.config.captions.max_new_tokens, desc="generator captions")
    artifacts.write_jsonl(ctx.path(variant.directory, "generator_captions.jsonl"),
                          [{"image_id": ex["id"], "caption": t.strip()} for ex, t in zip(probe, captions)])
  artifacts.write_jsonl(ctx.path(variant.directory, "pseudo_qa.jsonl"), kept)
  artifacts.write_json(ctx.path(variant.directory, "pseudo_qa_stats.json"),
                       {"generated": len(texts), "kept": len(kept), "dropped": dropped,
                        "answer": c.answer, "images_with_pseudo_qa": len({r["image_id"] for r in kept})})
