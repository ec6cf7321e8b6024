"""Frequency decompositions of feature maps: MSCCNet's 2-D DCT modulation and grouping, and an FFT band split.

MSCCNet (`models/msccnet/multi_spectral.py`, adapted from FcaNet) multiplies a feature map pixel-wise by fixed
2-D DCT-II bases, with no spatial sum: channel `ch` of a `C`-channel map is multiplied by the basis of
frequency `i = ch // (C // dct_k**2)`, the frequencies being the `dct_k x dct_k` lowest `(u, v)` listed u-major
(`i = dct_k * u + v`). The basis at pixel (t, s) of an H x W map is `f(u, t, H) * f(v, s, W)` with the
orthonormal DCT-II factor `f(u, t, N) = cos(pi u (t + 0.5) / N) / sqrt(N)`, times sqrt(2) when u > 0.

How `spectral_k` really behaves there: the DCT layer is built with its own default `dct_k = 8` (MSCC never
passes `spectral_k` to it), so there are always 64 frequencies. `spectral_k = k` only sets the number of
channel groups n = k**2 that MSCC then takes as contiguous channel blocks (`channel_groups`). With C = 512 and
k = 2, group g holds DCT rows u in {2g, 2g + 1} (all v): bands of vertical frequency within the lowest 8 x 8 of
the DCT, not radial low/mid/high bands.

The official basis is a fixed 64 x 64 buffer (input 512 x 512 at output stride 8 only). `dct_basis` builds it
for any (H, W) so that it can follow the feature map; `MultiSpectralDCT(size=(64, 64))` keeps the official
fixed-size behaviour (any other feature size is an error, as the buffer's broadcast fails in PyTorch).

`fft_band_split` is the radial alternative (not used by MSCCNet): it cuts the 2-D spectrum into equal-width
rings of normalised radius and returns one spatial map per ring; the bands sum to the input.
"""
from __future__ import annotations

import functools

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

OFFICIAL_DCT_K = 8


def frequency_indices(dct_k: int = OFFICIAL_DCT_K) -> list[tuple[int, int]]:
  """The (u, v) frequencies of the lowest dct_k x dct_k block, u-major (FcaNet's `get_freq_indices`)."""
  if dct_k < 1 or dct_k % 2:
    raise ValueError(f"dct_k must be a positive even number (as the official assert), got {dct_k}")
  return [(u, v) for u in range(dct_k) for v in range(dct_k)]


def dct_factors(size: int, num_freqs: int) -> np.ndarray:
  """float64 [num_freqs, size] orthonormal DCT-II factors f(u, t, size) (u: frequency, t: position)."""
  u = np.arange(num_freqs, dtype=np.float64)[:, None]
  t = np.arange(size, dtype=np.float64)[None, :]
  scale = np.where(u > 0, np.sqrt(2.0), 1.0)
  return np.cos(np.pi * u * (t + 0.5) / size) / np.sqrt(size) * scale


@functools.lru_cache(maxsize=32)
def dct_basis(height: int, width: int, channels: int, dct_k: int = OFFICIAL_DCT_K) -> np.ndarray:
  """float32 [height, width, channels] MSCCNet DCT buffer, channels-last (PyTorch's is [C, H, W]).

  Channel ch carries frequency ch // (channels // dct_k**2); channels past dct_k**2 * (channels // dct_k**2)
  stay 0, as in the official zero-initialised buffer. Values are computed in float64 and rounded once, like
  the official Python-float products written into a float32 tensor. Read-only (cached).
  """
  freqs = frequency_indices(dct_k)
  per_freq = channels // len(freqs)
  if per_freq == 0:
    raise ValueError(f"{channels} channels < {len(freqs)} DCT frequencies: the official buffer would be all "
                     "zeros (each frequency gets channels // dct_k**2 channels); use at least dct_k**2 channels")
  fh, fw = dct_factors(height, dct_k), dct_factors(width, dct_k)
  basis = np.zeros((height, width, channels), np.float64)
  for i, (u, v) in enumerate(freqs):
    basis[:, :, i * per_freq:(i + 1) * per_freq] = np.outer(fh[u], fw[v])[:, :, None]
  basis = basis.astype(np.float32)
  basis.flags.writeable = False
  return basis


