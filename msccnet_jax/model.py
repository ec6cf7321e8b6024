"""MSCCNet (Miao et al., "Multi-spectral Class Center Network for Face Manipulation Detection and Localization"),
as the official `models/msccnet/{msccnet,mscc}.py` at miaoct/MSCCNet e99309d computes it, channels-last.

  image [B, H, W, 3] (normalised) -> ResNet-50 v1c, output stride 8 -> (C1, C2, C3, C4)
  image head:  mean over space of C4 -> Linear -> image logits [B, K]
  MFA:         conv3x3+BN+ReLU of C2, C3, C4 to `feats` channels each, concat, conv3x3+BN+ReLU -> [B, h, w, feats]
  MSCC:        -> (out [B, h, w, out_channels], coarse map logits [B, h, w, K])
  decoder:     conv1x1+BN+ReLU, Dropout2d, conv1x1 -> mask logits [B, h, w, K]       (h, w = H/8, W/8)

Ablations (`mfa`, `mscc`; both True is the paper's model): `mfa=False` replaces the aggregation by
`bottleneck3` alone (conv3x3+BN+ReLU of C4 to `feats` channels: only the last stage's features; `bottleneck1,2`
and `bottleneck_fusion` are not built); `mscc=False` drops the MSCC module: the decoder (the plain segmentation
head, input width `feats`) runs on the aggregated features and no `coarse_map` is returned.

Attribute names follow the PyTorch modules (`backbone_net`, `classifer` [sic], `bottleneck1..3`,
`bottleneck_fusion`, `mscc.{bottleneck, decoder_map, fuse, gcn}`, `decoder`) so that `convert.RENAME` is a short
table of Sequential indices. The MFA input widths are the backbone's C2..C4 widths (the official code hard-codes
feats, 2 feats, 4 feats, which equals them for ResNet-50/101 with feats = 512).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from common.nn import resnet, spectral
from common.nn.layers import torch_batch_norm, torch_conv, torch_linear


def upsample_bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """`F.interpolate(x, size, mode='bilinear', align_corners=False)` for upsampling channels-last maps.

  [B, h, w, C] -> [B, H, W, C] with H >= h, W >= w: half-pixel sampling with edge clamping, which is what
  `jax.image.resize` computes when it does not shrink (its triangle kernel renormalised at the borders equals
  PyTorch's clamp of negative source coordinates). Shrinking would antialias, unlike PyTorch, so it is refused.
  """
  b, h, w, c = x.shape
  if size[0] < h or size[1] < w:
    raise ValueError(f"upsample_bilinear only enlarges: {h}x{w} -> {size[0]}x{size[1]}")
  return jax.image.resize(x, (b, size[0], size[1], c), "bilinear")


class ConvBNReLU(nnx.Module):
  """`Sequential(Conv2d(no bias), BN, ReLU)`: [B, H, W, in] -> [B, H, W, out] (torch keys `.0`, `.1`)."""

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, dtype=None, rngs: nnx.Rngs):
    self.conv = torch_conv(in_channels, out_channels, (kernel_size, kernel_size), padding=kernel_size // 2,
                           use_bias=False, dtype=dtype, rngs=rngs)
    self.bn = torch_batch_norm(out_channels, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return jax.nn.relu(self.bn(self.conv(x)))


class ClassifierHead(nnx.Module):
  """1x1 conv+BN+ReLU, Dropout2d, 1x1 conv with bias: [B, H, W, in] -> [B, H, W, num_classes].

  The official `decoder` and `mscc.decoder_map` (torch Sequential indices 0 conv, 1 BN, 4 conv).
  """

  def __init__(self, in_channels: int, num_classes: int, dropout: float, *, dtype=None, rngs: nnx.Rngs):
    self.conv1 = torch_conv(in_channels, in_channels, (1, 1), use_bias=False, dtype=dtype, rngs=rngs)
    self.bn = torch_batch_norm(in_channels, dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(dropout, broadcast_dims=(1, 2), rngs=rngs)  # Dropout2d: whole channels
    self.conv2 = torch_conv(in_channels, num_classes, (1, 1), dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.conv2(self.dropout(jax.nn.relu(self.bn(self.conv1(x)))))


class Classifier(nnx.Module):
  """Image head: global pool + Linear, [B, H, W, C] -> [B, num_classes] (official `classifer.fc`).

  `pool='avg'` is the official global average pool; 'max' takes each channel's strongest position instead (an
  ablation field: a small manipulated region then drives the score as it drives the mask).
  """

  def __init__(self, in_channels: int, num_classes: int, *, pool: str = "avg", dtype=None, rngs: nnx.Rngs):
    if pool not in ("avg", "max"):
      raise ValueError(f"image pool must be 'avg' or 'max', got {pool!r}")
    self.pool = pool
    self.fc = torch_linear(in_channels, num_classes, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc(x.mean(axis=(1, 2)) if self.pool == "avg" else x.max(axis=(1, 2)))


class GCN(nnx.Module):
  """Graph step over the n spectral groups: Z1 = ReLU(mix_n(Z) + Z), Z2 = Z1 W (Linear c -> c, no bias).

  [B, n, K, c] -> [B, n, K, c]. `conv1` is the official 1x1 Conv2d(n -> n) over the group axis, run here as a
  1x1 conv with the groups as channels.
  """

  def __init__(self, num_nodes: int, channels: int, *, dtype=None, rngs: nnx.Rngs):
    self.conv1 = torch_conv(num_nodes, num_nodes, (1, 1), use_bias=False, dtype=dtype, rngs=rngs)
    self.conv2 = torch_linear(channels, channels, use_bias=False, dtype=dtype, rngs=rngs)

  def __call__(self, z: jax.Array) -> jax.Array:
    mixed = jnp.moveaxis(self.conv1(jnp.moveaxis(z, 1, -1)), -1, 1)
    return self.conv2(jax.nn.relu(mixed + z))


class MSCC(nnx.Module):
  """Multi-Spectral Class Center module: [B, h, w, C] -> (out [B, h, w, out_channels], coarse [B, h, w, K]).

  1. F = X * DCT basis (pixel-wise, `spectral.MultiSpectralDCT`); X and F split into n = spectral_k**2
     contiguous channel groups of c = C / n.
  2. Coarse maps M_g = decoder_map(F_g) (shared weights, groups folded into the batch): raw logits [HW, K];
     the fused coarse map is `fuse` (1x1 conv n -> 1, bias) over the groups.
  3. Class centers Z_g = M_g^T F_g [K, c] (weighted by the raw logits, no softmax, as the official code),
     then the GCN over the n groups.
  4. Pixel-class relations A_g = softmax over K of X_g Z_g^T, context O_g = A_g Z_g; groups merged back.
  5. out = conv3x3+BN+ReLU(concat(X, O)).
  The centers and relations are computed in float32 whatever the compute dtype (their magnitudes scale with
  h*w times the logits).
  """

  def __init__(self, num_classes: int, feats_channels: int, out_channels: int, dropout: float, *,
               spectral_k: int = 2, dct_k: int = spectral.OFFICIAL_DCT_K,
               spectral_size: tuple[int, int] | None = None, dtype=None, rngs: nnx.Rngs):
    self.num_groups = spectral_k * spectral_k
    if feats_channels % self.num_groups:
      raise ValueError(f"feats_channels={feats_channels} is not divisible by spectral_k**2={self.num_groups}")
    group_channels = feats_channels // self.num_groups
    self.num_classes = num_classes
    self.frequency = spectral.MultiSpectralDCT(dct_k, spectral_size)
    self.bottleneck = ConvBNReLU(2 * feats_channels, out_channels, 3, dtype=dtype, rngs=rngs)
    self.decoder_map = ClassifierHead(group_channels, num_classes, dropout, dtype=dtype, rngs=rngs)
    self.fuse = torch_conv(self.num_groups, 1, (1, 1), dtype=dtype, rngs=rngs)
    self.gcn = GCN(self.num_groups, group_channels, dtype=dtype, rngs=rngs)

  def group_maps(self, fres: jax.Array) -> jax.Array:
    """DCT-modulated groups [B, n, h, w, c] -> coarse logits per group [B, n, h, w, K]."""
    b, n, h, w, c = fres.shape
    return self.decoder_map(fres.reshape(b * n, h, w, c)).reshape(b, n, h, w, self.num_classes)

  def centers(self, maps: jax.Array, fres: jax.Array) -> jax.Array:
    """Logit-weighted sums over pixels: maps [B, n, h, w, K], fres [B, n, h, w, c] -> [B, n, K, c] (float32)."""
    return jnp.einsum("bnhwk,bnhwc->bnkc", maps.astype(jnp.float32), fres.astype(jnp.float32),
                      precision=jax.lax.Precision.HIGHEST)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    fres = spectral.channel_groups(self.frequency(x), self.num_groups)
    groups = spectral.channel_groups(x, self.num_groups)
    maps = self.group_maps(fres)
    coarse = self.fuse(jnp.moveaxis(maps, 1, -1))[..., 0]                       # [B, h, w, K]
    centers = self.gcn(self.centers(maps, fres))                                  # [B, n, K, c]
    highest = jax.lax.Precision.HIGHEST
    relation = jax.nn.softmax(jnp.einsum("bnhwc,bnkc->bnhwk", groups.astype(jnp.float32), centers,
                                         precision=highest), axis=-1)
    context = jnp.einsum("bnhwk,bnkc->bnhwc", relation, centers, precision=highest)
    out = self.bottleneck(jnp.concatenate([x, spectral.merge_groups(context).astype(x.dtype)], axis=-1))
    return out, coarse


class MSCCNet(nnx.Module):
  """The whole network (see the module docstring): image [B, H, W, 3] -> dict of
  `image_logits` [B, K], `mask_logits` [B, H/8, W/8, K] (decoder), `coarse_map` [B, H/8, W/8, K] (MSCC).

  Args:
    depth, output_stride, stem_channels, base_channels: the ResNet v1c backbone (50, 8, 64, 64 released).
    feats_channels, out_channels: MFA / MSCC widths (512, 512 released).
    num_classes: 2.  dropout: Dropout2d rate of the decoders (0.1).
    spectral_k: groups per axis (n = k**2 groups; 2 released).  dct_k: DCT frequencies per axis (8, fixed
      in the official code).  spectral_size: None (DCT basis per feature size) or the official fixed (64, 64).
    image_pool: 'avg' (released) or 'max', the image head's global pool.
    mfa: multi-level feature aggregation of C2..C4 (released); False: the last stage only (`bottleneck3(C4)`).
    mscc: the MSCC module (released); False: the decoder directly on the (aggregated) features, no coarse map.
    dtype: compute dtype (parameters stay float32).
  """

  def __init__(self, *, depth: int = 50, output_stride: int = 8, stem_channels: int = 64,
               base_channels: int = 64, feats_channels: int = 512, out_channels: int = 512,
               num_classes: int = 2, dropout: float = 0.1, spectral_k: int = 2,
               dct_k: int = spectral.OFFICIAL_DCT_K, spectral_size: tuple[int, int] | None = None,
               image_pool: str = "avg", mfa: bool = True, mscc: bool = True, dtype=None, rngs: nnx.Rngs):
    self.use_mfa, self.use_mscc = bool(mfa), bool(mscc)
    self.backbone_net = resnet.resnet_v1c(depth, output_stride=output_stride, stem_channels=stem_channels,
                                          base_channels=base_channels, dtype=dtype, rngs=rngs)
    c2, c3, c4 = self.backbone_net.out_channels[1:]
    self.classifer = Classifier(c4, num_classes, pool=image_pool, dtype=dtype, rngs=rngs)
    if self.use_mfa:
      self.bottleneck1 = ConvBNReLU(c2, feats_channels, 3, dtype=dtype, rngs=rngs)
      self.bottleneck2 = ConvBNReLU(c3, feats_channels, 3, dtype=dtype, rngs=rngs)
    self.bottleneck3 = ConvBNReLU(c4, feats_channels, 3, dtype=dtype, rngs=rngs)
    if self.use_mfa:
      self.bottleneck_fusion = ConvBNReLU(3 * feats_channels, feats_channels, 3, dtype=dtype, rngs=rngs)
    if self.use_mscc:
      self.mscc = MSCC(num_classes, feats_channels, out_channels, dropout, spectral_k=spectral_k, dct_k=dct_k,
                       spectral_size=spectral_size, dtype=dtype, rngs=rngs)
    self.decoder = ClassifierHead(out_channels if self.use_mscc else feats_channels, num_classes, dropout,
                                  dtype=dtype, rngs=rngs)

  @classmethod
  def from_config(cls, config, *, dtype=None, rngs: nnx.Rngs) -> "MSCCNet":
    """The model of `config.model` (configs/msccnet.py; `mfa` / `mscc` absent = True, the paper's model)."""
    m = config.model
    return cls(depth=m.depth, output_stride=m.output_stride, stem_channels=m.stem_channels,
               base_channels=m.base_channels, feats_channels=m.feats_channels, out_channels=m.out_channels,
               num_classes=m.num_classes, dropout=m.dropout, spectral_k=m.spectral_k, dct_k=m.dct_k,
               spectral_size=tuple(m.spectral_size) if m.spectral_size else None, image_pool=m.image_pool,
               mfa=m.get("mfa", True), mscc=m.get("mscc", True), dtype=dtype, rngs=rngs)

  def mfa(self, c2: jax.Array, c3: jax.Array, c4: jax.Array) -> jax.Array:
    """Multi-level feature aggregation of C2..C4 (same spatial size at OS8) -> [B, h, w, feats]; without MFA
    (`mfa=False`) the last stage's projection `bottleneck3(C4)` alone."""
    if not self.use_mfa:
      return self.bottleneck3(c4)
    x = jnp.concatenate([self.bottleneck1(c2), self.bottleneck2(c3), self.bottleneck3(c4)], axis=-1)
    return self.bottleneck_fusion(x)

  def __call__(self, image: jax.Array) -> dict[str, jax.Array]:
    """Without MSCC (`mscc=False`) the decoder runs on the aggregated features and `coarse_map` is absent."""
    _, c2, c3, c4 = self.backbone_net(image)
    features = self.mfa(c2, c3, c4)
    if not self.use_mscc:
      return {"image_logits": self.classifer(c4), "mask_logits": self.decoder(features)}
    out, coarse = self.mscc(features)
    return {"image_logits": self.classifer(c4), "mask_logits": self.decoder(out), "coarse_map": coarse}


def num_parameters(model: nnx.Module) -> int:
  return int(sum(np.prod(v.shape) for v in jax.tree.leaves(nnx.state(model, nnx.Param))))
