"""ViLocal checkpoint conversion: parity of the converted small model with the official PyTorch model's golden
tensors, coverage of the released checkpoint's 709 keys on the full-size model, strictness, and the step-0
run directory the engine starts from."""
import importlib.util
import json
import os
import subprocess
import sys
import types

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from common.nn import torch_port
from common.train import checkpoint, config as config_lib, export, weights
from vilocal_jax import convert

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(REPO, "tests", "testdata", "golden")
SMALL_DEPTH = (2, 2, 1, 1)
TOL = 1e-4


def _rel_err(ours, golden):
  ours = np.asarray(ours, np.float64)
  assert ours.shape == golden.shape, (ours.shape, golden.shape)
  return float(np.linalg.norm(ours - golden) / np.linalg.norm(golden))


@pytest.fixture(scope="module")
def golden():
  data = np.load(os.path.join(GOLDEN, "vilocal_small.npz"), allow_pickle=False)
  state_dict = {k[len("param/"):]: data[k] for k in data.files if k.startswith("param/")}
  return data, state_dict


@pytest.fixture(scope="module")
def converted(golden):
  _, state_dict = golden
  return convert.from_torch_state_dict(state_dict, depth=SMALL_DEPTH)


def _full_state_dict():
  """Arrays of the released checkpoint's keys and shapes (values: a per-key constant)."""
  with open(os.path.join(GOLDEN, "vilocal_full_keys.json")) as f:
    entries = json.load(f)["state_dict"]
  return {e["key"]: np.full(e["shape"], i, dtype=e["dtype"]) for i, e in enumerate(entries)}


def test_converted_small_model_matches_golden(golden, converted):
  """NTHWC frames -> [B, H, W] logits, with the encoder and decoder intermediates, as the official model."""
  data, _ = golden
  module, _ = converted
  frames = jnp.asarray(np.moveaxis(data["input/frames"], 1, -1))  # NCTHW -> NTHWC

  @jax.jit
  def forward(model, frames):
    features = model.embed(frames)
    return features, model.decoder(features), model(frames)

  view = nnx.view(module, deterministic=True, use_running_average=True, raise_if_not_found=False)
  with jax.default_matmul_precision("highest"):
    features, small_logits, logits = forward(view, frames)
  errors = {
      "encoder_out": _rel_err(features, np.moveaxis(data["inter/encoder_out"], 1, -1)),
      "decoder_logits": _rel_err(small_logits, data["inter/decoder_logits"][:, 0]),
      "logits": _rel_err(logits, data["output/logits"][:, 0]),
  }
  print("vilocal converted small model rel errors:", {k: f"{v:.2e}" for k, v in errors.items()})
  assert logits.dtype == jnp.float32
  assert all(e < TOL for e in errors.values()), errors


def test_report_consumes_every_key(golden, converted):
  _, state_dict = golden
  _, report = converted
  assert not report.missing and not report.unused
  assert set(report.loaded) | set(report.ignored) == set(state_dict)
  assert report.ignored and all(k.endswith("num_batches_tracked") for k in report.ignored)
  assert len(report.ignored) == sum(k.endswith("num_batches_tracked") for k in state_dict)


def test_released_checkpoint_keys_map_onto_full_model():
  """Every key of the 709-entry released checkpoint has a slot of the same shape (after the layout
  transpose) in the full-size model, every slot is covered, and each value lands at its key's slot."""
  state_dict = _full_state_dict()
  assert len(state_dict) == 709
  abstract = nnx.eval_shape(convert.build_model)  # the full model: tracing only, no initialisers run
  slots = torch_port.torch_slots(abstract)
  kept = [k for k in state_dict if not k.endswith("num_batches_tracked")]
  renamed = torch_port.rename_keys(kept, convert.RENAME)
  assert sorted(renamed.values()) == sorted(slots)  # nothing unused, nothing missing, no collision
  for key, ours in renamed.items():
    slot = slots[ours]
    axes = torch_port.torch_to_flax_axes(slot.layout, state_dict[key].ndim)
    assert np.transpose(state_dict[key], axes).shape == slot.shape, key
  n_params = sum(v.size for v in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
  assert n_params == 11_272_705  # the official ViLocal() count (vilocal_full_keys.json)

  report = torch_port.load_torch_state_dict(abstract, state_dict, rename=convert.RENAME)
  assert len(report.loaded) == len(kept) and len(report.ignored) == 709 - len(kept)
  qkv = "encoder.Res_blocks3.0.attn.qkv.weight"
  kernel = np.asarray(abstract.encoder.blocks3["0"].attn.qkv.kernel[...])
  assert kernel.shape == (128, 384) and np.all(kernel == state_dict[qkv].flat[0])
  mean = np.asarray(abstract.decoder.bn.mean[...])
  assert np.all(mean == state_dict["decoder.classifier.1.running_mean"].flat[0])


def test_module_prefix_and_wrapped_checkpoints(golden, converted):
  _, state_dict = golden
  reference, _ = converted
  wrapped = {"state_dict": {"module." + k: v for k, v in state_dict.items()}, "epoch": 4}
  module, report = convert.from_torch_state_dict(torch_port.unwrap_checkpoint(wrapped), depth=SMALL_DEPTH)
  assert not report.missing and not report.unused
  ours, theirs = nnx.state(module, nnx.Param), nnx.state(reference, nnx.Param)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), ours, theirs))
  assert torch_port.unwrap_checkpoint({"model": state_dict}) is state_dict
  assert torch_port.unwrap_checkpoint(state_dict) is state_dict


