"""The training loop every method runs: mesh, sharded state, jit, resume, eval, checkpoints, preemption, logs.

Order (big_vision / MaxText): mesh -> the evaluation split opened (a bad test split fails before training) ->
the run directory taken (`checkpoint.TrainingRun`: lock, resume guard) -> abstract state -> shardings -> restore
(WORKDIR's newest readable checkpoint, else `config.init_from`, else fresh init) -> data iterator (restored to the
checkpointed position) -> loop (step; log every `log_every`; save under the checkpoint policy; evaluate every
`eval_every`, after that step's save) -> final save, final evaluation, `complete.json`.

Every step also folds "is everything finite" into an on-device flag that holds the first non-finite step; the
flag is read at log and save points only (no host sync per step), so no non-finite state is ever saved and the
error names the step where it began. SIGTERM or a preemption notice saves the current step and raises
`Preempted`: the whole run ends there (every stage), and the command exits 0; rerunning it resumes.

Engine fields of a config (every method config has them; see common/train/config.py):
  task ('package.module:Class'), seed, total_steps (or epochs), global_batch_size (or per_device_batch_size),
  lr_scaling, reference_batch_size, grad_accum_steps,
  mesh.{data, fsdp}, partition_rules, fsdp_min_size, optimizer.*, freeze,
  init_from.{workdir, step, include, require_complete}, log_every, eval_every, checkpoint_every,
  keep_checkpoints, best_metric, best_mode, async_checkpoints, profile_steps, eval_split, allow_changes;
  stages (multi-stage runs, see `run`).
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import re
import signal
import threading
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from common.train import checkpoint as ckpt_lib
from common.train import config as config_lib
from common.train import mesh as mesh_lib
from common.train.errors import Preempted
from common.train.task import Task, TrainState


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
      item.add_note("(raised in the input pipeline's thread)")
      raise item  # its own type and message: a DataError names the file
    return item

  def close(self, timeout: float = 120.0):
    """Stops and joins the data thread. A daemon thread still inside XLA when the interpreter exits is killed
    mid-C++ call and aborts the process (exit -6), so a clean exit must wait for it."""
    self._stop.set()
    self._thread.join(timeout)
    if self._thread.is_alive():
      logging.warning("input thread still busy %.0f s after stop; exiting without it", timeout)


class _StopSignal:
  """Records SIGTERM (preemption) while training: the loop saves at the current step and ends the run.

  A context manager: the previous handler is restored when training ends. Multi-process runs leave SIGTERM to
  JAX's preemption service, which every process agrees on through `reached_preemption`.
  """

  def __init__(self):
    self.received = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread() and jax.process_count() == 1:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def _handle(self, signum, frame):
    del frame
    logging.warning("signal %d received: saving a checkpoint and stopping", signum)
    self.received = True


class _InStep:
  """A jitted function that, in a multi-process run, is compiled for its first arguments and then waits for every
  process before it first runs. Processes finish compiling at different times, and a CPU (gloo) communicator,
  formed at an executable's first collective, gives the late ones 30 s. One process: the jitted function."""

  def __new__(cls, jitted, name: str):
    if jax.process_count() == 1:
      return jitted
    self = super().__new__(cls)
    self.jitted, self.name, self.compiled = jitted, name, None
    return self

  _barriers = itertools.count()  # every process compiles the same functions in the same order

  def __call__(self, *args):
    if self.compiled is None:
      self.compiled = self.jitted.lower(*args).compile()
      # The coordination service's barrier (no collective, so no communicator deadline).
      ocp.multihost.get_barrier_sync_fn()(key=f"compiled {self.name} #{next(self._barriers)}",
                                          timeout_ms=3_600_000)
    return self.compiled(*args)


