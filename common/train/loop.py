"""The training loop every method runs: mesh, sharded state, jit, resume, eval, checkpoints, preemption, logs.

Order (big_vision / MaxText): mesh -> abstract state -> shardings -> restore (WORKDIR's latest checkpoint, else
`config.init_from`, else fresh init) -> data iterator (restored to the checkpointed position) -> loop
(step, log every `log_every`, eval every `eval_every`, save under the checkpoint policy, stop on SIGTERM or a
preemption notice after saving) -> final eval -> wait for pending saves.

Engine fields of a config (every method config has them; see configs/common.py):
  task ('package.module:Class'), seed, total_steps (or epochs), global_batch_size, grad_accum_steps,
  mesh.{data, fsdp}, partition_rules, fsdp_min_size, optimizer.*, freeze, init_from.{workdir, step, include},
  log_every, eval_every, checkpoint_every, keep_checkpoints, best_metric, best_mode, async_checkpoints,
  profile_steps, eval_split; stages (multi-stage runs, see `run`).
"""
from __future__ import annotations

import copy
import importlib
import logging
import os
import queue
import re
import signal
import threading
from typing import Any

import jax
import ml_collections
import numpy as np

from common.train import checkpoint as ckpt_lib
from common.train import mesh as mesh_lib
from common.train.task import Task, TrainState


def build_task(config: ml_collections.ConfigDict) -> Task:
  """Imports `config.task` ('package.module:Class') and instantiates it with the config."""
  module_name, _, cls_name = config.task.partition(":")
  return getattr(importlib.import_module(module_name), cls_name)(config)


class Prefetcher:
  """Pulls host batches in a thread, assembles global arrays, and remembers the iterator state after each batch.

  Yields (global_batch, iterator_state_after_this_batch). An exception in the data thread is re-raised in the
  training thread at the batch where it happened.
  """

  def __init__(self, iterator, sharding, depth: int = 2):
    self._it, self._sharding = iterator, sharding
    self._queue: queue.Queue = queue.Queue(maxsize=depth)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._work, daemon=True)
    self._thread.start()

  def _work(self):
    try:
      while not self._stop.is_set():
        batch = next(self._it)
        item = (mesh_lib.global_batch(batch, self._sharding), self._it.get_state())
        while not self._stop.is_set():
          try:
            self._queue.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
    except BaseException as e:  # handed to the consumer, never swallowed
      while not self._stop.is_set():
        try:
          self._queue.put(e, timeout=0.1)
          break
        except queue.Full:
          continue

  def __next__(self):
    item = self._queue.get()
    if isinstance(item, BaseException):
      raise RuntimeError("input pipeline failed") from item
    return item

  def close(self, timeout: float = 120.0):
    """Stops and joins the data thread. A daemon thread still inside XLA when the interpreter exits is killed
    mid-C++ call and aborts the process (exit -6), so a clean exit must wait for it."""
    self._stop.set()
    self._thread.join(timeout)
    if self._thread.is_alive():
      logging.warning("input thread still busy %.0f s after stop; exiting without it", timeout)


class _StopSignal:
  """Records SIGTERM (preemption) while training: the loop saves at the current step and exits cleanly.

  A context manager: the previous handler is restored when training ends.
  """

  def __init__(self):
    self.received = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def _handle(self, signum, frame):
    del frame
    logging.warning("signal %d received: saving a checkpoint and stopping", signum)
    self.received = True


