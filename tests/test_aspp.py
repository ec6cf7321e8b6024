"""DeepLabV3+ ASPP and decoder: PyTorch parity on the golden tensors, torch key coverage of the full
DeepLab ResNet-101 OS16 head, align_corners resize, dropout modes."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from common.nn import aspp
from common.nn import resnet

GOLDEN = os.path.join(os.path.dirname(__file__), "testdata", "golden")


def _rel_err(ours, golden):
  ours = np.asarray(ours, np.float64).transpose(0, 3, 1, 2)
  return float(np.linalg.norm(ours - golden) / np.linalg.norm(golden))


def _nhwc(x):
  return jnp.asarray(x.transpose(0, 2, 3, 1))


def _golden(name, prefix):
  data = np.load(os.path.join(GOLDEN, name), allow_pickle=False)
  keys = [k for k in data.files if k.startswith("param/")]
  assert all(k.startswith("param/" + prefix) for k in keys)
  return data, {k[len("param/") + len(prefix):]: data[k] for k in keys}


def _load_all(module, params, key_to_path):
  report = resnet.load_torch_state_dict(module, params, key_to_path)
  assert report.missing == []
  assert sorted(report.dropped) == sorted(k for k in params if k.endswith("num_batches_tracked"))
  return nnx.view(module, use_running_average=True, deterministic=True)


def test_aspp_matches_torch():
  data, params = _golden("deeplab_aspp.npz", "aspp.")
  module = _load_all(aspp.ASPP(320, output_stride=16, rngs=nnx.Rngs(0)), params,
                     aspp.aspp_torch_key_to_nnx_path)
  x = _nhwc(data["input/x"])
  with jax.default_matmul_precision("highest"):
    forward = nnx.jit(lambda m, x: (m(x), m.global_avg_pool(x)))
    out, image_pool = forward(module, x)
  errors = {"output/out": _rel_err(out, data["output/out"]),
            "inter/image_pool": _rel_err(image_pool, data["inter/image_pool"])}
  print(errors)
  assert all(err < 1e-4 for err in errors.values()), errors

  # Train mode (running BN stats kept): element-wise Dropout(0.5) with 1/keep scaling, fresh masks.
  train_view = nnx.view(module, deterministic=False)
  forward = nnx.jit(lambda m, x: m(x))
  first, second = forward(train_view, x), forward(train_view, x)
  kept = first != 0
  np.testing.assert_allclose(first[kept], 2 * out[kept], rtol=1e-5)
  dropped = float(jnp.mean((first == 0) & (out != 0)) / jnp.mean(out != 0))
  assert 0.45 < dropped < 0.55, dropped
  assert not np.array_equal(first, second)


def test_decoder_matches_torch():
  data, params = _golden("deeplab_decoder.npz", "decoder.")
  module = _load_all(aspp.Decoder(2, rngs=nnx.Rngs(0)), params,
                     aspp.decoder_torch_key_to_nnx_path)
  x, low_level = _nhwc(data["input/x"]), _nhwc(data["input/low_level_feat"])
  image_size = data["output/logits_upsampled"].shape[2:]
  with jax.default_matmul_precision("highest"):
    forward = nnx.jit(lambda m, x, low: (
        m(x, low), m.project_low_level(low),
        aspp.resize_bilinear_align_corners(m(x, low), image_size)))
    logits, low_proj, upsampled = forward(module, x, low_level)
  errors = {"output/logits": _rel_err(logits, data["output/logits"]),
            "output/logits_upsampled": _rel_err(upsampled, data["output/logits_upsampled"]),
            "inter/low_level_proj": _rel_err(low_proj, data["inter/low_level_proj"])}
  print(errors)
  assert all(err < 1e-4 for err in errors.values()), errors

  assert (module.last_conv.dropout1.rate, module.last_conv.dropout2.rate) == (0.5, 0.1)
  train_logits = nnx.jit(lambda m, x, low: m(x, low))(nnx.view(module, deterministic=False), x,
                                                       low_level)
  assert not np.allclose(train_logits, logits, rtol=1e-3)


def test_full_deeplab_head_and_backbone_cover_every_torch_key():
  with open(os.path.join(GOLDEN, "deeplab_resnet101_os16_keys.json")) as f:
    key_list = json.load(f)
  parts = {
      "backbone.": (lambda: resnet.resnet_deeplab(101, output_stride=16, rngs=nnx.Rngs(0)),
                    resnet.torch_key_to_nnx_path),
      "aspp.": (lambda: aspp.ASPP(2048, output_stride=16, rngs=nnx.Rngs(0)),
                aspp.aspp_torch_key_to_nnx_path),
      "decoder.": (lambda: aspp.Decoder(2, rngs=nnx.Rngs(0)), aspp.decoder_torch_key_to_nnx_path),
  }
  assert {e["key"].split(".")[0] + "." for e in key_list["state_dict"]} == set(parts)
  num_params = 0
  for prefix, (build, key_to_path) in parts.items():
    module = nnx.eval_shape(build)
    flat = {p: v.shape for p, v in
            nnx.to_flat_state(nnx.state(module, (nnx.Param, nnx.BatchStat)))}
    mapped = set()
    for entry in key_list["state_dict"]:
      if not entry["key"].startswith(prefix):
        continue
      path = key_to_path(entry["key"][len(prefix):])
      if path is None:
        assert entry["key"].endswith("num_batches_tracked")
        continue
      shape = tuple(entry["shape"])
      expected = shape[2:] + (shape[1], shape[0]) if len(shape) == 4 else shape
      assert flat.get(path) == expected, (entry["key"], path, flat.get(path))
      assert path not in mapped
      mapped.add(path)
    assert mapped == set(flat), (prefix, sorted(set(flat) - mapped))
    num_params += sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(module, nnx.Param)))
  assert num_params == key_list["num_parameters"] == 59_339_426


def test_unknown_head_keys_are_rejected():
  for key in ("aspp5.bn.weight", "global_avg_pool.3.weight", "dropout.weight"):
    with pytest.raises(KeyError):
      aspp.aspp_torch_key_to_nnx_path(key)
  with pytest.raises(KeyError):
    aspp.decoder_torch_key_to_nnx_path("last_conv.2.weight")
  with pytest.raises(ValueError):
    aspp.ASPP(2048, output_stride=32, rngs=nnx.Rngs(0))


def _torch_align_corners_reference(x, out_h, out_w):
  """Direct per-pixel evaluation of PyTorch's align_corners=True bilinear formula, NHWC numpy."""
  _, in_h, in_w, _ = x.shape
  out = np.zeros((x.shape[0], out_h, out_w, x.shape[3]), np.float64)
  for i in range(out_h):
    sy = i * (in_h - 1) / (out_h - 1) if out_h > 1 else 0.0
    y0 = int(np.floor(sy)); y1 = min(y0 + 1, in_h - 1); fy = sy - y0
    for j in range(out_w):
      sx = j * (in_w - 1) / (out_w - 1) if out_w > 1 else 0.0
      x0 = int(np.floor(sx)); x1 = min(x0 + 1, in_w - 1); fx = sx - x0
      out[:, i, j] = ((1 - fy) * ((1 - fx) * x[:, y0, x0] + fx * x[:, y0, x1])
                      + fy * ((1 - fx) * x[:, y1, x0] + fx * x[:, y1, x1]))
  return out


@pytest.mark.parametrize("in_hw, out_hw", [((5, 4), (17, 9)), ((6, 7), (3, 2)), ((1, 1), (4, 3)),
                                           ((4, 5), (1, 1))])
def test_resize_bilinear_align_corners(in_hw, out_hw):
  x = np.random.default_rng(0).normal(size=(2, *in_hw, 3)).astype(np.float32)
  ours = jax.jit(aspp.resize_bilinear_align_corners, static_argnums=1)(jnp.asarray(x), out_hw)
  np.testing.assert_allclose(ours, _torch_align_corners_reference(x, *out_hw), rtol=1e-5,
                             atol=1e-6)
