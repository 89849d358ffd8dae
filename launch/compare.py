r"""Side by side with transformers: the train step and greedy generation, same model, same tokens.

    python launch/compare.py --work train --batch 8                      # fwd + bwd + clip + AdamW
    python launch/compare.py --work generate --batch 1,4,16,64           # greedy, 32 new tokens
    python launch/compare.py --work generate --model_path DIR --batch 8  # any PaliGemma (2) checkpoint

Both sides load one checkpoint directory: `--model_path`, or by default a random PaliGemma 2-shaped
model written once with transformers' `save_pretrained` (SigLIP 384 wide x 6 layers at 112 px = 64
image tokens; Gemma 2 LM 640 wide x 8 layers, 8 heads / 4 KV heads of 80, MLP 2560, vocab 16,384,
soft-capping and sliding window as Gemma 2). Each side runs in its own process (no shared thread
pools, a clean peak-memory figure) on every core of the machine, float32, after warm-up:
  train     batch x (image tokens + --text_len) tokens, prefix of --prompt_len text tokens, loss on
            the rest; transformers: `model(**inputs, labels=...)`, `backward`, `clip_grad_norm_(1.0)`,
            `torch.optim.AdamW`; ours: `train.make_train_step` + `train.jit_train_step` with
            `optim.make_optimizer` (clip + AdamW), state donated.
  generate  batch x (image tokens + --prompt_len) prompt tokens, --new_tokens greedy tokens, no EOS
            (every row generates all of them); transformers: `model.generate(do_sample=False)`;
            ours: `generate.generate`. The tokens must be identical (`tokens_identical`).
One JSON line per (work, batch) with both timings (median over --repeats), ratio = transformers
time / ours (> 1: ours is faster), tokens/s, model FLOP/s, each side's peak RSS and the first loss
of each (train; equal up to float32 rounding, the same computation). --out appends the lines.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPES = {
    "small": dict(  # the CPU comparison
        vision=dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6,
                    image_size=112, patch_size=14, vision_use_head=False),
        text=dict(model_type="gemma2", hidden_size=640, intermediate_size=2560, num_hidden_layers=8,
                  num_attention_heads=8, num_key_value_heads=4, head_dim=80, vocab_size=16384,
                  query_pre_attn_scalar=80, sliding_window=4096, attn_logit_softcapping=50.0,
                  final_logit_softcapping=30.0)),
    "paligemma2_3b": dict(  # google/paligemma2-3b-pt-224's shapes (SigLIP So400m/14 at 224 px, Gemma 2 2B)
        vision=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                    image_size=224, patch_size=14, vision_use_head=False),
        text=dict(model_type="gemma2", hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                  num_attention_heads=8, num_key_value_heads=4, head_dim=256, vocab_size=257216,
                  query_pre_attn_scalar=256, sliding_window=4096, attn_logit_softcapping=50.0,
                  final_logit_softcapping=30.0)),
}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--work", choices=("train", "generate"), required=True)
  p.add_argument("--batch", default="8", help="comma-separated batch sizes")
  p.add_argument("--model_path", default="", help="a PaliGemma / PaliGemma 2 checkpoint directory "
                 "(default: the random PaliGemma 2-shaped model, written once under --cache)")
  p.add_argument("--shape", default="small", choices=sorted(SHAPES), help="the random model's shape")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                 help="compute dtype; train keeps float32 master weights on both sides (torch: autocast)")
  p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "leaml_compare"))
  p.add_argument("--text_len", type=int, default=64, help="train: text tokens after the image")
  p.add_argument("--prompt_len", type=int, default=16, help="text prompt tokens (prefix)")
  p.add_argument("--new_tokens", type=int, default=32)
  p.add_argument("--repeats", type=int, default=5, help="timed calls per side")
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--rounds", type=int, default=2, help="alternate the two sides this many times; the "
                 "figures are medians over rounds, the ratio the median of the per-round ratios "
                 "(a shared machine's speed drifts: each ratio compares neighbours in time)")
  p.add_argument("--scan", default="auto", choices=("auto", "0", "1"),
                 help="ours: scanned (1) or unrolled (0) layers; auto = unrolled on CPU, scanned elsewhere")
  p.add_argument("--out", default="")
  p.add_argument("--side", choices=("ours", "transformers"), help=argparse.SUPPRESS)
  p.add_argument("--result", help=argparse.SUPPRESS)
  return p.parse_args(argv)


# ----------------------------------------------------------------------------- the checkpoint

def random_checkpoint(cache: str, shape: str = "small") -> Path:
  """The default model: transformers' PaliGemma 2 class at SHAPES[shape], weights ~ N(0, 1/fan_in)."""
  SHAPE = SHAPES[shape]
  key = hashlib.sha1(json.dumps(SHAPE, sort_keys=True).encode()).hexdigest()[:10]
  out = Path(cache) / f"paligemma2_{key}"
  if (out / "config.json").exists():
    return out
  import numpy as np
  import torch
  from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration
  width = SHAPE["text"]["hidden_size"]
  cfg = PaliGemmaConfig(vision_config=SHAPE["vision"], text_config=SHAPE["text"],
                        image_token_index=SHAPE["text"]["vocab_size"] - 1, vocab_size=SHAPE["text"]["vocab_size"],
                        projection_dim=width, hidden_size=width)
  torch.manual_seed(0)
  model = PaliGemmaForConditionalGeneration(cfg)
  g = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for w in model.parameters():
      if w.ndim == 1:
        w.add_(0.1 * torch.randn(w.shape, generator=g))
      else:
        w.copy_(torch.randn(w.shape, generator=g) / np.sqrt(np.prod(w.shape[1:])))
    model.get_input_embeddings().weight.mul_(0.3)  # varied greedy continuations (tests/hf_families.py)
  tmp = out.with_name(out.name + ".tmp")
  model.save_pretrained(tmp)
  tmp.rename(out)
  return out


