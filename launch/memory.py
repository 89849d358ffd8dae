r"""Per-device memory of the QA-generator train step, from XLA's compiled memory analysis.

    XLA_FLAGS=--xla_force_host_platform_device_count=16 python launch/memory.py \
        --preset paligemma2_3b --devices 8 --remat dots --out memory.jsonl

What is compiled is the stage's step (stages/qa_generator.py): `losses.generator_loss` (QA batch
+ caption-distillation batch whose gradient reaches only the relevance-selected neurons, through
`neurons.mask_gradients`) inside `train.make_train_step`, with clip + AdamW from
`optim.make_optimizer`, jitted with the shardings `train.create_state` / `train.jit_train_step`
use (params and moments sharded over `fsdp`, batch over (data, fsdp), state donated), lowered
inside `sharding.with_mesh_rules` as the stage's step is, so activations are split over the
batch. Nothing is allocated: params, optimizer state and batches are abstract
(`jax.eval_shape`), and the step is `jax.jit(...).lower(...).compile()` on fake CPU devices, so
any device count fits one host.

One JSON line per run (appended to --out), per device, in bytes:
  argument_bytes  inputs (params, Adam moments, batch shard)
  output_bytes    outputs (new state, metrics); aliased with the donated inputs
  alias_bytes     bytes of outputs that reuse donated input buffers
  temp_bytes      XLA's temporaries (activations kept for the backward pass, gradients, ...)
  total_bytes     argument + output - alias + temp: what the step needs resident at its peak,
                  as XLA schedules it for the CPU backend (TPU's scheduler and fusions differ)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import traverse_util  # noqa: E402

from leaml_jax import defaults, losses, neurons, optim, sharding as shd, train  # noqa: E402
from leaml_jax.models import presets  # noqa: E402
from leaml_jax.models.vlm import VLM, count_params, dummy_inputs  # noqa: E402

GiB = 1024 ** 3


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--preset", default="paligemma2_3b", choices=sorted(presets.PRESETS))
  p.add_argument("--devices", type=int, default=0, help="mesh size (0 = all); fsdp over all of them")
  p.add_argument("--qa_batch", type=int, default=32, help="global QA batch")
  p.add_argument("--distill_batch", type=int, default=32, help="global caption-distillation batch")
  p.add_argument("--image_size", type=int, default=0, help="square image side (0 = the preset's)")
  p.add_argument("--text_len", type=int, default=128)
  p.add_argument("--prompt_len", type=int, default=32)
  p.add_argument("--dtype", default="bfloat16", help="compute dtype")
  p.add_argument("--param_dtype", default="float32", help="master weights (and Adam moments)")
  p.add_argument("--remat", default="none", choices=presets.REMAT)
  p.add_argument("--neuron_fraction", type=float, default=0.1, help="neurons.fraction (mask size)")
  p.add_argument("--out", default="", help="also append the JSON line to this file")
  return p.parse_args(argv)


def abstract_batch(cfg, batch: int, text_len: int, prompt_len: int, sharding_fn) -> dict:
  h, w = cfg.vit.image_size
  shapes = {"image": ((batch, h, w, 3), jnp.float32), "text": ((batch, text_len), jnp.int32),
            "mask_ar": ((batch, text_len), jnp.int32), "mask_loss": ((batch, text_len), jnp.int32),
            "mask_input": ((batch, text_len), jnp.int32)}
  del prompt_len  # masks' values do not change shapes or memory
  return {k: jax.ShapeDtypeStruct(s, d, sharding=sharding_fn(len(s))) for k, (s, d) in shapes.items()}


def relevance_mask(params, fraction: float, seed: int = 0):
  """A param mask tree of the stage's form (neurons.select on scores shaped like the relevance
  stage's: one per MLP, [(Ly,) F]); random scores, since only the shapes matter here."""
  rng = np.random.default_rng(seed)
  scores = {}
  for path, p in traverse_util.flatten_dict(params, sep="/").items():
    if path.endswith(("gate_proj/kernel", "fc1/kernel")):
      module = path.rsplit("/", 2)[0]
      scores[module] = rng.random(p.shape[:-2] + p.shape[-1:]).astype(np.float32)
  _, mask = neurons.select(scores, fraction, params=params)
  return mask


