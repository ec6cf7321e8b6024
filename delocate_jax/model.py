"""Delocate's networks: the recovering MAE and the localization encoder-decoder, in one NNX module.

`Delocate.mae` (stage 1): `common.nn.vit.MAE` on normalised RGB face crops [B, H, W, 3].
`Delocate.recover`: the whole face in-painted region by region (`face_regions.recovery_passes`), [B, H, W, 3].
`Delocate.localizer` (stage 2): `Localizer` on concat(face, recovery, |face - recovery|) [B, H, W, 9] ->
mask logits [B, H, W] and a class logit [B].
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from flax import nnx
import jax
import jax.numpy as jnp

from common.nn import layers, vit
from delocate_jax import face_regions


def upsample2x(x: jax.Array) -> jax.Array:
  """Bilinear x2 (half-pixel centres, PyTorch's align_corners=False). [B, H, W, C] -> [B, 2H, 2W, C]."""
  b, h, w, c = x.shape
  return jax.image.resize(x, (b, 2 * h, 2 * w, c), "bilinear", antialias=False)


class Localizer(nnx.Module):
  """ViT encoder over the 9-channel input, a progressive upsampling decoder, a class head on the class token.

  Decoder: the token grid [B, H/p, W/p, dim], log2(p) times (x2 bilinear, 3x3 conv, GELU) through
  `decoder_channels`; at full resolution it is concatenated with a 3x3 conv of the input (`skip`, so the
  pixel-level discrepancy reaches the mask directly), fused by a 3x3 conv + GELU, and `mask_head` (1x1 conv)
  gives the logits. `head`: LayerNorm-ed class token -> Linear -> 1 logit.
  `[B, H, W, in_chans]` -> {"mask_logits": [B, H, W], "logit": [B]}.
  """

  def __init__(self, *, in_chans: int = 9, patch: int = 16, dim: int = 384, depth: int = 6, num_heads: int = 6,
               decoder_channels: Sequence[int] = (256, 128, 64, 32), skip_channels: int = 16,
               drop_path: float = 0.0, dtype=None, rngs: nnx.Rngs):
    ups = int(round(math.log2(patch)))
    if 2 ** ups != patch or len(decoder_channels) != ups:
      raise ValueError(f"decoder_channels needs log2(patch) = {math.log2(patch)} entries (one per x2 upsampling), "
                       f"got {tuple(decoder_channels)}")
    self.encoder = vit.ViTEncoder(in_chans=in_chans, patch=patch, dim=dim, depth=depth, num_heads=num_heads,
                                  drop_path=drop_path, dtype=dtype, rngs=rngs)
    self.head = layers.torch_linear(dim, 1, dtype=dtype, rngs=rngs)
    chans = (dim, *decoder_channels)
    self.decoder = nnx.Dict({str(i): layers.torch_conv(chans[i], chans[i + 1], (3, 3), padding=1, dtype=dtype,
                                                       rngs=rngs) for i in range(ups)})
    self.skip = layers.torch_conv(in_chans, skip_channels, (3, 3), padding=1, dtype=dtype, rngs=rngs)
    self.fuse = layers.torch_conv(chans[-1] + skip_channels, chans[-1], (3, 3), padding=1, dtype=dtype, rngs=rngs)
    self.mask_head = layers.torch_conv(chans[-1], 1, (1, 1), dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    b = x.shape[0]
    gh, gw = self.encoder.grid(*x.shape[1:3])
    tokens = self.encoder(x)
    y = tokens[:, 1:].reshape(b, gh, gw, tokens.shape[-1])
    for i in range(len(self.decoder)):
      y = layers.gelu(self.decoder[str(i)](upsample2x(y)))
    y = layers.gelu(self.fuse(jnp.concatenate([y, layers.gelu(self.skip(x))], axis=-1)))
    return {"mask_logits": self.mask_head(y)[..., 0], "logit": self.head(tokens[:, 0])[..., 0]}


class Delocate(nnx.Module):
  """The recovering MAE (`mae`) and the `localizer`; see the module docstring."""

  def __init__(self, *, mae: dict, localizer: dict, dtype=None, rngs: nnx.Rngs):
    self.mae = vit.MAE(dtype=dtype, rngs=rngs, **mae)
    self.localizer = Localizer(dtype=dtype, rngs=rngs, **localizer)

  @classmethod
  def from_config(cls, config, *, dtype=None, rngs: nnx.Rngs) -> "Delocate":
    """The model of `config.model` (configs/delocate.py): the MAE and the localizer at `model.patch`."""
    m = config.model
    return cls(mae=dict(patch=m.patch, **m.mae.to_dict()), localizer=dict(patch=m.patch, **m.localizer.to_dict()),
               dtype=dtype, rngs=rngs)

  def recover(self, images: jax.Array, roi: jax.Array, num_masked: int, residual_groups: int,
              rng: jax.Array) -> jax.Array:
    """Recovery of whole faces: images [B, H, W, 3] (normalised), roi [B, R, N] -> [B, H, W, 3].

    P = R + residual_groups MAE passes run as one batch of P * B; each token comes from the pass that masks it
    as its target (`face_regions.assemble_recovery`). A roi of batch 1 (one crop geometry) is used for every
    face, with the same passes (no random draw depends on the batch size, so an export can keep it symbolic).
    """
    b, h, w, c = images.shape
    p = self.mae.patch
    masks, targets = face_regions.recovery_passes(rng, roi, num_masked, residual_groups)
    passes = masks.shape[0]
    n = masks.shape[-1]
    masks, targets = (jnp.broadcast_to(a, (passes, b, n)) for a in (masks, targets))
    tiled = jnp.broadcast_to(images[None], (passes, b, h, w, c)).reshape(passes * b, h, w, c)
    preds = self.mae(tiled, masks.reshape(passes * b, n), num_masked).reshape(passes, b, n, p * p * c)
    return vit.unpatchify(face_regions.assemble_recovery(preds, masks, targets), p, (h // p, w // p))

  def localize(self, images: jax.Array, recovery: jax.Array) -> dict[str, jax.Array]:
    """Localizer outputs from the face and its recovery (both normalised, [B, H, W, 3])."""
    return self.localizer(jnp.concatenate([images, recovery, jnp.abs(images - recovery)], axis=-1))
