"""torchvision AlexNet's convolutional trunk (`features`) in NNX, channels-last, as a frozen feature extractor.

The attribute `features` is an `nnx.Dict` keyed by torchvision's `features` indices ("0", "3", "6", "8", "10"), so
a torchvision `alexnet()` `state_dict` loads with `from_torch_state_dict` as is (`classifier.*` is ignored).
torchvision's `features`:

  0 Conv(3, 64, 11, stride 4, pad 2)  1 ReLU -> relu1   2 MaxPool(3, 2)
  3 Conv(64, 192, 5, pad 2)           4 ReLU -> relu2   5 MaxPool(3, 2)
  6 Conv(192, 384, 3, pad 1)          7 ReLU -> relu3
  8 Conv(384, 256, 3, pad 1)          9 ReLU -> relu4
 10 Conv(256, 256, 3, pad 1)         11 ReLU -> relu5  12 MaxPool(3, 2)

The taps relu1..relu5 are LPIPS's (`lpips.pretrained_networks.alexnet`: slices [0:2], [2:5], [5:8], [8:10],
[10:12]). Max pools are unpadded with floor rounding, as PyTorch's. No input normalisation is applied. Nothing is
ever downloaded: ImageNet weights come from a user-supplied file.

  python -m common.nn.alexnet --pth=alexnet-owt-7be5be79.pth --out=alexnet.npz   (needs the torch extra)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import numpy as np
from flax import nnx

from common.nn import torch_port
from common.nn.layers import torch_conv

IGNORE = torch_port.DEFAULT_IGNORE + (r"^classifier\.",)
# (torchvision index, in, out, kernel, stride, padding, ReLU name, max pool after the ReLU)
PLAN = (("0", 3, 64, 11, 4, 2, "relu1", False),
        ("3", 64, 192, 5, 1, 2, "relu2", True),
        ("6", 192, 384, 3, 1, 1, "relu3", True),
        ("8", 384, 256, 3, 1, 1, "relu4", False),
        ("10", 256, 256, 3, 1, 1, "relu5", False))
LAYERS = tuple(p[6] for p in PLAN)
CHANNELS = tuple(p[2] for p in PLAN)


class AlexNet(nnx.Module):
  """AlexNet `features` trunk: [B, H, W, 3] -> {relu name: [B, h, w, C]} for the requested ReLU outputs.

  `pool` of a plan row means a 3x3 stride-2 max pool *before* its conv (torchvision indices 2 and 5); the final
  pool (index 12) follows relu5, which no tap uses, so it is not applied.
  """

  def __init__(self, *, dtype=None, rngs: nnx.Rngs):
    self.features = nnx.Dict({index: torch_conv(cin, cout, (k, k), stride=s, padding=p, dtype=dtype, rngs=rngs)
                              for index, cin, cout, k, s, p, _, _ in PLAN})

  def __call__(self, x: jax.Array, layers: Sequence[str] = LAYERS) -> dict[str, jax.Array]:
    unknown = sorted(set(layers) - set(LAYERS))
    if unknown:
      raise ValueError(f"AlexNet has no layers {unknown}; available: {list(LAYERS)}")
    out = {}
    for index, _, _, _, _, _, name, pool_before in PLAN:
      if len(out) == len(set(layers)):
        break
      if pool_before:
        x = nnx.max_pool(x, (3, 3), strides=(2, 2))
      x = nnx.relu(self.features[index](x))
      if name in layers:
        out[name] = x
    return out


def from_torch_state_dict(state_dict: Mapping[str, np.ndarray]) -> tuple[AlexNet, torch_port.LoadReport]:
  """An `AlexNet` with the `features.*` weights of a torchvision `alexnet` `state_dict` (numpy arrays)."""
  return torch_port.init_from_torch(lambda: AlexNet(rngs=nnx.Rngs(0)), state_dict, ignore=IGNORE)


def load(path: str) -> AlexNet:
  """An `AlexNet` from a torchvision state_dict file: `.pth` (needs torch) or `.npz` (the same keys)."""
  state_dict = torch_port.read_state_dict(path)
  try:
    return from_torch_state_dict(state_dict)[0]
  except ValueError as e:
    raise ValueError(f"{path}: not a torchvision alexnet state_dict: {e}") from e


def main(argv) -> None:
  from absl import flags
  del argv
  f = flags.FLAGS
  torch_port.pth_to_npz(f.pth, f.out, from_torch_state_dict, lambda k: k.startswith("features."))


if __name__ == "__main__":
  from absl import flags

  flags.DEFINE_string("pth", None, "torchvision alexnet state_dict (.pth).", required=True)
  flags.DEFINE_string("out", None, "Output .npz (torch-free loading).", required=True)
  from common.train import tool
  tool.run_tool(main)
