"""launch/compare.py, the side-by-side benchmark against transformers, on a tiny PaliGemma 2 checkpoint:
both sides run and agree (same first loss, identical greedy tokens), one JSON line per batch."""
import json
import os
import subprocess
import sys

import pytest

from tests.hf_families import family

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.mark.parametrize("work", ["train", "generate"])
def test_compare_runs_both_sides_on_one_checkpoint(work, tmp_path):
  directory = family("paligemma2").directory
  out = tmp_path / "compare.jsonl"
  subprocess.run([sys.executable, "launch/compare.py", "--work", work, "--batch", "2", "--model_path", str(directory),
                  "--text_len", "12", "--prompt_len", "4", "--new_tokens", "6", "--repeats", "1", "--warmup", "0",
                  "--rounds", "1", "--out", str(out)], check=True, timeout=600,
                 env={k: v for k, v in os.environ.items() if k != "XLA_FLAGS"})  # the machine as it is
  line = json.loads(out.read_text())
  assert line["work"] == work and line["batch"] == 2 and line["transformers_s"] > 0 and line["ours_s"] > 0
  assert line["ratio"] == pytest.approx(line["transformers_s"] / line["ours_s"], rel=1e-2)
  if work == "train":  # the same computation: the same loss before the first update
    assert line["loss_first"]["ours"] == pytest.approx(line["loss_first"]["transformers"], abs=1e-4)
  else:
    assert line["tokens_identical"] is True
