"""Entry point: run `config.stages` in order; each stage reads/writes artifacts under workdir.

    python -m leaml_jax.main --config=configs/demo.py --workdir=runs/demo
    python -m leaml_jax.main --config=configs/demo.py:quick --config.data.label_fraction=0.02

A stage whose outputs are complete is skipped (rerun = resume); `--config.force=vqa` redoes one.
"""
from __future__ import annotations

import os
import sys
import time

from leaml_jax import config_lib
from leaml_jax.config_lib import ConfigError


def stage_registry():
  from leaml_jax import stages  # imported lazily: argument errors come back fast
  return stages.REGISTRY


def enable_compilation_cache() -> None:
  """Reuse XLA compilations across runs (a rerun/resume skips most compile time)."""
  import jax
  path = os.environ.get("LEAML_COMPILATION_CACHE", os.path.expanduser("~/.cache/leaml_jax/xla"))
  if path and path != "0":
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def main(config, workdir: str) -> dict:
  """Run the configured stages; returns {stage: seconds} of the stages run now (a sweep:
  {"shared": ..., "seed_<k>": ..., "report": ...})."""
  config_lib.validate(config)
  from leaml_jax import processes
  processes.initialize(config.mesh)  # before any other jax call; once; no-op on one machine
  from leaml_jax.data import datasets
  datasets.check_config(config, workdir)  # the dataset's files must be there before any work
  from leaml_jax.stages import export
  export.check_config(config)  # an export the base cannot make is refused before any training
  enable_compilation_cache()
  from leaml_jax import metrics
  metrics.SHOW_PROGRESS = bool(config.progress)
  registry = stage_registry()
  missing = [s for s in config.stages if s not in registry]
  if missing:
    raise ConfigError(f"stage(s) {missing} are not implemented in this version; "
                      f"available: {list(registry)}")
  if config.seeds:
    return run_sweep(config, workdir, registry)
  return run_stages(config, workdir, registry)


def run_sweep(config, workdir: str, registry) -> dict:
  """--config.seeds=0,1,2: the base (pre-trained or imported) once under shared/, one run per seed
  under seed_<k>/ starting from it (each seed redraws the labelled subset and all training
  randomness), then one combined report; the 100%-label ceiling is measured once (first seed)."""
  from leaml_jax.stages import context
  shared = os.path.join(workdir, "shared")
  timings = {"shared": run_stages(_only_stages(config, ("prepare", "base")), shared, registry)}
  for k, seed in enumerate(config.seeds):
    base = shared if "://" in shared else os.path.abspath(shared)
    c = context.seed_config(config, seed, shared_base=base)
    with c.unlocked():
      c.stages = tuple(s for s in c.stages if s != "base")  # the shared one
      if k:
        c.baselines.methods = tuple(m for m in c.baselines.methods if m != "oracle_100")
    timings[f"seed_{seed}"] = run_stages(c, os.path.join(workdir, f"seed_{seed}"), registry)
  if "report" in config.stages:  # combined over the seeds: recomputed every time (cheap)
    t0 = time.perf_counter()
    registry["report"].run(context.Context(config, workdir))
    timings["report"] = time.perf_counter() - t0
  return timings


def _only_stages(config, names):
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.stages, c.seeds = tuple(s for s in config.stages if s in names), ()
  c.lock()
  return c


def run_stages(config, workdir: str, registry) -> dict:
  force = set(str(config.force).split(",")) - {""}
  from leaml_jax import processes
  from leaml_jax.stages import artifacts, context
  ctx = context.Context(config, workdir)
  timings = {}
  for name in config.stages:
    processes.sync(f"stage {name}")  # each decides on the same markers
    marker = os.path.join(workdir, "status", f"{name}.json")
    if {name, "all"} & force:
      clear_outputs(workdir, [marker] + registry[name].outputs(ctx))
    elif artifacts.exists(marker):
      print(f"[leaml] {name}: outputs complete, skipped (--config.force={name} redoes it)")
      continue
    print(f"[leaml] {name}: running", flush=True)
    t0 = time.perf_counter()
    from leaml_jax import profiler
    with profiler.stage(name, config.profile, workdir):
      registry[name].run(ctx)
    timings[name] = time.perf_counter() - t0
    artifacts.write_json(marker, {"stage": name, "seconds": timings[name], "finished": time.time()})
    print(f"[leaml] {name}: done in {timings[name]:.1f}s", flush=True)
  return timings


def clear_outputs(workdir: str, paths) -> None:
  """A forced stage starts from scratch: its finished outputs and checkpoints go first."""
  import jax
  from etils import epath
  from leaml_jax import processes
  if jax.process_index() == 0:
    for p in paths:
      p = epath.Path(os.path.join(workdir, p))
      if p.is_dir():
        p.rmtree()
      elif p.exists():
        p.unlink()
  processes.sync("outputs cleared")  # no process reads an output before it is gone


def parse_argv(argv):
  config_spec, workdir, overrides = None, None, []
  for arg in argv:
    if arg.startswith("--config="):
      config_spec = arg.split("=", 1)[1]
    elif arg.startswith("--workdir="):
      workdir = arg.split("=", 1)[1]
    elif arg.startswith("--config.") and "=" in arg:
      key, value = arg[len("--config."):].split("=", 1)
      overrides.append((key, value))
    elif arg in ("-h", "--help"):
      print(__doc__)
      sys.exit(0)
    else:
      raise ConfigError(f"unrecognised argument {arg!r}; use --config=FILE[:ARG], "
                        f"--workdir=DIR and --config.KEY=VALUE")
  if config_spec is None:
    raise ConfigError("--config=FILE is required (e.g. --config=configs/demo.py)")
  config = config_lib.load_config_file(config_spec)
  for key, value in overrides:
    config_lib.apply_override(config, key, value)
  workdir = workdir or os.path.join("runs", config.name)
  return config, workdir


def cli(argv=None) -> int:
  """Exit status: 0 done, 2 a user error (the message says what to change), 75 pre-empted
  (a checkpoint was saved: rerun the same command to resume)."""
  from leaml_jax.errors import PREEMPTED_EXIT_CODE, USER_ERRORS, Preempted
  try:
    config, workdir = parse_argv(sys.argv[1:] if argv is None else argv)
    main(config, workdir)
  except USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except Preempted as e:
    print(f"pre-empted: {e}", file=sys.stderr)
    return PREEMPTED_EXIT_CODE
  return 0


if __name__ == "__main__":
  sys.exit(cli())
