"""Engine defaults shared by every method config (`configs/<method>.py` starts from `base_config()`), building a
config's task and stages, and the resume guard's rule of which config changes a rerun may make."""
from __future__ import annotations

import copy
import fnmatch
import importlib
import json
import os
from typing import Any, Sequence

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
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.best_metric = ""               # e.g. 'eval/pixel_f1': also keep the best checkpoint by it
  c.best_mode = "max"
  c.async_checkpoints = True
  c.block_every_step = False       # block on each step (simulated multi-device CPU runs)
  c.profile_steps = (0, 0)         # (first step, number of steps) traced to WORKDIR/profile
  c.data = ml_collections.ConfigDict({"worker_count": 0, "read_threads": 4})
  c.allow_changes = ""             # resume: comma-separated keys (fnmatch) allowed to differ from the stored config
  return c


def build_task(config: ml_collections.ConfigDict):
  """Imports `config.task` ('package.module:Class') and instantiates it with the config."""
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
HARMLESS_CHANGES = (
    "log_every", "eval_every", "eval_split", "checkpoint_every", "keep_checkpoints", "best_metric", "best_mode",
    "async_checkpoints", "block_every_step", "profile_steps", "remat", "mesh.*", "partition_rules",
    "fsdp_min_size", "data.worker_count", "data.read_threads", "init_from.*", "allow_changes",
)


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
    a, b = old.get(key, "<absent>"), cur.get(key, "<absent>")
    if a == b:
      continue
    harmless = any(fnmatch.fnmatchcase(key, p) for p in patterns)
    if key == "total_steps" and isinstance(a, int) and isinstance(b, int) and b > a:
      harmless = True
    (allowed if harmless else refused)[key] = (a, b)
  return refused, allowed
