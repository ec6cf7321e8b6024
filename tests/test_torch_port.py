"""The generic PyTorch -> NNX loader (`common.nn.torch_port`) and the torch-style layers
(`common.nn.layers`): layouts, key accounting, errors, PyTorch numerics."""
import math

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.nn import layers
from common.nn import torch_port


class _Net(nnx.Module):
  """conv (stride 2, pad 1) -> BN -> flatten -> Linear, named like a PyTorch module."""

  def __init__(self, rngs):
    self.conv = layers.torch_conv(3, 4, (3, 3), stride=2, padding=1, rngs=rngs)
    self.bn = layers.torch_batch_norm(4, rngs=rngs)
    self.fc = layers.torch_linear(4, 2, rngs=rngs)

  def __call__(self, x):
    return self.fc(jnp.mean(self.bn(self.conv(x)), axis=(1, 2)))


def _torch_state(rng):
  return {
      "conv.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
      "conv.bias": rng.normal(size=(4,)).astype(np.float32),
      "bn.weight": rng.uniform(0.5, 1.5, (4,)).astype(np.float32),
      "bn.bias": rng.normal(size=(4,)).astype(np.float32),
      "bn.running_mean": rng.normal(size=(4,)).astype(np.float32),
      "bn.running_var": rng.uniform(0.5, 1.5, (4,)).astype(np.float32),
      "bn.num_batches_tracked": np.array(0, np.int64),
      "fc.weight": rng.normal(size=(2, 4)).astype(np.float32),
      "fc.bias": rng.normal(size=(2,)).astype(np.float32),
  }


