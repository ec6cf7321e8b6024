"""DeepLabV3+ head of jfzhang95/pytorch-deeplab-xception: ASPP and decoder, channels-last.

ASPP (`modeling/aspp.py`): four branches from the backbone's last feature, each conv (no bias) + BN +
ReLU to 256 channels: 1x1, and 3x3 with dilation = padding = 6/12/18 (output stride 16) or 12/24/36
(output stride 8); an image-pooling branch (global mean -> 1x1 conv -> BN -> ReLU -> bilinear
align_corners=True upsample, i.e. a broadcast from 1x1); concat (1280 channels) -> 1x1 conv -> BN ->
ReLU -> Dropout(0.5) (element-wise).

Decoder (`modeling/decoder.py`): low-level feature -> 1x1 conv to 48 + BN + ReLU; the ASPP output is
resized to the low-level size (bilinear, align_corners=True) and concatenated in front (256 + 48 = 304);
3x3 conv + BN + ReLU + Dropout(0.5); 3x3 conv + BN + ReLU + Dropout(0.1); 1x1 conv with bias to the
classes. `DeepLab.forward` then resizes the logits to the input size with align_corners=True
(`resize_bilinear_align_corners`).

Dropout is active unless the module is viewed with `deterministic=True`
(`nnx.view(m, deterministic=True, use_running_average=True)` for evaluation); it draws from the
`dropout` stream of the `nnx.Rngs` given at construction.

Torch key tables: `aspp_torch_key_to_nnx_path` and `decoder_torch_key_to_nnx_path` (keys without the
`aspp.` / `decoder.` prefix). Convs are initialised with kaiming_normal (fan_in, gain sqrt 2), the
classifier bias with PyTorch's default U(+-1/sqrt(fan_in)); BN scale 1, bias 0, as in the reference.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from common.nn.resnet import batch_norm, conv2d, torch_leaf_to_nnx

# torch.nn.init.kaiming_normal_ defaults: fan_in, gain sqrt(2), untruncated normal.
KAIMING_NORMAL = jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal")
ASPP_DILATIONS = {16: (1, 6, 12, 18), 8: (1, 12, 24, 36)}


def _align_corners_matrix(in_size: int, out_size: int) -> jnp.ndarray:
  """[out_size, in_size] linear-interpolation weights with align_corners=True source positions."""
  if out_size == 1:
    src = jnp.zeros((1,), jnp.float32)
  else:
    src = jnp.arange(out_size, dtype=jnp.float32) * ((in_size - 1) / (out_size - 1))
  lo = jnp.clip(jnp.floor(src).astype(jnp.int32), 0, in_size - 1)
  hi = jnp.minimum(lo + 1, in_size - 1)
  frac = src - lo.astype(jnp.float32)
  return (jax.nn.one_hot(lo, in_size) * (1.0 - frac)[:, None]
          + jax.nn.one_hot(hi, in_size) * frac[:, None])


def resize_bilinear_align_corners(x: jax.Array, size: Sequence[int]) -> jax.Array:
  """`F.interpolate(mode='bilinear', align_corners=True)` on NHWC: [B,H,W,C] -> [B,h,w,C]."""
  out_h, out_w = size
  rows = _align_corners_matrix(x.shape[1], out_h).astype(x.dtype)
  cols = _align_corners_matrix(x.shape[2], out_w).astype(x.dtype)
  hp = jax.lax.Precision.HIGHEST
  x = jnp.einsum("oh,bhwc->bowc", rows, x, precision=hp)
  return jnp.einsum("pw,bowc->bopc", cols, x, precision=hp)


class ASPPBranch(nnx.Module):
  """jfzhang95 `_ASPPModule`: atrous conv (no bias, padding = dilation) + BN + ReLU. NHWC, same H, W."""

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int, *,
               dtype=None, rngs: nnx.Rngs):
    padding = 0 if kernel_size == 1 else dilation
    self.atrous_conv = conv2d(in_channels, out_channels, kernel_size, dilation=dilation,
                              padding=padding, dtype=dtype, kernel_init=KAIMING_NORMAL, rngs=rngs)
    self.bn = batch_norm(out_channels, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return jax.nn.relu(self.bn(self.atrous_conv(x)))


class ImagePooling(nnx.Module):
  """Global mean -> 1x1 conv -> BN -> ReLU: [B,H,W,Cin] -> [B,1,1,C] (torch `global_avg_pool.{1,2}`)."""

  def __init__(self, in_channels: int, out_channels: int, *, dtype=None, rngs: nnx.Rngs):
    self.conv = conv2d(in_channels, out_channels, 1, dtype=dtype, kernel_init=KAIMING_NORMAL,
                       rngs=rngs)
    self.bn = batch_norm(out_channels, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    pooled = jnp.mean(x, axis=(1, 2), keepdims=True)
    return jax.nn.relu(self.bn(self.conv(pooled)))


class ASPP(nnx.Module):
  """Atrous spatial pyramid pooling: [B,H,W,in_channels] -> [B,H,W,channels].

  in_channels is 2048 for ResNet backbones (320 for MobileNetV2, as in the golden test).
  """

  def __init__(self, in_channels: int = 2048, *, output_stride: int = 16, channels: int = 256,
               dropout_rate: float = 0.5, dtype=None, rngs: nnx.Rngs):
    if output_stride not in ASPP_DILATIONS:
      raise ValueError(f"ASPP output_stride must be 8 or 16, got {output_stride}")
    d1, d2, d3, d4 = ASPP_DILATIONS[output_stride]
    branch = lambda k, d: ASPPBranch(in_channels, channels, k, d, dtype=dtype, rngs=rngs)
    self.aspp1 = branch(1, d1)
    self.aspp2 = branch(3, d2)
    self.aspp3 = branch(3, d3)
    self.aspp4 = branch(3, d4)
    self.global_avg_pool = ImagePooling(in_channels, channels, dtype=dtype, rngs=rngs)
    self.conv1 = conv2d(5 * channels, channels, 1, dtype=dtype, kernel_init=KAIMING_NORMAL,
                        rngs=rngs)
    self.bn1 = batch_norm(channels, dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    pooled = self.global_avg_pool(x)
    # align_corners bilinear resize of a 1x1 map is a broadcast.
    pooled = jnp.broadcast_to(pooled, x.shape[:3] + pooled.shape[3:])
    x = jnp.concatenate([self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x), pooled],
                        axis=-1)
    x = jax.nn.relu(self.bn1(self.conv1(x)))
    return self.dropout(x)


def _torch_default_bias_init(fan_in: int):
  """PyTorch's default conv bias init U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / fan_in ** 0.5
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class LastConv(nnx.Module):
  """Decoder `last_conv` Sequential: (3x3 conv, BN, ReLU, Dropout) x2, 1x1 classifier with bias.

  [B,H,W,in_channels] -> [B,H,W,num_classes]. Torch indices 0,1,4,5,8 are conv1, bn1, conv2, bn2,
  classifier.
  """

  def __init__(self, in_channels: int, channels: int, num_classes: int, *, dtype=None,
               rngs: nnx.Rngs):
    self.conv1 = conv2d(in_channels, channels, 3, padding=1, dtype=dtype,
                        kernel_init=KAIMING_NORMAL, rngs=rngs)
    self.bn1 = batch_norm(channels, dtype=dtype, rngs=rngs)
    self.dropout1 = nnx.Dropout(0.5, rngs=rngs)
    self.conv2 = conv2d(channels, channels, 3, padding=1, dtype=dtype,
                        kernel_init=KAIMING_NORMAL, rngs=rngs)
    self.bn2 = batch_norm(channels, dtype=dtype, rngs=rngs)
    self.dropout2 = nnx.Dropout(0.1, rngs=rngs)
    self.classifier = conv2d(channels, num_classes, 1, use_bias=True, dtype=dtype,
                             kernel_init=KAIMING_NORMAL,
                             bias_init=_torch_default_bias_init(channels), rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.dropout1(jax.nn.relu(self.bn1(self.conv1(x))))
    x = self.dropout2(jax.nn.relu(self.bn2(self.conv2(x))))
    return self.classifier(x)


class Decoder(nnx.Module):
  """DeepLabV3+ decoder: (x [B,h,w,aspp_channels], low_level [B,H,W,low_level_channels]) ->
  logits [B,H,W,num_classes] at the low-level resolution (stride 4).
  """

  def __init__(self, num_classes: int, *, low_level_channels: int = 256, aspp_channels: int = 256,
               low_level_proj_channels: int = 48, channels: int = 256, dtype=None,
               rngs: nnx.Rngs):
    self.conv1 = conv2d(low_level_channels, low_level_proj_channels, 1, dtype=dtype,
                        kernel_init=KAIMING_NORMAL, rngs=rngs)
    self.bn1 = batch_norm(low_level_proj_channels, dtype=dtype, rngs=rngs)
    self.last_conv = LastConv(aspp_channels + low_level_proj_channels, channels, num_classes,
                              dtype=dtype, rngs=rngs)

  def project_low_level(self, low_level: jax.Array) -> jax.Array:
    """1x1 conv + BN + ReLU: [B,H,W,low_level_channels] -> [B,H,W,48]."""
    return jax.nn.relu(self.bn1(self.conv1(low_level)))

  def __call__(self, x: jax.Array, low_level: jax.Array) -> jax.Array:
    low_level = self.project_low_level(low_level)
    x = resize_bilinear_align_corners(x, low_level.shape[1:3])
    return self.last_conv(jnp.concatenate([x, low_level], axis=-1))


_ASPP_MODULES = {
    **{f"aspp{i}.{m}": (f"aspp{i}", m) for i in range(1, 5) for m in ("atrous_conv", "bn")},
    "global_avg_pool.1": ("global_avg_pool", "conv"),
    "global_avg_pool.2": ("global_avg_pool", "bn"),
    "conv1": ("conv1",),
    "bn1": ("bn1",),
}
_DECODER_MODULES = {
    "conv1": ("conv1",),
    "bn1": ("bn1",),
    "last_conv.0": ("last_conv", "conv1"),
    "last_conv.1": ("last_conv", "bn1"),
    "last_conv.4": ("last_conv", "conv2"),
    "last_conv.5": ("last_conv", "bn2"),
    "last_conv.8": ("last_conv", "classifier"),
}


def _map_key(key: str, modules: dict[str, tuple[str, ...]], what: str) -> tuple[str, ...] | None:
  module, _, leaf = key.rpartition(".")
  if module not in modules:
    raise KeyError(f"unexpected torch {what} key {key!r}")
  return torch_leaf_to_nnx(modules[module], leaf, key)


def aspp_torch_key_to_nnx_path(key: str) -> tuple[str, ...] | None:
  """`aspp2.bn.running_var` -> ("aspp2", "bn", "var"); None for `num_batches_tracked`."""
  return _map_key(key, _ASPP_MODULES, "ASPP")


def decoder_torch_key_to_nnx_path(key: str) -> tuple[str, ...] | None:
  """`last_conv.8.weight` -> ("last_conv", "classifier", "kernel"); None for `num_batches_tracked`."""
  return _map_key(key, _DECODER_MODULES, "decoder")