def analyse(args) -> dict:
  devices = jax.devices()[:args.devices or None]
  if args.devices and len(devices) < args.devices:
    raise SystemExit(f"--devices={args.devices} but jax sees {len(devices)}; set "
                     f"XLA_FLAGS=--xla_force_host_platform_device_count={args.devices}")
  mesh = shd.make_mesh({"data": 1, "fsdp": -1, "tensor": 1}, devices)
  overrides = dict(dtype=args.dtype, param_dtype=args.param_dtype, remat=args.remat)
  if args.image_size:
    overrides["vit"] = dict(image_size=(args.image_size, args.image_size))
  cfg = presets.get(args.preset, **overrides)
  model = VLM(cfg)

  init = lambda rng: model.init(rng, *dummy_inputs(cfg, batch=1, text_len=args.text_len))
  with nn.logical_axis_rules(shd.RULES):
    boxed = jax.eval_shape(init, jax.random.key(0))
    param_sh = shd.param_shardings(boxed, mesh)["params"]
  params = nn.meta.unbox(boxed)["params"]
  params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), params, param_sh)

  mask = relevance_mask(params, args.neuron_fraction)
  tcfg = defaults.train_section(steps=300, batch_size=args.qa_batch, lr=2e-5, warmup_steps=20)
  tx = optim.make_optimizer(tcfg, params)
  loss_fn = losses.generator_loss(model, distill_weight=1.0,
                                  distill_params_fn=lambda p: neurons.mask_gradients(p, mask))
  step = train.make_train_step(loss_fn, tx)

  # The state's shardings exactly as train.create_state builds them (moments like the params).
  import optax  # pylint: disable=import-outside-toplevel
  repl = shd.replicated(mesh)
  abstract_opt = jax.eval_shape(tx.init, params)
  hole = lambda x: isinstance(x, optax.MaskedNode)
  opt_sh = optax.tree_map_params(tx, lambda s, p_sh: s if hole(s) else p_sh, abstract_opt, param_sh,
                                 transform_non_params=lambda _: repl, is_leaf=hole)
  state_sh = train.TrainState(step=repl, params=param_sh, opt_state=opt_sh, nonfinite_step=repl)
  scalar = jax.ShapeDtypeStruct((), jnp.int32, sharding=repl)
  opt_state = jax.tree.map(lambda x, s: x if hole(x) else jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                           abstract_opt, opt_sh, is_leaf=hole)
  state = train.TrainState(step=scalar, params=params, opt_state=opt_state, nonfinite_step=scalar)
  bsh = lambda ndim: shd.batch_sharding(mesh, ndim)
  batch = {"qa": abstract_batch(cfg, args.qa_batch, args.text_len, args.prompt_len, bsh),
           "distill": abstract_batch(cfg, args.distill_batch, args.text_len, args.prompt_len, bsh)}
  rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=repl)
  batch_sh = jax.tree.map(lambda x: x.sharding, batch)

  t0 = time.perf_counter()
  jitted = jax.jit(step, in_shardings=(state_sh, batch_sh, repl), out_shardings=(state_sh, repl),
                   donate_argnums=0)
  with shd.with_mesh_rules(mesh):  # as train.jit_train_step calls it: activations over the batch
    lowered = jitted.lower(state, batch, rng)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  ma = compiled.memory_analysis()
  arg, out = int(ma.argument_size_in_bytes), int(ma.output_size_in_bytes)
  alias, temp = int(ma.alias_size_in_bytes), int(ma.temp_size_in_bytes)
  total = arg + out - alias + temp
  n_params = count_params(params)
  return {"preset": args.preset, "devices": len(devices), "mesh": dict(mesh.shape),
          "platform": devices[0].platform, "remat": args.remat,
          "dtype": args.dtype,
          "param_dtype": args.param_dtype, "qa_batch": args.qa_batch,
          "distill_batch": args.distill_batch, "image_size": cfg.vit.image_size[0],
          "image_tokens": cfg.num_image_tokens, "text_len": args.text_len, "params": n_params,
          "argument_bytes": arg, "output_bytes": out, "alias_bytes": alias, "temp_bytes": temp,
          "total_bytes": total, "total_gib": round(total / GiB, 2),
          "lower_s": round(t1 - t0, 1), "compile_s": round(t2 - t1, 1),
          "jax": jax.__version__}


def main(argv=None):
  args = parse_args(argv)
  result = analyse(args)
  line = json.dumps(result)
  print(line, flush=True)
  if args.out:
    with open(args.out, "a") as f:
      f.write(line + "\n")


if __name__ == "__main__":
  main()
