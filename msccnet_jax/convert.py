"""Official MSCCNet PyTorch state_dicts -> our NNX `MSCCNet`, and -> a step-0 run directory for the engine; and back.

  python -m msccnet_jax.convert --pth=epoch_best.pth --out=WORKDIR [--config=configs/msccnet.py:paper]
  python -m msccnet_jax.convert --backbone_pth=resnet50_v1c-2cccc1ad.pth --out=WORKDIR   (ImageNet init)
  python -m msccnet_jax.convert --to_torch --workdir=RUN [--step=N] --out=FILE.pth|FILE.npz

The official checkpoints (`main/train_segmentor.py`) store `segmentor.module.state_dict()` under `'model'` (383
entries for the released config: `backbone_net.*`, `classifer.fc.*`, `bottleneck{1,2,3}.*`,
`bottleneck_fusion.*`, `mscc.*`, `decoder.*`); a plain state_dict and DataParallel's `module.` prefix work too.
Every key is accounted for:
  * Params and BatchNorm statistics are loaded through `common.nn.torch_port` with `RENAME` (Sequential
    indices -> our attribute names; layouts OIHW -> HWIO, Linear [out, in] -> [in, out]), strictly: every
    module variable filled exactly once, every key used, shapes checked;
  * `num_batches_tracked` counters are dropped (they play no part in the forward pass);
  * `mscc.frequency.weight`, the fixed DCT buffer, is not a variable here (the basis is recomputed from the
    feature size): it is checked against `spectral.dct_basis` and the conversion fails if it differs (a
    checkpoint of the commented-out learnable/random variants of the official layer would).

The ImageNet backbone (`--backbone_pth`, openmmlab's ResNetV1c keys `stem.*`, `layerK.*`, plus an unused
`fc.*`) fills `backbone_net` only and keeps the head's fresh initialisation, as the official `strict=False`
load does. `common.train.weights.to_workdir` writes either as step 0 of a run (the official weights: evaluate or
export it; the ImageNet backbone: what `config.init_from.workdir` starts a paper run from).

`--to_torch` writes the model of a run (default: its newest checkpoint) as the official segmentor's state_dict
(`to_torch_state_dict`: the inverse of the loading above through the same `RENAME`, the DCT buffer regenerated
at the official 64x64 unless the model fixes another size, `num_batches_tracked` 0): a `.pth` (needs the `torch`
extra; the official scripts read it as `checkpoint['model']` of a dict, `load_state_dict` as is) or an `.npz` of
the same keys, read back without torch.
"""
from __future__ import annotations

from collections.abc import Mapping
import re

from absl import flags
import ml_collections
import numpy as np
from flax import nnx

from common.nn import resnet, spectral, torch_port
from common.train import weights
from msccnet_jax import model as model_lib

FREQUENCY_KEY = r"(^|\.)frequency\.weight$"
OFFICIAL_SPECTRAL_SIZE = (64, 64)  # the official buffer's (spectral_height, spectral_width)
BUFFER_TOLERANCE = 1e-6


