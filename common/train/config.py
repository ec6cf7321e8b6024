"""Engine defaults shared by every method config (`configs/<method>.py` starts from `base_config()`), building a
config's task and stages, and the resume guard's rule of which config changes a rerun may make."""
from __future__ import annotations

import ast
import copy
import fnmatch
import importlib
import json
import math
import os
from typing import Any, Mapping, Sequence

import ml_collections

VARIANTS = ("paper", "demo", "smoke")


def checked_variant(arg: str, method: str) -> str:
  """The variant a method's `get_config(arg)` builds: `arg`, or 'demo' when empty; one of `VARIANTS`."""
  name = arg or "demo"
  if name not in VARIANTS:
    raise ValueError(f"unknown {method} variant {name!r}: paper, demo or smoke")
  return name


def base_config() -> ml_collections.ConfigDict:
  """Engine fields with their defaults; a method config sets `task`, the model, data and optimizer fields."""
  c = ml_collections.ConfigDict()
  c.task = ""                      # 'package.module:TaskClass'
  c.seed = 0
  c.rng_impl = "threefry2x32"      # 'rbg' compiles several times faster on CPU, but its bits depend on sharding
  c.total_steps = 1000
  c.global_batch_size = 8          # over all processes and devices, per optimizer step
  # Pods: per_device_batch_size > 0 makes the global batch per_device_batch_size x the data-parallel devices (the
  # product of the mesh axes the batch is split over: data x fsdp); global_batch_size must then be 0 or equal to
  # it. lr_scaling 'linear' | 'sqrt' multiplies every learning rate (peak and floor of the schedule, every
  # optimizer) by global / reference_batch_size or its square root; reference_batch_size is the paper's global
  # batch (0: the configured global_batch_size). Both are resolved once per run (`resolve_batch`); the run's
  # stored config holds the resolved global_batch_size and `optimizer.lr_factor`, so a device count that changes
  # the global batch is refused on resume like any batch change.
  c.per_device_batch_size = 0      # 0: off (global_batch_size decides)
  c.lr_scaling = "none"            # 'none' | 'linear' | 'sqrt'
  c.reference_batch_size = 0       # the global batch the configured learning rates were tuned for
  c.grad_accum_steps = 1           # micro-batches per step (global batch kept; activation memory / k)
  c.dtype = "float32"              # compute dtype; parameters stay float32
  c.remat = False                  # rematerialise the attention stages (models that support it)
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1})
  c.partition_rules = [(".*", "fsdp")]   # (regex on state path, 'replicate' | 'fsdp' | explicit spec)
  c.fsdp_min_size = 2**14          # leaves smaller than this stay replicated under FSDP
  c.optimizer = ml_collections.ConfigDict({"name": "adamw", "lr": 1e-3, "schedule": "constant",
                                           "weight_decay": 0.0})
  c.freeze = []                    # regexes on 'model_name/path/to/param' excluded from training
  # Stage 2 / fine-tuning source; a run whose complete.json is absent (unfinished) is refused unless
  # require_complete=False.
  c.init_from = ml_collections.ConfigDict({"workdir": "", "step": -1, "include": ".*", "require_complete": True})
  c.log_every = 50
  c.eval_every = 0                 # 0: only at the end
  c.eval_split = "test"
  # Evaluation sets apart from the training data: name -> a nested part of this config that the set replaces
  # (its reader: data.root or data.prepared_dir, data.methods, eval_split, ...). `common.train.evaluate`
  # evaluates each; training evaluates `eval_split` of its own data.
  c.eval_sets = ml_collections.ConfigDict()
  # Named dataset roots the sets' string fields use as "{name}" (e.g. data.root="{mose100}"), so that one
  # `--set eval_roots.mose100=/data/MOSE100` points every set of that dataset at it.
  c.eval_roots = ml_collections.ConfigDict()
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.best_metric = ""               # e.g. 'eval/pixel_f1': also keep the best checkpoint by it
  c.best_mode = "max"
  c.async_checkpoints = True
  c.block_every_step = False       # block on each step (simulated multi-device CPU runs)
  c.profile_steps = (0, 0)         # (first step, number of steps) traced to WORKDIR/profile
  # Grain input: worker processes, read threads, records read ahead (0: 16 for training, one batch for evaluation)
  c.data = ml_collections.ConfigDict({"worker_count": 0, "read_threads": 4, "prefetch": 0})
  c.allow_changes = ""             # resume: comma-separated keys (fnmatch) allowed to differ from the stored config
  return c


LR_SCALINGS = ("none", "linear", "sqrt")


