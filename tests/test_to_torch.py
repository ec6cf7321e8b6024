"""The way back to PyTorch (`<method>_jax.convert.to_torch_state_dict`, `--to_torch`): official keys -> our model ->
official keys is the identity (keys, shapes, dtypes, bits) for ViLocal, MSCCNet, NCL's DeepLab part and SafePaint's
generator and discriminator, buffers and `num_batches_tracked` included; the full-size models give exactly the
official key lists; the command line writes a run's model; a `.pth` without torch is one clear error."""
import json
import os
import sys

from absl import flags
import ml_collections
import numpy as np
import pytest
from flax import nnx

from common.nn import torch_port
from common.train import weights
from configs import ncl as ncl_configs
from configs import vilocal as vilocal_configs
from msccnet_jax import convert as msccnet_convert
from ncl_jax import convert as ncl_convert
from safepaint_jax import convert as safepaint_convert
from vilocal_jax import convert as vilocal_convert

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(REPO, "tests", "testdata", "golden")


def entries(name):
  with open(os.path.join(GOLDEN, name)) as f:
    return json.load(f)["state_dict"]


def golden_params(name):
  with np.load(os.path.join(GOLDEN, name), allow_pickle=False) as data:
    return {k[len("param/"):]: data[k] for k in data.files if k.startswith("param/")}


def official_like(build, key_list, rename, seed=0):
  """Seeded N(0, 1) float32 arrays under the official keys of `key_list` that the (small) module `build()` has
  (the list cut to its layers through the loader's `rename`), in its shapes; `num_batches_tracked` 0. Other
  buffers are the caller's."""
  slots = torch_port.torch_slots(nnx.eval_shape(build))
  names = torch_port.rename_keys([e["key"] for e in entries(key_list)], rename)
  rng = np.random.default_rng(seed)
  out = {}
  for key, name in names.items():
    if key.endswith("num_batches_tracked") and name.replace("num_batches_tracked", "running_mean") in slots:
      out[key] = np.zeros((), np.int64)
    elif name in slots:
      slot = slots[name]
      axes = np.argsort(torch_port.torch_to_flax_axes(slot.layout, len(slot.shape)))
      out[key] = rng.standard_normal([slot.shape[a] for a in axes], dtype=np.float32)
  return out


def assert_identical(ours, official):
  assert sorted(ours) == sorted(official)
  for key, theirs in official.items():
    mine, theirs = ours[key], np.asarray(theirs)
    assert (mine.shape, mine.dtype) == (theirs.shape, theirs.dtype), key
    assert mine.tobytes() == theirs.tobytes(), key


def test_vilocal_round_trip():
  """The golden small model's official weights (depth (2, 2, 1, 1), official widths)."""
  state_dict = golden_params("vilocal_small.npz")
  module, _ = vilocal_convert.from_torch_state_dict(state_dict, depth=(2, 2, 1, 1))
  assert_identical(vilocal_convert.to_torch_state_dict(module), state_dict)


def test_msccnet_round_trip_regenerates_the_official_dct_buffer():
  """The thin golden model: all 383 official keys, its DCT buffer as the official code computed it."""
  state_dict = golden_params("msccnet_thin_full.npz")
  assert "mscc.frequency.weight" in state_dict and len(state_dict) == 383
  module, _ = msccnet_convert.from_torch_state_dict(state_dict, stem_channels=16, base_channels=8, feats_channels=64,
                                                    out_channels=64)
  assert_identical(msccnet_convert.to_torch_state_dict(module), state_dict)


def test_ncl_round_trip_leaves_out_the_branches():
  config = ncl_configs.get_config("smoke")
  config.data.sets = {"train": "unused.json", "test": "unused.json"}
  state_dict = official_like(lambda: ncl_convert.build_model(config), "deeplab_resnet101_os16_keys.json",
                             ncl_convert.RENAME)
  module, report = ncl_convert.from_torch_state_dict(state_dict, config)
  assert report.missing and all(k.startswith("branches.") for k in report.missing)
  assert_identical(ncl_convert.to_torch_state_dict(module), state_dict)


SMALL_SAFEPAINT = ml_collections.ConfigDict({"model": dict(width=8, residual_blocks=1, extractor_width=8,
                                                           attention_reduction=4, disc_width=8)})


def test_safepaint_generator_round_trip_writes_the_official_gaussian_buffers():
  state_dict = official_like(lambda: safepaint_convert.build_generator(SMALL_SAFEPAINT),
                             "safepaint_generator_keys.json", safepaint_convert.GENERATOR_RENAME)
  gaussians = golden_params("safepaint_generator_thin.npz")  # the official module's own buffers
  assert len(gaussians) == 3
  state_dict.update(gaussians)
  generator, _ = safepaint_convert.from_torch_state_dict(state_dict, SMALL_SAFEPAINT)
  assert_identical(safepaint_convert.to_torch_state_dict(generator), state_dict)


def test_safepaint_discriminator_round_trip_writes_the_aliases():
  state_dict = official_like(lambda: safepaint_convert.build_discriminator(SMALL_SAFEPAINT),
                             "safepaint_discriminator_keys.json", safepaint_convert.DISCRIMINATOR_RENAME)
  aliases = {e["key"]: state_dict[e["alias_of"]] for e in entries("safepaint_discriminator_keys.json")
             if e.get("alias_of")}
  assert len(aliases) == 3
  discriminator, _ = safepaint_convert.discriminator_from_torch_state_dict({**state_dict, **aliases},
                                                                           SMALL_SAFEPAINT)
  assert_identical(safepaint_convert.discriminator_to_torch_state_dict(discriminator), {**state_dict, **aliases})