def _abstract_with(abstract, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def load_init_from(state: TrainState, cfg, shardings: TrainState) -> TrainState:
  """Copies params and model state (not optimizer state) from another run's checkpoint, by matching paths.

  The source run must be complete (its `complete.json`; `cfg.require_complete=False` lifts this) and its final
  checkpoint is used unless `cfg.step` names one. `cfg.include` (regex) selects target paths to take (RNG
  stream keys never); every selected path must exist in the source with the same shape, and at least one path
  must be copied: a stage-2 run silently starting from scratch is an error.
  """
  step = None if cfg.get("step", -1) < 0 else cfg.step
  if cfg.get("require_complete", True):
    done = ckpt_lib.require_complete(cfg.workdir, "init_from")
    step = done["step"] if step is None else step
  with ckpt_lib.Run(cfg.workdir) as source:
    step = source.latest_step() if step is None else step
    raw = source.checkpoints.restore_raw(step)
  src = ckpt_lib.flat_keys({"params": raw["params"], "rest": raw["rest"]})
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
  logging.info("init_from %s (step %d): copied %d arrays", cfg.workdir, step, len(copied))
  return state.replace(params=new["params"], rest=new["rest"])


def evaluate(task: Task, eval_step, state: TrainState, batch_sharding, split: str,
             writer=None, step: int = 0, summaries=None, perturbation=None) -> dict[str, float]:
  """Runs `eval_step` over one pass of `split`; returns the computed metrics as floats. With a `writer`, the
  `summaries` (the task's jitted `image_summaries`, e.g. prediction heatmaps) of the first batch are written as
  images. `perturbation`: the evaluation perturbation (`Task.input_pipeline`; default the config's)."""
  total = None
  batches = task.input_pipeline(split, process_index=jax.process_index(), process_count=jax.process_count(),
                                perturbation=perturbation)
  for host_batch in batches:
    batch = mesh_lib.global_batch(host_batch, batch_sharding)
    if writer is not None and summaries is not None and total is None:
      images = summaries(state, batch)
      if images:
        writer.write_images(step, {f"{split}/{k}": np.asarray(v) for k, v in images.items()})
    m = eval_step(state, batch)
    total = m if total is None else total.merge(m)
  if total is None:
    raise ValueError(f"evaluation split {split!r} produced no batch")
  return {k: float(np.asarray(v)) for k, v in total.compute().items()}


def _all_finite(tree) -> jax.Array:
  """Scalar bool: every floating-point leaf of `tree` is finite (one fused reduction per leaf)."""
  leaves = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree)
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.stack(leaves).all() if leaves else jnp.bool_(True)


def _tracking_first_non_finite(train_step):
  """`train_step` that also carries `first_bad`: the first step (1-based) after which the loss, a metric or any
  part of the state was non-finite, or -1. It stays on device; the loop reads it only where it syncs anyway."""
  def step(state: TrainState, batch, first_bad: jax.Array):
    new, metrics = train_step(state, batch)
    ok = _all_finite((metrics, new.params, new.rest, new.opt_state))
    return new, metrics, jnp.where((first_bad < 0) & ~ok, new.step, first_bad)
  return step


def sharded_setup(config: ml_collections.ConfigDict):
  """(task, mesh, batch sharding, abstract state, state shardings) for `config` on this process's devices.

  The mesh comes first: the global batch (`per_device_batch_size`) and the learning-rate factor (`lr_scaling`)
  are resolved for it (`config.resolve_batch`, which also checks that the batch divides over the data-parallel
  devices and the processes) before the task reads them; `task.config` and the run's stored config hold the
  resolved values."""
  mesh = mesh_lib.make_mesh(**config.mesh)
  logging.info("mesh %s over %d devices (%s)", dict(mesh.shape), mesh.size, jax.devices()[0].device_kind)
  resolved = config_lib.resolve_batch(config, dict(mesh.shape), jax.process_count())
  logging.info("%s", config_lib.describe_batch(config, resolved))
  task = config_lib.build_task(resolved)
  abstract = jax.eval_shape(task.init, task.key(config.seed))
  state_sh = mesh_lib.state_shardings(mesh, abstract, [tuple(r) for r in config.partition_rules],
                                      config.fsdp_min_size)
  return task, mesh, mesh_lib.batch_sharding(mesh), abstract, state_sh


