"""pytorch-fid's FID InceptionV3 (the `pt_inception-2015-12-05` port of TensorFlow's FID graph) in NNX, channels-last,
up to the 2048-d pool3 features.

Attribute names follow torchvision's `Inception3` (`Conv2d_1a_3x3.conv.weight`, `Mixed_5b.branch_pool.bn.running_var`,
...), which is how the official `pt_inception-2015-12-05-6726825d.pth` is keyed, so that file (or an `.npz` of the
same keys) loads as is (`fc.*`, the 1008-way logits, and `AuxLogits.*` are ignored). The blocks are pytorch-fid's
(`pytorch_fid.inception.fid_inception_v3`, which patches torchvision's Inception3):

* Mixed_5b/5c/5d: FIDInceptionA, Mixed_6b..6e: FIDInceptionC, Mixed_7b: FIDInceptionE_1: their pool branch is a 3x3
  stride-1 average pool with padding 1 and `count_include_pad=False` (the TensorFlow graph's);
* Mixed_7c: FIDInceptionE_2, whose pool branch is a 3x3 stride-1 *max* pool with padding 1 (the quirk of the TF graph);
* Mixed_6a / Mixed_7a: torchvision's InceptionB / InceptionD unchanged (3x3 stride-2 max pools);
* every BasicConv2d is conv (no bias) + BatchNorm (eps 0.001, running statistics) + ReLU.

Input handling as pytorch-fid's `InceptionV3(output_blocks=[3])` with its defaults (`resize_input=True`,
`normalize_input=True`): images [B, H, W, 3] in [0, 1] are resized to 299x299 with
`F.interpolate(mode='bilinear', align_corners=False)` semantics (no antialiasing, also when shrinking), then mapped
to [-1, 1] (2x - 1); the output is the global average of Mixed_7c, [B, 2048].

  python -m common.nn.inception --pth=pt_inception-2015-12-05-6726825d.pth --out=pt_inception.npz   (torch extra)
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from common.nn import torch_port
from common.nn import layers
from common.nn.layers import torch_conv

IGNORE = torch_port.DEFAULT_IGNORE + (r"^fc\.", r"^AuxLogits\.")
FID_SIZE = 299
FEATURES = 2048
BN_EPS = 0.001


class BasicConv2d(nnx.Module):
  """conv (no bias) -> BatchNorm (eps 0.001, running stats) -> ReLU; attributes `conv`, `bn` as torchvision's."""

  def __init__(self, cin: int, cout: int, kernel, *, stride=1, padding=0, dtype=None, rngs: nnx.Rngs):
    kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
    self.conv = torch_conv(cin, cout, kernel, stride=stride, padding=padding, use_bias=False, dtype=dtype,
                           rngs=rngs)
    self.bn = nnx.BatchNorm(cout, epsilon=BN_EPS, use_running_average=True, use_fast_variance=False, dtype=dtype,
                            rngs=rngs)

  def __call__(self, x):
    return nnx.relu(self.bn(self.conv(x)))


def _avg_pool_3x3(x):
  """`F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)`."""
  return nnx.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_same(x):
  """`F.max_pool2d(x, 3, stride=1, padding=1)` (padding with -inf, as PyTorch)."""
  return nnx.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))


def _max_pool_3x3_s2(x):
  return nnx.max_pool(x, (3, 3), strides=(2, 2))


class FIDInceptionA(nnx.Module):
  """[B, H, W, cin] -> [B, H, W, 224 + pool_features]."""

  def __init__(self, cin: int, pool_features: int, *, dtype=None, rngs: nnx.Rngs):
    c = lambda i, o, k, **kw: BasicConv2d(i, o, k, dtype=dtype, rngs=rngs, **kw)
    self.branch1x1 = c(cin, 64, 1)
    self.branch5x5_1 = c(cin, 48, 1)
    self.branch5x5_2 = c(48, 64, 5, padding=2)
    self.branch3x3dbl_1 = c(cin, 64, 1)
    self.branch3x3dbl_2 = c(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = c(96, 96, 3, padding=1)
    self.branch_pool = c(cin, pool_features, 1)

  def __call__(self, x):
    b1 = self.branch1x1(x)
    b5 = self.branch5x5_2(self.branch5x5_1(x))
    b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    bp = self.branch_pool(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], -1)


class InceptionB(nnx.Module):
  """torchvision's InceptionB (Mixed_6a): [B, H, W, cin] -> [B, (H-3)//2+1, ..., 480 + cin]."""

  def __init__(self, cin: int, *, dtype=None, rngs: nnx.Rngs):
    c = lambda i, o, k, **kw: BasicConv2d(i, o, k, dtype=dtype, rngs=rngs, **kw)
    self.branch3x3 = c(cin, 384, 3, stride=2)
    self.branch3x3dbl_1 = c(cin, 64, 1)
    self.branch3x3dbl_2 = c(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = c(96, 96, 3, stride=2)

  def __call__(self, x):
    b3 = self.branch3x3(x)
    bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], -1)


