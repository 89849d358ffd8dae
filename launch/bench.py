r"""Benchmark the real train step (train.make_train_step + jit_train_step, AdamW from optim).

    python launch/bench.py --preset tiny --batch 16 --image_tokens 16 --text_len 128 --steps 10 \
        --dtype float32                                             # CPU smoke figure
    XLA_PYTHON_CLIENT_MEM_FRACTION=0.95 python launch/bench.py --preset paligemma2_3b \
        --batch 16 --image_tokens 256 --text_len 128 --steps 10 --dtype bfloat16 --remat none \
        --out bench.jsonl                                           # the H200 comparison

Everything that trains in a stage is what is timed here: params born sharded on a mesh over
all local devices (`fsdp` = device count unless --tensor is given), float32 master weights
(--param_dtype), compute in --dtype, clip + AdamW (warmup/cosine, weight decay) + freeze mask
from `optim.make_optimizer`, the jitted step with donated state. The batch is random but has
the real layout (prefix-LM masks, loss on the suffix) and is put on the devices once, so the
figure is the step alone, not input feeding.

Prints one JSON line per measurement (and appends it to --out):
  compile_s           first call minus a steady step: trace + lower + XLA compile
  step_s_median       median of --steps steps after --warmup steps, each waited for
  tokens_per_s        batch * (image_tokens + text_len) / step_s_median
  model_tflops_per_s  train.model_flops_per_example * batch / step_s_median / 1e12
  peak_mem_bytes      max over devices of memory_stats()["peak_bytes_in_use"] where the
                      backend reports it (GPU/TPU), else the process's peak RSS (CPU)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from leaml_jax import defaults, losses, optim, sharding as shd, train  # noqa: E402
from leaml_jax.models import presets  # noqa: E402
from leaml_jax.models.vlm import VLM, count_params, dummy_inputs  # noqa: E402


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--preset", default="tiny", choices=sorted(presets.PRESETS))
  p.add_argument("--batch", type=int, default=16, help="global batch (all devices)")
  p.add_argument("--image_tokens", type=int, default=0,
                 help="image tokens per example; sets the image size (0 = the preset's)")
  p.add_argument("--text_len", type=int, default=128)
  p.add_argument("--prompt_len", type=int, default=32, help="prefix (full attention) text tokens")
  p.add_argument("--steps", type=int, default=10, help="timed steps")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps after the first call")
  p.add_argument("--dtype", default="bfloat16", help="compute dtype")
  p.add_argument("--param_dtype", default="float32", help="master weights (and Adam moments)")
  p.add_argument("--remat", default="none", choices=presets.REMAT)
  p.add_argument("--attention", default="auto", choices=presets.ATTENTION)
  p.add_argument("--no_scan", action="store_true", help="unroll the layers instead of lax.scan")
  p.add_argument("--tensor", type=int, default=1, help="tensor-parallel mesh axis size")
  p.add_argument("--grad_accum", type=int, default=1)
  p.add_argument("--out", default="", help="also append the JSON line to this file")
  args = p.parse_args(argv)
  if args.steps < 1 or args.batch < 1 or args.warmup < 0:
    p.error("--steps and --batch must be >= 1, --warmup >= 0")
  if not 0 <= args.prompt_len < args.text_len:
    p.error(f"--prompt_len={args.prompt_len} must be in [0, --text_len={args.text_len})")
  return args


def image_size_for(cfg: presets.VLMConfig, image_tokens: int) -> int:
  """Square image side giving `image_tokens` LM image tokens (after pixel shuffle, if any)."""
  s = cfg.pixel_shuffle_factor if cfg.connector == "pixel_shuffle" else 1
  side = math.isqrt(image_tokens)
  if image_tokens < 1 or side * side != image_tokens:
    raise SystemExit(f"--image_tokens={image_tokens} must be a perfect square (a square patch grid)")
  return side * s * cfg.vit.patch_size


def model_config(args) -> presets.VLMConfig:
  base = presets.get(args.preset)
  tokens = args.image_tokens or base.num_image_tokens
  size = image_size_for(base, tokens)
  cfg = presets.get(args.preset, dtype=args.dtype, param_dtype=args.param_dtype, remat=args.remat,
                    attention=args.attention, scan=not args.no_scan,
                    vit=dict(image_size=(size, size)))
  assert cfg.num_image_tokens == tokens, (cfg.num_image_tokens, tokens)
  return cfg


def random_batch(cfg, batch: int, text_len: int, prompt_len: int, seed: int = 0) -> dict:
  """Host batch in the pipeline's layout: [bos] prompt | answer (loss) ; all tokens real."""
  rng = np.random.default_rng(seed)
  h, w = cfg.vit.image_size
  text = rng.integers(3, cfg.lm.vocab_size, size=(batch, text_len), dtype=np.int32)
  mask_ar = np.zeros((batch, text_len), np.int32)
  mask_ar[:, prompt_len:] = 1
  return {"image": rng.uniform(-1, 1, size=(batch, h, w, 3)).astype(np.float32),
          "text": text, "mask_ar": mask_ar, "mask_loss": mask_ar.copy(),
          "mask_input": np.ones((batch, text_len), np.int32)}


