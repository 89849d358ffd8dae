"""Config errors at the user boundary: `python -m leaml_jax.main` refuses bad input with exit code 2
and a message to act on, before any stage runs (no workdir is created, no stage is imported).
Also the override parser's typing rules, tested directly."""
import os
import subprocess
import sys

import pytest

from leaml_jax import config_lib, defaults, main as main_lib
from leaml_jax.config_lib import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "configs", "demo.py")


def _cli(tmp_path, *args):
  workdir = tmp_path / "run"
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "leaml_jax.main", *args, f"--workdir={workdir}"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  # Refused before any stage: nothing written, no stage started, no traceback.
  assert not workdir.exists()
  assert "[leaml]" not in proc.stdout
  assert "Traceback" not in proc.stderr, proc.stderr
  return proc


@pytest.mark.parametrize("args, expected", [
    (["--config.train.lr=1"], ["unknown config key 'config.train.lr'", "'vqa'", "'qa_generator'"]),
    (["--config.vqa.lrr=1"], ["unknown config key 'config.vqa.lrr'",
                              "did you mean 'config.vqa.lr'?"]),
    (["--config.date.label_fraction=0.1"], ["unknown config key 'config.date.label_fraction'",
                                          "did you mean 'config.data.label_fraction'?"]),
    (["--config.data.label_fraction=0"], ["config.data.label_fraction=0.0 must be in (0, 1]"]),
    (["--config.data.label_fraction=1.5"], ["config.data.label_fraction=1.5 must be in (0, 1]"]),
    (["--config.vqa.lr=-0.001"], ["config.vqa.lr=-0.001 must be > 0"]),
    (["--config.force=vqa,bogus"], ["config.force names unknown stage(s) ['bogus']", "'pseudo_qa'"]),
    (["--config.seed=abc"], ["config.seed: expected int, got 'abc'"]),
])
def test_cli_rejects_bad_override(tmp_path, args, expected):
  proc = _cli(tmp_path, f"--config={DEMO}:quick", *args)
  assert proc.returncode == 2, (proc.returncode, proc.stderr)
  assert proc.stderr.startswith("error: ")
  for text in expected:
    assert text in proc.stderr, proc.stderr


def test_cli_reports_every_invalid_value_at_once(tmp_path):
  proc = _cli(tmp_path, f"--config={DEMO}", "--config.data.label_fraction=2",
              "--config.qa_generator.lr=0", "--config.neurons.fraction=0")
  assert proc.returncode == 2
  for key in ("config.data.label_fraction=2.0", "config.qa_generator.lr=0.0",
              "config.neurons.fraction=0.0"):
    assert key in proc.stderr, proc.stderr


@pytest.mark.parametrize("args, expected", [
    (["--config=configs/missing.py"], "config file 'configs/missing.py' not found"),
    ([], "--config=FILE is required"),
    ([f"--config={DEMO}", "--lr=3"], "unrecognised argument '--lr=3'"),
])
def test_cli_rejects_bad_command_line(tmp_path, args, expected):
  proc = _cli(tmp_path, *args)
  assert proc.returncode == 2 and expected in proc.stderr, (proc.returncode, proc.stderr)


# ----------------------------------------------------------------------------- in-process
def _demo(arg=""):
  return config_lib.load_config_file(f"{DEMO}:{arg}" if arg else DEMO)


@pytest.mark.parametrize("arg", ["", "quick", "endoscopy", "endoscopy,quick"])
def test_demo_configs_are_valid(arg):
  config_lib.validate(_demo(arg))


def test_parse_argv_applies_overrides_without_running_stages():
  config, workdir = main_lib.parse_argv(
      [f"--config={DEMO}:quick", "--config.vqa.lr=2", "--config.stages=prepare,base",
       "--config.progress=false", "--config.data.domain=synthetic_endoscopy"])
  assert workdir == os.path.join("runs", "demo_quick")
  assert config.vqa.lr == 2.0 and config.stages == ("prepare", "base")
  assert config.progress is False and config.data.domain == "synthetic_endoscopy"


def test_int_into_float_field_becomes_float():
  c = defaults.base_config()
  config_lib.apply_override(c, "vqa.lr", "1")
  assert type(c.vqa.lr) is float and c.vqa.lr == 1.0
  config_lib.apply_override(c, "data.label_fraction", "5e-2")
  assert c.data.label_fraction == 0.05


@pytest.mark.parametrize("key, text, message", [
    ("seed", "abc", "config.seed: expected int, got 'abc'"),
    ("seed", "1.5", "config.seed: expected int, got '1.5'"),
    ("vqa.steps", "many", "config.vqa.steps: expected int"),
    ("vqa.lr", "fast", "config.vqa.lr: expected float, got 'fast'"),
    ("progress", "3", "config.progress: expected true/false, got '3'"),
    ("data", "1", "config.data: expected ConfigDict"),
])
def test_wrong_type_fails_naming_key(key, text, message):
  c = defaults.base_config()
  with pytest.raises(ConfigError) as err:
    config_lib.apply_override(c, key, text)
  assert message in str(err.value)


def test_tuple_and_string_overrides():
  c = defaults.base_config()
  config_lib.apply_override(c, "stages", "prepare,base")
  assert c.stages == ("prepare", "base")
  config_lib.apply_override(c, "baselines.methods", "('lora',)")
  assert c.baselines.methods == ("lora",)
  config_lib.apply_override(c, "ablations", "")  # empty list
  assert c.ablations == ()
  config_lib.apply_override(c, "name", "123")  # digits stay text in a str field
  assert c.name == "123"
  config_lib.apply_override(c, "progress", "False")
  assert c.progress is False


def test_unknown_nested_key_suggests_close_match():
  c = defaults.base_config()
  with pytest.raises(ConfigError, match=r"did you mean 'config\.neurons\.fraction'\?"):
    config_lib.apply_override(c, "neurons.fractoin", "0.2")
  with pytest.raises(ConfigError, match=r"unknown config key 'config\.nope\.x'"):
    config_lib.apply_override(c, "nope.x", "1")


@pytest.mark.parametrize("key, value, message", [
    ("neurons.fraction", 1.5, "config.neurons.fraction=1.5 must be in (0, 1]"),
    ("neurons.score", "random", "config.neurons.score='random' must be one of"),
    ("vqa.batch_size", 10, "config.vqa.batch_size=10 must be > 0 and divisible by grad_accum=3"),
    ("vqa.pseudo_weight", 1.0, "config.vqa.pseudo_weight=1.0 must be in [0, 1)"),
    ("stages", ("prepare", "train"), "config.stages has unknown stage(s) ['train']"),
])
def test_validate_messages(key, value, message):
  c = defaults.base_config()
  c.vqa.grad_accum = 3
  c.vqa.batch_size = 12
  section, _, leaf = key.rpartition(".")
  (c[section] if section else c)[leaf] = value
  with pytest.raises(ConfigError) as err:
    config_lib.validate(c)
  assert message in str(err.value)
