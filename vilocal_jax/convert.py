"""Official ViLocal PyTorch checkpoints -> our NNX `ViLocal`, and -> a step-0 run directory for the engine; and back.

  python -m vilocal_jax.convert --pth=train_VI_OP.pth --out=WORKDIR [--config=configs/vilocal.py:paper]
  python -m vilocal_jax.convert --to_torch --workdir=RUN [--step=N] --out=FILE.pth|FILE.npz

The released `train_VI_OP.pth` is a plain `state_dict` of `train_stage2/model.py: ViLocal()` (709 entries:
`encoder.Res_*` and `decoder.classifier.{0,1,3}.*`). Files wrapped as `{"state_dict": ...}` / `{"model": ...}`
and keys carrying DataParallel's `module.` prefix are accepted too. Layouts are converted by
`common.nn.torch_port` (Conv3d/Conv2d OI[spatial] -> [spatial]IO, Linear [out, in] -> [in, out]); BatchNorm
`num_batches_tracked` counters are dropped and reported as ignored. Loading is strict: every module variable
must be filled and every key used, and a shape mismatch raises, naming the key.

The written WORKDIR holds `checkpoints/0` of the final stage's run (`common.train.weights.to_workdir`), which the
engine reads as `config.init_from.workdir`, `loop.evaluate_checkpoint` evaluates and `common.train.export` exports
for `vilocal_jax.predict`.

`--to_torch` writes the model of a run (default: its newest checkpoint) under the official keys and layouts
(`to_torch_state_dict`, the inverse of `from_torch_state_dict` through the same `RENAME`): `ViLocal().load_state_dict`
takes the `.pth` (needs the `torch` extra) strictly; an `.npz` has the same keys and is read back without torch.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from absl import flags
import ml_collections
import numpy as np
from flax import nnx

from common.nn import torch_port
from common.train import weights
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


def to_torch_state_dict(module: model_lib.ViLocal) -> dict[str, np.ndarray]:
  """`{key: array}` as the official `ViLocal().state_dict()` names them, in PyTorch layouts (`num_batches_tracked`
  0): the inverse of `from_torch_state_dict`."""
  return torch_port.to_torch_state_dict(module, rename=RENAME)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  flags.DEFINE_string("pth", "", "Official ViLocal checkpoint (e.g. train_VI_OP.pth).", flag_values=flag_values)
  torch_port.define_converter_flags(flag_values, "configs/vilocal.py:paper")


def main(argv) -> None:
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if torch_port.to_torch_requested(f, forward=("pth",)):
    torch_port.write_run_models(f.workdir, f.step, {"model": (f.out, to_torch_state_dict)})
    return
  config = f.config
  module, report = from_torch_state_dict(torch_port.load_pth(f.pth), config)
  print(f"{f.pth}: {report}")
  directory = weights.to_workdir(module, config, f.out)
  print(f"wrote step 0 to {directory}")


if __name__ == "__main__":
  define_flags()
  from common.train import tool
  tool.run_tool(main)
