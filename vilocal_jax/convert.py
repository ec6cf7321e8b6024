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


def encoder_kwargs(config: ml_collections.ConfigDict | None = None,
                   depth: Sequence[int] | None = None) -> dict:
  """Encoder kwargs of the model a checkpoint loads into: `config.model`'s depth and widths if a config is
  given, else `depth` (default: the released model's) with the official widths. Always with the HP3D layer:
  it has no weights, so a checkpoint would load into a model without it and silently compute something else."""
  if config is None:
    return model_lib.encoder_kwargs(depth=tuple(FULL_DEPTH if depth is None else depth))
  if depth is not None:
    raise ValueError("pass either a config or a depth, not both")
  m = config.model
  if not m.get("noise_layer", True):
    raise ValueError("config.model.noise_layer is False, but official ViLocal checkpoints are of the model "
                     "with the HP3D noise layer")
  return model_lib.encoder_kwargs(depth=tuple(m.depth), widths=tuple(m.get("widths", (32, 64, 128, 256))))


def build_model(encoder: dict | None = None) -> model_lib.ViLocal:
  """The ViLocal module that a checkpoint loads into (fresh weights); default: the released model's shape."""
  return model_lib.ViLocal(encoder=encoder or encoder_kwargs(), rngs=nnx.Rngs(0))


def from_torch_state_dict(state_dict: Mapping[str, np.ndarray],
                          config: ml_collections.ConfigDict | None = None,
                          *, depth: Sequence[int] | None = None
                          ) -> tuple[model_lib.ViLocal, torch_port.LoadReport]:
  """Builds our `ViLocal` with the weights of an official `state_dict` (numpy arrays, PyTorch layouts).

  Args:
    state_dict: `{key: array}` as `ViLocal().state_dict()` names them (optionally under `module.`).
    config: a ViLocal config; its `model.depth` and `model.widths` shape the model.
    depth: blocks per encoder stage when no config is given (default: the released model's (5, 8, 20, 7)).

  Returns:
    (module, report): the module holds every Param and BatchNorm statistic of `state_dict`; the report lists
    loaded and ignored (`num_batches_tracked`) keys. Raises `ValueError` on any missing, unused or
    wrong-shape key.
  """
  encoder = encoder_kwargs(config, depth)
  return torch_port.init_from_torch(lambda: build_model(encoder), state_dict, rename=RENAME)


def final_stage_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config under which converted weights are saved: the run that produced a released checkpoint.

  That is the last of `config.run_stages` (for ViLocal, stage 2: the full model), not initialised from
  anything, recorded as finished (no steps left, no per-epoch schedule), so that building its task to
  evaluate or export it never has to count the training set's epochs.
  """
  from common.train import loop

  _, stage, _ = loop.stage_configs(config, "")[-1]
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


def to_workdir(module: model_lib.ViLocal, config: ml_collections.ConfigDict, workdir: str) -> str:
  """Writes `module`'s weights as step 0 of a run in `workdir`; returns the checkpoint directory.

  The run is `final_stage_config(config)` (for the ViLocal configs: stage 2, the stage whose result the
  official checkpoints are), so that the saved config evaluates and exports the full model. The state is
  that task's fresh `init` (its RNG streams, seeded by `config.seed`) with `params["model"]` and the
  BatchNorm statistics in `rest["model"]` replaced by the module's, and the optimizer state re-initialised
  over the converted parameters. Raises if the module's variables differ from the task model's (e.g. another
  depth) or if `workdir` already holds checkpoints.
  """
  from common.train import checkpoint as ckpt_lib
  from common.train import loop

  config = final_stage_config(config)
  task = loop.build_task(config)
  _, params, batch_stats, _ = nnx.split(module, nnx.Param, nnx.BatchStat, ...)

  def converted_state(params, batch_stats, rng):
    state = task.init(rng)  # under jit, XLA drops the replaced initialisers
    task_stats, task_other = nnx.split_state(state.rest["model"], nnx.BatchStat, ...)
    for kind, ours, theirs in (("parameters", params, state.params["model"]),
                               ("BatchNorm statistics", batch_stats, task_stats)):
      if _shapes(ours) != _shapes(theirs):
        diff = sorted(set(_shapes(ours).items()) ^ set(_shapes(theirs).items()))
        raise ValueError(f"the converted model's {kind} do not match the model of task {config.task} "
                         f"(check config.model): differing (path, shape) entries {diff[:10]}")
    opt_state = dict(state.opt_state)
    if "model" in task.optimizers:
      opt_state["model"] = task.optimizers["model"].init(task.split_trainable("model", params)[0])
    return state.replace(params=dict(state.params, model=params),
                         rest=dict(state.rest, model=nnx.merge_state(task_other, batch_stats)),
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
  return directory


def load_pth(path: str) -> dict[str, np.ndarray]:
  """The `state_dict` of an official `.pth` file as numpy arrays (needs the `torch` extra)."""
  try:
    import torch  # optional dependency: only this CLI path needs it
  except ImportError as e:
    raise ImportError("reading a .pth needs PyTorch: pip install -e '.[torch]'") from e

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
