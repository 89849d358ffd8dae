"""A caption teacher with its parameters sharded over 8 devices (fsdp x tensor) writes what it writes
on one device and what transformers' greedy `generate` writes; Qwen2.5-VL (the paper's teacher
family) generates sharded as transformers does; the per-device memory figures the config
docstrings give for Qwen2.5-VL-72B as teacher are what `jax.eval_shape` implies.

8 fake CPU devices (tests/conftest.py). The captions stage runs the Gemma 3 teacher of
test_gemma3.py (its processor is real; Qwen2.5-VL's processor needs torchvision, so the
Qwen2.5-VL test feeds transformers' own batch to the generation engine directly).
"""
import math
import re
from pathlib import Path
from types import SimpleNamespace

import flax.linen as nn
import jax
import numpy as np
import pytest
import torch
from ml_collections import ConfigDict
from PIL import Image

from leaml_jax import generate as gen
from leaml_jax import sharding as shd
from leaml_jax.data import prompts
from leaml_jax.models import hf, presets
from leaml_jax.models.vlm import VLM, dummy_inputs
from leaml_jax.stages import captions
from tests.hf_batches import batch_from_hf_inputs
from tests.hf_families import family, images, words

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:transformers")
MESH_8 = {"data": 1, "fsdp": 4, "tensor": 2}


def _mesh(shape):
  n = math.prod(shape.values())
  return shd.make_mesh(shape, devices=jax.devices()[:n])


def _assert_sharded_over_fsdp_and_tensor(params):
  """Some parameters are split over both axes and each device holds a part of them, not a copy."""
  both = [x for x in jax.tree.leaves(nn.meta.unbox(params))
          if {"fsdp", "tensor"} <= {a for s in x.sharding.spec if s for a in ((s,) if isinstance(s, str) else s)}]
  assert both and all(x.addressable_shards[0].data.size * 8 == x.size for x in both)


def _ctx(directory, mesh, batch_size=4):
  return SimpleNamespace(config=ConfigDict(dict(captions=dict(teacher_path=str(directory), batch_size=batch_size,
                                                              max_new_tokens=8), data=dict(image_size=32))),
                         mesh=mesh, model_options=lambda: dict(dtype="float32"))


def test_sharded_teacher_captions_equal_one_device_and_transformers(monkeypatch):
  f = family("gemma3_chat")
  rng = np.random.default_rng(21)
  pool = [{"id": f"u{i}", "image": im}
          for i, im in enumerate(images(rng, [(32, 32), (40, 24), (24, 48), (32, 40), (48, 32), (30, 30)]))]
  loaded = []
  load = hf.load
  monkeypatch.setattr(hf, "load", lambda *a, **k: loaded.append(load(*a, **k)) or loaded[-1])
  sharded = captions.teacher_captions(_ctx(f.directory, _mesh(MESH_8)), pool)
  _assert_sharded_over_fsdp_and_tensor(loaded[-1][1])
  one = captions.teacher_captions(_ctx(f.directory, _mesh({"data": 1, "fsdp": 1, "tensor": 1})), pool)
  assert sharded == one
  processor, end = f.processor, f.processor.tokenizer.convert_tokens_to_ids("<end_of_turn>")
  want = []
  for ex in pool:  # transformers alone: its chat rendering, greedy, stopping at <end_of_turn>
    user = {"role": "user", "content": [{"type": "image", "image": Image.fromarray(ex["image"])},
                                        {"type": "text", "text": prompts.caption_prompt("gemma3")}]}
    inputs = processor.apply_chat_template([user], tokenize=True, return_dict=True, return_tensors="pt",
                                           add_generation_prompt=True)
    with torch.no_grad():
      out = f.hf_model.generate(**inputs, max_new_tokens=8, do_sample=False, eos_token_id=end, pad_token_id=0)
    new = out[0, inputs["input_ids"].shape[1]:].tolist()
    want.append(processor.decode(new[:new.index(end)] if end in new else new, skip_special_tokens=True).strip())
  assert len({w for w in want if w}) >= 3  # distinct captions; empty ones (<end_of_turn> first) are dropped
  assert [(r["image_id"], r["caption"]) for r in sharded] == [(ex["id"], w) for ex, w in zip(pool, want) if w]


