"""A plain ViT encoder and a masked autoencoder (MAE, He et al. 2022) in NNX, channels-last.

Follows facebookresearch/mae `models_mae.py` (and timm's `Block`): patches cut by a stride-p conv
(`patch_embed`), fixed 2-D sin-cos position embeddings (not trained), a class token, pre-LN blocks
(LayerNorm eps 1e-6, multi-head attention, MLP with exact GELU), a final LayerNorm. The MAE encoder sees only
the visible tokens; the decoder embeds them, puts a learned `mask_token` at every masked position (original
order), adds its own sin-cos embedding and predicts the `p * p * C` pixels of every patch.

Masking is data: a boolean `mask` [B, N] (True = masked) with the same number of masked tokens in every row,
given to `MAE.__call__` with that count as the static `num_masked`, so shapes stay static under `jit`
(`delocate_jax.face_regions` samples such masks). Linear layers start from N(0, 0.02) with zero bias (timm's ViT
init); MAE's xavier-uniform init is not reproduced (no MAE weights are loaded here).
"""
from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from common.nn import layers
from common.nn import uniformer

NORM_EPS = 1e-6


def sincos_pos_embed_2d(dim: int, grid_h: int, grid_w: int) -> np.ndarray:
  """MAE's `get_2d_sincos_pos_embed` without the class token: float32 [grid_h * grid_w, dim], row-major.

  Half of the channels encode the column (w), half the row (h); each half is [sin(pos * omega), cos(...)] with
  omega = 1 / 10000 ** (i / (dim / 4)), i < dim / 4.
  """
  if dim % 4:
    raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got {dim}")
  omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4.0))
  hh, ww = np.meshgrid(np.arange(grid_h, dtype=np.float64), np.arange(grid_w, dtype=np.float64), indexing="ij")

  def embed(pos):
    out = np.outer(pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)

  return np.concatenate([embed(ww), embed(hh)], axis=1).astype(np.float32)


def patchify(images: jax.Array, patch: int) -> jax.Array:
  """[B, H, W, C] -> [B, (H/p) * (W/p), p * p * C], patches row-major, pixels (row, col, channel) inside."""
  b, h, w, c = images.shape
  if h % patch or w % patch:
    raise ValueError(f"image {h}x{w} is not divisible into {patch}x{patch} patches")
  x = images.reshape(b, h // patch, patch, w // patch, patch, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(patches: jax.Array, patch: int, grid: tuple[int, int]) -> jax.Array:
  """Inverse of `patchify`: [B, gh * gw, p * p * C] -> [B, gh * p, gw * p, C]."""
  b, n, d = patches.shape
  gh, gw = grid
  c = d // (patch * patch)
  x = patches.reshape(b, gh, gw, patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, gh * patch, gw * patch, c)


def gather_tokens(x: jax.Array, index: jax.Array) -> jax.Array:
  """x [B, N, D], index int [B, K] -> [B, K, D]."""
  return jnp.take_along_axis(x, index[..., None], axis=1)


class Block(nnx.Module):
  """timm ViT block: x + attn(norm1(x)), then x + mlp(norm2(x)), each with drop path. [B, N, D] -> same."""

  def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, drop_path: float = 0.0,
               attention_impl: str = "xla", dtype=None, rngs: nnx.Rngs):
    self.norm1 = layers.torch_layer_norm(dim, eps=NORM_EPS, dtype=dtype, rngs=rngs)
    self.attn = uniformer.Attention(dim, num_heads, attention_impl=attention_impl, init="uniformer", dtype=dtype,
                                    rngs=rngs)
    self.drop_path = layers.DropPath(drop_path, rngs=rngs)
    self.norm2 = layers.torch_layer_norm(dim, eps=NORM_EPS, dtype=dtype, rngs=rngs)
    self.mlp = layers.Mlp(dim, int(dim * mlp_ratio), dtype=dtype, kernel_init=nnx.initializers.normal(0.02),
                          bias_init=nnx.initializers.zeros, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.drop_path(self.attn(self.norm1(x)))
    return x + self.drop_path(self.mlp(self.norm2(x)))


def _blocks(depth, dim, heads, mlp_ratio, drop_path, attention_impl, dtype, rngs) -> nnx.Dict:
  rates = np.linspace(0.0, drop_path, depth) if depth else []
  return nnx.Dict({str(i): Block(dim, heads, mlp_ratio=mlp_ratio, drop_path=float(rates[i]),
                                 attention_impl=attention_impl, dtype=dtype, rngs=rngs) for i in range(depth)})


def _run(blocks: nnx.Dict, x: jax.Array) -> jax.Array:
  for i in range(len(blocks)):
    x = blocks[str(i)](x)
  return x


class ViTEncoder(nnx.Module):
  """Patch embedding + sin-cos positions + class token + blocks + LayerNorm.

  `__call__(images [B, H, W, in_chans], keep=None)` -> tokens [B, 1 + K, dim] (class token first), where the
  patch tokens are all N = (H/p)(W/p) of them, or those at the indices `keep` [B, K] (MAE's visible tokens).
  `grid(H, W)` gives (H/p, W/p).
  """

  def __init__(self, *, in_chans: int = 3, patch: int = 16, dim: int = 768, depth: int = 12, num_heads: int = 12,
               mlp_ratio: float = 4.0, drop_path: float = 0.0, attention_impl: str = "xla", dtype=None,
               rngs: nnx.Rngs):
    self.patch, self.dim = patch, dim
    self.patch_embed = layers.torch_conv(in_chans, dim, (patch, patch), stride=patch, dtype=dtype, rngs=rngs)
    self.cls_token = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (1, 1, dim)))
    self.blocks = _blocks(depth, dim, num_heads, mlp_ratio, drop_path, attention_impl, dtype, rngs)
    self.norm = layers.torch_layer_norm(dim, eps=NORM_EPS, dtype=dtype, rngs=rngs)

  def grid(self, height: int, width: int) -> tuple[int, int]:
    if height % self.patch or width % self.patch:
      raise ValueError(f"input {height}x{width} is not divisible by the patch size {self.patch}")
    return height // self.patch, width // self.patch

  def __call__(self, images: jax.Array, keep: jax.Array | None = None) -> jax.Array:
    gh, gw = self.grid(*images.shape[1:3])
    x = self.patch_embed(images).reshape(images.shape[0], gh * gw, self.dim)
    x = x + jnp.asarray(sincos_pos_embed_2d(self.dim, gh, gw), x.dtype)
    if keep is not None:
      x = gather_tokens(x, keep)
    cls = jnp.broadcast_to(self.cls_token[...].astype(x.dtype), (x.shape[0], 1, self.dim))
    return self.norm(_run(self.blocks, jnp.concatenate([cls, x], axis=1)))