@contextlib.contextmanager
def restored_evaluator(config: ml_collections.ConfigDict, workdir: str, step: int | None = None):
  """`with restored_evaluator(config, workdir, step) as (evaluate_split, step): evaluate_split(split,
  perturbation=None) -> metrics`: `workdir`'s checkpoint (default: the newest readable) restored once onto the
  mesh `config.mesh` describes (whatever mesh it was trained on), its `eval_step` jitted once, evaluated on any
  split under any evaluation perturbation (a `ForensicAugment` config; None: the config's `data.perturbation`)."""
  task, mesh, batch_sh, abstract, state_sh = sharded_setup(config)
  with ckpt_lib.Run(workdir) as run_dir, jax.set_mesh(mesh):
    restored, _, step = run_dir.restore(_abstract_with(abstract, state_sh), step)
    eval_step = jax.jit(task.eval_step, in_shardings=(state_sh, batch_sh))
    state = TrainState(**restored)

    def evaluate_split(split: str, perturbation=None) -> dict[str, float]:
      return evaluate(task, eval_step, state, batch_sh, split, perturbation=perturbation)

    yield evaluate_split, step


def evaluate_checkpoint_splits(config: ml_collections.ConfigDict, workdir: str, splits: Sequence[str],
                               step: int | None = None) -> tuple[int, dict[str, dict[str, float]]]:
  """(step evaluated, {split: metrics}): `workdir`'s checkpoint (default: the newest readable), restored once onto
  the mesh `config.mesh` describes (whatever mesh it was trained on), evaluated on each of `splits`."""
  with restored_evaluator(config, workdir, step) as (evaluate_split, step):
    return step, {split: evaluate_split(split) for split in splits}


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str, step: int | None = None,
                        split: str | None = None) -> dict[str, float]:
  """`evaluate_checkpoint_splits` on one split (default: `config.eval_split`): its metrics."""
  split = split or config.eval_split
  return evaluate_checkpoint_splits(config, workdir, [split], step)[1][split]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config.task` in `workdir` (resuming from its checkpoint); returns the final eval metrics.

  Raises `Preempted` after saving when SIGTERM or a preemption notice arrives, `FloatingPointError` naming
  the first non-finite step, `errors.CheckpointError` when a save fails, `RunError` when the run directory
  is held by another process or its stored config differs in a way that forbids resuming.
  """
  from common.train import writers  # imports TensorFlow for clu's writers: only the loop needs it

  task, mesh, batch_sh, abstract, state_sh = sharded_setup(config)
  task.input_pipeline(config.eval_split, process_index=jax.process_index(), process_count=jax.process_count())
  resolved = task.resolved_config()
  repl = mesh_lib.replicated(mesh)
  with ckpt_lib.TrainingRun(workdir, config) as run_dir, _StopSignal() as stop, jax.set_mesh(mesh):
    restored, data_state, start = run_dir.resume(_abstract_with(abstract, state_sh), resolved)
    done = run_dir.completion()
    if done is not None and done["step"] == start == task.total_steps:
      logging.info("%s is complete (step %d): nothing to do", workdir, start)
      return done["eval"]
    if restored is not None:
      state = TrainState(**restored)
      logging.info("resumed from %s at step %d", workdir, start)
    else:
      state = jax.jit(task.init, out_shardings=state_sh)(task.key(config.seed))
      if config.get("init_from") and config.init_from.get("workdir"):
        state = load_init_from(state, config.init_from, state_sh)
    run_dir.clear_complete()
    run_dir.record_start(resolved, start)
    if jax.process_index() == 0:
      writers.truncate_jsonl(os.path.join(workdir, "metrics.jsonl"), start)
    writer = writers.create_writer(workdir)
    _log_parameters(state)

    train_step = _InStep(jax.jit(_tracking_first_non_finite(task.train_step), in_shardings=(state_sh, batch_sh, repl),
                                 out_shardings=(state_sh, repl, repl), donate_argnums=0), "train_step")
    eval_step = _InStep(jax.jit(task.eval_step, in_shardings=(state_sh, batch_sh)), "eval_step")
    # Jitted: run eagerly, a generator's forward pass compiles op by op (SafePaint's smoke run: 35 s of 106).
    summaries = _InStep(jax.jit(task.image_summaries, in_shardings=(state_sh, batch_sh)), "image_summaries")

    def run_eval(step: int) -> dict[str, float]:
      metrics = evaluate(task, eval_step, state, batch_sh, config.eval_split, writer, step, summaries)
      writer.write_scalars(step, {f"eval/{k}": v for k, v in metrics.items()})
      writer.flush()
      run_dir.record_eval(step, {f"eval/{k}": v for k, v in metrics.items()})
      return metrics

    if start >= task.total_steps:  # trained to the end, stopped before its evaluation finished
      metrics = run_eval(start)
      run_dir.mark_complete(start, metrics)
      return metrics

    iterator = iter(task.input_pipeline("train", process_index=jax.process_index(),
                                        process_count=jax.process_count()))
    if data_state is not None:
      iterator.set_state(data_state)
    batches = Prefetcher(iterator, batch_sh)
    progress = writers.report_progress(task.total_steps, writer, config.log_every)
    profile = _profiler(config, workdir)
    first_bad = jax.device_put(jnp.int32(-1), repl)
    pending: list[dict[str, jax.Array]] = []
    eval_metrics: dict[str, float] = {}
    step = last_saved = start
    try:
      while step < task.total_steps:
        with progress.timed("data", wait_jax_async_dispatch=False):
          batch, data_state = next(batches)
        state, metrics, first_bad = train_step(state, batch, first_bad)
        step += 1
        pending.append(metrics)
        if config.get("block_every_step", False):
          jax.block_until_ready(state)
        profile(step)
        progress(step)
        is_last = step == task.total_steps
        preempted = stop.received or run_dir.checkpoints.reached_preemption(step)
        want_save = run_dir.checkpoints.manager.should_save(step) or preempted or is_last
        if step % config.log_every == 0 or want_save:
          _raise_if_non_finite(int(first_bad), step, last_saved, workdir)
          scalars = {f"train/{k}": float(v) for k, v in _mean(pending).items()}
          pending.clear()
          if step % config.log_every == 0 or is_last:
            writer.write_scalars(step, scalars)
        if want_save and run_dir.save(step, state, data_state, resolved, force=preempted or is_last):
          last_saved = step
        if preempted:
          logging.warning("stopped at step %d after saving it (preemption)", step)
          raise Preempted(workdir, step)
        if (config.eval_every and step % config.eval_every == 0) or is_last:
          with progress.timed("eval"):
            eval_metrics = run_eval(step)
      run_dir.mark_complete(step, eval_metrics)
    finally:
      batches.close()
      writer.flush()
  return eval_metrics


def _raise_if_non_finite(first_bad: int, step: int, last_saved: int, workdir: str) -> None:
  if first_bad >= 0:
    raise FloatingPointError(
        f"{workdir}: non-finite loss, metrics or state from step {first_bad} on (noticed at step {step}); "
        f"nothing after step {last_saved} was saved. Lower the learning rate or check the data of step {first_bad}, "
        "then rerun to resume from that checkpoint")


def _mean(metrics: list[dict[str, jax.Array]]) -> dict[str, np.ndarray]:
  stacked = jax.device_get(metrics)
  return {k: np.mean([m[k] for m in stacked]) for k in stacked[0]}


def _log_parameters(state: TrainState) -> None:
  """clu's parameter table (shapes and counts) per model, on process 0."""
  from clu import parameter_overview
  for name, params in state.params.items():
    logging.info("model %s parameters:", name)
    parameter_overview.log_parameter_overview(ckpt_lib.flat_keys(params), include_stats=False, jax_logging_process=0)


def _profiler(config, workdir: str):
  """A hook tracing steps [first, first + n) to WORKDIR/profile when `config.profile_steps = (first, n)`."""
  first, n = tuple(config.get("profile_steps", (0, 0)))
  if not n:
    return lambda step: None
  from clu import periodic_actions
  return periodic_actions.Profile(logdir=os.path.join(workdir, "profile"), first_profile=first,
                                  num_profile_steps=n)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Runs every stage of `config` in order (a complete stage is skipped); returns the last eval metrics.

  A stage starts only once the stage before it is complete; `Preempted` from any stage ends the whole run.
  """
  metrics = {}
  for name, stage, stage_dir in config_lib.stage_configs(config, workdir):
    if name:
      logging.info("stage %s -> %s", name, stage_dir)
    metrics = train_and_evaluate(stage, stage_dir)
  return metrics
