"""Engine defaults shared by every method config (`configs/<method>.py` starts from `base_config()`)."""
from __future__ import annotations

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
  c.init_from = ml_collections.ConfigDict({"workdir": "", "step": -1, "include": ".*"})
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
  return c
