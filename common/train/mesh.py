"""Device mesh, partition rules and global-batch assembly.

The mesh has two axes: `data` (batch) and `fsdp` (batch too, plus parameter and optimizer-state sharding).
Parameters are placed by `partition_rules`, a list of `(regex, tactic)` pairs matched (re.search, first match
wins) against a leaf's path `name/sub/.../leaf` in the train state; the same path suffix appears under the
optimizer state (e.g. `opt_state/model/0/mu/encoder/conv/kernel`), so moments follow their parameters. Tactics:
  * "replicate": fully replicated;
  * "fsdp": the largest dimension divisible by the fsdp axis size is sharded over `fsdp` when the leaf holds at
    least `fsdp_min_size` elements (big_vision's FSDP tactic); otherwise replicated;
  * a tuple of mesh-axis names / None, one per dimension: an explicit PartitionSpec.
Switching data parallel <-> FSDP is therefore a config change (`mesh.fsdp`), no model code involved.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")


def mesh_shape(data: int = -1, fsdp: int = 1, device_count: int | None = None) -> dict[str, int]:
  """{'data': d, 'fsdp': f} of the mesh `make_mesh(data, fsdp)` builds over `device_count` devices (default: all)."""
  n = jax.device_count() if device_count is None else device_count
  if data != -1 and data * fsdp < n:  # an explicit smaller mesh
    n = data * fsdp
  if data == -1:
    if n % fsdp:
      raise ValueError(f"fsdp={fsdp} does not divide the {n} available devices")
    data = n // fsdp
  if data * fsdp != n:
    raise ValueError(f"mesh data={data} x fsdp={fsdp} != {n} devices")
  return {"data": data, "fsdp": fsdp}


def make_mesh(data: int = -1, fsdp: int = 1, devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A ('data', 'fsdp') mesh over all devices; `data=-1` takes what `fsdp` leaves."""
  devices = list(devices if devices is not None else jax.devices())
  if data != -1 and data * fsdp < len(devices):  # an explicit smaller mesh (e.g. evaluating on one device)
    logging.warning("mesh data=%d x fsdp=%d uses %d of the %d devices", data, fsdp, data * fsdp, len(devices))
    devices = devices[:data * fsdp]
  shape = mesh_shape(data, fsdp, len(devices))
  return jax.make_mesh((shape["data"], shape["fsdp"]), BATCH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 2,
                       devices=devices)


def data_parallel_size(shape: Mapping[str, int] | jax.sharding.Mesh) -> int:
  """Devices the batch is split over: the product of the mesh's batch axes (`BATCH_AXES`)."""
  shape = shape.shape if isinstance(shape, jax.sharding.Mesh) else shape
  return int(np.prod([shape[a] for a in BATCH_AXES]))


def describe(shape: Mapping[str, int] | jax.sharding.Mesh) -> str:
  """'data=4' or 'data=2 x fsdp=2' (axes of size 1 beyond the first left out)."""
  shape = shape.shape if isinstance(shape, jax.sharding.Mesh) else shape
  parts = [f"{a}={shape[a]}" for i, a in enumerate(BATCH_AXES) if i == 0 or shape[a] != 1]
  return " x ".join(parts)


def check_batch_divides(global_batch_size: int, shape: Mapping[str, int] | jax.sharding.Mesh,
                        process_count: int = 1, grad_accum_steps: int = 1) -> None:
  """The engine's one check that the global batch splits evenly over the data-parallel devices and the processes
  (each process reads `global_batch_size // process_count` examples; each device gets an equal share), and, with
  `grad_accum_steps = k > 1`, that each of the k micro-batches (`global_batch_size / k`, `Task.grads`) splits
  evenly over the data-parallel devices too: the global batch must be a multiple of k x the devices."""
  devices = data_parallel_size(shape)
  k = int(grad_accum_steps)
  if k < 1:
    raise ValueError(f"grad_accum_steps must be at least 1, got {grad_accum_steps}")
  if global_batch_size <= 0 or global_batch_size % devices:
    raise ValueError(
        f"global_batch_size {global_batch_size} does not divide over the {devices} data-parallel devices "
        f"(mesh {describe(shape)}): set global_batch_size to a multiple of {devices}, or per_device_batch_size")
  if global_batch_size % (k * devices):
    raise ValueError(
        f"global_batch_size {global_batch_size} with grad_accum_steps {k} gives micro-batches of "
        f"{global_batch_size / k:g}, which do not divide over the {devices} data-parallel devices "
        f"(mesh {describe(shape)}): set global_batch_size to a multiple of {k * devices} ({k} micro-batches x "
        f"{devices} devices), per_device_batch_size to a multiple of {k}, or a grad_accum_steps that divides "
        f"{global_batch_size // devices}")
  if global_batch_size % process_count:
    raise ValueError(
        f"global_batch_size {global_batch_size} does not divide over the {process_count} processes: set "
        f"global_batch_size to a multiple of {process_count}, or per_device_batch_size")


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) dimension split over both mesh axes."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def path_to_str(path: Sequence[Any]) -> str:
  """'a/b/0/kernel' for a jax key path (dict keys, attributes, sequence indices); drops Variable `.value`."""
  parts = []
  for k in path:
    if isinstance(k, jax.tree_util.DictKey):
      parts.append(str(k.key))
    elif isinstance(k, jax.tree_util.GetAttrKey):
      if k.name != "value":
        parts.append(k.name)
    elif isinstance(k, jax.tree_util.SequenceKey):
      parts.append(str(k.idx))
    elif isinstance(k, jax.tree_util.FlattenedIndexKey):
      parts.append(str(k.key))
    else:
      parts.append(str(k))
  return "/".join(parts)


def _spec_for(path: str, shape: tuple[int, ...], rules, fsdp_size: int, fsdp_min_size: int) -> P:
  for pattern, tactic in rules:
    if not re.search(pattern, path):
      continue
    if tactic == "replicate":
      return P()
    if tactic == "fsdp":
      if fsdp_size == 1 or int(np.prod(shape, dtype=np.int64)) < fsdp_min_size:
        return P()
      for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % fsdp_size == 0:
          spec = [None] * len(shape)
          spec[dim] = "fsdp"
          return P(*spec)
      return P()
    if isinstance(tactic, (tuple, list)):
      if len(tactic) != len(shape):
        raise ValueError(f"partition rule {pattern!r} -> {tactic} has {len(tactic)} dims but {path} has shape {shape}")
      return P(*tactic)
    raise ValueError(f"unknown partition tactic {tactic!r} for rule {pattern!r}")
  return P()


def state_shardings(mesh: jax.sharding.Mesh, abstract_tree: Any, rules=((".*", "fsdp"),),
                    fsdp_min_size: int = 2**14) -> Any:
  """A NamedSharding for every leaf of `abstract_tree` (arrays or ShapeDtypeStructs), from `rules`."""
  fsdp_size = mesh.shape["fsdp"]

  def leaf_sharding(path, leaf):
    shape = tuple(getattr(leaf, "shape", ()))
    return NamedSharding(mesh, _spec_for(path_to_str(path), shape, rules, fsdp_size, fsdp_min_size))

  return jax.tree_util.tree_map_with_path(leaf_sharding, abstract_tree)


def global_batch(local_batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Assembles the global batch from each process's local slice (the same call on every process)."""
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}
