"""Fixed high-pass (noise-residual) filters and the Bayar constrained convolution, channels-last.

The fixed filters are numpy constants built on demand; they are not `nnx.Param`s, never trained and
never in the parameter tree or in checkpoints.

* `HP3D`: ViLocal's 3-D noise layer (`SRM_3D.py`): the three SRM kernels stacked along time in one
  3x5x5 kernel shared by every (input, output) channel pair, then a clamp to [0, 4].
* `SRMConv2D`: the classic 2-D SRM filter layer of image forensics (RGB-N, MVSS-Net, IMDL-BenCo).
* `BayarConv2D`: a learnable 5x5 conv whose kernels are constrained to a prediction-error filter.
"""
from __future__ import annotations

import functools

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from common.nn import layers

# Second-order "KB" kernel, q = 4.
SRM_KB = np.array([[0, 0, 0, 0, 0],
                   [0, -1, 2, -1, 0],
                   [0, 2, -4, 2, 0],
                   [0, -1, 2, -1, 0],
                   [0, 0, 0, 0, 0]], np.float64)
# Fifth-order "KV" kernel, q = 12.
SRM_KV = np.array([[-1, 2, -2, 2, -1],
                   [2, -6, 8, -6, 2],
                   [-2, 8, -12, 8, -2],
                   [2, -6, 8, -6, 2],
                   [-1, 2, -2, 2, -1]], np.float64)
# Laplacian-type kernel used as ViLocal's third tap, q = 4.
SRM_LAPLACE = np.array([[0, 0, 0, 0, 0],
                        [0, 0, -1, 0, 0],
                        [0, -1, 4, -1, 0],
                        [0, 0, -1, 0, 0],
                        [0, 0, 0, 0, 0]], np.float64)
# Second-order horizontal kernel, q = 2 (the third filter of the classic 2-D SRM layer).
SRM_HORIZONTAL = np.array([[0, 0, 0, 0, 0],
                           [0, 0, 0, 0, 0],
                           [0, 1, -2, 1, 0],
                           [0, 0, 0, 0, 0],
                           [0, 0, 0, 0, 0]], np.float64)


@functools.lru_cache(maxsize=None)
def hp3d_kernel(channels: int = 3) -> np.ndarray:
  """ViLocal's HP3D weight in DHWIO layout: `[3, 5, 5, channels, channels]`, float32.

  Temporal tap 0 is KB/4, tap 1 is KV/12, tap 2 is Laplace/4; the same 3x5x5 kernel connects every
  input channel to every output channel.
  """
  taps = np.stack([SRM_KB / 4.0, SRM_KV / 12.0, SRM_LAPLACE / 4.0]).astype(np.float32)
  kernel = np.broadcast_to(taps[..., None, None], (3, 5, 5, channels, channels))
  kernel = np.ascontiguousarray(kernel)
  kernel.setflags(write=False)
  return kernel


def hp3d(x: jax.Array) -> jax.Array:
  """ViLocal's HP3D noise layer: fixed 3-D high-pass conv then clamp to [0, 4].

  Cross-correlation with zero padding (1, 2, 2) in (T, H, W), stride 1, no bias, computed in float32 on
  every backend (the clamp makes it sensitive to rounding), returned in the input dtype.
  `[B, T, H, W, C] -> [B, T, H, W, C]`; all C outputs are equal. Since one 3x5x5 kernel connects every input
  channel to every output channel, this is the channel sum filtered once: a sum of its shifted copies over
  the kernel's non-zero taps (exact constants), which runs ~20x faster than XLA's CPU convolution.
  """
  if x.ndim != 5:
    raise ValueError(f"HP3D expects [B, T, H, W, C], got shape {x.shape}")
  taps = hp3d_kernel(1)[..., 0, 0]
  total = jnp.pad(x.astype(jnp.float32).sum(-1), ((0, 0), (1, 1), (2, 2), (2, 2)))
  t, h, w = x.shape[1:4]
  y = None
  for dt, dh, dw in zip(*np.nonzero(taps)):
    term = total[:, dt:dt + t, dh:dh + h, dw:dw + w] * np.float32(taps[dt, dh, dw])
    y = term if y is None else y + term
  y = jnp.clip(y, 0.0, 4.0).astype(x.dtype)
  return jnp.broadcast_to(y[..., None], x.shape)


