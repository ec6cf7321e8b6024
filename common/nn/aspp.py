"""DeepLabV3+ head of jfzhang95/pytorch-deeplab-xception: ASPP and decoder, channels-last.

ASPP (`modeling/aspp.py`): four branches from the backbone's last feature, each conv (no bias) +
BN + ReLU to 256 channels: 1x1, and 3x3 with dilation = padding = 6/12/18 (output stride 16) or
12/24/36 (output stride 8); an image-pooling branch (global mean -> 1x1 conv -> BN -> ReLU ->
bilinear align_corners=True upsample, i.e. a broadcast from 1x1); concat (1280 channels) -> 1x1
conv -> BN -> ReLU -> Dropout(0.5) (element-wise).

Decoder (`modeling/decoder.py`): low-level feature -> 1x1 conv to 48 + BN + ReLU; the ASPP output
is resized to the low-level size (bilinear, align_corners=True) and concatenated in front
(256 + 48 = 304); 3x3 conv + BN + ReLU + Dropout(0.5); 3x3 conv + BN + ReLU + Dropout(0.1); 1x1
conv with bias to the classes. `DeepLab.forward` then resizes the logits to the input size with
align_corners=True (`common.nn.layers.resize_bilinear_align_corners`).

Dropout is active unless the module is viewed with `deterministic=True`
(`nnx.view(m, deterministic=True, use_running_average=True)` for evaluation); it draws from the
`dropout` stream of the `nnx.Rngs` given at construction.

Official keys load through `common.nn.torch_port` with the renames of `aspp_torch_rename` and
`decoder_torch_rename`. Convs are initialised with kaiming_normal (fan_in, gain sqrt 2), the
classifier bias with PyTorch's default U(+-1/sqrt(fan_in)); BN scale 1, bias 0, as in the
reference.
"""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
from flax import nnx

from common.nn.layers import resize_bilinear_align_corners, torch_batch_norm, torch_conv

# torch.nn.init.kaiming_normal_ defaults: fan_in, gain sqrt(2), untruncated normal.
KAIMING_NORMAL = jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal")
ASPP_DILATIONS = {16: (1, 6, 12, 18), 8: (1, 12, 24, 36)}


def conv2d(in_channels: int, out_channels: int, kernel_size: int, *, dilation: int = 1,
           padding: int = 0, use_bias: bool = False, dtype=None, rngs: nnx.Rngs) -> nnx.Conv:
  """`nn.Conv2d` (stride 1) initialised as the reference: kaiming_normal kernel, torch bias init."""
  return torch_conv(in_channels, out_channels, (kernel_size, kernel_size), padding=padding,
                    dilation=dilation, use_bias=use_bias, dtype=dtype, kernel_init=KAIMING_NORMAL,
                    rngs=rngs)