class FIDInceptionC(nnx.Module):
  """[B, H, W, cin] -> [B, H, W, 768]."""

  def __init__(self, cin: int, channels_7x7: int, *, dtype=None, rngs: nnx.Rngs):
    c = lambda i, o, k, **kw: BasicConv2d(i, o, k, dtype=dtype, rngs=rngs, **kw)
    c7 = channels_7x7
    self.branch1x1 = c(cin, 192, 1)
    self.branch7x7_1 = c(cin, c7, 1)
    self.branch7x7_2 = c(c7, c7, (1, 7), padding=(0, 3))
    self.branch7x7_3 = c(c7, 192, (7, 1), padding=(3, 0))
    self.branch7x7dbl_1 = c(cin, c7, 1)
    self.branch7x7dbl_2 = c(c7, c7, (7, 1), padding=(3, 0))
    self.branch7x7dbl_3 = c(c7, c7, (1, 7), padding=(0, 3))
    self.branch7x7dbl_4 = c(c7, c7, (7, 1), padding=(3, 0))
    self.branch7x7dbl_5 = c(c7, 192, (1, 7), padding=(0, 3))
    self.branch_pool = c(cin, 192, 1)

  def __call__(self, x):
    b1 = self.branch1x1(x)
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    bd = x
    for i in range(1, 6):
      bd = getattr(self, f"branch7x7dbl_{i}")(bd)
    bp = self.branch_pool(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], -1)


class InceptionD(nnx.Module):
  """torchvision's InceptionD (Mixed_7a): [B, H, W, cin] -> [B, (H-3)//2+1, ..., 512 + cin]."""

  def __init__(self, cin: int, *, dtype=None, rngs: nnx.Rngs):
    c = lambda i, o, k, **kw: BasicConv2d(i, o, k, dtype=dtype, rngs=rngs, **kw)
    self.branch3x3_1 = c(cin, 192, 1)
    self.branch3x3_2 = c(192, 320, 3, stride=2)
    self.branch7x7x3_1 = c(cin, 192, 1)
    self.branch7x7x3_2 = c(192, 192, (1, 7), padding=(0, 3))
    self.branch7x7x3_3 = c(192, 192, (7, 1), padding=(3, 0))
    self.branch7x7x3_4 = c(192, 192, 3, stride=2)

  def __call__(self, x):
    b3 = self.branch3x3_2(self.branch3x3_1(x))
    b7 = x
    for i in range(1, 5):
      b7 = getattr(self, f"branch7x7x3_{i}")(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], -1)


class FIDInceptionE(nnx.Module):
  """[B, H, W, cin] -> [B, H, W, 2048]; `pool='avg'` (FIDInceptionE_1) or `'max'` (FIDInceptionE_2)."""

  def __init__(self, cin: int, pool: str, *, dtype=None, rngs: nnx.Rngs):
    if pool not in ("avg", "max"):
      raise ValueError(f"pool={pool!r}; expected 'avg' or 'max'")
    c = lambda i, o, k, **kw: BasicConv2d(i, o, k, dtype=dtype, rngs=rngs, **kw)
    self.pool = pool
    self.branch1x1 = c(cin, 320, 1)
    self.branch3x3_1 = c(cin, 384, 1)
    self.branch3x3_2a = c(384, 384, (1, 3), padding=(0, 1))
    self.branch3x3_2b = c(384, 384, (3, 1), padding=(1, 0))
    self.branch3x3dbl_1 = c(cin, 448, 1)
    self.branch3x3dbl_2 = c(448, 384, 3, padding=1)
    self.branch3x3dbl_3a = c(384, 384, (1, 3), padding=(0, 1))
    self.branch3x3dbl_3b = c(384, 384, (3, 1), padding=(1, 0))
    self.branch_pool = c(cin, 192, 1)

  def __call__(self, x):
    b1 = self.branch1x1(x)
    b3 = self.branch3x3_1(x)
    b3 = jnp.concatenate([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], -1)
    bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    bd = jnp.concatenate([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], -1)
    bp = self.branch_pool(_avg_pool_3x3(x) if self.pool == "avg" else _max_pool_3x3_same(x))
    return jnp.concatenate([b1, b3, bd, bp], -1)