def resolve_batch(config: ml_collections.ConfigDict, mesh_shape: Mapping[str, int] | None = None,
                  process_count: int = 1) -> ml_collections.ConfigDict:
  """A copy of `config` with the global batch and the learning-rate factor resolved for a mesh.

  Global batch: `per_device_batch_size` x the data-parallel devices of `mesh_shape` ({'data': d, 'fsdp': f}; the
  batch is split over both) when `per_device_batch_size > 0`, else `global_batch_size`; a non-zero
  `global_batch_size` that disagrees with it is an error. With `mesh_shape` the global batch must divide over
  the data-parallel devices and over `process_count` processes, and each of the `grad_accum_steps` micro-batches
  over the data-parallel devices (`mesh.check_batch_divides`).
  Learning rate: `lr_scaling` 'linear' / 'sqrt' gives the factor global / reference (or its square root), the
  reference being `reference_batch_size` or, when 0, the configured `global_batch_size`; 'none' gives 1.
  The copy holds `global_batch_size` (resolved), `per_device_batch_size = 0` (folded into it: the copy resolves
  to itself on any mesh), `reference_batch_size` (resolved where scaling is on) and `optimizer.lr_factor`, which
  `optim.make_schedule` applies to every optimizer built from `config.optimizer`.
  """
  from common.train import mesh as mesh_lib  # imports jax: configs import this module without it
  per_device = int(config.get("per_device_batch_size", 0) or 0)
  configured = int(config.get("global_batch_size", 0) or 0)
  if per_device < 0 or configured < 0:
    raise ValueError(f"global_batch_size {configured} and per_device_batch_size {per_device} must not be negative")
  global_batch = configured
  if per_device:
    if mesh_shape is None:
      raise ValueError("per_device_batch_size needs the mesh to resolve the global batch")
    devices = mesh_lib.data_parallel_size(mesh_shape)
    global_batch = per_device * devices
    if configured and configured != global_batch:
      raise ValueError(
          f"global_batch_size {configured} conflicts with per_device_batch_size {per_device}: {per_device} x "
          f"{devices} data-parallel devices (mesh {mesh_lib.describe(mesh_shape)}) = {global_batch}. Set one of "
          "them: global_batch_size=0 to take the batch from per_device_batch_size, or per_device_batch_size=0")
  if not global_batch:
    raise ValueError("global_batch_size is 0 and per_device_batch_size is 0: set one of them")
  if mesh_shape is not None:
    mesh_lib.check_batch_divides(global_batch, mesh_shape, process_count,
                                 int(config.get("grad_accum_steps", 1)))
  scaling = str(config.get("lr_scaling", "none") or "none")
  if scaling not in LR_SCALINGS:
    raise ValueError(f"lr_scaling must be one of {LR_SCALINGS}, got {scaling!r}")
  reference = int(config.get("reference_batch_size", 0) or 0)
  factor = 1.0
  if scaling != "none":
    reference = reference or configured
    if reference <= 0:
      raise ValueError(f"lr_scaling={scaling!r} needs reference_batch_size (the global batch the learning rates "
                       "were tuned for): global_batch_size is 0 here")
    factor = global_batch / reference if scaling == "linear" else math.sqrt(global_batch / reference)
  resolved = copy.deepcopy(config)
  with resolved.unlocked():
    resolved.global_batch_size = global_batch
    if "per_device_batch_size" in resolved or per_device:
      resolved.per_device_batch_size = 0
    if scaling != "none":
      resolved.reference_batch_size = reference
    if "optimizer" in resolved:
      resolved.optimizer.lr_factor = float(factor)
  return resolved


def describe_batch(config: ml_collections.ConfigDict, resolved: ml_collections.ConfigDict) -> str:
  """One log line: how `resolved`'s global batch and learning-rate factor came from `config`."""
  line = f"global batch {resolved.global_batch_size}"
  if config.get("per_device_batch_size", 0):
    line += f" (per_device_batch_size {config.per_device_batch_size} x the data-parallel devices)"
  scaling = config.get("lr_scaling", "none")
  if scaling != "none":
    line += (f"; learning rates x {resolved.optimizer.get('lr_factor', 1.0):.6g} ({scaling} scaling from "
             f"reference_batch_size {resolved.reference_batch_size})")
  return line


def _unresolved(config: ml_collections.ConfigDict) -> bool:
  """A config whose batch or learning-rate factor still depends on the mesh (a resolved one never does)."""
  scaled = config.get("lr_scaling", "none") not in ("", "none")
  return bool(config.get("per_device_batch_size", 0)) or (
      scaled and "lr_factor" not in config.get("optimizer", {}))