class HP3D(nnx.Module):
  """Module form of `hp3d` (no state). `[B, T, H, W, C] -> [B, T, H, W, C]`."""

  def __call__(self, x: jax.Array) -> jax.Array:
    return hp3d(x)


@functools.lru_cache(maxsize=None)
def srm_kernel_2d(channels: int = 3, mode: str = "sum") -> np.ndarray:
  """The classic SRM filter bank (KB/4, KV/12, horizontal/2) as an HWIO float32 kernel.

  mode 'sum' (RGB-N, MVSS-Net): `[5, 5, channels, 3]`, output k applies filter k to every input
    channel and sums them.
  mode 'per_channel' (IMDL-BenCo `SRMConv2D`): `[5, 5, channels, 3 * channels]`, output
    `k * channels + c` applies filter k to input channel c alone.
  """
  filters = np.stack([SRM_KB / 4.0, SRM_KV / 12.0, SRM_HORIZONTAL / 2.0]).astype(np.float32)
  if mode == "sum":
    kernel = np.broadcast_to(filters.transpose(1, 2, 0)[:, :, None, :], (5, 5, channels, 3))
  elif mode == "per_channel":
    kernel = np.zeros((5, 5, channels, 3 * channels), np.float32)
    for k in range(3):
      for c in range(channels):
        kernel[:, :, c, k * channels + c] = filters[k]
  else:
    raise ValueError(f"mode must be 'sum' or 'per_channel', got {mode!r}")
  kernel = np.ascontiguousarray(kernel)
  kernel.setflags(write=False)
  return kernel


class SRMConv2D(nnx.Module):
  """Fixed 2-D SRM filter layer, zero padding 2, optional truncation to [-clip, clip].

  `[B, H, W, C] -> [B, H, W, 3]` (mode 'sum') or `[B, H, W, 3C]` (mode 'per_channel'), computed
  in float32 at full precision and returned in the input dtype. MVSS-Net truncates with `clip=3`;
  RGB-N's layer and IMDL-BenCo's do not truncate (`clip=None`).
  """

  def __init__(self, mode: str = "sum", clip: float | None = None):
    srm_kernel_2d(3, mode)  # validates `mode`
    self.mode = mode
    self.clip = clip

  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 4:
      raise ValueError(f"SRMConv2D expects [B, H, W, C], got shape {x.shape}")
    y = jax.lax.conv_general_dilated(
        x.astype(jnp.float32), jnp.asarray(srm_kernel_2d(x.shape[-1], self.mode)),
        window_strides=(1, 1), padding=((2, 2), (2, 2)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=jax.lax.Precision.HIGHEST)
    if self.clip is not None:
      y = jnp.clip(y, -self.clip, self.clip)
    return y.astype(x.dtype)


class BayarConv2D(nnx.Module):
  """Bayar & Stamm's constrained convolution (no bias, zero padding `kernel_size // 2`).

  The learnable kernel `[k, k, in, out]` is projected in every forward pass: the centre tap is set
  to -1 and the other taps are divided by their sum, so that they add up to 1 for every
  (input, output) pair. The projection is part of the differentiable forward pass, whereas the
  PyTorch implementations (e.g. IMDL-BenCo's `BayerConv`) rewrite the stored weight in place
  before each forward; the filters applied are the same. `[B, H, W, in] -> [B, H, W, out]`.
  """

  TORCH_PARAMS = {"kernel": ("weight", "conv")}

  def __init__(self, in_features: int = 3, out_features: int = 3, kernel_size: int = 5, *,
               rngs: nnx.Rngs):
    if kernel_size % 2 != 1:
      raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    self.kernel_size = kernel_size
    shape = (kernel_size, kernel_size, in_features, out_features)
    self.kernel = nnx.Param(layers.torch_default_kernel_init(rngs.params(), shape, jnp.float32))

  def constrained_kernel(self) -> jax.Array:
    """The projected kernel actually applied, `[k, k, in, out]`."""
    k = self.kernel_size
    centre = np.zeros((k, k, 1, 1), np.float32)
    centre[k // 2, k // 2] = 1.0
    w = self.kernel[...] * (1.0 - centre)
    w = w / jnp.sum(w, axis=(0, 1), keepdims=True)
    return w - centre

  def __call__(self, x: jax.Array) -> jax.Array:
    p = self.kernel_size // 2
    return jax.lax.conv_general_dilated(
        x, self.constrained_kernel().astype(x.dtype), window_strides=(1, 1),
        padding=((p, p), (p, p)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
