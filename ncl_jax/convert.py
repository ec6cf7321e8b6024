"""jfzhang95 DeepLabV3+ (ResNet, OS16) PyTorch weights -> our `NCLNet`; and back.

  python -m ncl_jax.convert --pth=deeplab.pth --out=WORKDIR [--config=configs/ncl.py:paper]
  python -m ncl_jax.convert --to_torch --workdir=RUN [--step=N] --out=FILE.pth|FILE.npz

NCL's released checkpoint is a pickled whole module of a modified DeepLabV3+ whose code is not public
(spec §2.2); what can be mapped exactly is the code base it modifies: `modeling/deeplab.py: DeepLab(backbone=
'resnet', output_stride=16, num_classes=2)`, whose 680 `state_dict` entries (backbone.*, aspp.*, decoder.*;
tests/testdata/golden/deeplab_resnet101_os16_keys.json) all load here. Our pivot branches (`branches.*`) are not
in that code base: they keep their fresh initialisation and are reported as `missing`. Any other missing or
unused key, or a shape mismatch, raises. `num_batches_tracked` counters are dropped (reported as ignored).
Files wrapped as `{"state_dict": ...}` / `{"model": ...}` and keys under DataParallel's `module.` are accepted.

The CLI writes WORKDIR/checkpoints/0 with `common.train.weights.to_workdir` (fine-tuning via
`config.init_from.workdir`, evaluation, export).

`--to_torch` writes the DeepLab part of a run's model (default: its newest checkpoint) as that `DeepLab`'s
state_dict (`to_torch_state_dict`: the inverse of the loading through the same `RENAME`, `num_batches_tracked` 0),
which `DeepLab(...).load_state_dict` takes strictly; the pivot branches, which it has no place for, are left out.
A `.pth` needs the `torch` extra; an `.npz` has the same keys and is read back without torch.
"""
from __future__ import annotations

from collections.abc import Mapping
import re

from absl import flags
import jax
import ml_collections
import numpy as np
from flax import nnx

from common.nn import aspp, resnet, torch_port
from common.train import weights
from ncl_jax import model as model_lib

RENAME = ((r"^module\.", ""),) + (resnet.torch_rename("backbone.") + aspp.aspp_torch_rename("aspp.")
                                  + aspp.decoder_torch_rename("decoder."))
OURS_ONLY = r"^branches\."   # torch-style keys of our modules that no official checkpoint holds


def build_model(config: ml_collections.ConfigDict | None = None, rngs: nnx.Rngs | None = None) -> model_lib.NCLNet:
  """The NCLNet a checkpoint loads into: `config.model`'s shape, else the paper's (ResNet-101, OS16)."""
  if config is not None:
    return model_lib.NCLNet.from_config(config, rngs=rngs or nnx.Rngs(0))
  return model_lib.NCLNet(rngs=rngs or nnx.Rngs(0))


def from_torch_state_dict(state_dict: Mapping[str, np.ndarray], config: ml_collections.ConfigDict | None = None
                          ) -> tuple[model_lib.NCLNet, torch_port.LoadReport]:
  """Our `NCLNet` with the weights of a jfzhang95 DeepLab `state_dict` (numpy arrays, PyTorch layouts).

  Returns (module, report); `report.missing` lists exactly the branch variables (fresh). Raises `ValueError`
  on an unused key, a missing non-branch key, or a shape mismatch.
  """
  build = lambda: build_model(config)
  module = nnx.eval_shape(build)
  report = torch_port.load_torch_state_dict(module, torch_port.unwrap_checkpoint(state_dict), rename=RENAME,
                                            strict=False)
  not_ours = [k for k in report.missing if not re.search(OURS_ONLY, k)]
  if report.unused or not_ours:
    raise ValueError(f"state dict does not match NCLNet's DeepLab part: unused {report.unused[:10]}, "
                     f"missing {not_ours[:10]} ({report})")
  # The branches and the RNG streams from a jitted build: XLA drops the unused (loaded) initialisers.
  fresh = nnx.Any(nnx.PathContains("branches"), nnx.Not(nnx.Any(nnx.Param, nnx.BatchStat)))
  nnx.update(module, jax.jit(lambda: nnx.state(build(), fresh))())
  return module, report


def to_torch_state_dict(module: model_lib.NCLNet) -> dict[str, np.ndarray]:
  """`{key: array}` of jfzhang95's `DeepLab(backbone='resnet')` `state_dict()`, in PyTorch layouts
  (`num_batches_tracked` 0), from everything but our pivot branches: the inverse of `from_torch_state_dict`."""
  return torch_port.to_torch_state_dict(module, rename=RENAME, exclude=OURS_ONLY)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  flags.DEFINE_string("pth", "", "jfzhang95 DeepLab (ResNet) state_dict .pth.", flag_values=flag_values)
  torch_port.define_converter_flags(flag_values, "configs/ncl.py:paper")


def main(argv) -> None:
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if torch_port.to_torch_requested(f, forward=("pth",)):
    torch_port.write_run_models(f.workdir, f.step, {"model": (f.out, to_torch_state_dict)})
    return
  module, report = from_torch_state_dict(torch_port.load_pth(f.pth), f.config)
  print(f"{f.pth}: {report}")
  print(f"wrote step 0 to {weights.to_workdir(module, f.config, f.out)}")


if __name__ == "__main__":
  define_flags()
  from common.train import tool
  tool.run_tool(main)