def build_task(config: ml_collections.ConfigDict):
  """Imports `config.task` ('package.module:Class') and instantiates it with the config.

  A config not yet resolved (`per_device_batch_size` or `lr_scaling` set) is resolved first, for the mesh
  `config.mesh` describes over all devices (`loop.sharded_setup` resolves it for the mesh it builds).
  """
  if _unresolved(config):
    import jax
    from common.train import mesh as mesh_lib
    config = resolve_batch(config, mesh_lib.mesh_shape(**config.mesh), jax.process_count())
  module_name, _, cls_name = config.task.partition(":")
  return getattr(importlib.import_module(module_name), cls_name)(config)


def stage_configs(config: ml_collections.ConfigDict, workdir: str) -> list[tuple[str, ml_collections.ConfigDict, str]]:
  """[(stage name, config, workdir)] of a run: one stage, or one per entry of `config.run_stages`.

  A multi-stage config holds `stages.<name>` override blocks (merged over the base config) and
  `run_stages` ('stage1,stage2'); each stage runs in `workdir/<name>`. A stage's `init_from_stage: <name>`
  makes it initialise from that stage's final checkpoint (`init_from.workdir`), the two-stage recipe.
  """
  names = [n for n in str(config.get("run_stages", "")).split(",") if n]
  if not names:
    return [("", config, workdir)]
  runs = []
  for name in names:
    if name not in config.stages:
      raise ValueError(f"run_stages names {name!r}, but config.stages has only {list(config.stages)}")
    stage = copy.deepcopy(config)
    with stage.unlocked():
      overrides = stage.stages[name]
      del stage["stages"]
      stage.run_stages = ""
      source = overrides.get("init_from_stage", "")
      stage.update(ml_collections.ConfigDict({k: v for k, v in overrides.items() if k != "init_from_stage"}))
      if source:
        stage.init_from.workdir = os.path.join(workdir, source)
    runs.append((name, stage, os.path.join(workdir, name) if name else workdir))
  return runs


# Keys a rerun may change in a run directory: they touch neither the data order, the shapes, the model nor the
# optimizer (logging and checkpoint cadence, placement on devices, input-pipeline parallelism, evaluation).
# `fnmatch` patterns on the flattened dotted key. `total_steps` may also grow (checked apart).
# per_device_batch_size, lr_scaling and reference_batch_size act only through the resolved `global_batch_size`
# and `optimizer.lr_factor` (compared like any key): a device count that changes the global batch is refused.
HARMLESS_CHANGES = (
    "log_every", "eval_every", "eval_split", "checkpoint_every", "keep_checkpoints", "best_metric", "best_mode",
    "async_checkpoints", "block_every_step", "profile_steps", "remat", "mesh.*", "partition_rules",
    "fsdp_min_size", "data.worker_count", "data.read_threads", "data.prefetch", "init_from.*", "allow_changes",
    "per_device_batch_size", "lr_scaling", "reference_batch_size", "eval_sets*", "eval_roots*", "quality.*",
    "data.cross_datasets.*",  # Delocate's placeholder roots, never read, replaced by its eval_sets
    "data.test_sets",  # NCL's evaluation-only list of test splits, replaced by its eval_sets
)
# Values of keys that configs stored before the key existed had implicitly.
IMPLICIT_DEFAULTS = {"optimizer.lr_factor": 1.0, "data.prefetch": 0, "data.format": "folder", "data.prepared_dir": "",
                     "eval_sets": {}, "eval_roots": {}, "data.layout": "faceforensics"}


# Keys renamed since runs were first stored (old dotted key -> new): one field name per idea across the methods
# (`data.flip` for training flips; loss weights under `loss`). `upgrade` applies them to a stored config.
RENAMED_KEYS = {
    "data.hflip": "data.flip", "data.train_flip": "data.flip",
    **{f"ncl.{w}": f"loss.{w}" for w in ("seg_weight", "dice_weight", "branch_seg_weight", "contrastive_weight",
                                         "pivot_weight")},
}


def _stored_parent(config: ml_collections.ConfigDict, key: str) -> tuple[ml_collections.ConfigDict | None, str]:
  """(the ConfigDict holding dotted `key` in `config`, or None where a parent is missing; the key's last part)."""
  *parents, leaf = key.split(".")
  node = config
  for p in parents:
    node = node.get(p) if isinstance(node, ml_collections.ConfigDict) else None
  return (node if isinstance(node, ml_collections.ConfigDict) else None), leaf