def test_qwen2_5_vl_generates_sharded_as_transformers():
  f = family("qwen2_5_vl")
  model, params, _ = hf.load(f.directory, mesh=_mesh(MESH_8), dtype="float32")
  _assert_sharded_over_fsdp_and_tensor(params)
  rng = np.random.default_rng(22)
  img = "<|vision_start|><|image_pad|><|vision_end|>"
  f.processor.tokenizer.padding_side = "left"
  inputs = f.processor(images=[images(rng, [(112, 84)]) for _ in range(4)],
                       text=[f"{words(rng, n)}{img}{words(rng, 3)}" for n in (1, 4, 2, 6)])
  with torch.no_grad():
    ref = f.hf_model.generate(**inputs, max_new_tokens=16, min_new_tokens=16, do_sample=False, eos_token_id=129,
                              pad_token_id=0)[:, inputs["input_ids"].shape[1]:].numpy()
  ours = gen.generate(model, params, batch_from_hf_inputs(model, **inputs), max_new_tokens=16, eos_id=129, pad_id=0)
  assert len(set(ref.ravel().tolist())) > 3
  np.testing.assert_array_equal(ours, ref)


# ----------------------------------------------------------------------------- Qwen2.5-VL-72B per device
def per_device_gib(cfg, mesh_shape: dict, param_bytes: int, batch: int, cache_len: int) -> tuple[float, float]:
  """(parameters, KV cache) GiB on the most loaded device of a `mesh_shape` mesh, from `jax.eval_shape`
  of the model's init and prefill under the package's sharding rules (`sharding.RULES`; a mesh axis
  that does not divide a dimension leaves it whole, as `sharding.param_shardings` does)."""
  mesh = SimpleNamespace(shape=mesh_shape)
  model = VLM(cfg)
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), *dummy_inputs(cfg, 1, 4))["params"])
  specs = nn.logical_to_mesh(nn.get_partition_spec(abstract), shd.RULES)

  def shard_elems(spec, shape):
    spec = shd._divisible(spec, shape, mesh)
    sizes = [math.prod(mesh_shape[a] for a in ((s,) if isinstance(s, str) else s)) if s else 1 for s in spec]
    return math.prod(d // s for d, s in zip(shape, sizes + [1] * (len(shape) - len(sizes))))

  params = sum(jax.tree.leaves(jax.tree.map(lambda s, x: shard_elems(s, x.shape), specs, nn.meta.unbox(abstract),
                                            is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))))
  h, w = cfg.vit.image_size
  _, cache = jax.eval_shape(
      lambda p: model.apply({"params": p}, np.zeros((batch, h, w, 3), np.float32),
                            np.zeros((batch, cache_len // 2), np.int32), np.ones((batch, cache_len // 2), np.int32),
                            np.ones((batch, cache_len // 2), np.int32), cache_len=cache_len, method=VLM.prefill),
      nn.meta.unbox(abstract))
  batch_split = mesh_shape["data"] * mesh_shape["fsdp"]  # k, v [depth,B,S,K,H]: batch over data x fsdp
  kv = sum(x.size * np.dtype(x.dtype).itemsize for x in (cache["k"], cache["v"])) / batch_split
  return params * param_bytes / 2**30, kv / 2**30


TEACHER_72B = presets.get("qwen2_5_vl_72b", image_token_id=None, dtype="bfloat16")  # prefix layout: same shapes
MEMORY_CASES = {  # docstring line in configs/sports.py -> (mesh, param bytes)
    "v5p-64 (32 chips, 95 GB each), fsdp 32, float32 params": ({"data": 1, "fsdp": 32, "tensor": 1}, 4),
    "v5p-64 (32 chips, 95 GB each), fsdp 32, bfloat16 params": ({"data": 1, "fsdp": 32, "tensor": 1}, 2),
    "8 x 80 GB GPUs, fsdp 8, float32 params": ({"data": 1, "fsdp": 8, "tensor": 1}, 4),
    "8 x 80 GB GPUs, fsdp 8, bfloat16 params": ({"data": 1, "fsdp": 8, "tensor": 1}, 2),
}


def test_72b_teacher_memory_in_the_config_docstring_is_what_eval_shape_implies():
  doc = (Path(__file__).parent.parent / "configs" / "sports.py").read_text()
  for line, (mesh, nbytes) in MEMORY_CASES.items():
    p, kv = per_device_gib(TEACHER_72B, mesh, nbytes, batch=32, cache_len=512)
    print(f"{line}: parameters {p:.1f} GiB, KV cache {kv:.2f} GiB per device")
    found = re.search(re.escape(line) + r": parameters ([\d.]+) GiB \+ KV cache ([\d.]+) GiB", doc)
    assert found, f"configs/sports.py docstring lacks the line {line!r}"
    assert (float(found.group(1)), float(found.group(2))) == (round(p, 1), round(kv, 2))
