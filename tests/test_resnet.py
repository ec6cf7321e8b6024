"""ResNet backbones: PyTorch parity on the golden stem+layer1 tensors, torch key coverage of the full
MSCCNet ResNet-50 (OS8) and DeepLabV3+ ResNet-101 (OS16), output strides, dilation placement, BN modes."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from common.nn import resnet

GOLDEN = os.path.join(os.path.dirname(__file__), "testdata", "golden")


def _rel_err(ours, golden):
  return float(np.linalg.norm(np.asarray(ours, np.float64) - golden) / np.linalg.norm(golden))


def _nchw_to_nhwc(x):
  return jnp.asarray(x.transpose(0, 2, 3, 1))


def _golden(name, prefix):
  data = np.load(os.path.join(GOLDEN, name), allow_pickle=False)
  params = {k[len("param/") + len(prefix):]: data[k] for k in data.files
            if k.startswith("param/")}
  assert all(k.startswith("param/" + prefix) for k in data.files if k.startswith("param/"))
  return data, params


def _key_list(name, prefix):
  with open(os.path.join(GOLDEN, name)) as f:
    entries = json.load(f)["state_dict"]
  return {e["key"][len(prefix):]: tuple(e["shape"]) for e in entries if e["key"].startswith(prefix)}


@pytest.mark.parametrize("golden_file, prefix, build", [
    ("msccnet_stem_layer1.npz", "backbone_net.",
     lambda rngs: resnet.resnet_v1c(50, output_stride=8, rngs=rngs)),
    ("deeplab_resnet101_stem_layer1.npz", "backbone.",
     lambda rngs: resnet.resnet_deeplab(101, output_stride=16, rngs=rngs)),
])
def test_stem_layer1_matches_torch(golden_file, prefix, build):
  data, params = _golden(golden_file, prefix)
  # Only the stem and layer1 run: the other stages may stay abstract.
  model = nnx.eval_shape(lambda: build(nnx.Rngs(0)))
  report = resnet.load_torch_state_dict(model, params, resnet.torch_key_to_nnx_path)
  assert sorted(report.dropped) == sorted(k for k in params if k.endswith("num_batches_tracked"))
  assert report.missing and all(p.split(".")[0] in ("layer2", "layer3", "layer4")
                                for p in report.missing)
  model = nnx.view(model, use_running_average=True)

  x = _nchw_to_nhwc(data["input/image"])
  with jax.default_matmul_precision("highest"):
    stem = model.stem_forward(x)
    pooled = resnet.max_pool_3x3_s2(stem)
    layer1 = model.layer1(pooled)
  errors = {name: _rel_err(ours.transpose(0, 3, 1, 2), data[name]) for name, ours in
            [("inter/stem", stem), ("inter/maxpool", pooled), ("output/layer1", layer1)]}
  print(golden_file, errors)
  assert all(err < 1e-4 for err in errors.values()), errors


@pytest.mark.parametrize("key_file, prefix, build, num_params", [
    ("msccnet_full_keys.json", "backbone_net.",
     lambda: resnet.resnet_v1c(50, output_stride=8, rngs=nnx.Rngs(0)), 23_527_264),
    ("deeplab_resnet101_os16_keys.json", "backbone.",
     lambda: resnet.resnet_deeplab(101, output_stride=16, rngs=nnx.Rngs(0)), None),
])
def test_full_backbone_covers_every_torch_key(key_file, prefix, build, num_params):
  keys = _key_list(key_file, prefix)
  model = nnx.eval_shape(build)
  flat = {p: v.shape for p, v in nnx.to_flat_state(nnx.state(model, (nnx.Param, nnx.BatchStat)))}
  mapped = {}
  for key, shape in keys.items():
    path = resnet.torch_key_to_nnx_path(key)
    if path is None:
      assert key.endswith("num_batches_tracked"), key
      continue
    assert path in flat, (key, path)
    assert path not in mapped, (key, path)
    expected = shape[2:] + (shape[1], shape[0]) if len(shape) == 4 else shape
    assert flat[path] == expected, (key, shape, flat[path])
    mapped[path] = key
  assert set(mapped) == set(flat), sorted(set(flat) - set(mapped))
  if num_params is not None:
    params = nnx.state(model, nnx.Param)
    assert sum(int(np.prod(v.shape)) for v in jax.tree.leaves(params)) == num_params


def test_unknown_torch_keys_are_rejected():
  with pytest.raises(KeyError):
    resnet.torch_key_to_nnx_path("fc.weight")
  with pytest.raises(KeyError):
    resnet.torch_key_to_nnx_path("layer1.0.downsample.2.weight")
  model = nnx.eval_shape(lambda: resnet.ResNet(50, stem="classic", rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match="shape mismatches"):
    resnet.load_torch_state_dict(model, {"conv1.weight": np.zeros((64, 3, 3, 3), np.float32)},
                                 resnet.torch_key_to_nnx_path)
  with pytest.raises(ValueError, match="unused"):
    resnet.load_torch_state_dict(model, {"stem.0.weight": np.zeros((32, 3, 3, 3), np.float32)},
                                 resnet.torch_key_to_nnx_path)


@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("variant", ["v1c", "deeplab"])
def test_output_stride_feature_sizes(output_stride, variant):
  build = resnet.resnet_v1c if variant == "v1c" else resnet.resnet_deeplab
  model = nnx.eval_shape(lambda: build(50, output_stride=output_stride, rngs=nnx.Rngs(0)))
  x = jax.ShapeDtypeStruct((2, 96, 64, 3), jnp.float32)
  feats = jax.eval_shape(lambda m, x: m(x), model, x)
  strides = (4, 8, min(16, output_stride), output_stride)
  assert [f.shape for f in feats] == [(2, 96 // s, 64 // s, c) for s, c in
                                      zip(strides, (256, 512, 1024, 2048))]
  assert model.out_channels == (256, 512, 1024, 2048)


def _pair(value):
  return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _block_convs(layer):
  """(conv1 stride, conv2 stride, conv2 dilation, conv2 padding) of each block, as pairs."""
  return [(_pair(layer[str(i)].conv1.strides), _pair(layer[str(i)].conv2.strides),
           _pair(layer[str(i)].conv2.kernel_dilation), layer[str(i)].conv2.padding)
          for i in range(len(layer))]


def test_dilation_and_stride_placement():
  """mmseg: contracted dilation; jfzhang95: multi-grid in layer4; stride on the 3x3 conv."""
  v1c = nnx.eval_shape(lambda: resnet.resnet_v1c(50, output_stride=8, rngs=nnx.Rngs(0)))
  assert [d for *_, d, _ in _block_convs(v1c.layer3)] == [(1, 1)] + [(2, 2)] * 5
  assert [d for *_, d, _ in _block_convs(v1c.layer4)] == [(2, 2), (4, 4), (4, 4)]
  first = _block_convs(v1c.layer2)[0]
  assert first[:2] == ((1, 1), (2, 2)) and first[3] == ((1, 1), (1, 1))
  assert _pair(v1c.layer2["0"].downsample.conv.strides) == (2, 2)
  assert _pair(v1c.layer3["0"].downsample.conv.strides) == (1, 1)

  deeplab = nnx.eval_shape(lambda: resnet.resnet_deeplab(101, output_stride=16,
                                                         rngs=nnx.Rngs(0)))
  layer4 = _block_convs(deeplab.layer4)
  assert [d for *_, d, _ in layer4] == [(2, 2), (4, 4), (8, 8)]
  assert [p for *_, p in layer4] == [((d, d), (d, d)) for d in (2, 4, 8)]
  assert len(deeplab.layer3) == 23 and _block_convs(deeplab.layer3)[0][:3] == ((1, 1), (2, 2),
                                                                             (1, 1))
  assert resnet.plan_layers(101, 8, contract_dilation=False, multi_grid=(1, 2, 4))[2:] == (
      resnet.LayerPlan(1, (2,) * 23), resnet.LayerPlan(1, (4, 8, 16)))
  with pytest.raises(ValueError):
    resnet.plan_layers(50, 4, contract_dilation=True, multi_grid=None)


def test_conv_initializers_match_torch():
  key = jax.random.key(0)
  torch_default = resnet.TORCH_DEFAULT_CONV_INIT(key, (3, 3, 64, 128))  # fan_in 576
  bound = 1 / np.sqrt(576)
  assert float(jnp.abs(torch_default).max()) <= bound
  np.testing.assert_allclose(float(torch_default.std()), bound / np.sqrt(3), rtol=0.02)
  deeplab = resnet.DEEPLAB_RESNET_CONV_INIT(key, (3, 3, 64, 128))  # fan_out 1152, untruncated
  np.testing.assert_allclose(float(deeplab.std()), np.sqrt(2 / 1152), rtol=0.02)
  assert float(jnp.abs(deeplab).max()) > 2.5 * np.sqrt(2 / 1152)


def test_batchnorm_train_mode_uses_batch_stats_with_torch_momentum():
  block = resnet.Bottleneck(8, 4, stride=2, dilation=1, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (2, 9, 7, 8))
  conv_out = block.conv1(x)
  before = block.bn1.mean[...]
  train_out = nnx.jit(lambda b, x: b(x))(block, x)  # updates the running stats in place
  assert train_out.shape == (2, 5, 4, 16) and bool(jnp.all(train_out >= 0))
  np.testing.assert_allclose(block.bn1.mean[...], 0.9 * before + 0.1 * conv_out.mean((0, 1, 2)),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(block.bn1.var[...], 0.9 + 0.1 * conv_out.var((0, 1, 2)),
                             rtol=1e-5, atol=1e-6)
  normalised = nnx.view(block, use_running_average=True).bn1(conv_out)
  np.testing.assert_allclose(normalised, (conv_out - block.bn1.mean[...])
                             / jnp.sqrt(block.bn1.var[...] + 1e-5), rtol=1e-4, atol=1e-5)


def test_jit_and_bfloat16_compute():
  abstract = nnx.eval_shape(lambda: resnet.resnet_deeplab(
      50, output_stride=16, stem_channels=8, base_channels=4, dtype=jnp.bfloat16,
      rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(nnx.view(abstract, use_running_average=True))
  state = jax.tree.map(lambda v: jnp.full(v.shape, 0.05, v.dtype), state)
  forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
  feats = forward(state, jnp.ones((1, 64, 64, 3)))
  assert [f.dtype for f in feats] == [jnp.bfloat16] * 4
  assert [f.shape for f in feats] == [(1, 16, 16, 16), (1, 8, 8, 32), (1, 4, 4, 64),
                                      (1, 4, 4, 128)]
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
