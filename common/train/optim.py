"""Optimizers and learning-rate schedules from a config block (`config.optimizer`).

Fields (all optional but `name` and `lr`):
  name: 'sgd' | 'adam' | 'adamw'; lr: peak learning rate;
  schedule: 'constant' | 'cosine' | 'poly' | 'step'; warmup_steps; decay_steps (default: the run's total steps);
  end_lr (cosine / poly floor); power (poly, 0.9 as mmseg); step_boundaries + step_factor ('step');
  schedule_granularity: the schedule advances in whole multiples of this many steps (e.g. steps per epoch, for
    the per-epoch schedules of the official PyTorch code); 1 by default;
  weight_decay; momentum, nesterov (sgd); b1, b2, eps (adam/adamw); clip_grad_norm (0: off).
SGD weight decay is added to the gradient before momentum, as torch.optim.SGD does; AdamW decay is decoupled.
"""
from __future__ import annotations

import optax


def make_schedule(cfg, total_steps: int) -> optax.Schedule:
  lr = float(cfg.lr)
  warmup = int(cfg.get("warmup_steps", 0))
  decay_steps = int(cfg.get("decay_steps", 0) or total_steps) - warmup
  kind = cfg.get("schedule", "constant")
  end_lr = float(cfg.get("end_lr", 0.0))
  if kind == "constant":
    main = optax.constant_schedule(lr)
  elif kind == "cosine":
    main = optax.cosine_decay_schedule(lr, max(decay_steps, 1), alpha=end_lr / lr if lr else 0.0)
  elif kind == "poly":
    main = optax.polynomial_schedule(lr, end_lr, float(cfg.get("power", 0.9)), max(decay_steps, 1))
  elif kind == "step":
    bounds = {int(b) - warmup: float(cfg.get("step_factor", 0.1)) for b in cfg.get("step_boundaries", ())}
    main = optax.piecewise_constant_schedule(lr, bounds)
  else:
    raise ValueError(f"unknown learning-rate schedule {kind!r}")
  sched = optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup]) if warmup else main
  granularity = int(cfg.get("schedule_granularity", 1))
  if granularity > 1:
    return lambda step: sched((step // granularity) * granularity)
  return sched


def make_optimizer(cfg, total_steps: int) -> optax.GradientTransformation:
  """The optax transformation described by `cfg` (see the module docstring)."""
  sched = make_schedule(cfg, total_steps)
  name = cfg.name
  wd = float(cfg.get("weight_decay", 0.0))
  if name == "sgd":
    parts = [optax.add_decayed_weights(wd)] if wd else []
    parts.append(optax.sgd(sched, momentum=cfg.get("momentum", 0.0) or None, nesterov=cfg.get("nesterov", False)))
    tx = optax.chain(*parts)
  elif name == "adam":
    parts = [optax.add_decayed_weights(wd)] if wd else []
    parts.append(optax.adam(sched, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999), eps=cfg.get("eps", 1e-8)))
    tx = optax.chain(*parts)
  elif name == "adamw":
    tx = optax.adamw(sched, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999), eps=cfg.get("eps", 1e-8),
                     weight_decay=wd)
  else:
    raise ValueError(f"unknown optimizer {name!r}")
  clip = float(cfg.get("clip_grad_norm", 0.0))
  return optax.chain(optax.clip_by_global_norm(clip), tx) if clip else tx
