"""LPIPS (alex, vgg) and the FID Inception / Fréchet distance against the reference packages (`lpips` 0.1,
`pytorch-fid` 0.3): golden outputs of tests/testdata/generate_lpips_fid_golden.py on seeded weights, which this test
regenerates from the same seeds and loads through the official state_dict keys. No torch needed."""
import os

import jax
import numpy as np
import pytest
from flax import nnx

from common import perceptual_quality as pq
from common.nn import alexnet as alexnet_lib
from common.nn import inception as inception_lib
from common.nn import layers
from tests.testdata.seeded_weights import SEED, seeded_value

GOLDEN = os.path.join(os.path.dirname(__file__), "testdata", "lpips_fid_golden.npz")
RTOL = 1e-4


@pytest.fixture(scope="module")
def golden():
  with np.load(GOLDEN, allow_pickle=False) as f:
    return dict(f)


def seeded_state_dict(golden, name):
  rng = np.random.default_rng(SEED[name])
  out = {}
  for key, row in zip(golden[f"{name}_keys"], golden[f"{name}_shapes"]):
    out[str(key)] = seeded_value(rng, str(key), tuple(int(s) for s in row if s > 0))
  return out


def heads(golden, net):
  return {k[len(net) + 1:]: v for k, v in golden.items() if k.startswith(f"{net}_lin")}


def rel_err(actual, expected):
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_matches_the_lpips_package(golden, net, tmp_path):
  backbone = seeded_state_dict(golden, net)
  model = pq.lpips_from_state_dicts(net, backbone, heads(golden, net))
  x = golden[f"{net}_xu"].astype(np.float32) / np.float32(127.5) - 1
  y = golden[f"{net}_yu"].astype(np.float32) / np.float32(127.5) - 1
  graphdef, state = nnx.split(model)
  with jax.default_matmul_precision("highest"):
    total, layers = jax.jit(lambda s, x, y: nnx.merge(graphdef, s)(x, y, per_layer=True))(state, x, y)
  u8 = pq.LPIPSDistance(model)(golden[f"{net}_u8_a"], golden[f"{net}_u8_b"])  # uint8 -> [0, 1] -> [-1, 1]
  errors = {"lpips": rel_err(total, golden[f"{net}_lpips"]), "lpips_u8": rel_err(u8, golden[f"{net}_lpips_u8"])}
  for k, name in enumerate(model.layers):
    errors[name] = rel_err(layers[name], golden[f"{net}_lpips_layers"][k])
  print(net, errors)
  assert max(errors.values()) < RTOL, errors
  # The same weights through files: an .npz backbone (with torchvision's classifier keys, ignored) and .npz heads.
  np.savez(tmp_path / "backbone.npz", **backbone, **{"classifier.1.weight": np.zeros((2, 2), np.float32)})
  np.savez(tmp_path / "heads.npz", **heads(golden, net))
  loaded = pq.load_lpips(net, str(tmp_path / "backbone.npz"), str(tmp_path / "heads.npz"))
  same = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), nnx.state(loaded), nnx.state(model))
  assert all(jax.tree.leaves(same))


def test_inception_features_match_pytorch_fid(golden, tmp_path):
  state_dict = seeded_state_dict(golden, "inception")
  assert any(k.startswith("fc.") for k in state_dict)  # the official file's logits: ignored
  path = str(tmp_path / "pt_inception.npz")
  np.savez(path, **state_dict)
  features = pq.InceptionFeatures(pq.load_inception(path), batch_size=4)
  # One network call for both cases (one compilation): uint8 75x75 (enlarged) and float [0, 1] 304x300 (shrunk).
  both = np.concatenate([features.resize(golden["inception_xu"]),
                         features.resize(golden["inception_xu_big"].astype(np.float32) / 255)])
  small, big = np.split(features(both), [3])
  errors = {"features_75px": rel_err(small, golden["inception_features"]),
            "features_304px": rel_err(big, golden["inception_features_big"])}
  print(errors)
  assert small.shape == (3, inception_lib.FEATURES) and max(errors.values()) < RTOL, errors


def test_frechet_distance_matches_pytorch_fid(golden):
  value = pq.fid_from_activations(golden["fid_a"], golden["fid_b"])
  assert abs(value - float(golden["fid"])) / float(golden["fid"]) < 1e-9
  assert pq.fid_from_activations(golden["fid_a"], golden["fid_a"]) == pytest.approx(0, abs=1e-6)
  # The data-side trace (method 'svd'): the same value, both with N > D (eigh branch) and N < D (svd branch).
  assert pq.fid_from_activations(golden["fid_a"], golden["fid_b"], "svd") == pytest.approx(float(golden["fid"]),
                                                                                            rel=1e-9)
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(5, 32)), rng.normal(size=(6, 32)) + 0.2
  assert pq.fid_from_activations(a, b, "svd") == pytest.approx(pq.fid_from_activations(a, b), rel=1e-6)
  with pytest.raises(ValueError, match="FID method"):
    pq.fid_from_activations(a, b, "exact")
  with pytest.raises(ValueError, match="N >= 2"):
    pq.activation_statistics(np.zeros((1, 4)))


def test_resize_matches_torch_half_pixel_rule():
  # F.interpolate(mode='bilinear', align_corners=False) of a ramp 0..3 to 8: known values.
  x = np.arange(4, dtype=np.float32).reshape(1, 1, 4, 1)
  out = np.asarray(layers.resize_bilinear_half_pixel(x, (1, 8)))[0, 0, :, 0]
  np.testing.assert_allclose(out, [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3], atol=1e-6)


def test_missing_weights_are_clear_errors(tmp_path, monkeypatch):
  with pytest.raises(ValueError, match="lpips_backbone_weights"):
    pq.load_lpips("alex", "")
  monkeypatch.setattr(pq, "packaged_lpips_heads", lambda net: None)
  with pytest.raises(ValueError, match="lpips_heads_weights"):
    pq.load_lpips("alex", str(tmp_path / "a.npz"))
  with pytest.raises(FileNotFoundError, match="never downloaded"):
    pq.load_lpips("alex", str(tmp_path / "missing.npz"), str(tmp_path / "heads.npz"))
  with pytest.raises(ValueError, match="fid_weights"):
    pq.load_inception("")
  with pytest.raises(ValueError, match="LPIPS net"):
    pq.LPIPS("squeeze", rngs=None)
  np.savez(tmp_path / "wrong.npz", **{"features.0.weight": np.zeros((64, 3, 11, 11), np.float32)})
  with pytest.raises(ValueError, match="not pytorch-fid"):
    pq.load_inception(str(tmp_path / "wrong.npz"))
  with pytest.raises(ValueError, match="not a torchvision alexnet"):
    alexnet_lib.load(str(tmp_path / "wrong.npz"))
