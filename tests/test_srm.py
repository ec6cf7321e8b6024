"""Fixed noise filters (ViLocal's HP3D, the 2-D SRM bank) and the Bayar constrained conv."""
import os

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.nn import srm
from common.nn import torch_port
from common.nn import uniformer

GOLDEN = os.path.join(os.path.dirname(__file__), "testdata", "golden")


def _correlate_valid(x, kernel):
  """Direct cross-correlation of zero-padded channels-last `x` with an `[*k, I, O]` kernel."""
  k = kernel.shape[:-2]
  out_shape = tuple(s - kk + 1 for s, kk in zip(x.shape[1:-1], k))
  out = np.zeros((x.shape[0],) + out_shape + (kernel.shape[-1],))
  for offset in np.ndindex(*k):
    window = x[(slice(None),) + tuple(slice(o, o + n) for o, n in zip(offset, out_shape))]
    out += np.einsum("...i,io->...o", window, kernel[offset])
  return out


def test_hp3d_matches_golden():
  data = np.load(os.path.join(GOLDEN, "vilocal_small.npz"), allow_pickle=False)
  x = jnp.asarray(np.moveaxis(data["input/frames"], 1, -1))
  golden = np.moveaxis(data["inter/hp3d_out"], 1, -1)
  y = np.asarray(jax.jit(srm.hp3d)(x))
  err = np.linalg.norm(y - golden) / np.linalg.norm(golden)
  print(f"hp3d_out rel err {err:.2e}, max abs {np.abs(y - golden).max():.2e}")
  assert err < 1e-5
  assert (golden == 4.0).mean() > 0  # the golden input reaches the upper clamp
  assert abs((y == 4.0).mean() - (golden == 4.0).mean()) < 1e-4
  assert abs((y == 0.0).mean() - (golden == 0.0).mean()) < 1e-4


def test_hp3d_kernel_and_direct_reference():
  kernel = srm.hp3d_kernel(3)
  assert kernel.shape == (3, 5, 5, 3, 3) and not kernel.flags.writeable
  np.testing.assert_allclose(kernel.sum(axis=(0, 1, 2)), 0.0, atol=1e-6)  # high-pass
  np.testing.assert_array_equal(kernel[1, 0, 0], np.float32(-1.0 / 12.0))  # KV/12 corner
  np.testing.assert_array_equal(kernel[2, 2, 2], 1.0)  # Laplace/4 centre
  x = np.random.default_rng(0).uniform(0, 1, (2, 4, 9, 7, 3))
  padded = np.pad(x, ((0, 0), (1, 1), (2, 2), (2, 2), (0, 0)))
  expected = np.clip(_correlate_valid(padded, kernel.astype(np.float64)), 0, 4)
  y = np.asarray(jax.jit(srm.hp3d)(jnp.asarray(x, jnp.float32)))
  np.testing.assert_allclose(y, expected, atol=2e-6)
  np.testing.assert_array_equal(y[..., 0], y[..., 2])  # all output channels are equal


def test_fixed_filters_are_not_parameters():
  assert not jax.tree.leaves(nnx.state(srm.HP3D()))
  assert not jax.tree.leaves(nnx.state(srm.SRMConv2D("per_channel", clip=3.0)))
  model = nnx.eval_shape(lambda: uniformer.UniFormer(**uniformer.vilocal_encoder_config((1, 1, 1, 1)),
                                                     rngs=nnx.Rngs(0)))
  assert isinstance(model.srm_layer, srm.HP3D)
  params = nnx.to_flat_state(nnx.state(model, nnx.Param))
  assert not any(path[0] == "srm_layer" for path, _ in params)
  assert not any(v.shape == (3, 5, 5, 3, 3) for _, v in params)
  state = nnx.to_flat_state(nnx.state(model))
  assert not any(path[0] == "srm_layer" for path, _ in state)


@pytest.mark.parametrize("mode, channels_out", [("sum", 3), ("per_channel", 9)])
def test_srm2d_against_direct_reference(mode, channels_out):
  x = np.random.default_rng(1).uniform(0, 255, (2, 11, 13, 3))
  kernel = srm.srm_kernel_2d(3, mode)
  assert kernel.shape == (5, 5, 3, channels_out)
  expected = _correlate_valid(np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0))), kernel)
  layer = srm.SRMConv2D(mode)
  y = np.asarray(jax.jit(lambda v: layer(v))(jnp.asarray(x, jnp.float32)))
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-3)
  clipped = np.asarray(jax.jit(lambda v: srm.SRMConv2D(mode, clip=3.0)(v))(jnp.asarray(x, jnp.float32)))
  np.testing.assert_allclose(clipped, np.clip(y, -3, 3), atol=1e-6)


def test_srm2d_sum_mode_is_sum_of_per_channel_filters():
  per_channel = srm.srm_kernel_2d(3, "per_channel").reshape(5, 5, 3, 3, 3)  # [.., in, k, c]
  summed = per_channel.sum(axis=-1)  # sum over the output copy per input channel
  np.testing.assert_allclose(srm.srm_kernel_2d(3, "sum"), summed)
  with pytest.raises(ValueError, match="mode"):
    srm.SRMConv2D("all")


def test_bayar_constraint_forward_and_torch_loading():
  layer = srm.BayarConv2D(3, 3, rngs=nnx.Rngs(0))
  assert len(jax.tree.leaves(nnx.state(layer, nnx.Param))) == 1  # trainable kernel only
  weight = np.random.default_rng(2).uniform(0.1, 1.0, (3, 3, 5, 5)).astype(np.float32)  # OIHW
  report = torch_port.load_torch_state_dict(layer, {"weight": weight})
  assert report.loaded == ["weight"]
  w = np.asarray(layer.constrained_kernel())
  np.testing.assert_allclose(w[2, 2], -1.0)
  np.testing.assert_allclose(w.sum(axis=(0, 1)), 0.0, atol=1e-6)  # off-centre taps sum to 1
  # Same filters as IMDL-BenCo's in-place projection of the PyTorch weight.
  mask = np.ones((5, 5), np.float32)
  mask[2, 2] = 0
  projected = weight * mask / (weight * mask).sum(axis=(2, 3), keepdims=True)
  projected[:, :, 2, 2] = -1.0
  np.testing.assert_allclose(w, projected.transpose(2, 3, 1, 0), rtol=1e-5, atol=1e-7)
  x = np.random.default_rng(3).uniform(0, 1, (1, 8, 9, 3)).astype(np.float32)
  y = np.asarray(jax.jit(lambda v: layer(v))(jnp.asarray(x)))
  expected = _correlate_valid(np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0))), w)
  np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
  grads = nnx.grad(lambda m: jnp.sum(m(jnp.asarray(x)) ** 2))(layer)
  assert np.abs(np.asarray(grads.kernel[...])).sum() > 0
