"""NCL converter: every key of jfzhang95's DeepLab ResNet-101 OS16 state_dict maps onto NCLNet (only our branches
are left), loading is strict about the rest, the converted backbone stem + layer1 and decoder reproduce the official
PyTorch outputs (golden tensors), and NCLNet's segmentation path is backbone -> ASPP -> decoder -> upsample."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from common.nn import layers, torch_port
from configs import ncl as ncl_configs
from ncl_jax import convert

GOLDEN = os.path.join(os.path.dirname(__file__), "testdata", "golden")


def _key_list():
  with open(os.path.join(GOLDEN, "deeplab_resnet101_os16_keys.json")) as f:
    return json.load(f)


def test_every_official_key_maps_onto_the_paper_model():
  keys = {e["key"]: e["shape"] for e in _key_list()["state_dict"]}
  assert len(keys) == 680
  model = nnx.eval_shape(lambda: convert.build_model(ncl_configs.get_config("paper")))
  slots = torch_port.torch_slots(model)
  loaded = {k: v for k, v in keys.items() if not k.endswith("num_batches_tracked")}
  renamed = torch_port.rename_keys(loaded, convert.RENAME)
  assert len(set(renamed.values())) == len(renamed)
  assert set(renamed.values()) <= set(slots), sorted(set(renamed.values()) - set(slots))[:5]
  assert all(k.startswith("branches.") for k in set(slots) - set(renamed.values()))
  for key, name in renamed.items():
    axes = torch_port.torch_to_flax_axes(slots[name].layout, len(keys[key]))
    assert tuple(keys[key][a] for a in axes) == slots[name].shape, key
  deeplab = sum(int(np.prod(v.shape)) for k, v in slots.items() if not k.startswith("branches.")
                and "running_" not in k)
  assert deeplab == _key_list()["num_parameters"] == 59_339_426
  branches = sum(int(np.prod(v.shape)) for k, v in slots.items() if k.startswith("branches.") and "running_" not in k)
  assert branches < 300_000  # lightweight: the released 238 MB checkpoint has no room for more (spec §2.2)


def _small_config():
  c = ncl_configs.get_config("smoke")
  c.data.sets = {"train": "unused.json", "test": "unused.json"}
  return c


def _official_like_state_dict(config, seed=0, fan_in_scaled=False):
  """Random weights under the official key names for the small model (the official list, cut to its blocks).

  fan_in_scaled: conv weights N(0, 1/fan_in) instead of N(0, 0.01), BatchNorm scales in [0.5, 1] (activations stay
  of order one through a full-width network)."""
  slots = torch_port.torch_slots(nnx.eval_shape(lambda: convert.build_model(config)))
  rng = np.random.default_rng(seed)
  out = {}
  for entry in _key_list()["state_dict"]:
    key = entry["key"]
    name = torch_port.rename_keys([key], convert.RENAME)[key].replace("num_batches_tracked", "weight")
    if name not in slots:
      continue  # a block the small model does not have
    if key.endswith("num_batches_tracked"):
      out["module." + key] = np.zeros((), np.int64)
      continue
    slot = slots[name]
    inverse = np.argsort(torch_port.torch_to_flax_axes(slot.layout, len(slot.shape)))
    torch_shape = tuple(slot.shape[a] for a in inverse)
    if "running_var" in key:
      value = rng.uniform(0.5, 1.5, torch_shape)
    elif fan_in_scaled and len(torch_shape) == 4:
      value = rng.normal(0, 1 / np.sqrt(np.prod(torch_shape[1:])), torch_shape)
    elif fan_in_scaled and key.endswith(".weight"):
      value = rng.uniform(0.5, 1.0, torch_shape)
    else:
      value = rng.normal(0, 0.1, torch_shape)
    out["module." + key] = value.astype(np.float32)
  return out


def _golden(name):
  data = np.load(os.path.join(GOLDEN, name), allow_pickle=False)
  return data, {k[len("param/"):]: data[k] for k in data.files if k.startswith("param/")}


def _rel_err(ours, golden):
  ours = np.asarray(ours, np.float64).transpose(0, 3, 1, 2)
  return float(np.linalg.norm(ours - golden) / np.linalg.norm(golden))


def test_converted_deeplab_reproduces_the_official_stem_layer1_and_decoder():
  """A jfzhang95 state_dict whose backbone stem + layer1 and decoder are the golden weights (official widths; the
  rest random), converted by `from_torch_state_dict`: NCLNet's low-level feature, decoder logits and their
  align_corners upsampling equal the official PyTorch outputs (relative error < 1e-4)."""
  config = _small_config()
  config.model.update(dict(depth=50, base_channels=64, aspp_channels=256, decoder_channels=256,
                           low_level_channels=48, proj_dim=8))  # ResNet-50 shares ResNet-101's stem and layer1
  stem, stem_params = _golden("deeplab_resnet101_stem_layer1.npz")
  decoder, decoder_params = _golden("deeplab_decoder.npz")
  state_dict = _official_like_state_dict(config, fan_in_scaled=True)
  for key, value in {**stem_params, **decoder_params}.items():
    assert state_dict["module." + key].shape == value.shape, key
    state_dict["module." + key] = value
  module, report = convert.from_torch_state_dict(state_dict, config)
  assert report.missing and all(k.startswith("branches.") for k in report.missing)
  net = nnx.view(module, deterministic=True, use_running_average=True)
  nhwc = lambda x: jnp.asarray(x.transpose(0, 2, 3, 1))
  image_size = decoder["output/logits_upsampled"].shape[2:]

  def pieces(m, image, x, low_level):
    c1, _, _, c4 = m.backbone(image)
    logits = m.decoder(x, low_level)
    return c1, c4, logits, layers.resize_bilinear_align_corners(logits, image_size), m(image)

  image = nhwc(stem["input/image"])
  with jax.default_matmul_precision("highest"):
    c1, c4, logits, upsampled, whole = nnx.jit(pieces)(net, image, nhwc(decoder["input/x"]),
                                                       nhwc(decoder["input/low_level_feat"]))
  errors = {"layer1": _rel_err(c1, stem["output/layer1"]), "logits": _rel_err(logits, decoder["output/logits"]),
            "logits_upsampled": _rel_err(upsampled, decoder["output/logits_upsampled"])}
  print(errors)
  assert all(err < 1e-4 for err in errors.values()), errors
  assert c4.shape == (1, 4, 4, 2048) and np.all(np.isfinite(c4))  # output stride 16
  # The whole segmentation path is DeepLab.forward: decoder(ASPP(c4), layer1) upsampled (align_corners) to the
  # input size, here fed the official layer1 output.
  with jax.default_matmul_precision("highest"):
    reference = nnx.jit(lambda m, c4, low: layers.resize_bilinear_align_corners(m.decoder(m.aspp(c4), low),
                                                                                 image.shape[1:3]))(
        net, c4, nhwc(stem["output/layer1"]))
  assert whole.shape == (1, 64, 56, 2)
  assert _rel_err(whole, np.asarray(reference).transpose(0, 3, 1, 2)) < 1e-4


def test_loads_official_keys_leaves_branches_fresh_and_runs_deeplab_forward():
  config = _small_config()
  state_dict = _official_like_state_dict(config)
  module, report = convert.from_torch_state_dict({"state_dict": state_dict}, config)
  assert report.missing and all(k.startswith("branches.") for k in report.missing)
  assert not report.unused
  w = state_dict["module.backbone.layer1.0.conv2.weight"]
  np.testing.assert_array_equal(module.backbone.layer1["0"].conv2.kernel[...], w.transpose(2, 3, 1, 0))
  rng = np.random.default_rng(1)
  for i in range(2):  # fresh branch BatchNorms are the identity: give them statistics the check can see
    bn = module.branches[str(i)].bn1
    for var, low, high in ((bn.mean, -0.5, 0.5), (bn.var, 0.5, 1.5), (bn.scale, 0.5, 1.5), (bn.bias, -0.5, 0.5)):
      var[...] = jnp.asarray(rng.uniform(low, high, var[...].shape), jnp.float32)
  net = nnx.view(module, deterministic=True, use_running_average=True)
  x = jax.random.normal(jax.random.key(0), (1, 64, 64, 3))
  with jax.default_matmul_precision("highest"):
    ours, outputs, features = nnx.jit(lambda m, x: (m(x), m.forward(x), m.decoder_features(x)))(net, x)
  np.testing.assert_array_equal(outputs.logits, ours)  # forward's segmentation output is __call__'s
  assert outputs.embeddings.shape == (2, 1, 16, 16, config.model.proj_dim)
  assert outputs.branch_logits.shape == (2, 1, 16, 16, 2)
  # The pivot branches (ours: no official code exists) against numpy, from the decoder features: 1x1 conv (no
  # bias), BatchNorm (running statistics, eps 1e-5), ReLU, 1x1 conv + bias -> embedding; 1x1 conv + bias -> logits.
  f = np.asarray(features, np.float64)
  for i in range(2):
    head = module.branches[str(i)]
    w = lambda conv: np.asarray(conv.kernel[...], np.float64)[0, 0]
    bn = head.bn1
    h = f @ w(head.conv1)
    h = (h - np.asarray(bn.mean[...])) / np.sqrt(np.asarray(bn.var[...]) + 1e-5) * np.asarray(bn.scale[...]) \
        + np.asarray(bn.bias[...])
    embedding = np.maximum(h, 0) @ w(head.conv2) + np.asarray(head.conv2.bias[...])
    logits = embedding @ w(head.classifier) + np.asarray(head.classifier.bias[...])
    np.testing.assert_allclose(outputs.embeddings[i], embedding, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outputs.branch_logits[i], logits, rtol=1e-4, atol=1e-5)
  assert not np.allclose(outputs.embeddings[0], outputs.embeddings[1])  # two independently initialised branches

  bad = dict(state_dict, **{"module.decoder.extra.weight": np.zeros(3, np.float32)})
  with pytest.raises(ValueError, match="unused"):
    convert.from_torch_state_dict(bad, config)
  missing = {k: v for k, v in state_dict.items() if "aspp.conv1" not in k}
  with pytest.raises(ValueError, match="aspp.conv1"):
    convert.from_torch_state_dict(missing, config)


@pytest.mark.slow
def test_converted_weights_become_a_step_zero_run(tmp_path):
  from common.train import checkpoint, weights
  config = _small_config()
  module, _ = convert.from_torch_state_dict(_official_like_state_dict(config, seed=1), config)
  weights.to_workdir(module, config, str(tmp_path))
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), read_only=True, async_save=False)
  raw = ckpt.restore_raw(0)
  ckpt.close()
  saved = raw["params"]["model"]["aspp"]["conv1"]["kernel"]
  saved = saved["value"] if isinstance(saved, dict) else saved
  np.testing.assert_array_equal(np.asarray(saved), module.aspp.conv1.kernel[...])
  with pytest.raises(FileExistsError):
    weights.to_workdir(module, config, str(tmp_path))