def _sequential(module_regex: str, names: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
  return tuple((rf"^({module_regex})\.{index}\.", rf"\1.{name}.") for index, name in names.items())


# PyTorch key -> our torch-style key (regex substitutions in order). The MSCC rules also match the keys of an
# MSCC module alone (prefix `mscc.` stripped).
RENAME = (
    ((r"^module\.", ""),)
    + resnet.torch_rename("backbone_net.")
    + _sequential(r"bottleneck[123]|bottleneck_fusion|(?:mscc\.)?bottleneck", {"0": "conv", "1": "bn"})
    + _sequential(r"(?:mscc\.)?decoder_map|decoder", {"0": "conv1", "1": "bn", "4": "conv2"})
)

def _full_model(config: ml_collections.ConfigDict) -> None:
  """Raises unless `config.model` is the full model (official checkpoints have MFA and MSCC weights)."""
  if not (config.model.get("mfa", True) and config.model.get("mscc", True)):
    raise ValueError("config.model.mfa / mscc is False (an ablation), but official MSCCNet checkpoints are of the "
                     "full model")


def check_dct_buffer(key: str, value: np.ndarray, dct_k: int = spectral.OFFICIAL_DCT_K) -> None:
  """Raises unless the PyTorch buffer [C, H, W] equals our DCT basis of that size."""
  value = np.asarray(value)
  if value.ndim != 3:
    raise ValueError(f"{key}: expected the DCT buffer [C, H, W], got shape {value.shape}")
  c, h, w = value.shape
  expected = spectral.dct_basis(h, w, c, dct_k).transpose(2, 0, 1)
  error = float(np.abs(value - expected).max())
  if error > BUFFER_TOLERANCE:
    raise ValueError(f"{key}: the checkpoint's DCT buffer differs from the fixed DCT basis by up to {error:.3g} "
                     "(a learnable or random variant of the official layer?); it cannot be converted")


def _drop_checked_buffers(state_dict: Mapping[str, np.ndarray]) -> tuple[dict, list[str]]:
  buffers = sorted(k for k in state_dict if re.search(FREQUENCY_KEY, k))
  for key in buffers:
    check_dct_buffer(key, state_dict[key])
  return {k: v for k, v in state_dict.items() if k not in buffers}, buffers


def load_into(module: nnx.Module, state_dict: Mapping[str, np.ndarray]) -> torch_port.LoadReport:
  """Strictly fills `module` (an `MSCCNet`, or an `MSCC` from `mscc.*` keys with the prefix stripped) in place.
  The checked DCT buffers are reported as ignored, next to `num_batches_tracked`."""
  rest, buffers = _drop_checked_buffers(state_dict)
  report = torch_port.load_torch_state_dict(module, rest, rename=RENAME, strict=True)
  report.ignored = sorted(report.ignored + buffers)
  return report


def build_model(config: ml_collections.ConfigDict | None = None, **kwargs) -> model_lib.MSCCNet:
  """The (fresh) module a checkpoint loads into: `MSCCNet.from_config(config)`, or `MSCCNet(**kwargs)` (default:
  the released model)."""
  if config is not None:
    if kwargs:
      raise ValueError("pass either a config or model kwargs, not both")
    return model_lib.MSCCNet.from_config(config, rngs=nnx.Rngs(0))
  return model_lib.MSCCNet(**kwargs, rngs=nnx.Rngs(0))


def from_torch_state_dict(state_dict: Mapping[str, np.ndarray], config: ml_collections.ConfigDict | None = None,
                          **kwargs) -> tuple[model_lib.MSCCNet, torch_port.LoadReport]:
  """Our `MSCCNet` holding the weights of an official state_dict (numpy, PyTorch layouts).

  The model's shape comes from `config.model` (default: the released model) or from `MSCCNet` kwargs. Raises
  ValueError on a missing, unused or wrong-shape key, or a DCT buffer that is not the fixed basis.
  """
  if config is not None and kwargs:
    raise ValueError("pass either a config or model kwargs, not both")
  if config is not None:
    _full_model(config)
  rest, buffers = _drop_checked_buffers(torch_port.unwrap_checkpoint(state_dict))
  module, report = torch_port.init_from_torch(lambda: build_model(config, **kwargs), rest, rename=RENAME)
  report.ignored = sorted(report.ignored + buffers)
  return module, report


def load_backbone(module: model_lib.MSCCNet, state_dict: Mapping[str, np.ndarray]) -> torch_port.LoadReport:
  """Fills `module.backbone_net` from an ImageNet ResNetV1c state_dict (keys `stem.*`, `layerK.*`; `fc.*` is
  ignored, as the official strict=False load does). Every backbone variable must be filled."""
  report = torch_port.load_torch_state_dict(
      module.backbone_net, torch_port.unwrap_checkpoint(state_dict), rename=resnet.torch_rename(),
      ignore=torch_port.DEFAULT_IGNORE + (r"^fc\.",), strict=True)
  return report


def dct_buffer(mscc: model_lib.MSCC) -> np.ndarray:
  """The official fixed DCT buffer [C, H, W] (float32) of `mscc`: at its fixed `spectral_size`, else at the
  official 64x64."""
  h, w = mscc.frequency.size or OFFICIAL_SPECTRAL_SIZE
  channels = mscc.bottleneck.conv.kernel.shape[-2] // 2  # the bottleneck reads concat(X, context): 2 C
  return spectral.dct_basis(h, w, channels, mscc.frequency.dct_k).transpose(2, 0, 1)


def to_torch_state_dict(module: nnx.Module) -> dict[str, np.ndarray]:
  """`{key: array}` as the official segmentor's `state_dict()` names them (an `MSCCNet`, or an `MSCC` as `load_into`
  takes it), in PyTorch layouts, with the DCT buffer and `num_batches_tracked` (0): the inverse of `load_into`."""
  buffers = {f"{prefix}frequency.weight": dct_buffer(mscc)
             for prefix, mscc in torch_port.submodules(module, model_lib.MSCC).items()}
  return torch_port.to_torch_state_dict(module, rename=RENAME, buffers=buffers)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  flags.DEFINE_string("pth", "", "Official MSCCNet checkpoint (e.g. epoch_best.pth).", flag_values=flag_values)
  flags.DEFINE_string("backbone_pth", "", "ImageNet ResNetV1c checkpoint (resnet50_v1c-2cccc1ad.pth).",
                      flag_values=flag_values)
  torch_port.define_converter_flags(flag_values, "configs/msccnet.py:paper")


def main(argv) -> None:
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if torch_port.to_torch_requested(f, forward=("pth", "backbone_pth")):
    torch_port.write_run_models(f.workdir, f.step, {"model": (f.out, to_torch_state_dict)})
    return
  if bool(f.pth) == bool(f.backbone_pth):
    raise ValueError("give exactly one of --pth (a full MSCCNet) and --backbone_pth (ImageNet ResNetV1c)")
  config = f.config
  if f.pth:
    module, report = from_torch_state_dict(torch_port.load_pth(f.pth), config)
  else:
    module = build_model(config)  # an ablated model's backbone is the same ResNet: any config may start from it
    report = load_backbone(module, torch_port.load_pth(f.backbone_pth))
  print(f"{f.pth or f.backbone_pth}: {report}")
  print(f"wrote step 0 to {weights.to_workdir(module, config, f.out)}")


if __name__ == "__main__":
  define_flags()
  from common.train import tool
  tool.run_tool(main)
