"""Subprocess worker for tests/test_checkpoint.py and tests/test_processes.py: a real, killable
training run.

    python -m tests._resume_worker --workdir=D --tokenizer=T --steps=6 [--kill_after=4]
        [--sigterm_at=3] [--devices=4 --batch_size=4 --texts]
        [--coordinator=127.0.0.1:PORT --num_processes=2 --process_id=I]

Trains the tiny VLM with AdamW (optim.make_optimizer) on a real grain iterator
(data.pipeline.make_dataset) through train.fit with a Checkpointer(save_every=2). If a
checkpoint exists under D it resumes from it: train state *and* data-iterator position.
With --kill_after=S the process SIGKILLs itself right after the step-S checkpoint is written
(no Python cleanup, no atexit, like a pre-empted VM). With --sigterm_at=S it sends itself SIGTERM
while step S is fed (what a spot VM receives): fit checkpoints step S and the worker exits with
errors.PREEMPTED_EXIT_CODE, as leaml_jax.main does.

Prints `start_step=K`, then `batch step=S index=i,j,...` for every step it trains (this process's
rows), then writes the final params to D/final_params.npz (keys: parameter paths) and, with
--texts, the greedy texts of generate.generate_texts on 6 records to D/texts.json (process 0).
The mesh spans the first --devices devices (all processes' devices with --num_processes > 1);
XLA_FLAGS from the parent says how many each process has.
"""
import argparse
import json
import os
import signal
import sys

import numpy as np

_WORDS = ("red", "blue", "green", "circle", "square", "left", "right", "two", "three", "ball")


def make_records(n: int = 12, seed: int = 0) -> list[dict]:
  """Tiny synthetic VQA records: random 32x32 uint8 images, short prompt/target strings."""
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    a, b = rng.choice(_WORDS, size=2, replace=False)
    out.append({"image": rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8),
                "prompt": f"answer en what is {a} near the {b}?", "target": f"{b} {a} {i % 3}",
                "id": f"rec{i}"})
  return out


def corpus(records) -> list[str]:
  return [r["prompt"] for r in records] + [r["target"] for r in records]


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--workdir", required=True)
  p.add_argument("--tokenizer", required=True)
  p.add_argument("--steps", type=int, default=6)
  p.add_argument("--kill_after", type=int, default=0)
  p.add_argument("--sigterm_at", type=int, default=0)
  p.add_argument("--devices", type=int, default=1)
  p.add_argument("--batch_size", type=int, default=4)
  p.add_argument("--texts", action="store_true")
  p.add_argument("--coordinator", default="")
  p.add_argument("--num_processes", type=int, default=1)
  p.add_argument("--process_id", type=int, default=0)
  args = p.parse_args()

  import jax  # after argument parsing: the parent set XLA_FLAGS
  from ml_collections import ConfigDict
  from leaml_jax import checkpoint, defaults, generate, losses, optim, processes, sharding as shd, train
  from leaml_jax.data import encoders, pipeline, tokenizer as tok_lib
  from leaml_jax.errors import PREEMPTED_EXIT_CODE, Preempted
  from tests import helpers

  processes.initialize(ConfigDict(dict(coordinator=args.coordinator,
                                       num_processes=args.num_processes, process_id=args.process_id)))

  class KillingCheckpointer(checkpoint.Checkpointer):
    def save(self, step, state, data_state=None, **kw):
      super().save(step, state, data_state, **kw)
      if step == args.kill_after:
        print(f"killing myself after checkpoint {step}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

  mesh = shd.make_mesh({"data": 1, "fsdp": -1, "tensor": 1}, jax.devices()[:args.devices])
  tok = tok_lib.load_tokenizer(args.tokenizer)
  model, cfg = helpers.tiny_model(vocab=tok.vocab_size)
  params = helpers.init_params(model, cfg, mesh, seed=0)
  ocfg = defaults.train_section(steps=args.steps, batch_size=args.batch_size, lr=1e-2,
                                warmup_steps=1, weight_decay=0.1)
  tx = optim.make_optimizer(ocfg, params)
  state, shardings = train.create_state(params, tx, mesh)
  encoder = encoders.encoder_for(tok, 24)
  data_iter = iter(pipeline.make_dataset(make_records(), encoder, batch_size=args.batch_size,
                                         seed=0))  # this process's rows of each global batch

  ckpt = KillingCheckpointer(os.path.join(args.workdir, "ckpt"), save_every=2)
  if ckpt.latest_step() is not None:
    state, data_state = ckpt.restore(checkpoint.abstract_like(state))
    data_iter.set_state(data_state)
  start = int(jax.device_get(state.step))
  print(f"start_step={start}", flush=True)

  counter = [start]

  def log_batch(batch):
    counter[0] += 1
    if counter[0] == args.sigterm_at:
      os.kill(os.getpid(), signal.SIGTERM)
    print(f"batch step={counter[0]} index={','.join(map(str, batch['index']))}", flush=True)
    return batch

  step_fn = train.jit_train_step(train.make_train_step(losses.lm_loss(model), tx), shardings, mesh)
  try:
    state, _ = train.fit(state=state, step_fn=step_fn, data_iter=data_iter, num_steps=args.steps,
                         rng=jax.random.key(0), mesh=mesh, checkpointer=ckpt, log_every=100,
                         host_batch_fn=log_batch)
  except Preempted as e:
    print(f"pre-empted: {e}", flush=True)
    sys.exit(PREEMPTED_EXIT_CODE)
  finally:
    ckpt.close()
  params = jax.jit(lambda x: x, out_shardings=shd.replicated(mesh))(state.params)  # every process
  if args.texts:
    records = make_records()[:6]
    texts, _ = generate.generate_texts(model, params, records, encoder=encoder, batch_size=4,
                                       max_new_tokens=5)
  if jax.process_index() == 0:
    flat = {optim.path_str(k): np.asarray(v)
            for k, v in jax.tree_util.tree_leaves_with_path(jax.device_get(params))}
    np.savez(os.path.join(args.workdir, "final_params.npz"), **flat)
    if args.texts:
      with open(os.path.join(args.workdir, "texts.json"), "w") as f:
        json.dump(texts, f)
  print(f"final_step={int(jax.device_get(state.step))}", flush=True)


if __name__ == "__main__":
  main()
