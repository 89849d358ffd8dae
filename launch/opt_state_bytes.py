r"""Optimizer-state bytes of `optim.make_optimizer` at full size, from shapes alone.

    python launch/opt_state_bytes.py --preset paligemma2_3b --method lora --lora_rank 8
    python launch/opt_state_bytes.py --preset paligemma2_3b --method full

Everything goes through `jax.eval_shape` (model init, LoRA init, optimizer init): no array is
allocated, so a 3B model is measured on a laptop in seconds. `--method lora` builds the params
the LoRA baseline trains, {"base": model params, "lora": lora.init(...)}, with the trainability
rules `lora.TRAINABLE` (base frozen); `--method full` trains everything (`defaults.TRAIN_ALL`).

Prints one JSON line:
  params_bytes           all parameters (float32 master weights unless --param_dtype)
  trainable_bytes        the parameters the rules leave trainable
  opt_state_bytes        every array of the optimizer state
  frozen_state_bytes     the part of it that belongs to frozen parameters (paths under "base"
                         for LoRA; 0 when frozen parameters carry no state)
  opt_state_arrays       number of arrays in the optimizer state

To compare with an older commit, run this same file against that commit's code, e.g.
    git worktree add /tmp/leaml_old <commit> && cp launch/opt_state_bytes.py /tmp/leaml_old/launch/
    python /tmp/leaml_old/launch/opt_state_bytes.py --preset paligemma2_3b --method lora
(the script imports the `leaml_jax` next to it).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402

from leaml_jax import defaults, lora, optim  # noqa: E402
from leaml_jax.models import presets  # noqa: E402
from leaml_jax.models.vlm import VLM, dummy_inputs  # noqa: E402


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--preset", default="paligemma2_3b", choices=sorted(presets.PRESETS))
  p.add_argument("--method", default="lora", choices=("lora", "full"))
  p.add_argument("--lora_rank", type=int, default=8, help="the baselines' default rank")
  p.add_argument("--param_dtype", default="float32")
  return p.parse_args(argv)


def nbytes(tree) -> int:
  return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def abstract_params(args):
  cfg = presets.get(args.preset, param_dtype=args.param_dtype)
  model = VLM(cfg)
  params = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), *dummy_inputs(cfg)))["params"]
  if args.method == "full":
    return params, defaults.TRAIN_ALL
  factors = jax.eval_shape(lambda p: lora.init(p, jax.random.key(1), rank=args.lora_rank), params)
  return {"base": params, "lora": factors}, lora.TRAINABLE


def measure(args) -> dict:
  params, rules = abstract_params(args)
  ocfg = defaults.train_section(steps=1000, batch_size=16, lr=1e-4)
  ocfg.trainable = rules
  tx = optim.make_optimizer(ocfg, params)
  state = jax.eval_shape(tx.init, params)
  trainable = optim.trainable_mask(params, rules)
  leaves = jax.tree_util.tree_leaves_with_path(state)
  frozen = [x for k, x in leaves if args.method == "lora" and "['base']" in jax.tree_util.keystr(k)]
  return {"preset": args.preset, "method": args.method,
          "lora_rank": args.lora_rank if args.method == "lora" else None,
          "params_bytes": nbytes(params),
          "trainable_bytes": nbytes([x for x, t in zip(jax.tree.leaves(params),
                                                       jax.tree.leaves(trainable)) if t]),
          "opt_state_bytes": nbytes(state), "frozen_state_bytes": nbytes(frozen),
          "opt_state_arrays": len(leaves)}


if __name__ == "__main__":
  print(json.dumps(measure(parse_args())))