def inputs(directory: Path, work: str, batch: int, args, seed: int = 0):
  """The same tokens for both sides: numpy arrays in transformers' layout (image tokens first)."""
  import numpy as np
  cfg = json.loads((directory / "config.json").read_text())
  vision, text = cfg["vision_config"], cfg["text_config"]
  n_img = (vision["image_size"] // vision["patch_size"]) ** 2
  rng = np.random.default_rng(seed)
  length = args.text_len if work == "train" else args.prompt_len
  ids = rng.integers(3, min(text.get("vocab_size", cfg.get("vocab_size")), 16000), (batch, length))
  ids[ids == cfg["image_token_index"]] = 3  # image tokens only where the image goes
  prefix = np.zeros((batch, length), np.int64)
  prefix[:, args.prompt_len:] = 1  # 1 = suffix (loss), as PaliGemma's token_type_ids
  side = vision["image_size"]
  pixels = rng.uniform(-1, 1, (batch, 3, side, side)).astype(np.float32)
  return dict(n_img=n_img, image_token=cfg["image_token_index"], text=ids.astype(np.int32),
              suffix=prefix.astype(np.int32), pixels=pixels)


# ----------------------------------------------------------------------------- the two sides

def _timed(fn, args):
  for _ in range(args.warmup):
    fn()
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times), out


