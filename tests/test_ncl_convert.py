"""NCL converter: every key of jfzhang95's DeepLab ResNet-101 OS16 state_dict maps onto NCLNet (only our branches
are left), loading is strict about the rest, and NCLNet's segmentation path is exactly DeepLab.forward."""
import json
import os

import jax
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


def _official_like_state_dict(config, seed=0):
  """Random weights under the official key names for the small model (the official list, cut to its blocks)."""
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
    value = rng.uniform(0.5, 1.5, torch_shape) if "running_var" in key else rng.normal(0, 0.1, torch_shape)
    out["module." + key] = value.astype(np.float32)
  return out


def test_loads_official_keys_leaves_branches_fresh_and_runs_deeplab_forward():
  config = _small_config()
  state_dict = _official_like_state_dict(config)
  module, report = convert.from_torch_state_dict({"state_dict": state_dict}, config)
  assert report.missing and all(k.startswith("branches.") for k in report.missing)
  assert not report.unused
  w = state_dict["module.backbone.layer1.0.conv2.weight"]
  np.testing.assert_array_equal(module.backbone.layer1["0"].conv2.kernel[...], w.transpose(2, 3, 1, 0))
  # NCLNet's segmentation path is DeepLab.forward: backbone -> ASPP -> decoder -> align_corners upsample.
  net = nnx.view(module, deterministic=True, use_running_average=True)
  x = jax.random.normal(jax.random.key(0), (1, 64, 64, 3))

  def deeplab_forward(m, x):
    c1, _, _, c4 = m.backbone(x)
    return layers.resize_bilinear_align_corners(m.decoder(m.aspp(c4), c1), x.shape[1:3])

  with jax.default_matmul_precision("highest"):
    ours, reference, outputs = nnx.jit(lambda m, x: (m(x), deeplab_forward(m, x), m.forward(x)))(net, x)
  np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(outputs.logits, ours)
  assert outputs.embeddings.shape == (2, 1, 16, 16, config.model.proj_dim)

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