@pytest.mark.parametrize("key_list, build, to_torch", [
    ("msccnet_full_keys.json", msccnet_convert.build_model, msccnet_convert.to_torch_state_dict),
    ("deeplab_resnet101_os16_keys.json", lambda: ncl_convert.build_model(ncl_configs.get_config("paper")),
     ncl_convert.to_torch_state_dict),
    ("safepaint_generator_keys.json", safepaint_convert.build_generator, safepaint_convert.to_torch_state_dict),
    ("safepaint_discriminator_keys.json", safepaint_convert.build_discriminator,
     safepaint_convert.discriminator_to_torch_state_dict),
], ids=["msccnet", "ncl", "safepaint_generator", "safepaint_discriminator"])
def test_full_size_model_gives_the_official_key_list(key_list, build, to_torch):
  """Keys, shapes and dtypes of the released models' state_dicts, from abstract modules (nothing allocated)."""
  written = to_torch(nnx.eval_shape(build))
  ours = {k: (tuple(v.shape), np.dtype(v.dtype).name) for k, v in written.items()}
  assert ours == {e["key"]: (tuple(e["shape"]), e["dtype"]) for e in entries(key_list)}


def test_released_vilocal_keys_map_back():
  """The 709 keys of the released ViLocal on key strings: tracing the full model takes ~15 s (1.8 k RNG updates);
  test_vilocal_convert maps this list one-to-one onto the full model's variables, the round trip above every key
  kind (the full model only repeats blocks)."""
  keys = [e["key"] for e in entries("vilocal_full_keys.json")]
  ours = torch_port.rename_keys(keys, vilocal_convert.RENAME)
  assert len(keys) == 709
  assert torch_port.official_keys(ours.values(), vilocal_convert.RENAME) == {v: k for k, v in ours.items()}


def test_command_line_writes_a_runs_model_as_npz(tmp_path, monkeypatch):
  """`python -m vilocal_jax.convert --to_torch --workdir=RUN --out=FILE.npz`, in process, on a step-0 run of the
  smoke model: the file holds the official weights the run was made from; bad usage is a ValueError."""
  config = vilocal_configs.get_config("smoke")
  state_dict = official_like(lambda: vilocal_convert.build_model(vilocal_convert.encoder_kwargs(config)),
                             "vilocal_full_keys.json", vilocal_convert.RENAME)
  module, _ = vilocal_convert.from_torch_state_dict(state_dict, config)
  run, out = str(tmp_path / "run"), str(tmp_path / "vilocal.npz")
  weights.to_workdir(module, config, run)

  def main(*args):
    flag_values = flags.FlagValues()
    vilocal_convert.define_flags(flag_values)
    flag_values(["convert", *args])
    monkeypatch.setattr(flags, "FLAGS", flag_values)
    vilocal_convert.main(["convert"])

  main("--to_torch", f"--workdir={run}", "--step=0", f"--out={out}")
  with np.load(out, allow_pickle=False) as written:
    assert_identical(dict(written), state_dict)
  assert_identical(torch_port.read_state_dict(out), state_dict)
  for args, message in [(("--to_torch", f"--out={out}"), "--to_torch needs --workdir"),
                        (("--to_torch", f"--workdir={run}", "--pth=x.pth", f"--out={out}"), "--pth belong"),
                        ((f"--workdir={run}", f"--out={out}"), "go with --to_torch"),
                        ((f"--out={out}",), "give --pth")]:
    with pytest.raises(ValueError, match=message):
      main(*args)


def test_pth_without_torch_is_one_clear_error(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
  pth = str(tmp_path / "model.pth")
  with pytest.raises(ValueError, match=r"model\.pth: writing a \.pth needs PyTorch .*\.npz"):
    torch_port.write_state_dict({"w": np.zeros(2, np.float32)}, pth)
  with pytest.raises(ValueError, match=r"model\.pth: writing a \.pth"):  # before reading the run
    torch_port.write_run_models(str(tmp_path / "no_run"), None, {"model": (pth, vilocal_convert.to_torch_state_dict)})
  assert not os.listdir(tmp_path)


def test_invert_rename():
  rename = ((r"^module\.", ""), (r"^enc\.Res_", "enc."), (r"(^|\.)block\.(\d)\.", r"\1conv\2."))
  assert torch_port.invert_rename(rename) == ((r"(^|\.)conv(\d)\.", r"\g<1>block.\g<2>."),
                                              (r"^enc\.", "enc.Res_"))
  assert torch_port.official_keys(["enc.conv1.weight", "conv2.bias"], rename) == {
      "enc.conv1.weight": "enc.Res_block.1.weight", "conv2.bias": "block.2.bias"}
  with pytest.raises(ValueError, match="only literals and capturing groups"):
    torch_port.invert_rename(((r"^a\d\.", "b."),))
  with pytest.raises(ValueError, match="group dropped"):
    torch_port.invert_rename(((r"^(a)\.(b)\.", r"\1."),))
  with pytest.raises(ValueError, match="which `rename` maps to 'z.k'"):  # a chain whose inverse is not unique
    torch_port.official_keys(["y.k"], ((r"^x\.", "y."), (r"^y\.", "z.")))