class ASPPBranch(nnx.Module):
  """jfzhang95 `_ASPPModule`: atrous conv (no bias, padding = dilation) + BN + ReLU.

  [B,H,W,in_channels] -> [B,H,W,out_channels].
  """

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int, *,
               dtype=None, rngs: nnx.Rngs):
    padding = 0 if kernel_size == 1 else dilation
    self.atrous_conv = conv2d(in_channels, out_channels, kernel_size, dilation=dilation,
                              padding=padding, dtype=dtype, rngs=rngs)
    self.bn = torch_batch_norm(out_channels, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return jax.nn.relu(self.bn(self.atrous_conv(x)))


class ImagePooling(nnx.Module):
  """Global mean -> 1x1 conv -> BN -> ReLU (torch `global_avg_pool.{1,2}`).

  [B,H,W,in_channels] -> [B,1,1,out_channels].
  """

  def __init__(self, in_channels: int, out_channels: int, *, dtype=None, rngs: nnx.Rngs):
    self.conv = conv2d(in_channels, out_channels, 1, dtype=dtype, rngs=rngs)
    self.bn = torch_batch_norm(out_channels, dtype=dtype, rngs=rngs)

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
    self.conv1 = conv2d(5 * channels, channels, 1, dtype=dtype, rngs=rngs)
    self.bn1 = torch_batch_norm(channels, dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    pooled = self.global_avg_pool(x)
    # align_corners bilinear resize of a 1x1 map is a broadcast.
    pooled = jnp.broadcast_to(pooled, x.shape[:3] + pooled.shape[3:])
    x = jnp.concatenate([self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x), pooled],
                        axis=-1)
    x = jax.nn.relu(self.bn1(self.conv1(x)))
    return self.dropout(x)


class LastConv(nnx.Module):
  """Decoder `last_conv` Sequential: (3x3 conv, BN, ReLU, Dropout) x2, 1x1 classifier with bias.

  [B,H,W,in_channels] -> [B,H,W,num_classes]. Torch indices 0,1,4,5,8 are conv1, bn1, conv2, bn2,
  classifier.
  """

  def __init__(self, in_channels: int, channels: int, num_classes: int, *, dtype=None,
               rngs: nnx.Rngs):
    self.conv1 = conv2d(in_channels, channels, 3, padding=1, dtype=dtype, rngs=rngs)
    self.bn1 = torch_batch_norm(channels, dtype=dtype, rngs=rngs)
    self.dropout1 = nnx.Dropout(0.5, rngs=rngs)
    self.conv2 = conv2d(channels, channels, 3, padding=1, dtype=dtype, rngs=rngs)
    self.bn2 = torch_batch_norm(channels, dtype=dtype, rngs=rngs)
    self.dropout2 = nnx.Dropout(0.1, rngs=rngs)
    self.classifier = conv2d(channels, num_classes, 1, use_bias=True, dtype=dtype, rngs=rngs)

  def features(self, x: jax.Array) -> jax.Array:
    """The features the classifier reads: [B,H,W,in_channels] -> [B,H,W,channels]."""
    x = self.dropout1(jax.nn.relu(self.bn1(self.conv1(x))))
    return self.dropout2(jax.nn.relu(self.bn2(self.conv2(x))))

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.classifier(self.features(x))


class Decoder(nnx.Module):
  """DeepLabV3+ decoder: (x [B,h,w,aspp_channels], low_level [B,H,W,low_level_channels]) ->
  logits [B,H,W,num_classes] at the low-level resolution (stride 4).
  """

  def __init__(self, num_classes: int, *, low_level_channels: int = 256, aspp_channels: int = 256,
               low_level_proj_channels: int = 48, channels: int = 256, dtype=None,
               rngs: nnx.Rngs):
    self.conv1 = conv2d(low_level_channels, low_level_proj_channels, 1, dtype=dtype, rngs=rngs)
    self.bn1 = torch_batch_norm(low_level_proj_channels, dtype=dtype, rngs=rngs)
    self.last_conv = LastConv(aspp_channels + low_level_proj_channels, channels, num_classes,
                              dtype=dtype, rngs=rngs)

  def project_low_level(self, low_level: jax.Array) -> jax.Array:
    """1x1 conv + BN + ReLU: [B,H,W,low_level_channels] -> [B,H,W,48]."""
    return jax.nn.relu(self.bn1(self.conv1(low_level)))

  def features(self, x: jax.Array, low_level: jax.Array) -> jax.Array:
    """The last features before the classifier, [B,H,W,channels] at the low-level resolution."""
    low_level = self.project_low_level(low_level)
    x = resize_bilinear_align_corners(x, low_level.shape[1:3])
    return self.last_conv.features(jnp.concatenate([x, low_level], axis=-1))

  def __call__(self, x: jax.Array, low_level: jax.Array) -> jax.Array:
    return self.last_conv.classifier(self.features(x, low_level))


def _rename(torch_prefix: str, nnx_prefix: str | None,
            modules: dict[str, str]) -> tuple[tuple[str, str], ...]:
  """Moves keys from `torch_prefix` to `nnx_prefix` first, then renames the modules below it."""
  dst = torch_prefix if nnx_prefix is None else nnx_prefix
  move = [("^" + re.escape(torch_prefix), dst)] if dst != torch_prefix else []
  return tuple(move + [("^" + re.escape(f"{dst}{old}."), f"{dst}{new}.")
                       for old, new in modules.items()])


def aspp_torch_rename(torch_prefix: str = "",
                      nnx_prefix: str | None = None) -> tuple[tuple[str, str], ...]:
  """Regex renames (for `common.nn.torch_port`) of the official ASPP keys below `torch_prefix`
  (e.g. "aspp."): `global_avg_pool.{1,2}` -> `global_avg_pool.{conv,bn}`; the prefix becomes
  `nnx_prefix` (default: unchanged). The other keys (`asppN.atrous_conv/bn`, `conv1`, `bn1`)
  match as they are."""
  return _rename(torch_prefix, nnx_prefix, {"global_avg_pool.1": "global_avg_pool.conv",
                                            "global_avg_pool.2": "global_avg_pool.bn"})


def decoder_torch_rename(torch_prefix: str = "",
                         nnx_prefix: str | None = None) -> tuple[tuple[str, str], ...]:
  """Regex renames of the official decoder keys below `torch_prefix` (e.g. "decoder."):
  `last_conv.{0,1,4,5,8}` -> `last_conv.{conv1,bn1,conv2,bn2,classifier}`; `conv1`, `bn1` match."""
  return _rename(torch_prefix, nnx_prefix,
                 {"last_conv.0": "last_conv.conv1", "last_conv.1": "last_conv.bn1",
                  "last_conv.4": "last_conv.conv2", "last_conv.5": "last_conv.bn2",
                  "last_conv.8": "last_conv.classifier"})
