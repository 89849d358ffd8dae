"""Subprocess for tests/test_gcs.py: artifacts, metrics, tokenizer and orbax checkpoints round-trip
through a gs:// workdir (the emulator is chosen by the environment the parent sets).
`--params gs://.../params out.npz` copies a params checkpoint from the bucket into a local npz."""
import sys

import jax
import jax.numpy as jnp
import numpy as np

from leaml_jax import checkpoint, metrics
from leaml_jax.data import tokenizer as tok_lib
from leaml_jax.stages import artifacts


def main(workdir: str) -> None:
  artifacts.write_json(f"{workdir}/data/splits.json", {"labeled": ["a"]})
  assert artifacts.read_json(f"{workdir}/data/splits.json") == {"labeled": ["a"]}
  artifacts.write_jsonl(f"{workdir}/data/captions.jsonl", [{"image_id": "a", "caption": "x"}])
  assert artifacts.read_jsonl(f"{workdir}/data/captions.jsonl") == [{"image_id": "a", "caption": "x"}]
  artifacts.write_npz(f"{workdir}/relevance/mask.npz", {"m": np.arange(3)})
  assert artifacts.read_npz(f"{workdir}/relevance/mask.npz", "relevance")["m"].tolist() == [0, 1, 2]
  assert not artifacts.exists(f"{workdir}/status/none.json")
  w = metrics.MetricWriter(f"{workdir}/base")
  w.write(1, {"loss": 2.0})
  w.write(2, {"loss": 1.0})
  w.close()
  assert [r["step"] for r in artifacts.read_jsonl(f"{workdir}/base/metrics.jsonl")] == [1, 2]
  tok = tok_lib.train_tokenizer(["red ball", "blue square"] * 5, f"{workdir}/data/tokenizer.json",
                                vocab_size=280)
  again = tok_lib.load_tokenizer(f"{workdir}/data/tokenizer.json")
  assert again.encode("red ball") == tok.encode("red ball")
  params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
  checkpoint.save_params(f"{workdir}/vqa/params", params)
  back = checkpoint.load_params(f"{workdir}/vqa/params", checkpoint.abstract_like(params))
  assert all(np.array_equal(back[k], params[k]) for k in params)
  ckpt = checkpoint.Checkpointer(f"{workdir}/vqa/ckpt")
  ckpt.save(3, params, {"pos": 7})
  ckpt.close()
  ckpt = checkpoint.Checkpointer(f"{workdir}/vqa/ckpt")
  state, data = ckpt.restore(checkpoint.abstract_like(params))
  assert ckpt.latest_step() == 3 and data == {"pos": 7} and np.array_equal(state["w"], params["w"])
  print("gcs round trips ok", jax.process_index())


def dump_params(directory: str, out: str) -> None:
  """A params checkpoint (here: in the bucket) -> a local .npz of {path: array}."""
  from tests.test_processes import read_params
  np.savez(out, **read_params(directory))


if __name__ == "__main__":
  if sys.argv[1] == "--params":
    dump_params(sys.argv[2], sys.argv[3])
  else:
    main(sys.argv[1])
