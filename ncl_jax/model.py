"""NCL's network: jfzhang95 DeepLabV3+ (dilated ResNet + ASPP + decoder) with pivot branches on the decoder features.

`[B, H, W, 3]` ImageNet-normalised RGB -> `Outputs`:
  logits         [B, H, W, num_classes]  the decoder's classifier, upsampled with align_corners=True (the
                                          segmentation output, the notebook's 4th element);
  embeddings     [num_branches, B, H/4, W/4, proj_dim]  each branch's projection of the decoder features
                                          (the patch embeddings are their patch means);
  branch_logits  [num_branches, B, H/4, W/4, num_classes]  each branch's localization output (1x1 conv on its
                                          embedding), what the pivot-consistent loss compares.
The branches are lightweight (the released 238 MB checkpoint leaves room for well under 1 M extra parameters,
spec §2.2). The backbone, ASPP and decoder keep the official attribute names, so jfzhang95 `state_dict` keys
load with `convert.RENAME`; the branches (`branches.<i>.*`) are ours.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from common.nn import aspp, layers, resnet


class Outputs(NamedTuple):
  logits: jax.Array
  embeddings: jax.Array
  branch_logits: jax.Array


class BranchHead(nnx.Module):
  """Projection head + localization classifier of one pivot branch.

  `[B, h, w, C]` decoder features -> (embeddings `[B, h, w, proj_dim]`, logits `[B, h, w, num_classes]`):
  1x1 conv C->C (no bias), BatchNorm, ReLU, 1x1 conv C->proj_dim (bias); the classifier is a 1x1 conv on the
  embedding.
  """

  def __init__(self, channels: int, proj_dim: int, num_classes: int, *, dtype=None, rngs: nnx.Rngs):
    conv = lambda cin, cout, bias: layers.torch_conv(cin, cout, (1, 1), use_bias=bias, dtype=dtype,
                                                     kernel_init=aspp.KAIMING_NORMAL, rngs=rngs)
    self.conv1 = conv(channels, channels, False)
    self.bn1 = layers.torch_batch_norm(channels, dtype=dtype, rngs=rngs)
    self.conv2 = conv(channels, proj_dim, True)
    self.classifier = conv(proj_dim, num_classes, True)

  def __call__(self, features: jax.Array) -> tuple[jax.Array, jax.Array]:
    embedding = self.conv2(jax.nn.relu(self.bn1(self.conv1(features))))
    return embedding, self.classifier(embedding)


class NCLNet(nnx.Module):
  """DeepLabV3+ with `num_branches` pivot branches; see the module docstring for shapes.

  Args:
    depth: ResNet depth (101 in the paper; 50 is the lighter demo choice).
    output_stride: 16 (paper) or 8.
    base_channels: ResNet width (64 official; the stem has the same width).
    aspp_channels, decoder_channels, low_level_channels: head widths (256, 256, 48 official).
    proj_dim: branch embedding size.
    num_branches: 2 (the pivot structure) or 1 (ablation).
    num_classes: 2 (the notebook's argmax over two classes).
  """

  def __init__(self, *, depth: int = 101, output_stride: int = 16, base_channels: int = 64,
               aspp_channels: int = 256, decoder_channels: int = 256, low_level_channels: int = 48,
               proj_dim: int = 128, num_branches: int = 2, num_classes: int = 2, dtype=None, rngs: nnx.Rngs):
    self.backbone = resnet.resnet_deeplab(depth, output_stride=output_stride, base_channels=base_channels,
                                          stem_channels=base_channels, dtype=dtype, rngs=rngs)
    c1, _, _, c4 = self.backbone.out_channels
    self.aspp = aspp.ASPP(c4, output_stride=output_stride, channels=aspp_channels, dtype=dtype, rngs=rngs)
    self.decoder = aspp.Decoder(num_classes, low_level_channels=c1, aspp_channels=aspp_channels,
                                low_level_proj_channels=low_level_channels, channels=decoder_channels,
                                dtype=dtype, rngs=rngs)
    self.branches = nnx.Dict({str(i): BranchHead(decoder_channels, proj_dim, num_classes, dtype=dtype, rngs=rngs)
                              for i in range(num_branches)})
    self.num_branches = num_branches

  @classmethod
  def from_config(cls, config, *, dtype=None, rngs: nnx.Rngs) -> "NCLNet":
    """The model of `config.model` (configs/ncl.py: every field is a constructor argument)."""
    return cls(**config.model, dtype=dtype, rngs=rngs)

  def decoder_features(self, x: jax.Array) -> jax.Array:
    """`[B, H, W, 3]` -> the decoder's last features `[B, H/4, W/4, decoder_channels]` (before its classifier)."""
    c1, _, _, c4 = self.backbone(x)
    return self.decoder.features(self.aspp(c4), c1)

  def forward(self, x: jax.Array) -> Outputs:
    features = self.decoder_features(x)
    logits = self.decoder.last_conv.classifier(features)
    logits = layers.resize_bilinear_align_corners(logits.astype(jnp.float32), x.shape[1:3])
    heads = [self.branches[str(i)](features) for i in range(self.num_branches)]
    return Outputs(logits, jnp.stack([e for e, _ in heads]), jnp.stack([l for _, l in heads]))

  def __call__(self, x: jax.Array) -> jax.Array:
    """`[B, H, W, 3]` -> segmentation logits `[B, H, W, num_classes]` (the branches are not run)."""
    logits = self.decoder.last_conv.classifier(self.decoder_features(x))
    return layers.resize_bilinear_align_corners(logits.astype(jnp.float32), x.shape[1:3])
