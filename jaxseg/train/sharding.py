"""Device mesh, batch placement and rule-based parameter sharding.

The mesh has axes ('data', 'model'). Batches are sharded on 'data'. Every leaf
of the train state gets a `PartitionSpec` from the config's rule list (regex
on the leaf path -> spec); unmatched leaves are replicated.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxseg.errors import ConfigError

MESH_AXES = ("data", "model")


def make_mesh(mesh_config, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds the ('data', 'model') mesh; -1 on one axis takes the remaining devices."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = [int(mesh_config.data), int(mesh_config.model)]
  if sizes.count(-1) > 1:
    raise ConfigError(f"mesh: at most one axis may be -1, got {sizes}")
  if -1 in sizes:
    known = int(np.prod([s for s in sizes if s != -1]))
    if len(devices) % known:
      raise ConfigError(f"mesh: {len(devices)} devices not divisible by {known}")
    sizes[sizes.index(-1)] = len(devices) // known
  if int(np.prod(sizes)) != len(devices):
    raise ConfigError(
        f"mesh: data*model = {sizes[0]}*{sizes[1]} must equal the " f"{len(devices)} devices in use"
    )
  return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over 'data', the rest replicated."""
  return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def leaf_path(path) -> str:
  """'/'-joined names of a `jax.tree_util` key path: ('params','conv','kernel') -> 'params/conv/kernel'."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def partition_specs(
    tree: Any, rules: Sequence[tuple[str, Any]], mesh: Mesh, fsdp_min_size: int = 2**14
) -> Any:
  """Returns a tree of `PartitionSpec` for `tree` (arrays or ShapeDtypeStructs).

  Args:
    tree: pytree whose leaves have `.shape`.
    rules: ((regex, spec), ...). spec is 'replicate', 'fsdp', or a tuple of
      mesh axis names / None, one per dimension of the leaf.
    mesh: the mesh the specs refer to.
    fsdp_min_size: leaves smaller than this stay replicated under 'fsdp'.
  """
  compiled = [(re.compile(pattern), spec) for pattern, spec in rules]

  def spec_for(path, leaf):
    name = leaf_path(path)
    shape = tuple(getattr(leaf, "shape", ()))
    for pattern, spec in compiled:
      if pattern.search(name):
        return _resolve(name, shape, spec, mesh, fsdp_min_size)
    return P()

  return jax.tree_util.tree_map_with_path(spec_for, tree)


def _resolve(name, shape, spec, mesh, fsdp_min_size) -> P:
  if spec == "replicate" or not shape:
    return P()
  if spec == "fsdp":
    n = mesh.shape["data"]
    if int(np.prod(shape)) < fsdp_min_size or n == 1:
      return P()
    # Largest dimension divisible by the data axis size.
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
      if shape[dim] % n == 0:
        axes = [None] * len(shape)
        axes[dim] = "data"
        return P(*axes)
    return P()
  spec = tuple(spec)
  if len(spec) != len(shape):
    raise ConfigError(
        f"sharding rule for {name}: spec {spec} has {len(spec)} dims, "
        f"the leaf has shape {shape}"
    )
  for dim, axis in zip(shape, spec):
    if axis is None:
      continue
    size = int(np.prod([mesh.shape[a] for a in (axis if isinstance(axis, tuple) else (axis,))]))
    if dim % size:
      raise ConfigError(
          f"sharding rule for {name}: dimension {dim} of shape {shape} "
          f"is not divisible by mesh axis {axis!r} of size {size}"
      )
  return P(*spec)


def named_shardings(specs: Any, mesh: Mesh) -> Any:
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, P))


def global_batch(
    local_batch: dict[str, np.ndarray], sharding: NamedSharding
) -> dict[str, jax.Array]:
  """Assembles the global batch from this process's slice (multi-host aware).

  Each process passes its own `[global_batch / process_count, ...]` numpy
  arrays; the result is one global `jax.Array` per key, sharded on 'data'.
  """
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


def local_rows(x: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded global array, in batch order (numpy).

  Works on multi-host arrays, where `jax.device_get` of the whole array is
  impossible; shards replicated over 'model' are taken once.
  """
  if x.ndim == 0:
    return np.asarray(x.addressable_data(0))
  rows = {}
  for shard in x.addressable_shards:
    rows.setdefault(shard.index[0].start or 0, shard.data)
  return np.concatenate([np.asarray(rows[k]) for k in sorted(rows)])


def host_copy(tree: Any) -> Any:
  """The full value of every leaf as numpy, on every process (multi-host aware).

  Leaves this process can see whole (single host, or replicated) are fetched directly; leaves sharded
  across hosts (e.g. FSDP over a 'model' axis that spans processes) are all-gathered first. Every process
  must call this (it is a collective for the sharded leaves).
  """

  def fetch(x):
    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))

  return jax.tree.map(fetch, tree)


def put_global(tree: Any, shardings: Any) -> Any:
  """Global arrays from host values that every process holds in full (the inverse of `host_copy`).

  Each device receives only its slice (`jax.make_array_from_callback`), so no process needs the devices
  of another and nothing crosses hosts.
  """

  def put(x, sharding):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(put, tree, shardings)