def test_depth_comes_from_the_config(golden):
  _, state_dict = golden
  config = ml_collections.ConfigDict({"model": {"depth": list(SMALL_DEPTH)}})
  _, report = convert.from_torch_state_dict(state_dict, config)
  assert not report.missing and not report.unused
  with pytest.raises(ValueError, match="either a config or a depth"):
    convert.from_torch_state_dict(state_dict, config, depth=SMALL_DEPTH)
  with pytest.raises(ValueError, match=r"missing: \['encoder\.blocks4\.1\."):  # a deeper model
    convert.from_torch_state_dict(state_dict, depth=(2, 2, 1, 2))


def test_wrong_shape_extra_and_missing_keys_raise(golden):
  _, state_dict = golden
  key = "encoder.Res_blocks1.0.conv1.weight"
  bad_shape = dict(state_dict, **{key: state_dict[key][:, :-1]})
  with pytest.raises(ValueError, match=r"Res_blocks1\.0\.conv1\.weight.*shape"):
    convert.from_torch_state_dict(bad_shape, depth=SMALL_DEPTH)
  extra = dict(state_dict, **{"decoder.classifier.4.weight": np.zeros((1,), np.float32)})
  with pytest.raises(ValueError, match=r"unused: \['decoder\.classifier\.4\.weight'\]"):
    convert.from_torch_state_dict(extra, depth=SMALL_DEPTH)
  missing = {k: v for k, v in state_dict.items() if k != "decoder.classifier.3.bias"}
  with pytest.raises(ValueError, match=r"missing: \['decoder\.conv2\.bias'\]"):
    convert.from_torch_state_dict(missing, depth=SMALL_DEPTH)


