"""Imported weights -> a run directory: converted (e.g. official PyTorch) weights saved as step 0 of a run.

The written `WORKDIR/checkpoints/0` holds the task's train state with the module's weights, and `complete.json`
marks the run finished: the engine reads it as `config.init_from.workdir` (fine-tuning), `loop.evaluate_checkpoint`
evaluates it as is, and `common.train.export` exports it.
"""
from __future__ import annotations

import os

import jax
import ml_collections
from flax import nnx


def final_stage_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config under which converted weights are saved: the run that produced a released checkpoint.

  That is the last of `config.run_stages` (the full model of a two-stage method), not initialised from
  anything, recorded as finished (no steps left, no per-epoch schedule), so that building its task to
  evaluate or export it never has to count the training set's epochs.
  """
  from common.train import config as config_lib

  _, stage, _ = config_lib.stage_configs(config, "")[-1]
  stage = ml_collections.ConfigDict(stage.to_dict())
  stage.init_from.workdir = ""
  stage.epochs = 0
  stage.total_steps = 0
  stage.optimizer.per_epoch = False
  stage.optimizer.decay_epochs = 0
  return stage


def _shapes(state: nnx.State) -> dict[str, tuple[int, ...]]:
  leaves = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(state))[0]
  return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in leaves}


def to_workdir(module: nnx.Module, config: ml_collections.ConfigDict, workdir: str, model_name: str = "model") -> str:
  """Writes `module`'s weights as step 0 of a run in `workdir`; returns the checkpoint directory.

  The run is `final_stage_config(config)`. The state is that task's fresh `init` (its RNG streams, seeded by
  `config.seed`) with `params[model_name]` and the BatchNorm statistics in `rest[model_name]` replaced by the
  module's, and the model's optimizer state re-initialised over the converted parameters. Raises if the
  module's variables differ from the task model's (e.g. another depth) or if `workdir` already holds
  checkpoints.
  """
  from common.train import checkpoint as ckpt_lib
  from common.train import config as config_lib

  config = final_stage_config(config)
  task = config_lib.build_task(config)
  _, params, batch_stats, _ = nnx.split(module, nnx.Param, nnx.BatchStat, ...)

  def converted_state(params, batch_stats, rng):
    state = task.init(rng)  # under jit, XLA drops the replaced initialisers
    task_stats, task_other = nnx.split_state(state.rest[model_name], nnx.BatchStat, ...)
    for kind, ours, theirs in (("parameters", params, state.params[model_name]),
                               ("BatchNorm statistics", batch_stats, task_stats)):
      if _shapes(ours) != _shapes(theirs):
        diff = sorted(set(_shapes(ours).items()) ^ set(_shapes(theirs).items()))
        raise ValueError(f"the converted model's {kind} do not match the model of task {config.task} "
                         f"(check config.model): differing (path, shape) entries {diff[:10]}")
    opt_state = dict(state.opt_state)
    if model_name in task.optimizers:
      opt_state[model_name] = task.optimizers[model_name].init(task.split_trainable(model_name, params)[0])
    return state.replace(params={**state.params, model_name: params},
                         rest={**state.rest, model_name: nnx.merge_state(task_other, batch_stats)},
                         opt_state=opt_state)

  state = jax.jit(converted_state)(params, batch_stats, task.key(config.seed))
  directory = os.path.join(workdir, "checkpoints")
  ckpt = ckpt_lib.Checkpointer(directory, async_save=False)
  try:
    if ckpt.latest_step() is not None:
      raise FileExistsError(f"{directory} already holds checkpoints (step {ckpt.latest_step()}); "
                            "convert into an empty workdir")
    ckpt.save(0, state, None, config, force=True)
  finally:
    ckpt.close()
  ckpt_lib.write_completion(workdir, 0, {})  # a finished run: stage 2 and fine-tuning may start from it
  return directory
