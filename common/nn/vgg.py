"""torchvision VGG16 / VGG19 convolutional trunks (`features`) in NNX, channels-last, as frozen feature extractors.

The attribute `features` is an `nnx.Dict` keyed by torchvision's `features` indices ("0", "2", "5", ...), so a
torchvision `vgg16()` / `vgg19()` `state_dict` loads with `from_torch_state_dict` as is (`classifier.*` is
ignored). Activations are named as in the perceptual-loss literature: `reluB_N` is the ReLU after the N-th conv
of block B (VGG19: relu1_1 = features[1], relu2_1 = [6], relu2_2 = [8], relu3_1 = [11], relu3_4 = [17],
relu4_1 = [20], relu4_4 = [26], relu5_1 = [29], relu5_2 = [31]). No input normalisation is applied (callers
that want torchvision's ImageNet mean / std apply it themselves). Nothing is ever downloaded: ImageNet weights
come from a user-supplied file.

  python -m common.nn.vgg --pth=vgg19-dcbb9e9d.pth --arch=vgg19 --out=vgg19.npz   (needs the torch extra)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import numpy as np
from flax import nnx

from common.nn import torch_port
from common.nn.layers import torch_conv

BLOCK_DEPTHS = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
BLOCK_WIDTHS = (64, 128, 256, 512, 512)
IGNORE = torch_port.DEFAULT_IGNORE + (r"^classifier\.",)


def layer_plan(arch: str) -> tuple[tuple[str, str], ...]:
  """((torchvision index of each conv, its ReLU's name) ...), with ('pool', '') after each block."""
  if arch not in BLOCK_DEPTHS:
    raise ValueError(f"unknown VGG {arch!r}; expected one of {sorted(BLOCK_DEPTHS)}")
  plan, index = [], 0
  for block, depth in enumerate(BLOCK_DEPTHS[arch], 1):
    for n in range(1, depth + 1):
      plan.append((str(index), f"relu{block}_{n}"))
      index += 2
    plan.append(("pool", ""))
    index += 1
  return tuple(plan)


class VGG(nnx.Module):
  """VGG `features` trunk: [B, H, W, 3] -> {relu name: [B, h, w, C]} for the requested ReLU outputs."""

  def __init__(self, arch: str = "vgg19", *, dtype=None, rngs: nnx.Rngs):
    self.plan = layer_plan(arch)
    convs, cin = {}, 3
    widths = iter(w for w, d in zip(BLOCK_WIDTHS, BLOCK_DEPTHS[arch]) for _ in range(d))
    for index, _ in self.plan:
      if index != "pool":
        cout = next(widths)
        convs[index] = torch_conv(cin, cout, (3, 3), padding=1, dtype=dtype, rngs=rngs)
        cin = cout
    self.features = nnx.Dict(convs)

  def __call__(self, x: jax.Array, layers: Sequence[str]) -> dict[str, jax.Array]:
    names = {name for _, name in self.plan if name}
    unknown = sorted(set(layers) - names)
    if unknown:
      raise ValueError(f"VGG has no layers {unknown}; available: {sorted(names)}")
    out = {}
    for index, name in self.plan:
      if len(out) == len(set(layers)):
        break
      if index == "pool":
        x = nnx.max_pool(x, (2, 2), strides=(2, 2))
      else:
        x = nnx.relu(self.features[index](x))
        if name in layers:
          out[name] = x
    return out


def from_torch_state_dict(state_dict: Mapping[str, np.ndarray], arch: str = "vgg19"
                          ) -> tuple[VGG, torch_port.LoadReport]:
  """A `VGG` with the `features.*` weights of a torchvision `vgg16` / `vgg19` `state_dict` (numpy arrays)."""
  return torch_port.init_from_torch(lambda: VGG(arch, rngs=nnx.Rngs(0)), state_dict, ignore=IGNORE)


def load(path: str, arch: str = "vgg19") -> VGG:
  """A `VGG` from a torchvision state_dict file: `.pth` (needs torch) or `.npz` (the same keys)."""
  state_dict = torch_port.read_state_dict(path)
  try:
    return from_torch_state_dict(state_dict, arch)[0]
  except ValueError as e:
    raise ValueError(f"{path}: not a torchvision {arch} state_dict: {e}") from e


def main(argv) -> None:
  from absl import flags
  del argv
  f = flags.FLAGS
  torch_port.pth_to_npz(f.pth, f.out, lambda sd: from_torch_state_dict(sd, f.arch), lambda k: k.startswith("features."))


if __name__ == "__main__":
  from absl import flags

  flags.DEFINE_string("pth", None, "torchvision vgg16 / vgg19 state_dict (.pth).", required=True)
  flags.DEFINE_enum("arch", "vgg19", sorted(BLOCK_DEPTHS), "Which VGG.")
  flags.DEFINE_string("out", None, "Output .npz (torch-free loading).", required=True)
  from common.train import tool
  tool.run_tool(main)