def _torch_reference(sd, x_nchw):
  """What the PyTorch module computes in eval mode, in numpy (float64)."""
  w, b = sd["conv.weight"].astype(np.float64), sd["conv.bias"]
  xp = np.pad(x_nchw, ((0, 0), (0, 0), (1, 1), (1, 1)))
  h_out = (x_nchw.shape[2] + 2 - 3) // 2 + 1
  w_out = (x_nchw.shape[3] + 2 - 3) // 2 + 1
  y = np.zeros((x_nchw.shape[0], 4, h_out, w_out))
  for i in range(h_out):
    for j in range(w_out):
      patch = xp[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
      y[:, :, i, j] = np.einsum("bchw,ochw->bo", patch, w) + b
  y = ((y - sd["bn.running_mean"][:, None, None]) / np.sqrt(sd["bn.running_var"][:, None, None] + 1e-5)
       * sd["bn.weight"][:, None, None] + sd["bn.bias"][:, None, None])
  return y.mean(axis=(2, 3)) @ sd["fc.weight"].T.astype(np.float64) + sd["fc.bias"]


def test_load_converts_layouts_and_matches_torch_semantics():
  rng = np.random.default_rng(0)
  sd = _torch_state(rng)
  net = _Net(nnx.Rngs(0))
  report = torch_port.load_torch_state_dict(net, sd)
  assert report.ignored == ["bn.num_batches_tracked"]
  assert not report.missing and not report.unused and len(report.loaded) == 8
  x = rng.normal(size=(2, 3, 9, 8)).astype(np.float32)
  y = jax.jit(lambda m, v: m(v))(nnx.view(net, use_running_average=True),
                                 jnp.asarray(x.transpose(0, 2, 3, 1)))
  np.testing.assert_allclose(np.asarray(y), _torch_reference(sd, x.astype(np.float64)),
                             rtol=1e-5, atol=1e-5)


def test_init_from_torch_equals_build_then_load():
  sd = _torch_state(np.random.default_rng(1))
  built, _ = torch_port.init_from_torch(lambda: _Net(nnx.Rngs(0)), sd)
  loaded = _Net(nnx.Rngs(0))
  torch_port.load_torch_state_dict(loaded, sd)
  jax.tree.map(np.testing.assert_array_equal, nnx.to_pure_dict(nnx.state(built)),
               nnx.to_pure_dict(nnx.state(loaded)))


def test_missing_unused_rename_and_errors():
  sd = _torch_state(np.random.default_rng(2))
  renamed = {k.replace("fc.", "head.").replace("bn.", "norm."): v for k, v in sd.items()}
  rules = ((r"^head\.", "fc."), (r"^norm\.", "bn."))
  assert not torch_port.load_torch_state_dict(_Net(nnx.Rngs(0)), renamed, rename=rules).missing

  partial = {k: v for k, v in sd.items() if not k.startswith("fc.")}
  partial["extra.weight"] = np.zeros((3,), np.float32)
  with pytest.raises(ValueError, match="does not match"):
    torch_port.load_torch_state_dict(_Net(nnx.Rngs(0)), partial)
  report = torch_port.load_torch_state_dict(_Net(nnx.Rngs(0)), partial, strict=False)
  assert report.missing == ["fc.bias", "fc.weight"] and report.unused == ["extra.weight"]

  bad = dict(sd, **{"fc.weight": np.zeros((4, 2), np.float32)})
  with pytest.raises(ValueError, match=r"fc\.weight.*shape"):
    torch_port.load_torch_state_dict(_Net(nnx.Rngs(0)), bad)

  class Custom(nnx.Module):
    def __init__(self):
      self.w = nnx.Param(jnp.zeros((2,)))

  with pytest.raises(ValueError, match="TORCH_PARAMS"):
    torch_port.torch_slots(Custom())


def test_torch_default_init_bounds():
  conv = layers.torch_conv(6, 8, (3, 3), groups=2, rngs=nnx.Rngs(0))
  bound = 1 / math.sqrt(3 * 3 * 3)  # fan_in = in/groups * kh * kw
  for v in (conv.kernel[...], conv.bias[...]):
    assert np.abs(np.asarray(v)).max() <= bound
    assert np.abs(np.asarray(v)).max() > 0.8 * bound
  assert conv.kernel.shape == (3, 3, 3, 8)


def test_exact_gelu_and_layer_norm_eps():
  x = np.linspace(-4, 4, 33).astype(np.float32)
  expected = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
  np.testing.assert_allclose(np.asarray(layers.gelu(jnp.asarray(x))), expected, atol=1e-6)
  assert layers.torch_layer_norm(4, rngs=nnx.Rngs(0)).epsilon == 1e-5
  bn = layers.torch_batch_norm(4, rngs=nnx.Rngs(0))
  assert bn.epsilon == 1e-5 and bn.momentum == pytest.approx(0.9)


def test_drop_path_is_per_sample_and_switchable():
  drop = layers.DropPath(0.5, rngs=nnx.Rngs(dropout=0))
  x = jnp.ones((4000, 3, 2))
  y = np.asarray(drop(x))
  per_sample = y.reshape(4000, -1)
  assert np.all((per_sample == 0) | (per_sample == 2))  # whole samples kept (x2) or dropped
  assert np.all(per_sample.min(axis=1) == per_sample.max(axis=1))
  assert abs(per_sample[:, 0].mean() - 1.0) < 0.1
  assert not np.array_equal(np.asarray(drop(x)), y)  # the stream advances
  np.testing.assert_array_equal(np.asarray(nnx.view(drop, deterministic=True)(x)), np.asarray(x))
  assert not jax.tree.leaves(nnx.state(layers.DropPath(0.0)))


def test_resize_align_corners_against_reference():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)

  def reference(x, out_h, out_w):
    h, w = x.shape[1:3]
    ys = np.arange(out_h) * (h - 1) / max(out_h - 1, 1)
    xs = np.arange(out_w) * (w - 1) / max(out_w - 1, 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    a, b = (ys - y0)[None, :, None, None], (xs - x0)[None, None, :, None]
    top = (1 - b) * x[:, y0][:, :, x0] + b * x[:, y0][:, :, x1]
    bottom = (1 - b) * x[:, y1][:, :, x0] + b * x[:, y1][:, :, x1]
    return (1 - a) * top + a * bottom

  for size in [(20, 28), (9, 13), (1, 4), (5, 7)]:
    y = layers.resize_bilinear_align_corners(jnp.asarray(x), size)
    np.testing.assert_allclose(np.asarray(y), reference(x.astype(np.float64), *size), atol=1e-6)
  corners = np.asarray(layers.resize_bilinear_align_corners(jnp.asarray(x), (20, 28)))
  np.testing.assert_array_equal(corners[:, [0, -1]][:, :, [0, -1]], x[:, [0, -1]][:, :, [0, -1]])


@pytest.mark.parametrize("n, kernel, padding", [(2, 3, 1), (3, 5, 2), (3, 3, 0)])
def test_depthwise_shift_and_add_equals_xla_convolution(n, kernel, padding):
  conv = layers.torch_conv(6, 6, (kernel,) * n, padding=padding, groups=6, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (2, *([7] * n), 6))
  reference = jax.lax.conv_general_dilated(
      x, conv.kernel[...], (1,) * n, [(padding, padding)] * n, feature_group_count=6,
      dimension_numbers=jax.lax.conv_dimension_numbers(x.shape, conv.kernel.shape, (
          "N" + "DHW"[3 - n:] + "C", "DHW"[3 - n:] + "IO", "N" + "DHW"[3 - n:] + "C"))) + conv.bias[...]
  np.testing.assert_allclose(conv(x), reference, rtol=1e-5, atol=1e-5)
  numbers = ("N" + "DHW"[3 - n:] + "C", "DHW"[3 - n:] + "IO", "N" + "DHW"[3 - n:] + "C")
  grad = jax.grad(lambda x, k: (jax.lax.conv_general_dilated(
      x, k, (1,) * n, [(padding, padding)] * n, feature_group_count=6, dimension_numbers=numbers) ** 2).sum(),
      argnums=(0, 1))
  fast = jax.grad(lambda x, k: (layers.depthwise_conv_general_dilated(
      x, k, (1,) * n, [(padding, padding)] * n, feature_group_count=6,
      dimension_numbers=jax.lax.conv_dimension_numbers(x.shape, k.shape, numbers)) ** 2).sum(), argnums=(0, 1))
  for ours, theirs in zip(fast(x, conv.kernel[...]), grad(x, conv.kernel[...])):  # input and kernel gradients
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


def test_depthwise_shift_and_add_backward_keeps_few_activations():
  """Compiled temp memory of the 5x5x5 depthwise conv's gradient: a few activations, not one per tap (125)."""
  x = jax.ShapeDtypeStruct((2, 5, 24, 40, 32), jnp.float32)
  k = jax.ShapeDtypeStruct((5, 5, 5, 1, 32), jnp.float32)
  numbers = jax.lax.conv_dimension_numbers(x.shape, k.shape, ("NDHWC", "DHWIO", "NDHWC"))
  grad = jax.jit(jax.grad(lambda x, k: (layers.depthwise_conv_general_dilated(
      x, k, (1, 1, 1), [(2, 2)] * 3, feature_group_count=32, dimension_numbers=numbers) ** 2).sum(), argnums=(0, 1)))
  activation = 2 * 5 * 24 * 40 * 32 * 4
  assert grad.lower(x, k).compile().memory_analysis().temp_size_in_bytes < 12 * activation
