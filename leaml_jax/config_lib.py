"""Config checks at the user boundary: fail before any work starts, with a message to act on."""
from __future__ import annotations

from leaml_jax import profiler
from leaml_jax.defaults import ALL_STAGES
from leaml_jax.errors import ConfigError


def _train_sections(c):
  return [n for n in ("base", "qa_generator", "vqa") if n in c]


def validate(c) -> None:
  errs = []
  lf = c.data.label_fraction
  if not 0.0 < lf <= 1.0:
    errs.append(f"config.data.label_fraction={lf} must be in (0, 1] (e.g. 0.01 for 1% labels)")
  unknown = [s for s in c.stages if s not in ALL_STAGES]
  if unknown:
    errs.append(f"config.stages has unknown stage(s) {unknown}; known: {list(ALL_STAGES)}")
  try:
    profile = profiler.parse(c.profile)
  except ConfigError as e:
    errs.append(str(e))
  else:
    if profile and profile[0] not in c.stages:
      errs.append(f"config.profile={c.profile!r} names stage {profile[0]!r}, which this run does not run; "
                  f"its stages: {list(c.stages)}")
  force = [s for s in str(c.force).split(",") if s and s != "all"]
  bad_force = [s for s in force if s not in ALL_STAGES]
  if bad_force:
    errs.append(f"config.force names unknown stage(s) {bad_force}; known: {list(ALL_STAGES)}")
  for name in _train_sections(c):
    t = c[name]
    if not t.lr > 0:
      errs.append(f"config.{name}.lr={t.lr} must be > 0")
    if t.steps < 0:
      errs.append(f"config.{name}.steps={t.steps} must be >= 0")
    if t.batch_size <= 0 or t.batch_size % t.grad_accum:
      errs.append(f"config.{name}.batch_size={t.batch_size} must be > 0 and divisible by "
                  f"grad_accum={t.grad_accum}")
    if t.warmup_steps < 0 or t.weight_decay < 0:
      errs.append(f"config.{name}: warmup_steps and weight_decay must be >= 0")
  if not 0.0 < c.neurons.fraction <= 1.0:
    errs.append(f"config.neurons.fraction={c.neurons.fraction} must be in (0, 1]")
  checks = [("neurons.score", c.neurons.score, ("taylor", "activation")),
            ("neurons.applies_to", c.neurons.applies_to, ("distill", "all")),
            ("neurons.mask", c.neurons.mask, ("relevance", "random", "none")),
            ("neurons.non_neuron_params", c.neurons.non_neuron_params, ("frozen", "trainable")),
            ("model.remat", c.model.remat, ("none", "full", "dots")),
            ("data.mc_answer", c.data.mc_answer, ("text", "letter")),
            ("pseudo_qa.answer", c.pseudo_qa.answer, ("greedy", "sampled"))]
  for key, val, allowed in checks:
    if val not in allowed:
      errs.append(f"config.{key}={val!r} must be one of {allowed}")
  vf = c.model.vit_frames
  if vf < 1:
    errs.append(f"config.model.vit_frames={vf} must be >= 1")
  elif vf > 1:
    if c.data.frames != "blocks":
      errs.append(f"config.model.vit_frames={vf} needs clips as frames: set config.data.frames=blocks")
  # vit_frames against the dataset's clip length: data.datasets.check_config.
  seeds = tuple(c.seeds)
  if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds) or len(set(seeds)) != len(seeds):
    errs.append(f"config.seeds={seeds} must be distinct integers (e.g. --config.seeds=0,1,2)")
  if not 0.0 <= c.pseudo_qa.min_confidence <= 1.0:
    errs.append(f"config.pseudo_qa.min_confidence={c.pseudo_qa.min_confidence} must be in [0, 1]")
  if not 0.0 <= c.vqa.pseudo_weight < 1.0:
    errs.append(f"config.vqa.pseudo_weight={c.vqa.pseudo_weight} must be in [0, 1)")
  if not 0.0 <= c.data.caption_error_rate <= 1.0:
    errs.append(f"config.data.caption_error_rate={c.data.caption_error_rate} must be in [0, 1]")
  if errs:
    raise ConfigError("invalid config:\n  - " + "\n  - ".join(errs))


# ----------------------------------------------------------------------------- loading
import ast
import difflib
import importlib.util
import os


def load_config_file(spec: str):
  """'configs/demo.py:quick' -> locked ConfigDict from that file's get_config(arg)."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path!r} not found (try --config=configs/demo.py)")
  module_spec = importlib.util.spec_from_file_location(
      "leaml_config_" + os.path.basename(path).removesuffix(".py"), path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {path} has no get_config()")
  cfg = module.get_config(arg) if arg else module.get_config()
  cfg.lock()
  return cfg


def _parse_value(text: str, current):
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text
  if isinstance(current, bool):
    if isinstance(value, str) and value.lower() in ("true", "false"):
      return value.lower() == "true"
    if not isinstance(value, bool):
      raise ConfigError(f"expected true/false, got {text!r}")
  elif isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  elif isinstance(current, (tuple, list)) and isinstance(value, str):
    return tuple(v for v in value.split(",") if v)
  elif isinstance(current, (tuple, list)) and isinstance(value, (tuple, list)):
    return tuple(value)
  elif isinstance(current, (tuple, list)):  # one element: --config.seeds=3
    return (value,)
  elif isinstance(current, str) and not isinstance(value, str):
    return text
  elif current is not None and not isinstance(value, type(current)):
    raise ConfigError(f"expected {type(current).__name__}, got {text!r}")
  return value


def apply_override(cfg, dotted: str, text: str) -> None:
  """Set cfg.<dotted> from command-line text; an unknown key fails naming the closest one."""
  node, parts = cfg, dotted.split(".")
  for i, key in enumerate(parts):
    keys = list(node.keys())
    if key not in keys:
      near = difflib.get_close_matches(key, keys, n=1)
      hint = (f" (did you mean 'config.{'.'.join(parts[:i] + near + parts[i + 1:])}'?)"
              if near else "")
      raise ConfigError(f"unknown config key 'config.{dotted}'{hint}; "
                        f"keys here: {sorted(keys)}")
    if i == len(parts) - 1:
      try:
        value = _parse_value(text, node[key])
      except ConfigError as e:
        raise ConfigError(f"config.{dotted}: {e}") from None
      with node.ignore_type():
        node[key] = value
    else:
      node = node[key]