def peak_memory(devices) -> tuple[int, str]:
  peaks = []
  for d in devices:
    try:
      stats = d.memory_stats()
    except Exception:  # some backends raise instead of returning None
      stats = None
    if stats and "peak_bytes_in_use" in stats:
      peaks.append(int(stats["peak_bytes_in_use"]))
  if peaks:
    return max(peaks), "device_peak_bytes_in_use"
  rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
  return int(rss_kib) * 1024, "process_peak_rss"


def run(args) -> dict:
  devices = jax.local_devices()
  if len(devices) % args.tensor:
    raise SystemExit(f"--tensor={args.tensor} does not divide {len(devices)} local devices")
  mesh = shd.make_mesh({"data": 1, "fsdp": -1, "tensor": args.tensor}, devices)
  cfg = model_config(args)
  model = VLM(cfg)

  # Params are born sharded on the devices (jitted init with out_shardings): a 3B model never
  # exists on the host.
  init = lambda rng: model.init(rng, *dummy_inputs(cfg, batch=1, text_len=args.text_len))
  variables, _ = shd.init_sharded(init, mesh, jax.random.key(0))
  params = variables["params"]
  del variables
  ocfg = defaults.train_section(steps=1000, batch_size=args.batch, lr=1e-5, warmup_steps=10)
  ocfg.grad_accum = args.grad_accum
  tx = optim.make_optimizer(ocfg, params)
  state, shardings = train.create_state(params, tx, mesh)
  del params
  step_fn = train.jit_train_step(
      train.make_train_step(losses.lm_loss(model), tx, grad_accum=args.grad_accum), shardings, mesh)
  batch = shd.shard_batch(random_batch(cfg, args.batch, args.text_len, args.prompt_len), mesh)
  rng = jax.random.key(1)

  t0 = time.perf_counter()
  state, m = step_fn(state, batch, rng)
  jax.block_until_ready((state, m))
  first_call = time.perf_counter() - t0
  loss_first = float(m["loss"])
  for _ in range(args.warmup):
    state, m = step_fn(state, batch, rng)
  jax.block_until_ready((state, m))
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    state, m = step_fn(state, batch, rng)
    jax.block_until_ready((state, m))
    times.append(time.perf_counter() - t0)
  metrics = {k: float(v) for k, v in jax.device_get(m).items()}
  if metrics["ok"] < 1.0 or not math.isfinite(metrics["loss"]):
    raise SystemExit(f"the benchmarked step produced a non-finite loss ({metrics['loss']})")

  step_s = statistics.median(times)
  tokens = args.batch * (cfg.num_image_tokens + args.text_len)
  flops = train.model_flops_per_example(cfg, args.text_len) * args.batch
  peak, peak_src = peak_memory(devices)
  return {
      "preset": args.preset, "batch": args.batch, "image_tokens": cfg.num_image_tokens,
      "image_size": cfg.vit.image_size[0], "text_len": args.text_len, "dtype": args.dtype,
      "param_dtype": args.param_dtype, "remat": args.remat, "attention": args.attention,
      "scan": not args.no_scan, "grad_accum": args.grad_accum,
      "params": count_params(state.params),
      "devices": len(devices), "device_kind": devices[0].device_kind,
      "platform": devices[0].platform, "mesh": dict(mesh.shape),
      "compile_s": round(first_call - step_s, 3), "first_call_s": round(first_call, 3),
      "steps": args.steps, "step_s_median": round(step_s, 5), "step_s_min": round(min(times), 5),
      "step_s_max": round(max(times), 5),
      "tokens_per_s": round(tokens / step_s, 1),
      "model_flops_per_step": flops, "model_tflops_per_s": round(flops / step_s / 1e12, 4),
      "peak_mem_bytes": peak, "peak_mem_source": peak_src,
      "loss_first": round(loss_first, 4), "loss_last": round(metrics["loss"], 4),
      "jax": jax.__version__, "host": platform.node(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
  }


def main(argv=None):
  args = parse_args(argv)
  result = run(args)
  line = json.dumps(result)
  print(line, flush=True)
  if args.out:
    with open(args.out, "a") as f:
      f.write(line + "\n")
  gib = result["peak_mem_bytes"] / 2 ** 30
  print(f"[bench] {result['preset']} on {result['devices']}x {result['device_kind']}: "
        f"{result['step_s_median'] * 1e3:.1f} ms/step, {result['tokens_per_s']:.0f} tokens/s, "
        f"{result['model_tflops_per_s']:.3f} model TFLOP/s, compile {result['compile_s']:.1f}s, "
        f"peak {gib:.2f} GiB ({result['peak_mem_source']})", file=sys.stderr)


if __name__ == "__main__":
  main()