class MultiSpectralDCT(nnx.Module):
  """x * DCT basis, pixel-wise: [B, H, W, C] -> [B, H, W, C] (no parameters; the basis is a constant).

  Args:
    dct_k: frequencies per axis (8 in MSCCNet whatever its `spectral_k`).
    size: None builds the basis for the input's (H, W); (h, w) reproduces the official fixed buffer and
      rejects any other feature size.
  """

  def __init__(self, dct_k: int = OFFICIAL_DCT_K, size: tuple[int, int] | None = None):
    frequency_indices(dct_k)  # validates dct_k
    self.dct_k = dct_k
    self.size = None if size is None else (int(size[0]), int(size[1]))

  def basis(self, height: int, width: int, channels: int) -> np.ndarray:
    if self.size is not None and (height, width) != self.size:
      raise ValueError(f"MSCC's fixed DCT buffer is {self.size[0]}x{self.size[1]} (the official "
                       f"spectral_height/width), but the features are {height}x{width}: use the input size that "
                       "gives this feature size, or spectral_size=None to build the basis per feature size")
    return dct_basis(height, width, channels, self.dct_k)

  def __call__(self, x: jax.Array) -> jax.Array:
    _, h, w, c = x.shape
    return x * jnp.asarray(self.basis(h, w, c), x.dtype)


def channel_groups(x: jax.Array, num_groups: int) -> jax.Array:
  """[B, H, W, C] -> [B, n, H, W, C/n]; group g holds channels [g C/n, (g+1) C/n) (MSCC's `channel_split`)."""
  b, h, w, c = x.shape
  if c % num_groups:
    raise ValueError(f"{c} channels cannot be split into {num_groups} equal groups")
  return jnp.moveaxis(x.reshape(b, h, w, num_groups, c // num_groups), 3, 1)


def merge_groups(x: jax.Array) -> jax.Array:
  """Inverse of `channel_groups`: [B, n, H, W, c] -> [B, H, W, n c] (MSCC's `channel_recover`)."""
  b, n, h, w, c = x.shape
  return jnp.moveaxis(x, 1, 3).reshape(b, h, w, n * c)


def fft_band_masks(height: int, width: int, num_bands: int) -> np.ndarray:
  """float32 [num_bands, height, width // 2 + 1] masks of `rfft2` bins by normalised radius.

  The radius of bin (fy, fx) is sqrt(fy**2 + fx**2) / sqrt(0.5), fy and fx in cycles per sample (|f| <= 0.5),
  so it lies in [0, 1]; band b takes radii in [b / n, (b + 1) / n) (the last band includes 1). The masks
  partition the bins, so the bands of `fft_band_split` sum to the input.
  """
  if num_bands < 1:
    raise ValueError(f"num_bands must be >= 1, got {num_bands}")
  fy = np.fft.fftfreq(height)[:, None]
  fx = np.fft.rfftfreq(width)[None, :]
  radius = np.sqrt(fy ** 2 + fx ** 2) / np.sqrt(0.5)
  band = np.minimum((radius * num_bands).astype(np.int64), num_bands - 1)
  return np.stack([(band == b) for b in range(num_bands)]).astype(np.float32)


def fft_band_split(x: jax.Array, num_bands: int) -> jax.Array:
  """[B, H, W, C] -> [num_bands, B, H, W, C]: the input's radial frequency bands (low first), in float32."""
  _, h, w, _ = x.shape
  spectrum = jnp.fft.rfft2(x.astype(jnp.float32), axes=(1, 2))
  masks = jnp.asarray(fft_band_masks(h, w, num_bands))[:, None, :, :, None]
  return jnp.fft.irfft2(spectrum[None] * masks, s=(h, w), axes=(2, 3))
