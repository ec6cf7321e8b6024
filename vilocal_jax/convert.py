"""Official ViLocal PyTorch checkpoints -> our NNX `ViLocal`, and -> a step-0 run directory for the engine.

  python -m vilocal_jax.convert --pth=train_VI_OP.pth --out=WORKDIR [--config=configs/vilocal.py:paper]

The released `train_VI_OP.pth` is a plain `state_dict` of `train_stage2/model.py: ViLocal()` (709 entries:
`encoder.Res_*` and `decoder.classifier.{0,1,3}.*`). Files wrapped as `{"state_dict": ...}` / `{"model": ...}`
and keys carrying DataParallel's `module.` prefix are accepted too. Layouts are converted by
`common.nn.torch_port` (Conv3d/Conv2d OI[spatial] -> [spatial]IO, Linear [out, in] -> [in, out]); BatchNorm
`num_batches_tracked` counters are dropped and reported as ignored. Loading is strict: every module variable
must be filled and every key used, and a shape mismatch raises, naming the key.

The written WORKDIR holds `checkpoints/0` (the task's train state with the converted weights), which the engine
reads as `config.init_from.workdir` (e.g. fine-tuning the decoder), `loop.evaluate_checkpoint` evaluates as is,
and `common.train.export` exports for `vilocal_jax.predict`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import os

import jax
import ml_collections
import numpy as np
from flax import nnx

from common.nn import torch_port
from vilocal_jax import model as model_lib

FULL_DEPTH = (5, 8, 20, 7)

# PyTorch key -> our torch-style key (regex substitutions, in order).
RENAME = (
    (r"^module\.", ""),                              # DataParallel / DDP wrapping
    (r"^encoder\.Res_", "encoder."),                 # `Res_blocks1.0...` -> `blocks1.0...`
    (r"^decoder\.classifier\.0\.", "decoder.conv1."),
    (r"^decoder\.classifier\.1\.", "decoder.bn."),
    (r"^decoder\.classifier\.3\.", "decoder.conv2."),
)

# Dict keys under which training scripts commonly nest the weights (e.g. `latest.pth`).
_WRAPPER_KEYS = ("state_dict", "model")


def unwrap_checkpoint(checkpoint: Mapping) -> Mapping:
  """The `state_dict` inside a loaded `.pth`: the mapping itself, or its `state_dict` / `model` entry."""
  for key in _WRAPPER_KEYS:
    inner = checkpoint.get(key)
    if isinstance(inner, Mapping):
      return inner
  return checkpoint


def model_depth(config: ml_collections.ConfigDict | None = None,
                depth: Sequence[int] | None = None) -> tuple[int, ...]:
  """Blocks per encoder stage: `config.model.depth` if a config is given, else `depth`, else the full model's."""
  if config is not None:
    if depth is not None:
      raise ValueError("pass either a config or a depth, not both")
    return tuple(config.model.depth)
  return tuple(FULL_DEPTH if depth is None else depth)


def build_model(depth: Sequence[int] = FULL_DEPTH) -> model_lib.ViLocal:
  """The ViLocal module that an official checkpoint of this depth loads into (fresh weights)."""
  return model_lib.ViLocal(encoder=model_lib.encoder_kwargs(depth=tuple(depth)), rngs=nnx.Rngs(0))


def from_torch_state_dict(state_dict: Mapping[str, np.ndarray],
                          config: ml_collections.ConfigDict | None = None,
                          *, depth: Sequence[int] | None = None
                          ) -> tuple[model_lib.ViLocal, torch_port.LoadReport]:
  """Builds our `ViLocal` with the weights of an official `state_dict` (numpy arrays, PyTorch layouts).

  Args:
    state_dict: `{key: array}` as `ViLocal().state_dict()` names them (optionally under `module.`).
    config: a ViLocal config; its `model.depth` sets the encoder depth.
    depth: blocks per encoder stage when no config is given (default: the released model's (5, 8, 20, 7)).

  Returns:
    (module, report): the module holds every Param and BatchNorm statistic of `state_dict`; the report lists
    loaded and ignored (`num_batches_tracked`) keys. Raises `ValueError` on any missing, unused or
    wrong-shape key.
  """
  stages = model_depth(config, depth)
  return torch_port.init_from_torch(lambda: build_model(stages), state_dict, rename=RENAME)


