"""Training stages: base pre-training, relevance, QA generator, pseudo-QA, VQA, baselines.

All training goes through `finetune` (one harness: optimizer from config, the one jitted
train_step, orbax checkpoints with the data position, metrics.jsonl). LEAML's variants
(the method and its ablations) differ only in `Variant`.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from leaml_jax import checkpoint, generate as gen_lib, lora, losses, neurons, optim, train
from leaml_jax.data import datasets, encoders, pipeline, prompts, records as records_lib
from leaml_jax.metrics import MetricWriter, progress
from leaml_jax.stages import captions as captions_stage, common, prepare


# ----------------------------------------------------------------------------- harness
class ZipIterator:
  """{"qa": next(a), "distill": next(b)} with a joint, checkpointable position."""

  def __init__(self, **iters):
    self.iters = iters

  def __next__(self):
    return {k: next(it) for k, it in self.iters.items()}

  def get_state(self):
    return {k: it.get_state() for k, it in self.iters.items()}

  def set_state(self, state):
    for k, it in self.iters.items():
      it.set_state(state[k])


def dataset(ctx, records, batch_size, *, seed_name):
  return pipeline.make_dataset(records, ctx.encoder, batch_size=batch_size,
                               seed=_seed(ctx, seed_name))


def _seed(ctx, name: str) -> int:
  return int(jax.random.randint(ctx.rng(name), (), 0, 2 ** 31 - 1))


def finetune(ctx, name: str, *, params, tcfg, loss_fn, data_iter, mask_tree=None,
             examples_per_step: int):
  """Train `params` for tcfg.steps under workdir/<name>/; resumes from its checkpoint."""
  mesh = ctx.mesh
  tx = optim.make_optimizer(tcfg, params, mask_tree)
  state, shardings = train.create_state(params, tx, mesh)
  ckpt = checkpoint.Checkpointer(ctx.path(name, "ckpt"), save_every=tcfg.save_every, max_to_keep=1)
  if ckpt.latest_step() is not None:
    state, data_state = ckpt.restore(checkpoint.abstract_like(state))
    if data_state is not None:
      data_iter.set_state(data_state)
    print(f"[leaml] {name}: resumed at step {int(state.step)}")
  step_fn = train.jit_train_step(train.make_train_step(loss_fn, tx, grad_accum=tcfg.grad_accum),
                                 shardings, mesh)
  flops = examples_per_step * train.model_flops_per_example(ctx.model_cfg, ctx.config.data.text_len)
  tokens = examples_per_step * (ctx.model_cfg.num_image_tokens + ctx.config.data.text_len)
  writer = MetricWriter(ctx.path(name))
  state, _ = train.fit(state=state, step_fn=step_fn, data_iter=data_iter, num_steps=tcfg.steps,
                       rng=ctx.rng(name), mesh=mesh, checkpointer=ckpt, writer=writer,
                       log_every=tcfg.log_every, flops_per_step=flops, tokens_per_step=tokens,
                       desc=name)
  writer.close()
  ckpt.close()
  return state.params


def lm_finetune(ctx, name, *, params, tcfg, records, params_fn=None):
  it = iter(dataset(ctx, records, tcfg.batch_size, seed_name=name))
  return finetune(ctx, name, params=params, tcfg=tcfg, data_iter=it,
                  loss_fn=losses.lm_loss(ctx.model, params_fn), examples_per_step=tcfg.batch_size)


# ----------------------------------------------------------------------------- LEAML
@dataclasses.dataclass(frozen=True)
class Variant:
  """LEAML and its ablations. prefix: where its artifacts live under the workdir."""
  name: str = "leaml"
  prefix: str = ""
  mask: str | None = None        # None = config.neurons.mask; "none" | "random" | "relevance"
  distill: bool = True


VARIANTS = {"leaml": Variant(),
            "no_mask": Variant("no_mask", "baselines/no_mask/", mask="none"),
            "random_mask": Variant("random_mask", "baselines/random_mask/", mask="random"),
            "no_distill": Variant("no_distill", "baselines/no_distill/", distill=False)}


def run_relevance(ctx) -> None:
  """QA relevance of every MLP neuron of the base model on the labelled QA -> mask."""
  c = ctx.config.neurons
  params = ctx.load_params("base")
  exs = prepare.examples(ctx, "labeled")
  records = records_lib.qa_gen_records(exs)
  bs = min(c.batch_size, len(records))
  ds = pipeline.make_dataset(records, ctx.encoder, batch_size=bs, shuffle=False, num_epochs=1,
                             seed=0, drop_remainder=False)
  batches = [b for _, b in zip(range(c.max_batches), ds) if len(b["index"]) == bs]
  batches = batches or [next(iter(ds))]
  scores = neurons.relevance(ctx.model, params, progress(batches, desc="relevance", leave=False),
                             score=c.score, mesh=ctx.mesh)
  os.makedirs(ctx.path("relevance"), exist_ok=True)
  np.savez(ctx.path("relevance", "scores.npz"), **scores)
  masks, _ = neurons.select(scores, c.fraction, per_layer=c.per_layer, towers=tuple(c.towers))
  np.savez(ctx.path("relevance", "mask.npz"), **masks)
  common.write_json(ctx.path("relevance", "stats.json"),
                    {"score": c.score, "batches": len(batches), **neurons.stats(scores, masks)})


def _load_npz(path):
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} missing: run the `relevance` stage first")
  with np.load(path) as z:
    return {k: z[k] for k in z.files}


def generator_mask(ctx, variant: Variant, params):
  """Param mask tree for the distillation updates, or None (all neurons).

  "relevance" uses the selection the `relevance` stage wrote (relevance/mask.npz); "random"
  selects the same number of neurons from random scores of the same shapes."""
  c = ctx.config.neurons
  kind = variant.mask or c.mask
  if kind == "none":
    return None
  if kind == "relevance":
    masks = _load_npz(ctx.path("relevance", "mask.npz"))
  else:
    scores = _load_npz(ctx.path("relevance", "scores.npz"))
    rand = neurons.random_scores(scores, np.random.default_rng(ctx.config.seed))
    masks, _ = neurons.select(rand, c.fraction, per_layer=c.per_layer, towers=tuple(c.towers))
  return neurons.param_mask(masks, params, non_neuron=c.non_neuron_params)


def run_qa_generator(ctx, variant: Variant = VARIANTS["leaml"]) -> None:
  c = ctx.config
  g = c.qa_generator
  params = ctx.load_params("base")
  qa_records = records_lib.qa_gen_records(prepare.examples(ctx, "labeled"))
  caps = captions_stage.captions(ctx)
  unl = [ex for ex in prepare.examples(ctx, "unlabeled") if ex["id"] in caps]
  cap_records = records_lib.caption_records([{**ex, "caption": caps[ex["id"]]} for ex in unl])
  name = variant.prefix + "qa_generator"
  if not variant.distill:
    params = lm_finetune(ctx, name, params=params, tcfg=g, records=qa_records)
    ctx.save_params(name, params)
    return
  mask_tree = generator_mask(ctx, variant, params)
  applies_all = c.neurons.applies_to == "all"
  loss_fn = losses.generator_loss(ctx.model, distill_weight=g.distill_weight,
                                  distill_mask=None if applies_all else mask_tree)
  qa_it = iter(dataset(ctx, qa_records, g.batch_size, seed_name=name + "/qa"))
  d_it = iter(dataset(ctx, cap_records, g.distill_batch_size, seed_name=name + "/distill"))
  params = finetune(ctx, name, params=params, tcfg=g, loss_fn=loss_fn,
                    data_iter=ZipIterator(qa=qa_it, distill=d_it),
                    mask_tree=mask_tree if applies_all else None,
                    examples_per_step=g.batch_size + g.distill_batch_size)
  ctx.save_params(name, params)


def generate_texts(ctx, params, records, *, batch_size, max_new_tokens, temperature=0.0,
                   top_p=1.0, rng=None, desc="generate", with_logprobs=False):
  """Batched generation with the given (sharded) params; pads the last batch to a fixed shape.
  Records {"image", "prompt", "forced"?}: `forced` text is written after the prompt (as the start
  of the answer) and generation continues it. With `with_logprobs`: (texts, summed log-probs)."""
  tok = ctx.tokenizer
  out, scores = [], []
  for start in progress(range(0, len(records), batch_size), desc=desc, leave=False):
    chunk = records[start:start + batch_size]
    padded = chunk + [chunk[-1]] * (batch_size - len(chunk))
    r = None if rng is None else jax.random.fold_in(rng, start)
    batch = encoders.prompt_batch(padded, ctx.encoder)
    tokens, lp = gen_lib.generate(ctx.model, params, batch, max_new_tokens=max_new_tokens,
                                  eos_id=tok.eos_id, pad_id=tok.pad_id, temperature=temperature,
                                  top_p=top_p, rng=r, return_logprobs=True)
    out += [tok.decode(list(t)) for t in np.asarray(tokens)[:len(chunk)]]
    scores += [float(x) for x in lp[:len(chunk)]]
  return (out, scores) if with_logprobs else out


def run_pseudo_qa(ctx, variant: Variant = VARIANTS["leaml"]) -> None:
  """Pseudo QA for every unlabelled image with the generator's own sharded params.

  1. sample `samples_per_image` "question answer: ..." texts per image (temperature, top-p);
  2. parse; drop unparsable ones, repeated questions of an image, and those over `max_per_image`;
  3. with answer="greedy", answer each kept question again greedily (the generator continues
     "<question> answer:"), and score it: confidence = the answer's probability (tokens + EOS);
  4. validate against the dataset's formats, drop answers under `min_confidence`.
  Counts per reason go to pseudo_qa_stats.json; nothing here raises on odd model output."""
  c = ctx.config.pseudo_qa
  params = ctx.load_params(variant.prefix + "qa_generator")
  unl = prepare.examples(ctx, "unlabeled")
  gen_prompt = prompts.qa_gen_prompt()
  records = [{"image": ex["image"], "prompt": gen_prompt, "id": ex["id"]}
             for ex in unl for _ in range(c.samples_per_image)]
  texts, logps = generate_texts(
      ctx, params, records, batch_size=c.batch_size, max_new_tokens=c.max_new_tokens,
      temperature=c.temperature, top_p=c.top_p, rng=ctx.rng(variant.prefix + "pseudo_qa"),
      desc="pseudo-QA", with_logprobs=True)
  dropped = {"unparsable": 0, "duplicate": 0, "per_image_cap": 0, "invalid": 0,
             "low_confidence": 0}
  cands, seen = [], {}
  for rec, text, lp in zip(records, texts, logps):
    parsed = prompts.parse_qa_gen(text)
    if parsed is None:
      dropped["unparsable"] += 1
      continue
    per_image = seen.setdefault(rec["id"], set())
    key = parsed[0].strip().lower()
    if key in per_image:
      dropped["duplicate"] += 1
      continue
    if len(per_image) >= c.max_per_image:
      dropped["per_image_cap"] += 1
      continue
    per_image.add(key)
    cands.append({"rec": rec, "qa": parsed, "logp": lp})
  if c.answer == "greedy" and cands:
    forced = [{**x["rec"], "forced": prompts.qa_gen_target(x["qa"][0], "", x["qa"][2]).rstrip()}
              for x in cands]
    answers, logps = generate_texts(ctx, params, forced, batch_size=c.batch_size,
                                    max_new_tokens=c.answer_tokens, desc="pseudo-QA answers",
                                    with_logprobs=True)
    for x, a, lp in zip(cands, answers, logps):
      x["qa"], x["logp"] = (x["qa"][0], a.strip(), x["qa"][2]), lp
  rng = np.random.default_rng(ctx.config.seed)
  rule = datasets.pseudo_qa_rule(datasets.name_of(ctx.config.data), prepare.examples(ctx, "labeled"))
  kept = []
  for x in cands:
    qa = parse_pseudo_qa(prompts.qa_gen_target(*x["qa"]), rule, rng)
    if isinstance(qa, str):
      dropped[qa] += 1
      continue
    confidence = float(np.exp(x["logp"]))
    if confidence < c.min_confidence:
      dropped["low_confidence"] += 1
      continue
    kept.append({"image_id": x["rec"]["id"], **qa, "confidence": round(confidence, 4)})
  common.write_jsonl(ctx.path(variant.prefix + "pseudo_qa.jsonl"), kept)
  common.write_json(ctx.path(variant.prefix + "pseudo_qa_stats.json"),
                    {"generated": len(texts), "kept": len(kept), "dropped": dropped,
                     "answer": c.answer, "images_with_pseudo_qa": len({r["image_id"] for r in kept})})


def parse_pseudo_qa(text: str, rule, rng: np.random.Generator) -> dict | str:
  """Generated text -> {"question", "answer", "options", "type"}, or the reason it is dropped
  ("unparsable" | "invalid"). `rule` (datasets.pseudo_qa_rule, built from the labelled
  examples) judges validity; multiple-choice questions are generated with the answer's text and
  the rule draws their options from the labelled option texts (format, not knowledge).
  Never raises."""
  parsed = prompts.parse_qa_gen(text)
  if parsed is None:
    return "unparsable"
  return rule(*parsed, rng) or "invalid"


def pseudo_records(ctx, variant: Variant) -> list[dict]:
  path = ctx.path(variant.prefix + "pseudo_qa.jsonl")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} missing: run the `pseudo_qa` stage first")
  images = {ex["id"]: ex["image"] for ex in prepare.examples(ctx, "unlabeled")}
  text = ctx.config.data.mc_answer == "text"
  return [{"image": images[r["image_id"]], "prompt": prompts.vqa_prompt(r["question"], r["options"]),
           "target": r["options"][r["answer"]] if r["options"] and text else r["answer"],
           "id": r["image_id"]} for r in common.read_jsonl(path)]


def vqa_records(ctx, pool: str) -> list[dict]:
  """Labelled VQA records of a pool; multiple choice answered by option text or letter."""
  return records_lib.vqa_records(prepare.examples(ctx, pool), mc_answer=ctx.config.data.mc_answer)


def run_vqa(ctx, variant: Variant = VARIANTS["leaml"]) -> None:
  """Fine-tune the base on labelled + pseudo QA (mixture weight config.vqa.pseudo_weight)."""
  v = ctx.config.vqa
  labeled = vqa_records(ctx, "labeled")
  pseudo = pseudo_records(ctx, variant)
  name = variant.prefix + "vqa"
  mk = lambda recs, s: pipeline.make_dataset(recs, ctx.encoder, batch_size=None,
                                             seed=_seed(ctx, name + s))
  if pseudo and v.pseudo_weight > 0:
    ds = pipeline.mix([mk(labeled, "/labeled"), mk(pseudo, "/pseudo")],
                      [1.0 - v.pseudo_weight, v.pseudo_weight], batch_size=v.batch_size)
  else:
    ds = pipeline.batch(mk(labeled, "/labeled"), v.batch_size)
  params = finetune(ctx, name, params=ctx.load_params("base"), tcfg=v,
                    loss_fn=losses.lm_loss(ctx.model), data_iter=iter(ds),
                    examples_per_step=v.batch_size)
  ctx.save_params(name, params)


# ----------------------------------------------------------------------------- baselines
def run_baselines(ctx) -> None:
  """Full fine-tune and LoRA on the labelled data only; then the LEAML ablations."""
  c = ctx.config
  labeled = vqa_records(ctx, "labeled")
  methods = set(c.baselines.methods)
  # Each run loads its own copy of the base: the train step donates (consumes) its input.
  if "finetune" in methods and not _done(ctx, "baselines/finetune"):
    params = lm_finetune(ctx, "baselines/finetune", params=ctx.load_params("base"), tcfg=c.vqa,
                         records=labeled)
    ctx.save_params("baselines/finetune", params)
  if "lora" in methods and not _done(ctx, "baselines/lora"):
    b = c.baselines
    tcfg = c.vqa.copy_and_resolve_references()
    tcfg.lr, tcfg.trainable, tcfg.weight_decay = b.lora_lr, lora.TRAINABLE, 0.0
    base = ctx.load_params("base")
    lp = {"base": base, "lora": lora.init(base, ctx.rng("lora"), rank=b.lora_rank)}
    merge = lambda p: lora.merge(p, rank=b.lora_rank, alpha=b.lora_alpha)
    params = lm_finetune(ctx, "baselines/lora", params=lp, tcfg=tcfg, records=labeled,
                         params_fn=merge)
    ctx.save_params("baselines/lora", jax.jit(merge)(params))
  for name in c.ablations:
    variant = VARIANTS[name]
    if _done(ctx, variant.prefix + "vqa"):
      continue
    if not _done(ctx, variant.prefix + "qa_generator"):
      run_qa_generator(ctx, variant)
    if not os.path.exists(ctx.path(variant.prefix + "pseudo_qa.jsonl")):
      run_pseudo_qa(ctx, variant)
    run_vqa(ctx, variant)


def _done(ctx, name) -> bool:
  return os.path.isdir(ctx.path(name, "params"))