def run_transformers(directory: Path, work: str, batch: int, args) -> dict:
  import numpy as np
  import torch
  from transformers import PaliGemmaForConditionalGeneration
  torch.set_num_threads(os.cpu_count())
  dev = "cuda" if torch.cuda.is_available() else "cpu"
  bf16 = args.dtype == "bfloat16"
  x = inputs(directory, work, batch, args)
  # train: float32 master weights (+ bf16 autocast); generate: the weights in the compute dtype
  load_dtype = torch.bfloat16 if bf16 and work == "generate" else torch.float32
  model = PaliGemmaForConditionalGeneration.from_pretrained(directory, dtype=load_dtype).to(dev)
  ids = torch.from_numpy(np.concatenate([np.full((batch, x["n_img"]), x["image_token"]), x["text"]], 1)).long()
  token_type = torch.from_numpy(np.concatenate([np.zeros((batch, x["n_img"])), x["suffix"]], 1)).long()
  feed = {k: v.to(dev) for k, v in dict(input_ids=ids, pixel_values=torch.from_numpy(x["pixels"]).to(load_dtype),
                                         token_type_ids=token_type, attention_mask=torch.ones_like(ids)).items()}
  sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
  if work == "train":
    model.train()
    labels = torch.where(feed["token_type_ids"] == 1, feed["input_ids"], -100)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0, fused=dev == "cuda")

    def step():
      with torch.autocast(dev, dtype=torch.bfloat16, enabled=bf16):
        loss = model(**feed, labels=labels).loss
      loss.backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
      opt.step()
      opt.zero_grad(set_to_none=True)
      return float(loss.detach())  # waits for the step
    first = step()
    seconds, _ = _timed(step, args)
    return dict(seconds=seconds, loss_first=first)
  model.eval()
  model.generation_config.eos_token_id = None
  with torch.no_grad():
    gen = lambda: model.generate(**feed, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,  # noqa: E731
                                 do_sample=False, eos_token_id=None, pad_token_id=0)
    seconds, out = _timed(lambda: (gen(), sync())[0], args)
  return dict(seconds=seconds, tokens=out[:, ids.shape[1]:].cpu().numpy().tolist())


def run_ours(directory: Path, work: str, batch: int, args) -> dict:
  import jax
  import numpy as np
  from leaml_jax import defaults, generate, losses, optim, sharding as shd, train
  from leaml_jax.models import hf
  x = inputs(directory, work, batch, args)
  device = f"{jax.default_backend()}: {jax.devices()[0].device_kind}"
  scan = jax.default_backend() != "cpu" if args.scan == "auto" else args.scan == "1"
  model, params, _ = hf.load(directory, dtype=args.dtype, scan=scan,
                            param_dtype="float32" if work == "train" else args.dtype)
  image = x["pixels"].transpose(0, 2, 3, 1)
  if work == "train":
    mesh = shd.make_mesh({"data": 1, "fsdp": -1, "tensor": 1}, jax.local_devices())
    ocfg = defaults.train_section(steps=1000, batch_size=batch, lr=1e-5, warmup_steps=0, weight_decay=0.0)
    tx = optim.make_optimizer(ocfg, params)
    state, shardings = train.create_state(params, tx, mesh)
    del params
    step_fn = train.jit_train_step(train.make_train_step(losses.lm_loss(model), tx), shardings, mesh)
    host = dict(image=image, text=x["text"], mask_ar=x["suffix"], mask_loss=x["suffix"],
                mask_input=np.ones_like(x["text"]))
    dev = shd.shard_batch(host, mesh)
    rng = jax.random.key(0)
    holder = {"state": state}

    def step():
      holder["state"], m = step_fn(holder["state"], dev, rng)
      return float(m["loss"])  # waits for the step
    first = step()
    seconds, _ = _timed(step, args)
    return dict(seconds=seconds, loss_first=first, device=device,
                flops=train.model_flops_per_example(model.cfg, args.text_len) * batch)
  host = dict(image=image, text=x["text"], mask_ar=np.zeros_like(x["text"]), mask_input=np.ones_like(x["text"]))
  gen = lambda: generate.generate(model, params, host, max_new_tokens=args.new_tokens, eos_id=-1, pad_id=0)  # noqa: E731
  seconds, out = _timed(gen, args)
  return dict(seconds=seconds, tokens=np.asarray(out).tolist(), device=device)


def side_main(args):
  directory = Path(args.model_path)
  batch = int(args.batch)
  fn = run_ours if args.side == "ours" else run_transformers
  result = fn(directory, args.work, batch, args)
  result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  Path(args.result).write_text(json.dumps(result))


