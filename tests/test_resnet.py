"""ResNet backbones: PyTorch parity on the golden stem+layer1 tensors, torch key coverage of the
full MSCCNet ResNet-50 (OS8) and DeepLabV3+ ResNet-101 (OS16), output strides, dilation placement,
BatchNorm modes."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from common.nn import resnet
from common.nn import torch_port

GOLDEN = os.path.join(os.path.dirname(__file__), "testdata", "golden")


def _rel_err(ours, golden):
  return float(np.linalg.norm(np.asarray(ours, np.float64) - golden) / np.linalg.norm(golden))


def _nchw_to_nhwc(x):
  return jnp.asarray(x.transpose(0, 2, 3, 1))


def _key_list(name):
  with open(os.path.join(GOLDEN, name)) as f:
    return json.load(f)


def _assert_covers(module, key_shapes, rename):
  """Every key maps to a variable of the same (transposed) shape, every variable gets one key."""
  slots = torch_port.torch_slots(module)
  kept = [k for k in key_shapes if not k.endswith("num_batches_tracked")]
  renamed = torch_port.rename_keys(kept, rename)
  assert sorted(renamed.values()) == sorted(slots), sorted(set(slots) ^ set(renamed.values()))
  for key, name in renamed.items():
    shape = key_shapes[key]
    axes = torch_port.torch_to_flax_axes(slots[name].layout, len(shape))
    assert tuple(shape[a] for a in axes) == slots[name].shape, (key, shape, slots[name].shape)


@pytest.mark.parametrize("golden_file, prefix, build", [
    ("msccnet_stem_layer1.npz", "backbone_net.",
     lambda: resnet.resnet_v1c(50, output_stride=8, rngs=nnx.Rngs(0))),
    ("deeplab_resnet101_stem_layer1.npz", "backbone.",
     lambda: resnet.resnet_deeplab(101, output_stride=16, rngs=nnx.Rngs(0))),
])
def test_stem_layer1_matches_torch(golden_file, prefix, build):
  data = np.load(os.path.join(GOLDEN, golden_file), allow_pickle=False)
  params = {k[len("param/"):]: data[k] for k in data.files if k.startswith("param/")}
  # Only the stem and layer1 run: the other stages may stay abstract.
  model = nnx.eval_shape(build)
  report = torch_port.load_torch_state_dict(model, params, rename=resnet.torch_rename(prefix, ""),
                                            strict=False)
  assert report.unused == []
  assert report.ignored == sorted(k for k in params if k.endswith("num_batches_tracked"))
  assert len(report.loaded) + len(report.ignored) == len(params)
  assert report.missing and all(k.split(".")[0] in ("layer2", "layer3", "layer4")
                                for k in report.missing)
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


def test_full_thin_backbone_matches_torch_image_logits():
  """All four stages (OS8 strides, contracted dilations) through MSCCNet's image head.

  `msccnet_thin_full.npz` holds the whole MSCCNet at base width 8 / stem 16; its image logits are
  `classifer.fc(mean(C4))`, so they check C4 of the complete backbone. Without the contracted
  dilation, or with multi-grid, the error is ~9e-3.
  """
  data = np.load(os.path.join(GOLDEN, "msccnet_thin_full.npz"), allow_pickle=False)
  params = {k[len("param/"):]: data[k] for k in data.files if k.startswith("param/")}
  model, report = torch_port.init_from_torch(
      lambda: resnet.resnet_v1c(50, output_stride=8, stem_channels=16, base_channels=8,
                                rngs=nnx.Rngs(0)),
      torch_port.strip_prefix(params, "backbone_net."), rename=resnet.torch_rename())
  assert report.missing == [] and report.unused == []
  model = nnx.view(model, use_running_average=True)
  with jax.default_matmul_precision("highest"):
    feats = nnx.jit(lambda m, x: m(x))(model, _nchw_to_nhwc(data["input/image"]))
  assert [f.shape for f in feats] == [(1, 128, 128, 32), (1, 64, 64, 64), (1, 64, 64, 128),
                                      (1, 64, 64, 256)]
  pooled = np.asarray(feats[3], np.float64).mean(axis=(1, 2))
  logits = pooled @ params["classifer.fc.weight"].T + params["classifer.fc.bias"]
  error = _rel_err(logits, data["output/image_logits"])
  print("msccnet_thin_full image_logits", error)
  assert error < 1e-4


def test_msccnet_backbone_covers_every_torch_key():
  """All `backbone_net.*` entries of the released MSCCNet (ResNet-50 v1c, OS8) map one-to-one.

  The DeepLab ResNet-101 OS16 backbone is covered with its head in test_aspp.py.
  """
  prefix = "backbone_net."
  key_shapes = {e["key"][len(prefix):]: e["shape"]
                for e in _key_list("msccnet_full_keys.json")["state_dict"]
                if e["key"].startswith(prefix)}
  model = nnx.eval_shape(lambda: resnet.resnet_v1c(50, output_stride=8, rngs=nnx.Rngs(0)))
  _assert_covers(model, key_shapes, resnet.torch_rename())
  params = nnx.state(model, nnx.Param)  # the spec's count for ResNet-50 v1c without fc
  assert sum(int(np.prod(v.shape)) for v in jax.tree.leaves(params)) == 23_527_264


def test_torch_rename_prefixes_and_rejections():
  keys = ["backbone_net.stem.4.running_var", "backbone_net.layer3.12.downsample.0.weight",
          "backbone_net.layer2.0.bn3.bias", "decoder.4.weight"]
  assert list(torch_port.rename_keys(keys, resnet.torch_rename("backbone_net.")).values()) == [
      "backbone_net.stem.bn2.running_var", "backbone_net.layer3.12.downsample.conv.weight",
      "backbone_net.layer2.0.bn3.bias", "decoder.4.weight"]
  assert list(torch_port.rename_keys(keys[:2], resnet.torch_rename("backbone_net.", "enc."))
              .values()) == ["enc.stem.bn2.running_var", "enc.layer3.12.downsample.conv.weight"]

  model = nnx.eval_shape(lambda: resnet.ResNet(50, stem="classic", rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match="shape"):
    torch_port.load_torch_state_dict(model, {"conv1.weight": np.zeros((64, 3, 3, 3), np.float32)},
                                     rename=resnet.torch_rename(), strict=False)
  report = torch_port.load_torch_state_dict(
      model, {"stem.0.weight": np.zeros((32, 3, 3, 3), np.float32),
              "fc.weight": np.zeros((1000, 2048), np.float32)},
      rename=resnet.torch_rename(), strict=False)
  assert report.unused == ["fc.weight", "stem.0.weight"] and report.loaded == []


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
           _pair(layer[str(i)].conv2.kernel_dilation),
           tuple(tuple(p) for p in layer[str(i)].conv2.padding))
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


def test_deeplab_conv_initializer_matches_torch():
  """jfzhang95: normal_(0, sqrt(2 / (k * k * out_channels))), not truncated."""
  deeplab = resnet.DEEPLAB_RESNET_CONV_INIT(jax.random.key(0), (3, 3, 64, 128))
  np.testing.assert_allclose(float(deeplab.std()), np.sqrt(2 / 1152), rtol=0.02)
  assert float(jnp.abs(deeplab).max()) > 2.5 * np.sqrt(2 / 1152)


def _filled(build, seed=0):
  """The module `build()` makes, with U(0.5, 1.5) numpy values instead of its initialisers."""
  graphdef, state = nnx.split(nnx.eval_shape(build))
  rng = np.random.default_rng(seed)
  return nnx.merge(graphdef, jax.tree.map(
      lambda v: jnp.asarray(rng.uniform(0.5, 1.5, v.shape), v.dtype), state))


def test_batchnorm_train_mode_uses_batch_stats_with_torch_momentum():
  block = _filled(lambda: resnet.Bottleneck(8, 4, stride=2, rngs=nnx.Rngs(0)))
  x = jax.random.normal(jax.random.key(1), (2, 9, 7, 8))
  before_mean, before_var = block.bn1.mean[...], block.bn1.var[...]

  @nnx.jit
  def train_step(block, x):
    conv_out = block.conv1(x)
    return conv_out, block(x)  # updates the running statistics in place

  conv_out, train_out = train_step(block, x)
  assert train_out.shape == (2, 5, 4, 16) and bool(jnp.all(train_out >= 0))
  np.testing.assert_allclose(block.bn1.mean[...],
                             0.9 * before_mean + 0.1 * conv_out.mean((0, 1, 2)), rtol=1e-5)
  np.testing.assert_allclose(block.bn1.var[...],
                             0.9 * before_var + 0.1 * conv_out.var((0, 1, 2)), rtol=1e-5)
  eval_out = nnx.jit(lambda b, x: b(x))(nnx.view(block, use_running_average=True), x)
  assert not np.allclose(eval_out, train_out, rtol=1e-3)


def test_jit_and_bfloat16_compute():
  abstract = nnx.eval_shape(lambda: resnet.resnet_deeplab(
      50, output_stride=16, stem_channels=8, base_channels=4, dtype=jnp.bfloat16,
      rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(nnx.view(abstract, use_running_average=True))
  state = jax.tree.map(lambda v: jnp.full(v.shape, 0.05, v.dtype), state)
  forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))  # the engine's split/merge pattern
  feats = forward(state, jnp.ones((1, 64, 64, 3)))
  assert [f.dtype for f in feats] == [jnp.bfloat16] * 4
  assert [f.shape for f in feats] == [(1, 16, 16, 16), (1, 8, 8, 32), (1, 4, 4, 64),
                                      (1, 4, 4, 128)]
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
  # Pure-dict params (what jax.export and params-only checkpoints take) have string keys only.
  paths = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(state))[0]
  assert all(isinstance(k.key, str) for path, _ in paths for k in path)
  assert any(path[:2] == (jax.tree_util.DictKey("layer3"), jax.tree_util.DictKey("5"))
             for path, _ in paths)
