"""DeepLabV3+ ASPP and decoder: PyTorch parity on the golden tensors (final align_corners upsample
included), key coverage of the full DeepLab ResNet-101 OS16 model, dropout modes, renames."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from common.nn import aspp
from common.nn import layers
from common.nn import resnet
from common.nn import torch_port

GOLDEN = os.path.join(os.path.dirname(__file__), "testdata", "golden")


def _rel_err(ours, golden):
  ours = np.asarray(ours, np.float64).transpose(0, 3, 1, 2)
  return float(np.linalg.norm(ours - golden) / np.linalg.norm(golden))


def _nhwc(x):
  return jnp.asarray(x.transpose(0, 2, 3, 1))


def _load(name, build, rename):
  """Golden arrays, and the module built from the golden params (every key used, none missing)."""
  data = np.load(os.path.join(GOLDEN, name), allow_pickle=False)
  params = {k[len("param/"):]: data[k] for k in data.files if k.startswith("param/")}
  module, report = torch_port.init_from_torch(build, params, rename=rename)
  assert report.ignored == sorted(k for k in params if k.endswith("num_batches_tracked"))
  assert len(report.loaded) + len(report.ignored) == len(params)
  return data, nnx.view(module, use_running_average=True, deterministic=True)


def test_aspp_matches_torch():
  data, module = _load("deeplab_aspp.npz",
                       lambda: aspp.ASPP(320, output_stride=16, rngs=nnx.Rngs(0)),
                       aspp.aspp_torch_rename("aspp.", ""))
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
  data, module = _load("deeplab_decoder.npz", lambda: aspp.Decoder(2, rngs=nnx.Rngs(0)),
                       aspp.decoder_torch_rename("decoder.", ""))
  x, low_level = _nhwc(data["input/x"]), _nhwc(data["input/low_level_feat"])
  image_size = data["output/logits_upsampled"].shape[2:]
  with jax.default_matmul_precision("highest"):
    forward = nnx.jit(lambda m, x, low: (
        m(x, low), m.project_low_level(low),
        layers.resize_bilinear_align_corners(m(x, low), image_size)))
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


def test_full_deeplab_covers_every_torch_key():
  """DeepLab(resnet, OS16, 2 classes): backbone + ASPP + decoder take all 680 official entries."""
  with open(os.path.join(GOLDEN, "deeplab_resnet101_os16_keys.json")) as f:
    key_list = json.load(f)

  class DeepLab(nnx.Module):
    def __init__(self, rngs):
      self.backbone = resnet.resnet_deeplab(101, output_stride=16, rngs=rngs)
      self.aspp = aspp.ASPP(2048, output_stride=16, rngs=rngs)
      self.decoder = aspp.Decoder(2, rngs=rngs)

  model = nnx.eval_shape(lambda: DeepLab(nnx.Rngs(0)))
  rename = (resnet.torch_rename("backbone.") + aspp.aspp_torch_rename("aspp.")
            + aspp.decoder_torch_rename("decoder."))
  shapes = {e["key"]: e["shape"] for e in key_list["state_dict"]
            if not e["key"].endswith("num_batches_tracked")}
  slots = torch_port.torch_slots(model)
  renamed = torch_port.rename_keys(shapes, rename)
  assert sorted(renamed.values()) == sorted(slots), sorted(set(slots) ^ set(renamed.values()))
  for key, name in renamed.items():
    axes = torch_port.torch_to_flax_axes(slots[name].layout, len(shapes[key]))
    assert tuple(shapes[key][a] for a in axes) == slots[name].shape, key
  params = jax.tree.leaves(nnx.state(model, nnx.Param))
  assert sum(int(np.prod(v.shape)) for v in params) == key_list["num_parameters"] == 59_339_426


def test_head_renames_with_prefixes():
  assert list(torch_port.rename_keys(
      ["aspp.global_avg_pool.2.running_mean", "aspp.aspp3.atrous_conv.weight"],
      aspp.aspp_torch_rename("aspp.", "head.aspp.")).values()) == [
          "head.aspp.global_avg_pool.bn.running_mean", "head.aspp.aspp3.atrous_conv.weight"]
  assert list(torch_port.rename_keys(
      ["last_conv.8.bias", "last_conv.5.weight", "conv1.weight"],
      aspp.decoder_torch_rename("", "decoder.")).values()) == [
          "decoder.last_conv.classifier.bias", "decoder.last_conv.bn2.weight",
          "decoder.conv1.weight"]
  with pytest.raises(ValueError):
    aspp.ASPP(2048, output_stride=32, rngs=nnx.Rngs(0))


def test_kaiming_normal_matches_torch():
  """torch.nn.init.kaiming_normal_: N(0, 2 / fan_in), not truncated."""
  w = aspp.KAIMING_NORMAL(jax.random.key(0), (3, 3, 64, 128))
  np.testing.assert_allclose(float(w.std()), np.sqrt(2 / 576), rtol=0.02)
  assert float(jnp.abs(w).max()) > 2.5 * np.sqrt(2 / 576)
