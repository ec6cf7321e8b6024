"""Image-quality metrics for inpainting, per image, in JAX: PSNR, SSIM, L1 (images in [0, 1], [B, H, W, C]).

* PSNR = 10 log10(1 / MSE) over all pixels and channels of each image (data range 1).
* SSIM (Wang et al. 2004): 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, population statistics,
  'valid' windows only, averaged over positions and channels. This equals scikit-image's
  `structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1,
  channel_axis=-1)`.
* L1 = mean |x - y| per image.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np


def psnr(x: jax.Array, y: jax.Array, eps: float = 1e-10) -> jax.Array:
  """[B, ...] -> [B] PSNR in dB for data range 1."""
  mse = jnp.mean(jnp.square(x.astype(jnp.float32) - y.astype(jnp.float32)), axis=tuple(range(1, x.ndim)))
  return 10.0 * jnp.log10(1.0 / jnp.maximum(mse, eps))


def l1(x: jax.Array, y: jax.Array) -> jax.Array:
  """[B, ...] -> [B] mean absolute error."""
  return jnp.mean(jnp.abs(x.astype(jnp.float32) - y.astype(jnp.float32)), axis=tuple(range(1, x.ndim)))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
  t = np.arange(size, dtype=np.float64) - (size - 1) / 2
  g = np.exp(-t ** 2 / (2 * sigma ** 2))
  g /= g.sum()
  return np.outer(g, g).astype(np.float32)


def ssim(x: jax.Array, y: jax.Array, *, win_size: int = 11, sigma: float = 1.5, k1: float = 0.01,
         k2: float = 0.03) -> jax.Array:
  """[B, H, W, C] in [0, 1] -> [B] mean SSIM (H, W >= win_size)."""
  if min(x.shape[1:3]) < win_size:
    raise ValueError(f"SSIM needs images of at least {win_size}x{win_size}, got {x.shape[1:3]}")
  c = x.shape[-1]
  window = jnp.tile(jnp.asarray(_gaussian_window(win_size, sigma))[:, :, None, None], (1, 1, 1, c))
  blur = lambda a: lax.conv_general_dilated(a, window, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            feature_group_count=c, precision=lax.Precision.HIGHEST)
  x, y = x.astype(jnp.float32), y.astype(jnp.float32)
  mx, my = blur(x), blur(y)
  vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
  c1, c2 = k1 ** 2, k2 ** 2
  s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
  return s.mean((1, 2, 3))
