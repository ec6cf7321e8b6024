"""Orbax checkpoints of a run: train state + Grain iterator state + config, async, last-N and best-by-metric.

Layout: `WORKDIR/checkpoints/<step>/{state, data_iter/process_<i>-of-<n>.json, config}` (Orbax v0
`CheckpointManager`, atomic commits: a step directory is only visible once fully written, so a run killed
mid-save resumes from the previous complete step). Restores always go through an abstract target carrying
the *current* mesh's shardings, so a checkpoint written on one mesh restores onto any other.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies


class IteratorState:
  """The host data iterator's state at the step being saved, in the form Grain's checkpoint handler expects.

  The engine prefetches batches ahead of the step, so the live iterator is ahead of the train state; the
  state recorded with the last *consumed* batch is what gets saved.
  """

  def __init__(self, state: dict | None = None):
    self.state = state

  def get_state(self) -> bytes:
    return json.dumps(self.state).encode()

  def set_state(self, state: bytes) -> None:
    self.state = json.loads(state.decode())

  def start_prefetch(self) -> None:
    """Called by Grain's handler after a restore; nothing to start here."""


def _state_dict(state) -> dict:
  return {"step": state.step, "params": state.params, "rest": state.rest, "opt_state": state.opt_state}


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` (the one place that knows Orbax's API)."""

  def __init__(self, directory: str, *, keep: int = 3, best_metric: str = "", best_mode: str = "max",
               save_every: int = 1000, async_save: bool = True, read_only: bool = False):
    self.best_metric = best_metric
    preservation = [policies.LatestN(keep)]
    if best_metric:
      preservation.append(policies.BestN(get_metric_fn=lambda m: m[best_metric], reverse=best_mode == "min", n=1,
                                         keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        enable_async_checkpointing=async_save,
        save_decision_policy=policies.AnySavePolicy([policies.FixedIntervalPolicy(save_every),
                                                     policies.PreemptionCheckpointingPolicy()]),
        preservation_policy=policies.AnyPreservationPolicy(preservation),
        read_only=read_only,
        create=not read_only)
    self.manager = ocp.CheckpointManager(
        os.path.abspath(directory), options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(), "data_iter": grain.checkpoint.CheckpointHandler(),
                       "config": ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_state: dict | None, config: ml_collections.ConfigDict,
           metrics: dict | None = None, force: bool = False) -> bool:
    """Saves if the policy (every `save_every` steps, or preemption) says so, or when `force`d."""
    items = {"state": ocp.args.StandardSave(_state_dict(state)), "config": ocp.args.JsonSave(config.to_dict())}
    if data_state is not None:
      items["data_iter"] = grain.checkpoint.CheckpointSave(IteratorState(data_state))
    if metrics is not None and self.best_metric and self.best_metric not in metrics:
      metrics = None  # only eval steps carry the best-by metric
    saved = self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=force)
    if saved:
      logging.info("checkpoint: saving step %d (async)", step)
    return saved

  def reached_preemption(self, step: int) -> bool:
    return self.manager.reached_preemption(step)

  def restore(self, abstract_state, step: int | None = None, with_data: bool = True):
    """(state dict, data-iterator state or None) at `step` (default: latest), onto `abstract_state`'s shardings."""
    step = self.manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.manager.directory}")
    items = {"state": ocp.args.StandardRestore(_state_dict(abstract_state))}
    has_data = with_data and (self.manager.directory / str(step) / "data_iter").exists()
    if has_data:
      items["data_iter"] = grain.checkpoint.CheckpointRestore(IteratorState())
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"], (restored["data_iter"].state if has_data else None)

  def restore_config(self, step: int | None = None) -> ml_collections.ConfigDict:
    step = self.manager.latest_step() if step is None else step
    restored = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return ml_collections.ConfigDict(restored["config"])

  def restore_raw(self, step: int | None = None) -> dict[str, Any]:
    """The saved state as host numpy arrays, without a target (for `init_from` across model variants)."""
    step = self.manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.manager.directory}")
    meta = self.manager.item_metadata(step)["state"]
    cpu = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=cpu), meta)
    restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    return jax.tree.map(jax.device_get, restored["state"])

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