class FIDInceptionV3(nnx.Module):
  """[B, H, W, 3] in [0, 1] -> [B, 2048] pool3 features (pytorch-fid `InceptionV3([3])`)."""

  def __init__(self, *, resize_input: bool = True, normalize_input: bool = True, dtype=None, rngs: nnx.Rngs):
    c = lambda i, o, k, **kw: BasicConv2d(i, o, k, dtype=dtype, rngs=rngs, **kw)
    self.resize_input, self.normalize_input = resize_input, normalize_input
    self.Conv2d_1a_3x3 = c(3, 32, 3, stride=2)
    self.Conv2d_2a_3x3 = c(32, 32, 3)
    self.Conv2d_2b_3x3 = c(32, 64, 3, padding=1)
    self.Conv2d_3b_1x1 = c(64, 80, 1)
    self.Conv2d_4a_3x3 = c(80, 192, 3)
    kw = dict(dtype=dtype, rngs=rngs)
    self.Mixed_5b = FIDInceptionA(192, 32, **kw)
    self.Mixed_5c = FIDInceptionA(256, 64, **kw)
    self.Mixed_5d = FIDInceptionA(288, 64, **kw)
    self.Mixed_6a = InceptionB(288, **kw)
    self.Mixed_6b = FIDInceptionC(768, 128, **kw)
    self.Mixed_6c = FIDInceptionC(768, 160, **kw)
    self.Mixed_6d = FIDInceptionC(768, 160, **kw)
    self.Mixed_6e = FIDInceptionC(768, 192, **kw)
    self.Mixed_7a = InceptionD(768, **kw)
    self.Mixed_7b = FIDInceptionE(1280, "avg", **kw)
    self.Mixed_7c = FIDInceptionE(2048, "max", **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"expected images [B, H, W, 3] in [0, 1], got shape {x.shape}")
    x = x.astype(jnp.float32)
    if self.resize_input:
      x = layers.resize_bilinear_half_pixel(x, (FID_SIZE, FID_SIZE))
    if self.normalize_input:
      x = 2 * x - 1
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = _max_pool_3x3_s2(x)
    x = _max_pool_3x3_s2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
    for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
      x = getattr(self, f"Mixed_{name}")(x)
    return x.mean((1, 2))


_WEIGHTS = nnx.Any(nnx.Param, nnx.BatchStat)


def init_weights_only(build, state_dict: Mapping[str, np.ndarray], *, ignore=torch_port.DEFAULT_IGNORE):
  """`torch_port.init_from_torch` for modules whose only variables are Params / BatchStats (frozen feature
  extractors): the abstract module (`nnx.eval_shape`) is filled from `state_dict` directly, which skips compiling
  `build()` for the other variables (seconds for the Inception network). Falls back to `init_from_torch` when the
  module has other variables."""
  module = nnx.eval_shape(build)
  if jax.tree.leaves(nnx.state(module, nnx.Not(_WEIGHTS))):
    return torch_port.init_from_torch(build, state_dict, ignore=ignore)
  return module, torch_port.load_torch_state_dict(module, state_dict, ignore=ignore, strict=True)


def _check_keys(state_dict: Mapping[str, np.ndarray]) -> None:
  """A quick check before building: a state dict without Mixed_7c is not an Inception3 one."""
  if not any(k.startswith("Mixed_7c.") for k in state_dict):
    raise ValueError(f"no Mixed_7c.* keys (first keys: {sorted(state_dict)[:5]})")


def from_torch_state_dict(state_dict: Mapping[str, np.ndarray], **kwargs
                          ) -> tuple[FIDInceptionV3, torch_port.LoadReport]:
  """A `FIDInceptionV3` from the `pt_inception-2015-12-05` state_dict (numpy arrays, torchvision Inception3 keys)."""
  _check_keys(state_dict)
  return init_weights_only(lambda: FIDInceptionV3(rngs=nnx.Rngs(0), **kwargs), state_dict, ignore=IGNORE)


def load(path: str, **kwargs) -> FIDInceptionV3:
  """A `FIDInceptionV3` from `pt_inception-2015-12-05-6726825d.pth` (needs torch) or an `.npz` of the same keys."""
  state_dict = torch_port.read_state_dict(path)
  try:
    return from_torch_state_dict(state_dict, **kwargs)[0]
  except ValueError as e:
    raise ValueError(f"{path}: not pytorch-fid's pt_inception state_dict: {e}") from e


def main(argv) -> None:
  from absl import flags
  del argv
  f = flags.FLAGS
  torch_port.pth_to_npz(f.pth, f.out, from_torch_state_dict, lambda k: not k.startswith(("fc.", "AuxLogits.")))


if __name__ == "__main__":
  from absl import flags

  flags.DEFINE_string("pth", None, "pytorch-fid's pt_inception-2015-12-05-6726825d.pth.", required=True)
  flags.DEFINE_string("out", None, "Output .npz (torch-free loading).", required=True)
  from common.train import tool
  tool.run_tool(main)
