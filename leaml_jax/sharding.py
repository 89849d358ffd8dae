"""All partitioning decisions: the mesh, logical-axis rules, and how params are born sharded.

Mesh axes: `data` (pure data parallel), `fsdp` (data parallel + parameter sharding),
`tensor` (model parallel over heads / MLP neurons / vocab). Models annotate parameters and
activations with *logical* names; `RULES` maps them to mesh axes.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Any

import flax.linen as nn
import flax.linen.spmd as flax_spmd
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axis (or None = replicated). First match wins.
RULES = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", "tensor"),
    ("vocab", "tensor"),
    ("layers", None),
    ("length", None),
    ("head_dim", None),
    ("patch", None),
    ("channels", None),
)


def make_mesh(shape: dict | Any, devices=None) -> Mesh:
  """Mesh from {'data': d, 'fsdp': f, 'tensor': t}; one entry may be -1 (= the rest)."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if devices.size % known:
      raise ValueError(f"mesh: {devices.size} devices not divisible by {known}")
    sizes[sizes.index(-1)] = devices.size // known
  if math.prod(sizes) != devices.size:
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
                     f"have {devices.size}; set config.mesh so the product matches (use -1 for one axis)")
  return Mesh(devices.reshape(sizes), MESH_AXES)


def _divisible(spec: P, shape, mesh: Mesh) -> P:
  """Drop mesh axes that do not divide the dimension (tiny models on 8 devices). Of a group of
  axes, e.g. ("data", "fsdp") for the batch, the longest leading part that divides is kept."""
  out = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    while names and dim % math.prod(mesh.shape[a] for a in names):
      names = names[:-1]
    out.append(None if not names else names[0] if isinstance(axes, str) or len(names) == 1
               else names)
  return P(*out)


def param_shardings(abstract_variables, mesh: Mesh):
  """Shardings for a (possibly boxed) abstract variable tree from `jax.eval_shape(model.init, ...)`."""
  logical = nn.get_partition_spec(abstract_variables)
  specs = nn.logical_to_mesh(logical, RULES)
  unboxed = nn.meta.unbox(abstract_variables)
  return jax.tree.map(
      lambda s, x: NamedSharding(mesh, _divisible(s, x.shape, mesh)), specs, unboxed,
      is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
  return NamedSharding(mesh, P(("data", "fsdp"), *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def shard_batch(batch, mesh: Mesh):
  """Host-local numpy batch (nested dicts allowed) -> global jax arrays split over (data, fsdp).

  On one host this is a device_put; on several, each host passes its own shard. String
  leaves (ids) are dropped: they stay on the host.
  """
  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim), x)
  if isinstance(batch, dict):
    return {k: shard_batch(v, mesh) if isinstance(v, dict) else put(v)
            for k, v in batch.items()
            if isinstance(v, dict) or np.asarray(v).dtype.kind not in "USO"}
  return put(batch)


def init_sharded(init_fn, mesh: Mesh, *args):
  """Create params already sharded: eval_shape -> shardings -> jitted init (no host copy)."""
  # Rules only, no global mesh: flax's DenseGeneral initialises a flattened kernel, on which
  # the logical constraint would not fit; out_shardings places the result anyway.
  with nn.logical_axis_rules(RULES):
    abstract = jax.eval_shape(init_fn, *args)
    shardings = param_shardings(abstract, mesh)
    params = jax.jit(lambda *a: nn.meta.unbox(init_fn(*a)), out_shardings=shardings)(*args)
  return params, shardings


# ----------------------------------------------------------------------------- activations
# Flax emits the models' `nn.with_logical_constraint`s only while a global mesh is set
# (`jax.set_mesh`); with the rules alone they are no-ops, XLA lays activations out after the
# fsdp-sharded weights, and every device holds the whole global batch's temporaries.
# Inside `with_mesh_rules` each constraint is fitted to the value it constrains:
#  * a mesh axis that does not divide its dimension is dropped (a batch of 4 on 8 devices, 2
#    heads over tensor=4), as `_divisible` does for params;
#  * a spec longer than the value is skipped: flax's DenseGeneral builds its kernel flat and
#    unboxes it with the 3-axis logical constraint, at init and again in the abstract shape
#    check that `Module.param` runs on every apply (its result is discarded).
_ACTIVE_MESH: contextvars.ContextVar[Mesh | None] = contextvars.ContextVar("mesh", default=None)
_flax_constraint = flax_spmd._with_sharding_constraint  # pylint: disable=protected-access


def _fitted_constraint(x, axis_resources, mesh=None):
  active = _ACTIVE_MESH.get()
  if active is None or axis_resources is None:
    return _flax_constraint(x, axis_resources, mesh)
  shape = np.shape(x)
  if len(axis_resources) > len(shape):
    return x
  return _flax_constraint(x, _divisible(axis_resources, shape, mesh or active), mesh)


if not hasattr(flax_spmd, "_with_sharding_constraint_one_fallback"):
  raise ImportError("leaml_jax.sharding fits flax's activation constraints through "
                    "flax.linen.spmd._with_sharding_constraint; install the flax in requirements.txt")
flax_spmd._with_sharding_constraint = _fitted_constraint  # pylint: disable=protected-access


@contextlib.contextmanager
def with_mesh_rules(mesh: Mesh | None):
  """Context for every apply-time model call (train step, relevance, generation, evaluation):
  the mesh set globally and the logical-axis rules in force, so the models' activation
  constraints (batch over data+fsdp, MLP/heads/vocab over tensor) take effect, fitted to each
  value's shape. Enter it around the call of the jitted function (tracing happens there).
  mesh=None: rules only (a model off any mesh). Init stays outside (see `init_sharded`)."""
  if mesh is None:
    with nn.logical_axis_rules(RULES):
      yield
    return
  token = _ACTIVE_MESH.set(mesh)
  try:
    with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
      yield
  finally:
    _ACTIVE_MESH.reset(token)
