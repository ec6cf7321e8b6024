"""common.nn.spectral: MSCCNet's DCT basis (against the official golden buffer and the DCT definition), channel
grouping as the official `channel_split`/`channel_recover`, the fixed-size flag, and the FFT band split."""
import os

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import fft as scipy_fft

from common.nn import spectral

GOLDEN = os.path.join(os.path.dirname(__file__), "testdata", "golden")


def test_basis_equals_the_official_buffer():
  """msccnet_mscc.npz holds the official [128, 64, 64] buffer (2 channels per frequency)."""
  buffer = np.load(os.path.join(GOLDEN, "msccnet_mscc.npz"))["param/mscc.frequency.weight"]
  ours = spectral.dct_basis(64, 64, 128).transpose(2, 0, 1)
  np.testing.assert_array_equal(ours, buffer)


def test_basis_is_the_orthonormal_dct_and_ignores_spectral_k():
  h, w, c = 12, 10, 64
  basis = spectral.dct_basis(h, w, c)   # one channel per frequency
  for i, (u, v) in enumerate(spectral.frequency_indices()):
    image = np.zeros((h, w))
    image[min(u, h - 1), min(v, w - 1)] = 1.0
    # The basis of (u, v) is the inverse orthonormal DCT-II of a unit coefficient at (u, v).
    if u < h and v < w:
      np.testing.assert_allclose(basis[:, :, i], scipy_fft.idctn(image, norm="ortho"), atol=1e-7)
  np.testing.assert_allclose(spectral.dct_basis(64, 64, 512)[:, :, :8], 1 / 64, rtol=1e-6)  # DC, 8 channels
  assert np.abs(spectral.dct_basis(64, 64, 512)).max() <= 2 / 64
  # 64 frequencies u-major whatever the group count: group g of 4 (spectral_k = 2) holds rows u = 2g, 2g+1.
  freq_of_channel = [spectral.frequency_indices()[ch // 8] for ch in range(512)]
  for g in range(4):
    assert {u for u, _ in freq_of_channel[g * 128:(g + 1) * 128]} == {2 * g, 2 * g + 1}


def test_basis_rejects_degenerate_widths_and_odd_k():
  with pytest.raises(ValueError, match="all zeros"):
    spectral.dct_basis(8, 8, 32)
  with pytest.raises(ValueError, match="even"):
    spectral.frequency_indices(3)
  basis = spectral.dct_basis(8, 8, 130)  # 2 channels per frequency, the last 2 stay 0 as in torch
  assert not basis[..., 128:].any() and basis[..., 127].any()


def test_grouping_matches_the_official_channel_split():
  rng = np.random.default_rng(0)
  nchw = rng.normal(size=(2, 12, 5, 3)).astype(np.float32)
  torch_split = nchw.reshape(2, 4, 3, 5, 3).transpose(0, 1, 3, 4, 2)  # view(B, n, c, H, W).permute(0,1,3,4,2)
  groups = spectral.channel_groups(jnp.asarray(nchw.transpose(0, 2, 3, 1)), 4)
  np.testing.assert_array_equal(groups, torch_split)
  np.testing.assert_array_equal(spectral.merge_groups(groups), nchw.transpose(0, 2, 3, 1))
  with pytest.raises(ValueError, match="equal groups"):
    spectral.channel_groups(jnp.zeros((1, 2, 2, 6)), 4)


def test_fixed_size_flag_reproduces_the_official_buffer_limit():
  x = jnp.ones((1, 16, 16, 64))
  per_size = spectral.MultiSpectralDCT()(x)
  np.testing.assert_allclose(per_size, spectral.dct_basis(16, 16, 64)[None], rtol=1e-6)
  np.testing.assert_array_equal(spectral.MultiSpectralDCT(size=(16, 16))(x), per_size)
  with pytest.raises(ValueError, match="fixed DCT buffer is 64x64"):
    spectral.MultiSpectralDCT(size=(64, 64))(x)


def test_fft_bands_partition_the_spectrum():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 16, 12, 3)).astype(np.float32))
  bands = spectral.fft_band_split(x, 3)
  assert bands.shape == (3, 2, 16, 12, 3)
  np.testing.assert_allclose(bands.sum(0), x, atol=1e-5)
  constant = jnp.full((1, 8, 8, 1), 2.5)
  low_first = spectral.fft_band_split(constant, 4)
  np.testing.assert_allclose(low_first[0], constant, atol=1e-6)
  np.testing.assert_allclose(low_first[1:], 0.0, atol=1e-6)
  checker = jnp.asarray((np.indices((8, 8)).sum(0) % 2)[None, :, :, None] * 2.0 - 1.0)  # Nyquist in both axes
  np.testing.assert_allclose(spectral.fft_band_split(checker, 4)[-1], checker, atol=1e-6)
  masks = spectral.fft_band_masks(9, 7, 5)
  np.testing.assert_array_equal(masks.sum(0), 1.0)