class MAE(nnx.Module):
  """Masked autoencoder: `(images [B, H, W, C], mask [B, N] bool, num_masked)` -> pixel predictions
  [B, N, p * p * C] for every patch (the loss reads the masked ones).

  Every row of `mask` must hold exactly `num_masked` True entries (static); the visible tokens are taken in
  their original order.
  """

  def __init__(self, *, in_chans: int = 3, patch: int = 16, dim: int = 768, depth: int = 12, num_heads: int = 12,
               decoder_dim: int = 512, decoder_depth: int = 8, decoder_heads: int = 16, mlp_ratio: float = 4.0,
               attention_impl: str = "xla", dtype=None, rngs: nnx.Rngs):
    self.in_chans = in_chans
    self.encoder = ViTEncoder(in_chans=in_chans, patch=patch, dim=dim, depth=depth, num_heads=num_heads,
                              mlp_ratio=mlp_ratio, attention_impl=attention_impl, dtype=dtype, rngs=rngs)
    init = dict(kernel_init=nnx.initializers.normal(0.02), bias_init=nnx.initializers.zeros)
    self.decoder_embed = layers.torch_linear(dim, decoder_dim, dtype=dtype, rngs=rngs, **init)
    self.mask_token = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (1, 1, decoder_dim)))
    self.decoder_blocks = _blocks(decoder_depth, decoder_dim, decoder_heads, mlp_ratio, 0.0, attention_impl,
                                  dtype, rngs)
    self.decoder_norm = layers.torch_layer_norm(decoder_dim, eps=NORM_EPS, dtype=dtype, rngs=rngs)
    self.decoder_pred = layers.torch_linear(decoder_dim, patch * patch * in_chans, dtype=dtype, rngs=rngs, **init)

  @property
  def patch(self) -> int:
    return self.encoder.patch

  def __call__(self, images: jax.Array, mask: jax.Array, num_masked: int) -> jax.Array:
    gh, gw = self.encoder.grid(*images.shape[1:3])
    n = gh * gw
    if not 0 < num_masked < n:
      raise ValueError(f"num_masked must be in (0, {n}), got {num_masked}")
    order = jnp.argsort(mask.astype(jnp.int32), axis=1, stable=True)  # visible first, each in original order
    keep = order[:, :n - num_masked]
    latent = self.encoder(images, keep)
    x = self.decoder_embed(latent)
    dim = x.shape[-1]
    # Scatter the visible tokens back to their positions; the others hold the mask token.
    slot = jnp.argsort(order, axis=1)  # position of each patch in `order`
    visible = gather_tokens(x[:, 1:], jnp.minimum(slot, n - num_masked - 1))
    tokens = jnp.where(mask[..., None], self.mask_token[...].astype(x.dtype), visible)
    tokens = tokens + jnp.asarray(sincos_pos_embed_2d(dim, gh, gw), x.dtype)
    x = self.decoder_norm(_run(self.decoder_blocks, jnp.concatenate([x[:, :1], tokens], axis=1)))
    return self.decoder_pred(x[:, 1:])


def masked_patch_mse(pred: jax.Array, images: jax.Array, mask: jax.Array, patch: int,
                     norm_pix: bool = False, per_sample: bool = False) -> jax.Array:
  """MAE's loss: per-patch mean squared error, averaged over the masked patches (float32 scalar; [B], each
  sample's own average, with `per_sample`).

  pred [B, N, p*p*C], images [B, H, W, C] (the target), mask [B, N] (True = masked). With `norm_pix` the target
  patches are standardised by their own mean and variance (eps 1e-6), as MAE's `norm_pix_loss`.
  """
  target = patchify(images.astype(jnp.float32), patch)
  if norm_pix:
    mean = target.mean(-1, keepdims=True)
    var = target.var(-1, keepdims=True)
    target = (target - mean) / jnp.sqrt(var + 1e-6)
  per_patch = jnp.mean((pred.astype(jnp.float32) - target) ** 2, axis=-1)
  weights = mask.astype(jnp.float32)
  axis = 1 if per_sample else None
  return jnp.sum(per_patch * weights, axis=axis) / jnp.maximum(jnp.sum(weights, axis=axis), 1.0)
