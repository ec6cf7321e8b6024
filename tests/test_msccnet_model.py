"""MSCCNet model: parity with the official PyTorch golden tensors (MSCC module with its intermediates, MFA, the
whole thin network), PyTorch's align_corners=False upsampling, parameter count, train mode and bfloat16."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from common.nn import spectral, torch_port
from msccnet_jax import convert
from msccnet_jax import model as model_lib

GOLDEN = os.path.join(os.path.dirname(__file__), "testdata", "golden")
TOL = 1e-4


def _rel_err(ours, golden):
  ours = np.asarray(ours, np.float64)
  assert ours.shape == golden.shape, (ours.shape, golden.shape)
  return float(np.linalg.norm(ours - golden) / np.linalg.norm(golden))


def _golden(name):
  data = np.load(os.path.join(GOLDEN, name), allow_pickle=False)
  return data, {k[len("param/"):]: data[k] for k in data.files if k.startswith("param/")}


def _nhwc(x):
  return jnp.asarray(x.transpose(0, 2, 3, 1))


def _nchw(x):
  return np.asarray(x).transpose(0, 3, 1, 2)


def _eval(module):
  return nnx.view(module, deterministic=True, use_running_average=True, raise_if_not_found=False)


def test_mscc_module_matches_golden():
  data, params = _golden("msccnet_mscc.npz")
  mscc = model_lib.MSCC(2, 128, 64, 0.1, spectral_k=2, spectral_size=(64, 64), rngs=nnx.Rngs(0))
  report = convert.load_into(mscc, torch_port.strip_prefix(params, "mscc."))
  assert "frequency.weight" in report.ignored
  mscc = _eval(mscc)

  @nnx.jit
  def forward(m, x):
    fres = spectral.channel_groups(m.frequency(x), m.num_groups)
    maps = m.group_maps(fres)
    centers = m.centers(maps, fres)
    return maps, centers, m.gcn(centers), m(x)

  with jax.default_matmul_precision("highest"):
    maps, centers, centers_gcn, (out, coarse) = forward(mscc, _nhwc(data["input/x"]))
  errors = {
      "group_maps": _rel_err(_nchw(maps.reshape(-1, *maps.shape[2:])), data["inter/group_maps"]),
      "centers": _rel_err(centers, data["inter/centers"]),
      "centers_gcn": _rel_err(centers_gcn, data["inter/centers_gcn"]),
      "out": _rel_err(_nchw(out), data["output/out"]),
      "coarse_map": _rel_err(_nchw(coarse), data["output/coarse_map"]),
  }
  print("msccnet_mscc rel errors:", {k: f"{v:.1e}" for k, v in errors.items()})
  assert all(e < TOL for e in errors.values()), errors


def test_mfa_matches_golden():
  data, params = _golden("msccnet_mfa.npz")
  mfa = nnx.eval_shape(lambda: model_lib.MSCCNet(stem_channels=16, base_channels=8, feats_channels=64,
                                                 out_channels=64, rngs=nnx.Rngs(0)))
  report = torch_port.load_torch_state_dict(mfa, params, rename=convert.RENAME, strict=False)
  assert report.unused == [] and len(report.loaded) == 20
  mfa = nnx.view(mfa, use_running_average=True)
  with jax.default_matmul_precision("highest"):
    x1 = mfa.bottleneck1(_nhwc(data["input/c2"]))
    out = mfa.mfa(*(_nhwc(data[f"input/{k}"]) for k in ("c2", "c3", "c4")))
  errors = {"x1": _rel_err(_nchw(x1), data["inter/x1"]), "out": _rel_err(_nchw(out), data["output/out"])}
  print("msccnet_mfa rel errors:", errors)
  assert all(e < TOL for e in errors.values()), errors


def test_thin_full_network_matches_golden():
  """The whole forward (backbone OS8, image head, MFA, MSCC with the fixed 64x64 DCT, decoder) at 512x512."""
  data, params = _golden("msccnet_thin_full.npz")
  net, report = convert.from_torch_state_dict(params, stem_channels=16, base_channels=8, feats_channels=64,
                                              out_channels=64, spectral_size=(64, 64))
  assert report.missing == [] and report.unused == []
  with jax.default_matmul_precision("highest"):
    out = nnx.jit(lambda m, x: m(x))(_eval(net), _nhwc(data["input/image"]))
  errors = {"image_logits": _rel_err(out["image_logits"], data["output/image_logits"]),
            "mask_logits": _rel_err(_nchw(out["mask_logits"]), data["output/mask_logits"]),
            "coarse_map": _rel_err(_nchw(out["coarse_map"]), data["inter/mscc_coarse_map"])}
  print("msccnet_thin_full rel errors:", {k: f"{v:.1e}" for k, v in errors.items()})
  assert all(e < TOL for e in errors.values()), errors


def _torch_upsample(x, out_h, out_w):
  """numpy F.interpolate(mode='bilinear', align_corners=False) on [H, W]."""
  def axis(n_in, n_out):
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(int), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, src - lo
  (ylo, yhi, fy), (xlo, xhi, fx) = axis(x.shape[0], out_h), axis(x.shape[1], out_w)
  top = x[ylo][:, xlo] * (1 - fx) + x[ylo][:, xhi] * fx
  bottom = x[yhi][:, xlo] * (1 - fx) + x[yhi][:, xhi] * fx
  return top * (1 - fy[:, None]) + bottom * fy[:, None]


@pytest.mark.parametrize("size", [(64, 64), (40, 24), (7, 9)])
def test_upsampling_matches_torch_align_corners_false(size):
  x = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
  ours = model_lib.upsample_bilinear(jnp.asarray(x)[None, :, :, None], size)[0, :, :, 0]
  np.testing.assert_allclose(ours, _torch_upsample(x.astype(np.float64), *size), atol=1e-5)
  with pytest.raises(ValueError, match="only enlarges"):
    model_lib.upsample_bilinear(jnp.zeros((1, 8, 8, 1)), (4, 8))


def test_released_model_parameter_count_and_shapes():
  net = nnx.eval_shape(lambda: model_lib.MSCCNet(rngs=nnx.Rngs(0)))
  assert model_lib.num_parameters(net) == 52_145_531
  out = jax.eval_shape(lambda m, x: m(x), net, jax.ShapeDtypeStruct((1, 512, 512, 3), jnp.float32))
  assert {k: v.shape for k, v in out.items()} == {
      "image_logits": (1, 2), "mask_logits": (1, 64, 64, 2), "coarse_map": (1, 64, 64, 2)}


def test_mscc_train_mode_dropout_and_bfloat16():
  """Dropout2d is active in train mode only; a bfloat16 MSCC keeps its class centers in float32."""
  mscc = model_lib.MSCC(2, 64, 32, 0.5, spectral_k=2, rngs=nnx.Rngs(0))
  x = jnp.abs(jax.random.normal(jax.random.key(1), (2, 12, 10, 64)))
  forward = nnx.jit(lambda m, x: m(x))
  train = nnx.view(mscc, deterministic=False, use_running_average=False)
  (a, coarse_a), (b, coarse_b) = forward(train, x), forward(train, x)
  assert not np.allclose(coarse_a, coarse_b)  # new channel masks on every call
  out, coarse = forward(_eval(mscc), x)
  assert out.shape == (2, 12, 10, 32) and coarse.shape == (2, 12, 10, 2)
  half = model_lib.MSCC(2, 64, 32, 0.5, spectral_k=2, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  out16, coarse16 = forward(_eval(half), x.astype(jnp.bfloat16))
  assert out16.dtype == jnp.bfloat16
  assert _rel_err(np.asarray(coarse16, np.float32), np.asarray(coarse, np.float64)) < 0.05


def test_image_head_pools_average_or_max():
  x = jax.random.normal(jax.random.key(0), (2, 5, 7, 6))
  heads = {pool: model_lib.Classifier(6, 2, pool=pool, rngs=nnx.Rngs(0)) for pool in ("avg", "max")}
  fc = heads["avg"].fc
  np.testing.assert_allclose(heads["avg"](x), fc(x.mean(axis=(1, 2))), rtol=1e-6)
  np.testing.assert_allclose(heads["max"](x), fc(x.max(axis=(1, 2))), rtol=1e-6)
  with pytest.raises(ValueError, match="'avg' or 'max'"):
    model_lib.Classifier(6, 2, pool="sum", rngs=nnx.Rngs(0))
