"""MSCCNet checkpoint conversion: every key of the released model's state_dict is accounted for exactly once
(383 entries), the DCT buffer is verified rather than trusted, strictness, checkpoint wrappers, the ImageNet
backbone path, and the step-0 run directory."""
import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from common.nn import spectral, torch_port
from common.train import checkpoint, weights
from configs import msccnet as msccnet_configs
from msccnet_jax import convert
from msccnet_jax import model as model_lib

GOLDEN = os.path.join(os.path.dirname(__file__), "testdata", "golden")


def _full_entries():
  with open(os.path.join(GOLDEN, "msccnet_full_keys.json")) as f:
    return json.load(f)


def _full_state_dict():
  """The released model's keys and shapes: per-key constants, the true DCT buffer."""
  state = {}
  for i, e in enumerate(_full_entries()["state_dict"]):
    if e["key"] == "mscc.frequency.weight":
      c, h, w = e["shape"]
      state[e["key"]] = spectral.dct_basis(h, w, c).transpose(2, 0, 1)
    else:
      state[e["key"]] = np.full(e["shape"], i % 97, dtype=e["dtype"])
  return state


@pytest.fixture(scope="module")
def full_load():
  module = nnx.eval_shape(lambda: model_lib.MSCCNet(rngs=nnx.Rngs(0)))
  state_dict = _full_state_dict()
  return module, state_dict, convert.load_into(module, state_dict)


def test_every_official_key_maps_once(full_load):
  module, state_dict, report = full_load
  entries = _full_entries()
  assert len(state_dict) == entries["num_state_dict_entries"] == 383
  assert not any(e.get("alias_of") for e in entries["state_dict"])
  assert report.missing == [] and report.unused == []
  assert sorted(report.loaded + report.ignored) == sorted(state_dict)  # a partition of the keys
  assert set(report.ignored) == {k for k in state_dict if k.endswith("num_batches_tracked")} | {
      "mscc.frequency.weight"}
  # Bijective: the renamed keys hit distinct variables, and every variable is hit.
  renamed = torch_port.rename_keys(report.loaded, convert.RENAME)
  slots = torch_port.torch_slots(module)
  assert sorted(renamed.values()) == sorted(slots)
  assert model_lib.num_parameters(module) == entries["num_trainable_parameters"]


def test_values_land_in_the_right_layout(full_load):
  module, state_dict, _ = full_load
  np.testing.assert_array_equal(module.mscc.gcn.conv1.kernel[...][0, 0],
                                state_dict["mscc.gcn.conv1.weight"][:, :, 0, 0].T)
  np.testing.assert_array_equal(module.classifer.fc.kernel[...], state_dict["classifer.fc.weight"].T)
  assert float(module.decoder.conv2.bias[0]) == state_dict["decoder.4.bias"][0]
  assert float(module.backbone_net.stem.bn2.var[0]) == state_dict["backbone_net.stem.4.running_var"][0]


def test_conversion_is_strict_and_checks_the_dct_buffer():
  _, params = _thin_golden()
  kwargs = dict(stem_channels=16, base_channels=8, feats_channels=64, out_channels=64)
  wrapped = {"model": {f"module.{k}": v for k, v in params.items()}, "optimizer": {}, "cur_epoch": 3}
  module, report = convert.from_torch_state_dict(wrapped, **kwargs)
  assert report.missing == [] and "module.mscc.frequency.weight" in report.ignored
  for broken, match in [
      ({k: v for k, v in params.items() if k != "decoder.4.bias"}, "decoder.conv2.bias"),
      (dict(params, **{"extra.weight": np.zeros(3, np.float32)}), "extra.weight"),
      (dict(params, **{"mscc.frequency.weight": params["mscc.frequency.weight"] * 1.01}), "DCT buffer"),
      (dict(params, **{"decoder.4.weight": np.zeros((2, 63, 1, 1), np.float32)}), "shape")]:
    with pytest.raises(ValueError, match=match):
      convert.from_torch_state_dict(broken, **kwargs)


def _thin_golden():
  data = np.load(os.path.join(GOLDEN, "msccnet_thin_full.npz"), allow_pickle=False)
  return data, {k[len("param/"):]: data[k] for k in data.files if k.startswith("param/")}


def test_imagenet_backbone_fills_only_the_backbone():
  _, params = _thin_golden()
  module, _ = convert.from_torch_state_dict(params, stem_channels=16, base_channels=8, feats_channels=64,
                                            out_channels=64)
  backbone = {k: v + 1 for k, v in torch_port.strip_prefix(params, "backbone_net.").items()}
  backbone["fc.weight"] = np.zeros((1000, 256), np.float32)
  report = convert.load_backbone(module, {"state_dict": backbone})
  assert "fc.weight" in report.ignored and report.missing == [] and report.unused == []
  np.testing.assert_array_equal(module.backbone_net.layer4["2"].conv3.kernel[...],
                                backbone["layer4.2.conv3.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(module.decoder.conv1.kernel[...],
                                params["decoder.0.weight"].transpose(2, 3, 1, 0))


def test_step_zero_workdir_holds_the_converted_weights(tmp_path):
  """The thin golden model has the smoke config's widths (at depth 50): its weights become step 0 of a run."""
  _, params = _thin_golden()
  config = msccnet_configs.get_config("smoke")
  config.model.depth = 50
  module, _ = convert.from_torch_state_dict(params, config)
  directory = weights.to_workdir(module, config, str(tmp_path))
  ckpt = checkpoint.Checkpointer(directory, read_only=True, async_save=False)
  raw = ckpt.restore_raw(0)
  restored_config = ckpt.restore_config(0)
  ckpt.close()
  flat = checkpoint.flat_keys({"params": raw["params"], "rest": raw["rest"]})
  np.testing.assert_array_equal(flat["params/model/mscc/fuse/kernel"],
                                params["mscc.fuse.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(flat["rest/model/bottleneck3/bn/mean"], params["bottleneck3.1.running_mean"])
  assert restored_config.total_steps == 0 and restored_config.model.feats_channels == 64
  with pytest.raises(FileExistsError):
    weights.to_workdir(module, config, str(tmp_path))
  assert jax.device_count() == 4
