"""Run directories: one handle (`Run`, `TrainingRun`) over the Orbax checkpoints and everything stored beside them.

WORKDIR/
  checkpoints/<step>/{state, data_iter/process_<i>-of-<n>.json, config}   Orbax `CheckpointManager`, atomic commits
  configs/<k>-step<start>.json   the resolved config of the k-th start, with host, process count, commit, libraries
  eval_metrics.json              {step: eval metrics} of every evaluated step (Best-N ranks saved steps by it)
  complete.json                  written after the final step was saved and evaluated: the run (stage) is complete
  run.lock                       held by the live training process (`workdir_lock`)
  corrupt_checkpoints/           unreadable checkpoints moved aside when a training run falls back past them

Reading (`Run`: export, serving, evaluation, init_from) never writes. Restores go through an abstract target that
carries the *current* mesh's shardings, so a checkpoint written on one mesh restores onto any other. When the
newest checkpoint cannot be read (a truncated or garbled file), it is skipped with a warning naming it and the
one before is used; a checkpoint that reads fine but does not fit the model is an error, never skipped.

Training (`TrainingRun`) adds the workdir lock, clean-up of interrupted saves' temporary folders, the resume
guard (the stored config against the new one: `config.refused_changes`), the config history, saves whose
failure names the step and the path, the eval-metrics ledger and the completion marker.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import socket
import time
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies
from orbax.checkpoint._src.metadata import array_metadata_store  # the default ArrayHandler's; no public alias

from common.train import config as config_lib
from common.train import provenance
from common.train.errors import CheckpointError, RunError
from common.train.workdir_lock import WorkdirLock

COMPLETE = "complete.json"
EVAL_METRICS = "eval_metrics.json"


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


def _write_json(path: str, value) -> None:
  """Atomic: a reader sees the old file or the new one, never half of one."""
  tmp = f"{path}.{os.getpid()}.tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2, default=str)
  os.replace(tmp, path)


def _read_json(path: str):
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def flat_keys(tree) -> dict[str, Any]:
  """{'model/conv1/kernel': leaf} of a state pytree (NNX's trailing '/value' dropped)."""
  from common.train import mesh as mesh_lib
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    key = mesh_lib.path_to_str(path)
    flat[key[:-len("/value")] if key.endswith("/value") else key] = leaf
  return flat


@dataclasses.dataclass
class _BestEvaluated:
  """Orbax preservation policy: keeps the saved step with the best `metric` in the eval ledger. A step that did
  not evaluate has no score (no older score is carried over to it)."""
  ledger: dict[int, dict[str, float]]
  metric: str
  mode: str

  def should_preserve(self, checkpoints, *, context) -> list[bool]:
    del context
    scored = [(m[self.metric], i) for i, c in enumerate(checkpoints)
              if np.isfinite((m := self.ledger.get(c.step, {})).get(self.metric, np.nan))]
    best = (max if self.mode == "max" else min)(scored)[1] if scored else -1
    return [i == best for i in range(len(checkpoints))]


def _write_replicas_in_parallel_only_across_processes() -> None:
  """Orbax's replica-parallel saving splits each replicated array's write over its replicas. Across hosts that
  spreads the writing; in one process every replica is local, and it only adds one sliced copy per array and
  replica, compiled anew at every save (on CPU, 296 small compiles and ~15 s for two saves of SafePaint's smoke
  model). So one-process runs write each array from one replica, as Orbax already does on GPU."""
  if jax.process_count() == 1:
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False,
                                                  array_metadata_store=array_metadata_store.Store()),
        override=True)


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` (the one place that knows Orbax's API)."""

  def __init__(self, directory: str, *, keep: int = 3, best_metric: str = "", best_mode: str = "max",
               ledger: dict[int, dict[str, float]] | None = None, save_every: int = 1000,
               async_save: bool = True, read_only: bool = False):
    self.directory = os.path.abspath(directory)
    _write_replicas_in_parallel_only_across_processes()
    preservation = [policies.LatestN(keep)]
    if best_metric:
      preservation.append(_BestEvaluated({} if ledger is None else ledger, best_metric, best_mode))
    options = ocp.CheckpointManagerOptions(
        enable_async_checkpointing=async_save,
        save_decision_policy=policies.AnySavePolicy([policies.FixedIntervalPolicy(save_every),
                                                     policies.PreemptionCheckpointingPolicy()]),
        preservation_policy=policies.AnyPreservationPolicy(preservation),
        read_only=read_only,
        create=not read_only,
        cleanup_tmp_directories=not read_only)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(), "data_iter": grain.checkpoint.CheckpointHandler(),
                       "config": ocp.JsonCheckpointHandler()})
    self._saving: int | None = None  # the step of an asynchronous save not yet known to be finished

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def _failed(self, step: int, error: Exception) -> CheckpointError:
    self._saving = None
    kept = sorted(int(n) for n in os.listdir(self.directory) if n.isdigit()) if os.path.isdir(self.directory) else []
    return CheckpointError(f"{self.directory}/{step}: saving step {step} failed ({type(error).__name__}: {error}); "
                           f"the run stopped, and the checkpoints written before it are intact: steps {kept}")

  def save(self, step: int, state, data_state: dict | None, config: ml_collections.ConfigDict,
           force: bool = False) -> bool:
    """Saves if the policy (every `save_every` steps, or preemption) says so, or when `force`d.

    Raises `CheckpointError` naming the step and the path when this save, or the asynchronous save before it,
    fails (disk full, no permission).
    """
    self.wait()
    items = {"state": ocp.args.StandardSave(_state_dict(state)), "config": ocp.args.JsonSave(config.to_dict())}
    if data_state is not None:
      items["data_iter"] = grain.checkpoint.CheckpointSave(IteratorState(data_state))
    try:
      saved = self.manager.save(step, args=ocp.args.Composite(**items), force=force)
    except Exception as e:  # an OS or TensorStore error, whatever its type: reported with the step and the path
      raise self._failed(step, e) from e
    if saved:
      self._saving = step
      logging.info("checkpoint: saving step %d", step)
    return saved

  def wait(self) -> None:
    """Blocks until the pending save is written; `CheckpointError` if it failed."""
    try:
      self.manager.wait_until_finished()
      self.manager.check_for_errors()
    except Exception as e:
      raise self._failed(self._saving if self._saving is not None else -1, e) from e
    self._saving = None

  def reached_preemption(self, step: int) -> bool:
    return self.manager.reached_preemption(step)

  def restore(self, abstract_state, step: int, with_data: bool = True):
    """(state dict, data-iterator state or None) at `step`, onto `abstract_state`'s shardings."""
    items = {"state": ocp.args.StandardRestore(_state_dict(abstract_state))}
    has_data = with_data and os.path.isdir(os.path.join(self.directory, str(step), "data_iter"))
    if has_data:
      items["data_iter"] = grain.checkpoint.CheckpointRestore(IteratorState())
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"], (restored["data_iter"].state if has_data else None)

  def restore_config(self, step: int) -> ml_collections.ConfigDict:
    restored = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return config_lib.upgrade(ml_collections.ConfigDict(restored["config"]))

  def restore_raw(self, step: int) -> dict[str, Any]:
    """The saved state as host numpy arrays, without a target (for `init_from` across model variants)."""
    meta = self.manager.item_metadata(step)["state"]
    cpu = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=cpu), meta)
    restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    return jax.tree.map(jax.device_get, restored["state"])

  def data_process_count(self, step: int) -> int | None:
    """How many processes wrote the data-iterator state of `step` (None if it has none)."""
    folder = os.path.join(self.directory, str(step), "data_iter")
    counts = {int(m.group(1)) for n in (os.listdir(folder) if os.path.isdir(folder) else [])
              if (m := re.fullmatch(r"process_\d+-of-(\d+)\.json", n))}
    return counts.pop() if len(counts) == 1 else None

  def reload(self) -> None:
    self.manager.reload()

  def close(self) -> None:
    self.wait()
    self.manager.close()


class Run:
  """A run directory opened to read (export, serving, evaluation, `init_from`); it never writes.

  `step=None` everywhere means the newest checkpoint that can be read.
  """

  def __init__(self, workdir: str, *, _checkpointer: Checkpointer | None = None):
    self.workdir = workdir
    if _checkpointer is None:
      if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise FileNotFoundError(f"{workdir}: no checkpoints/ folder (not a run directory, or nothing saved yet)")
      _checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True, async_save=False)
    self.checkpoints = _checkpointer

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def close(self) -> None:
    self.checkpoints.close()

  # ------------------------------------------------------------------ reading
  def latest_step(self) -> int | None:
    return self.checkpoints.latest_step()

  def completion(self) -> dict | None:
    """The completion record ({step, eval, finished}) of a finished run, else None."""
    path = os.path.join(self.workdir, COMPLETE)
    return _read_json(path) if os.path.isfile(path) else None

  def eval_ledger(self) -> dict[int, dict[str, float]]:
    path = os.path.join(self.workdir, EVAL_METRICS)
    return {int(k): v for k, v in _read_json(path).items()} if os.path.isfile(path) else {}

  def _candidates(self, step: int | None) -> list[int]:
    if step is not None:
      if step not in self.checkpoints.steps():
        raise FileNotFoundError(f"{self.workdir}: no checkpoint at step {step} (steps: {self.checkpoints.steps()})")
      return [step]
    steps = self.checkpoints.steps()[::-1]
    if not steps:
      raise FileNotFoundError(f"{self.workdir}: no checkpoint under checkpoints/")
    return steps

  def _unreadable(self, step: int, error: Exception) -> bool:
    """Whether `error` (raised restoring `step` onto the model) means the files are unreadable, judged by
    reading the checkpoint as stored, without a target: if that works, the model and the checkpoint disagree."""
    try:
      self.checkpoints.restore_config(step)
      self.checkpoints.restore_raw(step)
    except Exception:  # noqa: BLE001 (any failure to read the stored files means they are damaged)
      return True
    del error
    return False

  def _skip(self, step: int, error: Exception) -> None:
    logging.warning("%s/checkpoints/%d cannot be read (%s: %s); using the checkpoint before it", self.workdir, step,
                    type(error).__name__, str(error)[:300])

  def config(self, step: int | None = None) -> ml_collections.ConfigDict:
    """The resolved config stored with `step` (default: the newest readable checkpoint)."""
    for candidate in self._candidates(step):
      try:
        return self.checkpoints.restore_config(candidate)
      except Exception as e:  # noqa: BLE001
        if step is not None:
          raise
        self._skip(candidate, e)
    raise RunError(f"{self.workdir}: no checkpoint can be read (steps {self.checkpoints.steps()})")

  def restore(self, abstract_state, step: int | None = None, with_data: bool = False,
              before_restore=None) -> tuple[dict, dict | None, int]:
    """(state dict, data-iterator state or None, step) of the newest readable checkpoint (or of `step`).

    `before_restore(step, stored_config)` runs before each attempt (the resume guard raises there). A checkpoint
    that cannot be read is skipped with a warning (`_on_unreadable` decides what else happens to it).
    """
    for candidate in self._candidates(step):
      try:
        stored = self.checkpoints.restore_config(candidate)
      except Exception as e:  # noqa: BLE001
        if step is not None:
          raise
        self._skip(candidate, e)
        self._on_unreadable(candidate)
        continue
      if before_restore is not None:
        before_restore(candidate, stored)
      try:
        state, data = self.checkpoints.restore(abstract_state, candidate, with_data=with_data)
        return state, data, candidate
      except Exception as e:  # noqa: BLE001
        if step is not None or not self._unreadable(candidate, e):
          raise RunError(f"{self.workdir}/checkpoints/{candidate} does not fit this run's model "
                         f"({type(e).__name__}: {str(e)[:500]})") from e
        self._skip(candidate, e)
        self._on_unreadable(candidate)
    raise RunError(f"{self.workdir}: no checkpoint can be read (every step was unreadable; see the warnings)")

  def _on_unreadable(self, step: int) -> None:
    del step  # a reader leaves the files alone

  def task(self, step: int | None = None):
    """The task built from the stored config of `step` (default: the newest readable checkpoint)."""
    return config_lib.build_task(self.config(step))

  def load(self, step: int | None = None):
    """(task, TrainState, step) of `step` (default: newest readable) on this process's first device."""
    from common.train.task import TrainState
    task = self.task(step)
    one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=one),
                            jax.eval_shape(task.init, task.key(0)))
    restored, _, step = self.restore(abstract, step)
    return task, TrainState(**restored), step


class TrainingRun(Run):
  """A run directory opened to train: the lock, the resume guard, the config history, saves, the eval ledger
  and the completion marker. Use as a context manager (the lock is given back on exit)."""

  def __init__(self, workdir: str, config: ml_collections.ConfigDict):
    os.makedirs(workdir, exist_ok=True)
    self.workdir = workdir
    self._lock = WorkdirLock(workdir)
    self._take_lock()
    try:
      self.ledger = Run.eval_ledger(self)
      super().__init__(workdir, _checkpointer=Checkpointer(
          os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints,
          best_metric=config.get("best_metric", ""), best_mode=config.get("best_mode", "max"), ledger=self.ledger,
          save_every=config.checkpoint_every, async_save=config.get("async_checkpoints", True)))
    except BaseException:
      self._lock.release()
      raise
    self.allow = tuple(p for p in str(config.get("allow_changes", "")).split(",") if p)

  def _take_lock(self) -> None:
    """Process 0 takes the lock; with several processes it broadcasts the token and the others check it."""
    if jax.process_count() == 1:
      self._lock.acquire()
      return
    from jax.experimental import multihost_utils
    token = 0
    if jax.process_index() == 0:
      try:
        token = self._lock.acquire()
      except RunError:
        multihost_utils.broadcast_one_to_all(np.int32(0))
        raise
    token = int(multihost_utils.broadcast_one_to_all(np.int32(token)))
    if token == 0:
      raise RunError(f"{self.workdir}: process 0 could not take the run directory's lock (see its log)")
    if jax.process_index() > 0:
      self._lock.check(token)

  def close(self) -> None:
    try:
      super().close()
    finally:
      self._lock.release()

  # ------------------------------------------------------------------ resume
  def guard(self, step: int, stored: ml_collections.ConfigDict, new: ml_collections.ConfigDict) -> None:
    """Refuses a rerun whose config would change the data order, the shapes, the model or the optimizer."""
    if stored.get("task") != new.task:
      raise RunError(f"{self.workdir} holds a run of task {stored.get('task')!r} (step {step}); this config is "
                     f"task {new.task!r}: use another --workdir")
    refused, allowed = config_lib.refused_changes(stored, new, self.allow)
    writers = self.checkpoints.data_process_count(step)
    if writers is not None and writers != jax.process_count():
      change = {"process_count": (writers, jax.process_count())}
      (allowed if "process_count" in self.allow else refused).update(change)
    if refused:
      lines = "\n".join(f"  {k}: {a!r} (stored) -> {b!r} (now)" for k, (a, b) in refused.items())
      raise RunError(
          f"{self.workdir}: this rerun changes what the checkpoint at step {step} was trained with:\n{lines}\n"
          "These change the data order, the shapes, the model or the optimizer, so resuming would not continue "
          "the same run. Start fresh with another --workdir, or accept the change deliberately with "
          f"--config.allow_changes={','.join(refused)}")
    for k, (a, b) in allowed.items():
      logging.info("%s: rerun changes %s: %r -> %r (allowed)", self.workdir, k, a, b)
    self.allowed_changes = allowed

  def resume(self, abstract_state, new_config: ml_collections.ConfigDict):
    """(state dict, data-iterator state, step) of the newest readable checkpoint after the resume guard, or
    (None, None, 0) for a fresh run. Unreadable newer checkpoints are moved to corrupt_checkpoints/."""
    self.allowed_changes = {}
    if not self.checkpoints.steps():
      return None, None, 0
    state, data, step = self.restore(abstract_state, with_data=True,
                                     before_restore=lambda s, stored: self.guard(s, stored, new_config))
    if "process_count" in self.allowed_changes:
      logging.warning("%s: resuming on %d processes a run saved by %d: the data order restarts", self.workdir,
                      jax.process_count(), self.allowed_changes["process_count"][0])
      data = None
    for s in [s for s in self.ledger if s > step]:
      del self.ledger[s]  # evaluations of steps past the checkpoint are redone
    return state, data, step

  def _on_unreadable(self, step: int) -> None:
    """Moves an unreadable checkpoint aside (kept for inspection) so that its step can be saved again."""
    if jax.process_index() == 0:
      aside = os.path.join(self.workdir, "corrupt_checkpoints", f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
      os.makedirs(os.path.dirname(aside), exist_ok=True)
      shutil.move(os.path.join(self.checkpoints.directory, str(step)), aside)
      logging.warning("moved the unreadable checkpoint %s/checkpoints/%d to %s", self.workdir, step, aside)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"corrupt checkpoint {step} moved")
    self.checkpoints.reload()

  def record_start(self, config: ml_collections.ConfigDict, step: int) -> str:
    """Writes configs/<k>-step<step>.json: the resolved config of this start and where it ran. Returns the path."""
    folder = os.path.join(self.workdir, "configs")
    os.makedirs(folder, exist_ok=True)
    k = len([n for n in os.listdir(folder) if n.endswith(".json")])
    path = os.path.join(folder, f"{k:03d}-step{step}.json")
    if jax.process_index() == 0:
      _write_json(path, {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "start_step": step,
                         "host": socket.gethostname(), "process_count": jax.process_count(),
                         "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
                         "allowed_changes": getattr(self, "allowed_changes", {}),
                         "code": provenance.code_version(), "libraries": provenance.library_versions(),
                         "config": config.to_dict()})
    return path

  # ------------------------------------------------------------------ writing
  def save(self, step: int, state, data_state, config: ml_collections.ConfigDict, force: bool = False) -> bool:
    return self.checkpoints.save(step, state, data_state, config, force=force)

  def record_eval(self, step: int, metrics: dict[str, float]) -> None:
    """Adds `step`'s eval metrics to the ledger: Best-N ranks the checkpoint of that step (if saved) by them."""
    self.ledger[step] = dict(metrics)
    if jax.process_index() == 0:
      _write_json(os.path.join(self.workdir, EVAL_METRICS), {str(k): v for k, v in sorted(self.ledger.items())})

  def mark_complete(self, step: int, metrics: dict[str, float]) -> None:
    """Waits for the final save, then writes complete.json: only now may a next stage start from this run."""
    self.checkpoints.wait()
    if jax.process_index() == 0:
      write_completion(self.workdir, step, metrics)

  def clear_complete(self) -> None:
    """A completed run resumed for more steps (a larger `total_steps`) is no longer complete."""
    path = os.path.join(self.workdir, COMPLETE)
    if jax.process_index() == 0 and os.path.exists(path):
      os.remove(path)


def write_completion(workdir: str, step: int, metrics: dict[str, float]) -> None:
  """WORKDIR/complete.json: the run's checkpoint at `step` is final (and evaluated, with `metrics`)."""
  _write_json(os.path.join(workdir, COMPLETE),
              {"step": step, "eval": metrics, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def require_complete(workdir: str, what: str) -> dict:
  """The completion record of `workdir`; RunError naming why if that run is unfinished."""
  path = os.path.join(workdir, COMPLETE)
  if os.path.isfile(path):
    return _read_json(path)
  steps = sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit()) \
      if os.path.isdir(os.path.join(workdir, "checkpoints")) else []
  state = f"its latest checkpoint is step {steps[-1]}" if steps else "it has no checkpoint"
  raise RunError(f"{what} {workdir}: that run is not complete ({state}, and no {COMPLETE}, which is written after "
                 "its final step is saved and evaluated). Finish it first (rerun its command), or set "
                 "init_from.require_complete=False to start from an unfinished run deliberately")