def _abstract_with(abstract, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def _flat(tree) -> dict[str, Any]:
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    key = mesh_lib.path_to_str(path)
    flat[key[:-len("/value")] if key.endswith("/value") else key] = leaf
  return flat


def load_init_from(state: TrainState, cfg, shardings: TrainState) -> TrainState:
  """Copies params and model state (not optimizer state) from another run's checkpoint, by matching paths.

  `cfg.include` (regex) selects target paths to take (RNG stream keys never); every selected path must exist in the source with the
  same shape, and at least one path must be copied — a stage-2 run silently starting from scratch is an error.
  """
  source = ckpt_lib.Checkpointer(os.path.join(cfg.workdir, "checkpoints"), read_only=True, async_save=False)
  raw = source.restore_raw(None if cfg.get("step", -1) < 0 else cfg.step)
  src = _flat({"params": raw["params"], "rest": raw["rest"]})
  include = re.compile(cfg.get("include", ".*"))
  target = {"params": state.params, "rest": state.rest}
  target_sh = {"params": shardings.params, "rest": shardings.rest}
  copied = []

  def take(path, leaf, sharding):
    key = mesh_lib.path_to_str(path)
    key = key[:-len("/value")] if key.endswith("/value") else key
    if not include.search(key) or jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      return leaf  # not selected, or an RNG stream key (stage 2 keeps its own streams)
    if key not in src:
      raise KeyError(f"init_from {cfg.workdir}: {key} is not in the source checkpoint")
    if src[key].shape != leaf.shape:
      raise ValueError(f"init_from {cfg.workdir}: {key} has shape {src[key].shape}, expected {leaf.shape}")
    copied.append(key)
    return jax.device_put(np.asarray(src[key], dtype=leaf.dtype), sharding)

  new = jax.tree_util.tree_map_with_path(take, target, target_sh)
  if not copied:
    raise ValueError(f"init_from {cfg.workdir}: no parameter matched include={cfg.get('include', '.*')!r}")
  logging.info("init_from %s: copied %d arrays", cfg.workdir, len(copied))
  return state.replace(params=new["params"], rest=new["rest"])


def evaluate(task: Task, eval_step, state: TrainState, batch_sharding, split: str,
             writer=None, step: int = 0) -> dict[str, float]:
  """Runs `eval_step` over one pass of `split`; returns the computed metrics as floats. With a `writer`, the
  task's `image_summaries` of the first batch (e.g. prediction heatmaps) are written as images."""
  total = None
  batches = task.input_pipeline(split, process_index=jax.process_index(), process_count=jax.process_count())
  for host_batch in batches:
    batch = mesh_lib.global_batch(host_batch, batch_sharding)
    if writer is not None and total is None:
      images = task.image_summaries(state, batch)
      if images:
        writer.write_images(step, {f"{split}/{k}": np.asarray(v) for k, v in images.items()})
    m = eval_step(state, batch)
    total = m if total is None else total.merge(m)
  if total is None:
    raise ValueError(f"evaluation split {split!r} produced no batch")
  return {k: float(np.asarray(v)) for k, v in total.compute().items()}


def _check_finite(step: int, scalars: dict[str, float], ckpt: ckpt_lib.Checkpointer) -> None:
  bad = {k: v for k, v in scalars.items() if not np.isfinite(v)}
  if bad:
    raise FloatingPointError(f"non-finite metrics at step {step}: {bad}; nothing after the last checkpoint "
                             f"(step {ckpt.latest_step()}) was saved")


def sharded_setup(config: ml_collections.ConfigDict):
  """(task, mesh, batch sharding, abstract state, state shardings) for `config` on this process's devices."""
  task = build_task(config)
  mesh = mesh_lib.make_mesh(**config.mesh)
  logging.info("mesh %s over %d devices (%s)", dict(mesh.shape), mesh.size, jax.devices()[0].device_kind)
  abstract = jax.eval_shape(task.init, task.key(config.seed))
  state_sh = mesh_lib.state_shardings(mesh, abstract, [tuple(r) for r in config.partition_rules],
                                      config.fsdp_min_size)
  return task, mesh, mesh_lib.batch_sharding(mesh), abstract, state_sh


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str, step: int | None = None,
                        split: str | None = None) -> dict[str, float]:
  """Evaluates `workdir`'s checkpoint (default: latest) on the mesh `config.mesh` describes, whatever mesh
  it was trained on."""
  task, mesh, batch_sh, abstract, state_sh = sharded_setup(config)
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True, async_save=False)
  with jax.set_mesh(mesh):
    restored, _ = ckpt.restore(_abstract_with(abstract, state_sh), step, with_data=False)
    ckpt.close()
    eval_step = jax.jit(task.eval_step, in_shardings=(state_sh, batch_sh))
    return evaluate(task, eval_step, TrainState(**restored), batch_sh, split or config.eval_split)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config.task` in `workdir` (resuming if it holds a checkpoint); returns the last eval metrics."""
  from common.train import writers  # imports TensorFlow for clu's writers: only the loop needs it

  os.makedirs(workdir, exist_ok=True)
  task, mesh, batch_sh, abstract, state_sh = sharded_setup(config)
  repl = mesh_lib.replicated(mesh)
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints,
                               best_metric=config.get("best_metric", ""), best_mode=config.get("best_mode", "max"),
                               save_every=config.checkpoint_every, async_save=config.get("async_checkpoints", True))
  with _StopSignal() as stop, jax.set_mesh(mesh):
    rng = task.key(config.seed)
    start = ckpt.latest_step()
    data_state = None
    if start is not None:
      restored, data_state = ckpt.restore(_abstract_with(abstract, state_sh), start)
      state = TrainState(**restored)
      logging.info("resumed from %s at step %d", workdir, start)
    else:
      start = 0
      state = jax.jit(task.init, out_shardings=state_sh)(rng)
      if config.get("init_from") and config.init_from.get("workdir"):
        state = load_init_from(state, config.init_from, state_sh)

    if jax.process_index() == 0:
      with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
        f.write(task.resolved_config().to_json_best_effort(indent=2))
      writers.truncate_jsonl(os.path.join(workdir, "metrics.jsonl"), start)
    writer = writers.create_writer(workdir)
    _log_parameters(state)

    train_step = jax.jit(task.train_step, in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, repl),
                         donate_argnums=0)
    eval_step = jax.jit(task.eval_step, in_shardings=(state_sh, batch_sh))
    iterator = iter(task.input_pipeline("train", process_index=jax.process_index(),
                                        process_count=jax.process_count()))
    if data_state is not None:
      iterator.set_state(data_state)
    batches = Prefetcher(iterator, batch_sh)
    progress = writers.report_progress(task.total_steps, writer, config.log_every)
    profile = _profiler(config, workdir)

    pending: list[dict[str, jax.Array]] = []
    eval_metrics: dict[str, float] = {}
    step = start
    if start >= task.total_steps:
      logging.info("%s is complete (step %d): evaluating only", workdir, start)
      eval_metrics = evaluate(task, eval_step, state, batch_sh, config.eval_split)
    try:
      while step < task.total_steps:
        with progress.timed("data", wait_jax_async_dispatch=False):
          batch, data_state = next(batches)
        state, metrics = train_step(state, batch)
        step += 1
        pending.append(metrics)
        if config.get("block_every_step", False):
          jax.block_until_ready(state)
        profile(step)
        progress(step)
        is_last = step == task.total_steps
        want_save = ckpt.manager.should_save(step) or stop.received or is_last
        if step % config.log_every == 0 or want_save:
          scalars = {f"train/{k}": float(v) for k, v in _mean(pending).items()}
          pending.clear()
          _check_finite(step, scalars, ckpt)
          if step % config.log_every == 0 or is_last:
            writer.write_scalars(step, scalars)
        if (config.eval_every and step % config.eval_every == 0) or is_last:
          with progress.timed("eval"):
            eval_metrics = evaluate(task, eval_step, state, batch_sh, config.eval_split, writer, step)
          writer.write_scalars(step, {f"eval/{k}": v for k, v in eval_metrics.items()})
          writer.flush()
        metrics_for_ckpt = {f"eval/{k}": v for k, v in eval_metrics.items()} if eval_metrics else None
        if want_save:
          ckpt.save(step, state, data_state, task.resolved_config(), metrics=metrics_for_ckpt,
                    force=stop.received or is_last)
        if stop.received or ckpt.reached_preemption(step):
          if not want_save:
            ckpt.save(step, state, data_state, task.resolved_config(), force=True)
          logging.warning("stopped at step %d after saving (preemption)", step)
          break
    finally:
      batches.close()
      ckpt.close()
      writer.flush()
  return eval_metrics


def _mean(metrics: list[dict[str, jax.Array]]) -> dict[str, np.ndarray]:
  stacked = jax.device_get(metrics)
  return {k: np.mean([m[k] for m in stacked]) for k in stacked[0]}


def _log_parameters(state: TrainState) -> None:
  """clu's parameter table (shapes and counts) per model, on process 0."""
  from clu import parameter_overview
  for name, params in state.params.items():
    logging.info("model %s parameters:", name)
    parameter_overview.log_parameter_overview(_flat(params), include_stats=False, jax_logging_process=0)


def _profiler(config, workdir: str):
  """A hook tracing steps [first, first + n) to WORKDIR/profile when `config.profile_steps = (first, n)`."""
  first, n = tuple(config.get("profile_steps", (0, 0)))
  if not n:
    return lambda step: None
  from clu import periodic_actions
  return periodic_actions.Profile(logdir=os.path.join(workdir, "profile"), first_profile=first,
                                  num_profile_steps=n)


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


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Runs every stage of `config` in order (a finished stage is skipped); returns the last eval metrics."""
  metrics = {}
  for name, stage, stage_dir in stage_configs(config, workdir):
    if name:
      logging.info("stage %s -> %s", name, stage_dir)
    metrics = train_and_evaluate(stage, stage_dir)
  return metrics