def upgrade(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` (a stored run's) with the `RENAMED_KEYS` moved to their new names and each `IMPLICIT_DEFAULTS` field
  it predates set to that default (where its parent exists), in place; returns it."""
  for old, new in RENAMED_KEYS.items():
    node, old_leaf = _stored_parent(config, old)
    if node is None or old_leaf not in node:
      continue
    value = node[old_leaf]
    del node[old_leaf]
    *new_parents, new_leaf = new.split(".")
    target = config
    for p in new_parents:
      if p not in target:
        target[p] = ml_collections.ConfigDict()
      target = target[p]
    target[new_leaf] = value
  for key, default in IMPLICIT_DEFAULTS.items():
    node, leaf = _stored_parent(config, key)
    if node is not None and leaf not in node:
      node[leaf] = ml_collections.ConfigDict(default) if isinstance(default, dict) else default
  return config


def apply_overrides(config: ml_collections.ConfigDict, items: Sequence[str]) -> ml_collections.ConfigDict:
  """`config` with each 'dotted.key=value' of `items` set in order (the value parsed as a Python literal, else
  taken as a string); the tools' `--set` flags. A malformed item or a missing parent field is a ValueError."""
  for item in items:
    key, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"--set {item!r}: expected key=value")
    try:
      parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      parsed = value
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      if p not in node:
        raise ValueError(f"--set {item!r}: the config has no field {p!r}")
      node = node[p]
    node[leaf] = parsed
  return config


def eval_set_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """A copy of `config` with evaluation set `name`'s fields (`config.eval_sets[name]`, nested like the config)
  put in place; a field the config lacks is a ValueError naming it (a stored run's config reads back through
  `upgrade`, which fills the fields it predates). A string value "{name}" is `config.eval_roots[name]`, which must
  be set."""
  if name not in config.eval_sets:
    raise ValueError(f"eval_sets: no set {name!r} (the config has {sorted(config.eval_sets)})")
  out = config.copy_and_resolve_references()

  def put(node, spec, path):
    for key, value in spec.items():
      if key not in node:
        raise ValueError(f"eval_sets.{name}.{path}{key}: the config has no field {key!r}")
      if isinstance(value, (dict, ml_collections.ConfigDict)) and isinstance(node.get(key),
                                                                             ml_collections.ConfigDict):
        put(node[key], value, f"{path}{key}.")
      else:
        node[key] = root(value, f"{path}{key}") if isinstance(value, str) else value

  def root(value: str, path: str) -> str:
    if not (value.startswith("{") and value.endswith("}")):
      return value
    key = value[1:-1]
    roots = config.get("eval_roots", {})
    if key not in roots:
      raise ValueError(f"eval_sets.{name}.{path}: {value} names no eval_roots entry (the config has "
                       f"{sorted(roots)})")
    if not roots[key]:
      raise ValueError(f"eval_roots.{key}: empty; the set {name!r} reads it (--set eval_roots.{key}=DIR)")
    return roots[key]

  put(out, config.eval_sets[name], "")
  out.eval_sets = ml_collections.ConfigDict()
  return out


def flatten(config: ml_collections.ConfigDict | dict) -> dict[str, Any]:
  """{'a.b.c': value} of a nested config, values as JSON would store them (tuples become lists)."""
  tree = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config
  tree = json.loads(json.dumps(tree, default=str))
  flat = {}

  def walk(prefix, node):
    if isinstance(node, dict) and node:
      for k, v in node.items():
        walk(f"{prefix}.{k}" if prefix else k, v)
    else:
      flat[prefix] = node

  walk("", tree)
  return flat


def refused_changes(stored: ml_collections.ConfigDict | dict, new: ml_collections.ConfigDict | dict,
                    allow: Sequence[str] = ()) -> tuple[dict[str, tuple], dict[str, tuple]]:
  """(refused, allowed) differences {key: (stored value, new value)} between two resolved configs.

  Allowed: `HARMLESS_CHANGES`, a larger `total_steps`, and the keys (fnmatch patterns) in `allow`.
  Everything else (seed, batch size, model, optimizer, data fields that change the records...) is refused.
  """
  old, cur = flatten(stored), flatten(new)
  patterns = tuple(HARMLESS_CHANGES) + tuple(allow)
  refused, allowed = {}, {}
  for key in sorted(set(old) | set(cur)):
    a = old.get(key, IMPLICIT_DEFAULTS.get(key, "<absent>"))
    b = cur.get(key, IMPLICIT_DEFAULTS.get(key, "<absent>"))
    if a == b:
      continue
    harmless = any(fnmatch.fnmatchcase(key, p) for p in patterns)
    if key == "total_steps" and isinstance(a, int) and isinstance(b, int) and b > a:
      harmless = True
    (allowed if harmless else refused)[key] = (a, b)
  return refused, allowed