# ----------------------------------------------------------------------------- driver

def _sig(x: float, digits: int = 4) -> float:
  """x to `digits` significant digits (a ratio of 0.006374 stays 0.006374, not 0.006)."""
  return float(f"{x:.{digits}g}")


def _side(args, directory: Path, batch: int, side: str) -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / f"{side}.json"
    cmd = [sys.executable, __file__, "--side", side, "--result", str(path), "--work", args.work,
           "--batch", str(batch), "--model_path", str(directory), "--text_len", str(args.text_len),
           "--prompt_len", str(args.prompt_len), "--new_tokens", str(args.new_tokens),
           "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--scan", args.scan,
           "--dtype", args.dtype]
    subprocess.run(cmd, check=True, cwd=ROOT)
    return json.loads(path.read_text())


def compare(args, directory: Path, batch: int) -> dict:
  rounds = [{side: _side(args, directory, batch, side) for side in ("transformers", "ours")}
            for _ in range(args.rounds)]
  med = lambda side, key: statistics.median(r[side][key] for r in rounds)  # noqa: E731
  results = {side: {**rounds[0][side], "seconds": med(side, "seconds"), "peak_rss_bytes": med(side, "peak_rss_bytes")}
             for side in ("transformers", "ours")}
  ratio = statistics.median(r["transformers"]["seconds"] / r["ours"]["seconds"] for r in rounds)
  theirs, ours = results["transformers"], results["ours"]
  cfg = json.loads((directory / "config.json").read_text())
  n_img = (cfg["vision_config"]["image_size"] // cfg["vision_config"]["patch_size"]) ** 2
  line = dict(work=args.work, batch=batch, model=str(directory.name), image_tokens=n_img, scan=args.scan,
              dtype=args.dtype,
              transformers_s=_sig(theirs["seconds"]), ours_s=_sig(ours["seconds"]),
              ratio=_sig(ratio), ratio_per_round=[_sig(r["transformers"]["seconds"] / r["ours"]["seconds"])
                                                  for r in rounds],
              transformers_peak_rss_gib=round(theirs["peak_rss_bytes"] / 2 ** 30, 2),
              ours_peak_rss_gib=round(ours["peak_rss_bytes"] / 2 ** 30, 2))
  if args.work == "train":
    tokens = batch * (n_img + args.text_len)
    line.update(text_len=args.text_len, prompt_len=args.prompt_len,
                transformers_tokens_per_s=round(tokens / theirs["seconds"], 1),
                ours_tokens_per_s=round(tokens / ours["seconds"], 1),
                ours_model_gflops_per_s=round(ours["flops"] / ours["seconds"] / 1e9, 1),
                loss_first=dict(transformers=round(theirs["loss_first"], 5), ours=round(ours["loss_first"], 5)))
  else:
    new = batch * args.new_tokens
    line.update(prompt_tokens=n_img + args.prompt_len, new_tokens=args.new_tokens,
                transformers_new_tokens_per_s=round(new / theirs["seconds"], 1),
                ours_new_tokens_per_s=round(new / ours["seconds"], 1),
                tokens_identical=all(r["transformers"]["tokens"] == r["ours"]["tokens"] for r in rounds))
  line.update(cpu_count=os.cpu_count(), device=ours["device"], host=platform.node(),
              time=time.strftime("%Y-%m-%dT%H:%M:%S"), load_avg_1m=round(os.getloadavg()[0], 2))
  return line


def main(argv=None):
  args = parse_args(argv)
  if args.side:
    return side_main(args)
  directory = Path(args.model_path) if args.model_path else random_checkpoint(args.cache, args.shape)
  for batch in [int(b) for b in args.batch.split(",")]:
    line = compare(args, directory, batch)
    print(json.dumps(line), flush=True)
    if args.out:
      with open(args.out, "a") as f:
        f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
  main()
