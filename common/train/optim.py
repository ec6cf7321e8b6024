"""Optimizers and learning-rate schedules from a config block (`config.optimizer`).

Fields (all optional but `name` and `lr`):
  name: 'sgd' | 'adam' | 'adamw'; lr: peak learning rate;
  schedule: 'constant' | 'cosine' | 'poly' | 'step'; warmup_steps; decay_steps or decay_epochs (default: the
    run's total steps; a decay longer than the run stops part-way, as ViLocal's stage 2 does);
  end_lr (cosine / poly floor); power (poly, 0.9 as mmseg); step_boundaries + step_factor ('step');
  per_epoch: the schedule advances once per epoch (the official PyTorch codes step their schedulers per epoch),
    i.e. it is evaluated at the first step of the current epoch; False by default;
  weight_decay; momentum, nesterov (sgd); b1, b2, eps (adam/adamw); clip_grad_norm (0: off);
  lr_factor: multiplies the whole schedule (lr and end_lr); written by `config.resolve_batch` from
    `config.lr_scaling` (batch-size scaling of the learning rate), 1 when absent.
SGD weight decay is added to the gradient before momentum, as torch.optim.SGD does; AdamW decay is decoupled.
"""
from __future__ import annotations

import optax


def make_schedule(cfg, total_steps: int, steps_per_epoch: int | None = None) -> optax.Schedule:
  factor = float(cfg.get("lr_factor", 1.0))
  lr = float(cfg.lr) * factor
  warmup = int(cfg.get("warmup_steps", 0))
  decay_epochs = cfg.get("decay_epochs", 0)
  if decay_epochs and not steps_per_epoch:
    raise ValueError("optimizer.decay_epochs needs the task's steps per epoch")
  decay_steps = int(cfg.get("decay_steps", 0) or decay_epochs * (steps_per_epoch or 0) or total_steps) - warmup
  kind = cfg.get("schedule", "constant")
  end_lr = float(cfg.get("end_lr", 0.0)) * factor
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
  if cfg.get("per_epoch", False):
    if not steps_per_epoch:
      raise ValueError("optimizer.per_epoch needs the task's steps per epoch")
    return lambda step: sched((step // steps_per_epoch) * steps_per_epoch)
  return sched


def make_optimizer(cfg, total_steps: int, steps_per_epoch: int | None = None) -> optax.GradientTransformation:
  """The optax transformation described by `cfg` (see the module docstring)."""
  sched = make_schedule(cfg, total_steps, steps_per_epoch)
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