def _shapes(state: nnx.State) -> dict[str, tuple[int, ...]]:
  leaves = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(state))[0]
  return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in leaves}


def to_workdir(module: model_lib.ViLocal, config: ml_collections.ConfigDict, workdir: str) -> str:
  """Writes `module`'s weights as step 0 of a run of `config`'s task in `workdir`; returns the checkpoint dir.

  The state is the task's fresh `init` (its RNG streams, seeded by `config.seed`) with `params["model"]` and
  the BatchNorm statistics in `rest["model"]` replaced by the module's, and the optimizer state re-initialised
  over the converted parameters. Raises if the module's variables differ from the task model's (e.g. another
  depth) or if `workdir` already holds checkpoints.
  """
  from common.train import checkpoint as ckpt_lib
  from common.train import loop

  task = loop.build_task(config)
  state = jax.jit(task.init)(jax.random.key(config.seed))
  _, params, batch_stats, _ = nnx.split(module, nnx.Param, nnx.BatchStat, ...)
  task_stats, task_other = nnx.split_state(state.rest["model"], nnx.BatchStat, ...)
  for kind, ours, theirs in (("parameters", params, state.params["model"]),
                             ("BatchNorm statistics", batch_stats, task_stats)):
    if _shapes(ours) != _shapes(theirs):
      diff = sorted(set(_shapes(ours).items()) ^ set(_shapes(theirs).items()))
      raise ValueError(f"the converted model's {kind} do not match the model of task {config.task} "
                       f"(check config.model): differing (path, shape) entries {diff[:10]}")
  params_all = dict(state.params, model=params)
  rest_all = dict(state.rest, model=nnx.merge_state(task_other, batch_stats))
  opt_state = dict(state.opt_state)
  if "model" in task.optimizers:
    opt_state["model"] = task.optimizers["model"].init(task.split_trainable("model", params)[0])
  state = state.replace(params=params_all, rest=rest_all, opt_state=opt_state)

  directory = os.path.join(workdir, "checkpoints")
  ckpt = ckpt_lib.Checkpointer(directory, async_save=False)
  try:
    if ckpt.latest_step() is not None:
      raise FileExistsError(f"{directory} already holds checkpoints (step {ckpt.latest_step()}); "
                            "convert into an empty workdir")
    ckpt.save(0, state, None, config, force=True)
  finally:
    ckpt.close()
  return directory


def load_pth(path: str) -> dict[str, np.ndarray]:
  """The `state_dict` of an official `.pth` file as numpy arrays (needs the `torch` extra)."""
  import torch  # optional dependency: only this CLI path needs it

  checkpoint = torch.load(path, map_location="cpu", weights_only=True)
  if not isinstance(checkpoint, Mapping):
    raise ValueError(f"{path}: expected a state_dict (a mapping), got {type(checkpoint).__name__}")
  state_dict = unwrap_checkpoint(checkpoint)
  bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
  if bad:
    raise ValueError(f"{path}: entries that are not tensors (not a state_dict?): {bad[:10]}")
  return {k: v.detach().cpu().numpy() for k, v in state_dict.items()}


def main(argv) -> None:
  from absl import flags
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  config = f.config
  module, report = from_torch_state_dict(load_pth(f.pth), config)
  print(f"{f.pth}: {report}")
  print(f"  ignored: {report.ignored}")
  directory = to_workdir(module, config, f.out)
  print(f"wrote step 0 to {directory}")


if __name__ == "__main__":
  from absl import app, flags
  from ml_collections import config_flags

  flags.DEFINE_string("pth", None, "Official ViLocal checkpoint (e.g. train_VI_OP.pth).", required=True)
  flags.DEFINE_string("out", None, "Run directory to write (checkpoints/0).", required=True)
  config_flags.DEFINE_config_file("config", "configs/vilocal.py:paper", "Config of the run the weights start.",
                                  lock_config=True)
  app.run(main)
