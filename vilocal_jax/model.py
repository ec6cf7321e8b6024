"""ViLocal's network: HP3D noise residual -> 3D UniFormer encoder -> 1x1-conv decoder -> x4 bilinear upsample.

`[B, T, H, W, 3]` frames in [0, 1] (T <= 16 so that the encoder ends at temporal size 1; H, W multiples of 4)
-> logits `[B, H, W]` for the target (middle) frame. Stage 1 trains the encoder alone on its embeddings
`[B, H/4, W/4, 256]`; stage 2 trains the decoder on top of the frozen encoder.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from common.nn import layers, uniformer


class Decoder(nnx.Module):
  """The official `Decoder.classifier`: conv1x1 C->C/2 (bias), BatchNorm, ReLU, conv1x1 C/2->1 (bias).

  `[B, h, w, C] -> [B, h, w]` logits. Torch keys `classifier.{0,1,3}` are `conv1`, `bn`, `conv2` here.
  """

  def __init__(self, in_features: int = 256, *, dtype=None, rngs: nnx.Rngs):
    hidden = in_features // 2
    self.conv1 = layers.torch_conv(in_features, hidden, (1, 1), dtype=dtype, rngs=rngs)
    self.bn = layers.torch_batch_norm(hidden, dtype=dtype, rngs=rngs)
    self.conv2 = layers.torch_conv(hidden, 1, (1, 1), dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.conv2(jax.nn.relu(self.bn(self.conv1(x))))[..., 0]


def encoder_kwargs(depth: Sequence[int] = (5, 8, 20, 7), widths: Sequence[int] = (32, 64, 128, 256),
                   noise_layer: bool = True, **overrides) -> dict:
  """UniFormer kwargs of ViLocal's encoder, with the ablation switches (depth, widths, HP3D on/off)."""
  kwargs = uniformer.vilocal_encoder_config(depth)
  kwargs["embed_dim"] = tuple(widths)
  kwargs["input_filter"] = "hp3d" if noise_layer else None
  kwargs.update(overrides)
  return kwargs


class ViLocal(nnx.Module):
  """`encoder` (UniFormer with the HP3D noise layer) + `decoder`; see the module docstring for shapes."""

  def __init__(self, *, encoder: dict, dtype=None, rngs: nnx.Rngs):
    self.encoder = uniformer.UniFormer(**encoder, dtype=dtype, rngs=rngs)
    self.decoder = Decoder(encoder["embed_dim"][-1], dtype=dtype, rngs=rngs)

  @classmethod
  def from_config(cls, config, *, dtype=None, rngs: nnx.Rngs) -> "ViLocal":
    """The model of `config.model` (configs/vilocal.py: depth, widths, the `noise_layer` ablation switch, dropout
    rates, attention implementation) with `config.remat`."""
    m = config.model
    encoder = encoder_kwargs(
        depth=m.depth, widths=m.widths, noise_layer=m.noise_layer, drop_rate=m.drop_rate,
        attn_drop_rate=m.attn_drop_rate, drop_path_rate=m.drop_path_rate, attention_impl=m.attention_impl,
        query_chunk=m.query_chunk, remat=config.get("remat", False))
    return cls(encoder=encoder, dtype=dtype, rngs=rngs)

  def embed(self, frames: jax.Array) -> jax.Array:
    """`[B, T, H, W, 3] -> [B, H/4, W/4, C]` encoder embeddings (the stage-1 contrastive features)."""
    return self.encoder(frames)

  def decode(self, embedding: jax.Array, size: tuple[int, int]) -> jax.Array:
    """`[B, h, w, C]` embeddings -> `[B, *size]` logits (bilinear upsample with align_corners=True, as the reference)."""
    logits = self.decoder(embedding)
    return layers.resize_bilinear_align_corners(logits[..., None].astype(jnp.float32), size)[..., 0]

  def __call__(self, frames: jax.Array) -> jax.Array:
    """`[B, T, H, W, 3] -> [B, H, W]` logits."""
    return self.decode(self.embed(frames), frames.shape[2:4])
