"""Dilated ResNet backbones (Bottleneck, depth 50/101/152) with PyTorch numerics, channels-last.

Two reference code bases are covered:

* MSCCNet's SSSegmentation ResNet, i.e. mmseg ResNetV1c with `contract_dilation=True`
  (`resnet_v1c`): deep stem (3x3 s2 -> C/2, 3x3 -> C/2, 3x3 -> C, each BN+ReLU), the first block of
  a dilated stage runs at dilation // 2, PyTorch default conv init.
* jfzhang95/pytorch-deeplab-xception (`resnet_deeplab`): classic 7x7 s2 stem, no contraction,
  multi-grid (1, 2, 4) times the stage dilation in layer4, conv init N(0, 2 / (k*k*out)).

In both, the stride sits on the 3x3 conv of a block (conv2) and on the 1x1 downsample conv; a 3x3
conv with dilation d pads d on every side; the max-pool is 3x3 s2 with (1, 1) -inf padding. Output
stride 8 / 16 / 32 uses strides (1,2,1,1) / (1,2,2,1) / (1,2,2,2) and dilations (1,1,2,4) /
(1,1,1,2) / (1,1,1,1) for layer1..layer4.

Attribute names follow the torch modules, so `common.nn.torch_port` loads an official backbone
`state_dict` with the short rename table of `torch_rename`: `stem.{0,1,3,4,6,7}` ->
`stem.{conv1,bn1,conv2,bn2,conv3,bn3}`, `downsample.{0,1}` -> `downsample.{conv,bn}`; `conv1`/`bn1`
(classic stem) and `layerK.i.convJ/bnJ` match as they are.

Block container: each `layerK` is a `ResLayer`, an `nnx.Dict` whose keys are the strings "0", "1",
..., so `layer3.12.conv2.weight` lives at the NNX path ("layer3", "12", "conv2", "kernel").
String keys keep `nnx.to_pure_dict` outputs serialisable by `jax.export` and Orbax (an `nnx.List`
would give int keys). NNX re-creates dict entries in sorted key order ("0", "1", "10", ...) on
`nnx.merge`, so blocks are run by index, never by iteration order.

BatchNorm is `layers.torch_batch_norm` (eps 1e-5, torch momentum 0.1, two-pass variance); the one
train-mode difference is that torch updates `running_var` with the unbiased batch variance.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import re

import jax
from flax import nnx

from common.nn.layers import torch_batch_norm, torch_conv, torch_default_kernel_init

Initializer = Callable[..., jax.Array]

# jfzhang95's ResNet init: normal_(0, sqrt(2 / (k * k * out_channels))), untruncated.
DEEPLAB_RESNET_CONV_INIT = jax.nn.initializers.variance_scaling(2.0, "fan_out", "normal")

BLOCKS_PER_DEPTH = {26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
STRIDES_AND_DILATIONS = {
    8: ((1, 2, 1, 1), (1, 1, 2, 4)),
    16: ((1, 2, 2, 1), (1, 1, 1, 2)),
    32: ((1, 2, 2, 2), (1, 1, 1, 1)),
}
EXPANSION = 4


def conv2d(in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
           dilation: int = 1, padding: int = 0, dtype=None,
           kernel_init: Initializer = torch_default_kernel_init, rngs: nnx.Rngs) -> nnx.Conv:
  """Bias-free `nn.Conv2d` (explicit symmetric padding); kernel HWIO [k, k, in, out]."""
  return torch_conv(in_channels, out_channels, (kernel_size, kernel_size), stride=stride,
                    padding=padding, dilation=dilation, use_bias=False, dtype=dtype,
                    kernel_init=kernel_init, rngs=rngs)


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  """`nn.MaxPool2d(3, stride=2, padding=1)` on NHWC (padding with -inf)."""
  return nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class DeepStem(nnx.Module):
  """ResNetV1c stem: three 3x3 conv+BN+ReLU, the first with stride 2.

  [B,H,W,in_channels] -> [B,H/2,W/2,stem_channels] (widths stem_channels/2, /2, 1).
  """

  def __init__(self, in_channels: int, stem_channels: int, *, dtype=None,
               kernel_init: Initializer = torch_default_kernel_init, rngs: nnx.Rngs):
    mid = stem_channels // 2
    conv = lambda cin, cout, stride: conv2d(cin, cout, 3, stride=stride, padding=1, dtype=dtype,
                                            kernel_init=kernel_init, rngs=rngs)
    self.conv1 = conv(in_channels, mid, 2)
    self.bn1 = torch_batch_norm(mid, dtype=dtype, rngs=rngs)
    self.conv2 = conv(mid, mid, 1)
    self.bn2 = torch_batch_norm(mid, dtype=dtype, rngs=rngs)
    self.conv3 = conv(mid, stem_channels, 1)
    self.bn3 = torch_batch_norm(stem_channels, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = jax.nn.relu(self.bn1(self.conv1(x)))
    x = jax.nn.relu(self.bn2(self.conv2(x)))
    return jax.nn.relu(self.bn3(self.conv3(x)))


class Downsample(nnx.Module):
  """Shortcut projection: 1x1 conv with the block's stride + BN (torch `downsample.{0,1}`)."""

  def __init__(self, in_channels: int, out_channels: int, stride: int, *, dtype=None,
               kernel_init: Initializer = torch_default_kernel_init, rngs: nnx.Rngs):
    self.conv = conv2d(in_channels, out_channels, 1, stride=stride, dtype=dtype,
                       kernel_init=kernel_init, rngs=rngs)
    self.bn = torch_batch_norm(out_channels, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.bn(self.conv(x))


class Bottleneck(nnx.Module):
  """1x1 -> 3x3 (stride, dilation, padding=dilation) -> 1x1 (x4), BN after each, residual + ReLU.

  [B,H,W,in_channels] -> [B,H/stride,W/stride,4*planes].
  """

  def __init__(self, in_channels: int, planes: int, *, stride: int = 1, dilation: int = 1,
               dtype=None, kernel_init: Initializer = torch_default_kernel_init,
               rngs: nnx.Rngs):
    out_channels = planes * EXPANSION
    self.conv1 = conv2d(in_channels, planes, 1, dtype=dtype, kernel_init=kernel_init, rngs=rngs)
    self.bn1 = torch_batch_norm(planes, dtype=dtype, rngs=rngs)
    self.conv2 = conv2d(planes, planes, 3, stride=stride, dilation=dilation, padding=dilation,
                        dtype=dtype, kernel_init=kernel_init, rngs=rngs)
    self.bn2 = torch_batch_norm(planes, dtype=dtype, rngs=rngs)
    self.conv3 = conv2d(planes, out_channels, 1, dtype=dtype, kernel_init=kernel_init, rngs=rngs)
    self.bn3 = torch_batch_norm(out_channels, dtype=dtype, rngs=rngs)
    if stride != 1 or in_channels != out_channels:
      self.downsample = Downsample(in_channels, out_channels, stride, dtype=dtype,
                                   kernel_init=kernel_init, rngs=rngs)
    else:
      self.downsample = None

  def __call__(self, x: jax.Array) -> jax.Array:
    out = jax.nn.relu(self.bn1(self.conv1(x)))
    out = jax.nn.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    identity = x if self.downsample is None else self.downsample(x)
    return jax.nn.relu(out + identity)


class ResLayer(nnx.Dict):
  """A stage of Bottlenecks under the string keys "0".."n-1", run in index order."""

  def __call__(self, x: jax.Array) -> jax.Array:
    for i in range(len(self)):
      x = self[str(i)](x)
    return x


@dataclasses.dataclass(frozen=True)
class LayerPlan:
  """Stride of the first block and the dilation of every block of one stage."""
  stride: int
  dilations: tuple[int, ...]


def plan_layers(depth: int, output_stride: int, *, contract_dilation: bool,
                multi_grid: Sequence[int] | None) -> tuple[LayerPlan, ...]:
  """Per-stage stride and per-block dilations.

  SSSegmentation / mmseg: `contract_dilation=True`, `multi_grid=None` -> a stage with dilation
  d > 1 runs its first block at d // 2 (OS8: layer3 (1,2,2,..), layer4 (2,4,4)).
  jfzhang95: `contract_dilation=False`, `multi_grid=(1,2,4)` -> layer4 blocks use d * multi_grid[i]
  (OS16: (2,4,8); OS8: (4,8,16)); layer4 then has len(multi_grid) blocks.
  """
  if depth not in BLOCKS_PER_DEPTH:
    raise ValueError(f"ResNet depth must be one of {sorted(BLOCKS_PER_DEPTH)}, got {depth}")
  if output_stride not in STRIDES_AND_DILATIONS:
    raise ValueError(f"output_stride must be one of {sorted(STRIDES_AND_DILATIONS)}, "
                     f"got {output_stride}")
  strides, dilations = STRIDES_AND_DILATIONS[output_stride]
  plans = []
  for stage, (num_blocks, stride, dilation) in enumerate(
      zip(BLOCKS_PER_DEPTH[depth], strides, dilations)):
    if stage == 3 and multi_grid is not None:
      block_dilations = [dilation * g for g in multi_grid]
    else:
      block_dilations = [dilation] * num_blocks
    if contract_dilation and dilation > 1:
      block_dilations[0] = dilation // 2
    plans.append(LayerPlan(stride, tuple(block_dilations)))
  return tuple(plans)


class ResNet(nnx.Module):
  """Bottleneck ResNet returning (c1, c2, c3, c4), channels-last.

  Input [B, H, W, in_channels]. With base_channels C (64 in the papers):
  c1 [B, H/4, W/4, 4C], c2 [B, H/8, W/8, 8C], c3 [B, H/16 or H/8, ., 16C], c4 [B, H/OS, W/OS, 32C]
  (sizes as PyTorch computes them: ceil for odd sizes at each stride-2 step).

  Args:
    depth: 50, 101 or 152 (26, timm's resnet26 layout, serves the fast smoke configs).
    output_stride: 8, 16 or 32.
    stem: "deep" (ResNetV1c: `stem.*` keys) or "classic" (7x7 s2 conv: `conv1`/`bn1` keys).
    contract_dilation: mmseg's first-block dilation halving.
    multi_grid: dilation multipliers for the layer4 blocks (jfzhang95: (1, 2, 4)), or None.
    in_channels, stem_channels, base_channels: widths (3, 64, 64 in the released models).
    dtype: compute dtype (parameters stay float32).
    kernel_init: conv kernel initializer.
  """

  def __init__(self, depth: int = 50, *, output_stride: int = 8, stem: str = "deep",
               contract_dilation: bool = True, multi_grid: Sequence[int] | None = None,
               in_channels: int = 3, stem_channels: int = 64, base_channels: int = 64,
               dtype=None, kernel_init: Initializer = torch_default_kernel_init, rngs: nnx.Rngs):
    self.stem_type = stem
    if stem == "deep":
      self.stem = DeepStem(in_channels, stem_channels, dtype=dtype, kernel_init=kernel_init,
                           rngs=rngs)
    elif stem == "classic":
      self.conv1 = conv2d(in_channels, stem_channels, 7, stride=2, padding=3, dtype=dtype,
                          kernel_init=kernel_init, rngs=rngs)
      self.bn1 = torch_batch_norm(stem_channels, dtype=dtype, rngs=rngs)
    else:
      raise ValueError(f"stem must be 'deep' or 'classic', got {stem!r}")

    plans = plan_layers(depth, output_stride, contract_dilation=contract_dilation,
                        multi_grid=multi_grid)
    in_ch = stem_channels
    layers = []
    for stage, plan in enumerate(plans):
      planes = base_channels * 2 ** stage
      blocks = {}
      for i, dilation in enumerate(plan.dilations):
        blocks[str(i)] = Bottleneck(in_ch, planes, stride=plan.stride if i == 0 else 1,
                                    dilation=dilation, dtype=dtype, kernel_init=kernel_init,
                                    rngs=rngs)
        in_ch = planes * EXPANSION
      layers.append(ResLayer(blocks))
    self.layer1, self.layer2, self.layer3, self.layer4 = layers
    self.out_channels = tuple(base_channels * 2 ** stage * EXPANSION for stage in range(4))

  def stem_forward(self, x: jax.Array) -> jax.Array:
    """Stem without the max-pool: [B,H,W,Cin] -> [B,H/2,W/2,stem_channels]."""
    if self.stem_type == "deep":
      return self.stem(x)
    return jax.nn.relu(self.bn1(self.conv1(x)))

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    x = max_pool_3x3_s2(self.stem_forward(x))
    c1 = self.layer1(x)
    c2 = self.layer2(c1)
    c3 = self.layer3(c2)
    c4 = self.layer4(c3)
    return c1, c2, c3, c4


def resnet_v1c(depth: int = 50, *, output_stride: int = 8, rngs: nnx.Rngs, **kwargs) -> ResNet:
  """MSCCNet / SSSegmentation ResNetV1c (deep stem, contracted dilation, torch default init)."""
  return ResNet(depth, output_stride=output_stride, stem="deep", contract_dilation=True,
                multi_grid=None, rngs=rngs, **kwargs)


def resnet_deeplab(depth: int = 101, *, output_stride: int = 16, rngs: nnx.Rngs,
                   **kwargs) -> ResNet:
  """jfzhang95 DeepLabV3+ ResNet (7x7 stem, multi-grid (1,2,4) in layer4, N(0, 2/fan_out) init)."""
  kwargs.setdefault("kernel_init", DEEPLAB_RESNET_CONV_INIT)
  return ResNet(depth, output_stride=output_stride, stem="classic", contract_dilation=False,
                multi_grid=(1, 2, 4), rngs=rngs, **kwargs)


# --- PyTorch state_dict keys ---------------------------------------------------------------------


def torch_rename(torch_prefix: str = "",
                 nnx_prefix: str | None = None) -> tuple[tuple[str, str], ...]:
  """Regex renames (for `common.nn.torch_port`) from official backbone keys to this module's keys.

  Keys below `torch_prefix` (e.g. "backbone_net." in MSCCNet, "backbone." in DeepLab, "" for a
  state_dict holding only the backbone) are moved below `nnx_prefix` (default: the same), then the
  Sequential indices are renamed:
  `stem.{0,1,3,4,6,7}` -> `stem.{conv1,bn1,conv2,bn2,conv3,bn3}` and
  `layerK.i.downsample.{0,1}` -> `layerK.i.downsample.{conv,bn}`. Everything else (`conv1`, `bn1`,
  `layerK.i.convJ/bnJ`) already matches, block indices included.
  """
  dst = torch_prefix if nnx_prefix is None else nnx_prefix
  move = [("^" + re.escape(torch_prefix), dst)] if dst != torch_prefix else []
  at = "^" + re.escape(dst)
  stem = [(rf"{at}stem\.{i}\.", f"{dst}stem.{name}.") for i, name in
          (("0", "conv1"), ("1", "bn1"), ("3", "conv2"), ("4", "bn2"), ("6", "conv3"),
           ("7", "bn3"))]
  downsample = [(rf"{at}(layer[1-4]\.\d+)\.downsample\.{i}\.", rf"{dst}\1.downsample.{name}.")
                for i, name in (("0", "conv"), ("1", "bn"))]
  return tuple(move + stem + downsample)