def small_golden_config():
  """The smoke config with the golden model's shape: depth (2, 2, 1, 1), official widths, 5 x 48 x 80 clips."""
  spec = importlib.util.spec_from_file_location("vilocal_config", os.path.join(REPO, "configs", "vilocal.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("smoke")
  config.model.depth = SMALL_DEPTH
  config.model.widths = (32, 64, 128, 256)
  config.data.height, config.data.width, config.data.clip_length = 48, 80, 5
  return config


def test_workdir_export_reproduces_pytorch(golden, converted, tmp_path):
  """Converted weights -> step-0 run directory -> `common.train.export` -> the exported function (uint8 frames in)
  gives the converted model's probabilities; the run keeps the task's RNG streams."""
  data, _ = golden
  module, _ = converted
  config = small_golden_config()
  config.seed = 7  # the converter's module has the streams of seed 0
  workdir, out = str(tmp_path / "run"), str(tmp_path / "export")
  weights.to_workdir(module, config, workdir)
  with pytest.raises(FileExistsError, match="already holds checkpoints"):
    weights.to_workdir(module, config, workdir)

  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True, async_save=False)
  raw, saved_config = ckpt.restore_raw(0), ckpt.restore_config(0)
  ckpt.close()
  assert saved_config.stage == 2 and not saved_config.init_from.workdir  # the released model is stage 2's
  saved = checkpoint.flat_keys(raw["params"]["model"])
  ours = checkpoint.flat_keys(nnx.to_pure_dict(nnx.state(module, nnx.Param)))
  assert saved.keys() == ours.keys() and all(np.array_equal(saved[k], ours[k]) for k in ours)
  task = config_lib.build_task(saved_config)
  fresh_rngs = jax.jit(lambda key: nnx.state(task.build_models(nnx.Rngs(key))["model"], nnx.RngState))(
      task.key(config.seed))
  fresh_rngs = {k: (jax.random.key_data(v) if jax.dtypes.issubdtype(v.dtype, jax.dtypes.prng_key) else v)
                for k, v in checkpoint.flat_keys(fresh_rngs).items()}
  saved_rest = checkpoint.flat_keys(raw["rest"]["model"])
  assert fresh_rngs and set(fresh_rngs) < set(saved_rest)
  for key, value in fresh_rngs.items():
    saved_value = saved_rest[key]
    if jax.dtypes.issubdtype(saved_value.dtype, jax.dtypes.prng_key):
      saved_value = jax.random.key_data(saved_value)
    np.testing.assert_array_equal(np.asarray(saved_value), np.asarray(value), err_msg=key)

  manifest = export.export(workdir, out, platforms=("cpu",))
  assert manifest["inputs"]["frames"]["shape"] == [5, "h", "w", 3] and manifest["input"]["size"] == [48, 80]
  # The export takes uint8 frames (the golden input's [0, 1] floats rounded to 8 bits) and scales them inside,
  # as the converted module (checked against PyTorch above) on frames / 255.
  frames = np.round(np.moveaxis(data["input/frames"], 1, -1) * 255).astype(np.uint8)
  with jax.default_matmul_precision("highest"):
    probs = np.asarray(export.load(out)({"frames": frames})["probs"])
    view = nnx.view(module, deterministic=True, use_running_average=True, raise_if_not_found=False)
    expected = np.asarray(jax.nn.sigmoid(view(jnp.asarray(frames, jnp.float32) / 255.0)))
  err = _rel_err(probs, expected)
  print(f"vilocal exported probs vs the converted module on uint8 frames: rel err {err:.2e}")
  assert err < TOL


def test_workdir_rejects_a_model_of_another_shape(converted, tmp_path):
  module, _ = converted
  config = small_golden_config()
  config.model.depth = (2, 2, 1, 2)
  with pytest.raises(ValueError, match="do not match the model of task"):
    weights.to_workdir(module, config, str(tmp_path / "run"))
  config.model.noise_layer = False
  with pytest.raises(ValueError, match="HP3D"):
    convert.encoder_kwargs(config)


class _FakeTensor:
  """Stands for a torch.Tensor in `load_pth` (torch is an optional extra, absent in the test venv)."""

  def __init__(self, array):
    self.array = array

  def detach(self):
    return self

  def cpu(self):
    return self

  def numpy(self):
    return self.array


def test_load_pth_unwraps_and_converts_tensors(golden, monkeypatch):
  _, state_dict = golden
  calls = []
  payloads = {
      "latest.pth": {"model": {"module." + k: _FakeTensor(v) for k, v in state_dict.items()},
                     "optimizer": {"state": {}}, "epoch": 4},
      "mixed.pth": {"encoder.Res_norm1.weight": _FakeTensor(np.ones(3)), "epoch": 4},
      "list.pth": [1, 2],
  }
  fake_torch = types.ModuleType("torch")
  fake_torch.Tensor = _FakeTensor
  fake_torch.load = lambda path, **kwargs: calls.append(kwargs) or payloads[path]
  monkeypatch.setitem(sys.modules, "torch", fake_torch)

  loaded = torch_port.load_pth("latest.pth")
  assert calls == [{"map_location": "cpu", "weights_only": True}]
  assert loaded.keys() == {"module." + k for k in state_dict}
  _, report = convert.from_torch_state_dict(loaded, depth=SMALL_DEPTH)
  assert not report.missing and not report.unused
  with pytest.raises(ValueError, match=r"mixed.pth: entries that are not tensors .*\['epoch'\]"):
    torch_port.load_pth("mixed.pth")
  with pytest.raises(ValueError, match="list.pth: expected a state_dict"):
    torch_port.load_pth("list.pth")


@pytest.mark.torch_parity
def test_command_line_converts_a_real_pth(golden, tmp_path):
  """`python -m vilocal_jax.convert` on a `.pth` saved by torch (runs where the `torch` extra is installed)."""
  torch = pytest.importorskip("torch")
  _, state_dict = golden
  pth = str(tmp_path / "small.pth")
  torch.save({k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}, pth)
  config_file = tmp_path / "small_config.py"
  base = os.path.join(REPO, "configs", "vilocal.py")
  config_file.write_text(
      "import importlib.util\n"
      f"_spec = importlib.util.spec_from_file_location('vilocal_config', {base!r})\n"
      "_module = importlib.util.module_from_spec(_spec)\n"
      "_spec.loader.exec_module(_module)\n\n"
      "def get_config():\n"
      "  c = _module.get_config('smoke')\n"
      f"  c.model.depth = {SMALL_DEPTH!r}\n"
      "  c.model.widths = (32, 64, 128, 256)\n"
      "  return c\n")
  workdir = str(tmp_path / "run")
  result = subprocess.run([sys.executable, "-m", "vilocal_jax.convert", f"--pth={pth}", f"--out={workdir}",
                           f"--config={config_file}"], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "loaded 148, missing 0, unused 0, ignored 13" in result.stdout
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True, async_save=False)
  saved = checkpoint.flat_keys(ckpt.restore_raw(0)["params"]["model"])
  ckpt.close()
  np.testing.assert_array_equal(saved["decoder/conv2/kernel"],
                                state_dict["decoder.classifier.3.weight"].transpose(2, 3, 1, 0))
