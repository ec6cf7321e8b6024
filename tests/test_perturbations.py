"""Tests of common.data.perturbations: the forensics degradation ops and the Grain augmentation."""
import grain
import numpy as np
import pytest
import skimage.data

from common.data import perturbations as P


@pytest.fixture(scope="module")
def image():
  return np.ascontiguousarray(skimage.data.astronaut()[128:256, 160:288])  # [128, 128, 3] uint8


@pytest.fixture(scope="module")
def clip(image):
  return np.stack([np.roll(image, shift, axis=1) for shift in range(0, 12, 4)])  # [3, 128, 128, 3]


def _high_frequency_energy(image):
  gray = image.astype(np.float64).mean(-1)
  return np.mean(np.diff(gray, axis=0) ** 2) + np.mean(np.diff(gray, axis=1) ** 2)


def _mse(a, b):
  return float(np.mean((a.astype(np.float64) - b) ** 2))


@pytest.mark.parametrize("name", sorted(P.PERTURBATIONS))
def test_shapes_dtypes_and_determinism(name, image, clip):
  if name == "h264":
    pytest.importorskip("imageio_ffmpeg")
  level = P.ROBUSTNESS_LEVELS[name][1]
  for array in (image, clip):
    first = P.PERTURBATIONS[name](array, level, np.random.default_rng(3))
    second = P.PERTURBATIONS[name](array, level, np.random.default_rng(3))
    assert first.shape == array.shape and first.dtype == np.uint8
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, array)


# H.264 encodes a clip as one video (inter-frame prediction): its frames differ from frames encoded alone.
@pytest.mark.parametrize("name", sorted(set(P.PERTURBATIONS) - {"h264"}))
def test_clip_frames_get_the_level_of_single_images(name, image, clip):
  level = P.ROBUSTNESS_LEVELS[name][2]
  if name == "noise":  # random: same sigma per frame, independent draws.
    out = P.gaussian_noise(clip, level, np.random.default_rng(0))
    stds = [np.std(out[t].astype(np.float64) - clip[t]) for t in range(len(clip))]
    np.testing.assert_allclose(stds, level, rtol=0.1)
    assert not np.array_equal(out[0] - clip[0], out[1] - clip[1])
    return
  out = P.PERTURBATIONS[name](clip, level)
  for t in range(len(clip)):
    np.testing.assert_array_equal(out[t], P.PERTURBATIONS[name](clip[t], level))


def test_jpeg_error_grows_as_quality_drops(image):
  errors = [_mse(P.jpeg(image, q), image) for q in (100, 90, 70, 50, 20)]
  assert errors[0] < 4.0  # q=100 is close to identity (PSNR > 42 dB; chroma subsampling remains).
  assert all(a < b for a, b in zip(errors, errors[1:])), errors


def test_jpeg_treats_input_as_rgb():
  # 4:2:0 JPEG keeps luma at full resolution; red carries 0.299 of luma, blue only 0.114, so fine detail
  # in the red channel must survive better than the same detail in the blue channel (a BGR/RGB mix-up
  # would reverse this).
  checker = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
  red, blue = np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 3), np.uint8)
  red[..., 0], blue[..., 2] = checker, checker
  assert _mse(P.jpeg(red, 90), red) < 0.8 * _mse(P.jpeg(blue, 90), blue)


def test_blur_reduces_high_frequencies(image):
  energies = [_high_frequency_energy(image)] + [
      _high_frequency_energy(P.gaussian_blur(image, k)) for k in (3, 7, 15)]
  assert all(a > b for a, b in zip(energies, energies[1:])), energies
  with pytest.raises(ValueError):
    P.gaussian_blur(image, 4)


def test_blur_default_sigma_follows_opencv_rule(image):
  k = 11  # OpenCV uses fixed binomial-like tables for k <= 7 and this rule above.
  sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
  np.testing.assert_array_equal(P.gaussian_blur(image, k), P.gaussian_blur(image, k, sigma=sigma))


@pytest.mark.parametrize("sigma", [3.0, 15.0])
def test_noise_std_matches_sigma(sigma):
  flat = np.full((256, 256, 3), 128, np.uint8)  # far from the clipping bounds
  out = P.gaussian_noise(flat, sigma, np.random.default_rng(0))
  noise = out.astype(np.float64) - flat
  assert abs(noise.std() - sigma) < 0.03 * sigma + 0.3
  assert abs(noise.mean()) < 0.1
  with pytest.raises(ValueError):
    P.gaussian_noise(flat, sigma)  # rng required


def test_noise_differs_between_seeds(image):
  a = P.gaussian_noise(image, 5, np.random.default_rng(0))
  b = P.gaussian_noise(image, 5, np.random.default_rng(1))
  assert not np.array_equal(a, b)


def test_resize_restores_size_and_loses_detail(image):
  errors = [_mse(P.resize(image, s), image) for s in (0.78, 0.5, 0.25)]
  assert all(a < b for a, b in zip(errors, errors[1:])), errors
  small = P.resize(image, 0.5, restore_size=False)
  assert small.shape == (64, 64, 3)
  clip_small = P.resize(np.stack([image, image]), 0.25, restore_size=False)
  assert clip_small.shape == (2, 32, 32, 3)


def test_bad_inputs_raise(image):
  with pytest.raises(ValueError):
    P.jpeg(image.astype(np.float32), 90)
  with pytest.raises(ValueError):
    P.jpeg(image[..., 0], 90)
  with pytest.raises(ValueError):
    P.jpeg(image, 0)


def test_robustness_levels_cover_the_standard_sweeps():
  assert P.ROBUSTNESS_LEVELS["jpeg"] == (100, 90, 80, 70, 60, 50)
  assert P.ROBUSTNESS_LEVELS["blur"] == tuple(range(3, 24, 4))
  assert P.ROBUSTNESS_LEVELS["h264"] == (18, 23, 28, 33, 38)
  assert set(P.ROBUSTNESS_LEVELS) == set(P.PERTURBATIONS) == set(P.NIST16_ROBUSTNESS_LEVELS) | {"h264"}
  assert all(k % 2 == 1 for k in P.ROBUSTNESS_LEVELS["blur"])


def _psnr(a, b):
  return 10 * np.log10(255.0 ** 2 / _mse(a, b))


def test_h264_keeps_an_odd_sized_clip_and_degrades_with_crf(clip, image):
  pytest.importorskip("imageio_ffmpeg")
  odd = np.ascontiguousarray(clip[:, :63, :45])  # odd height and width: padded for 4:2:0, cropped back
  outs = {crf: P.h264(odd, crf) for crf in P.ROBUSTNESS_LEVELS["h264"]}
  assert all(o.shape == odd.shape and o.dtype == np.uint8 for o in outs.values())
  psnrs = [_psnr(outs[crf], odd) for crf in P.ROBUSTNESS_LEVELS["h264"]]
  assert psnrs[0] > 30 and all(a > b for a, b in zip(psnrs, psnrs[1:])), psnrs
  np.testing.assert_array_equal(P.h264(odd, 28), outs[28])  # deterministic
  single = P.h264(image, 23)  # one image: a one-frame clip
  assert single.shape == image.shape and 25 < _psnr(single, image) < 60
  augment = P.ForensicAugment(P.at_level("h264", 33))
  np.testing.assert_array_equal(augment.random_map({"frames": odd}, np.random.default_rng(0))["frames"], outs[33])
  with pytest.raises(ValueError, match="CRF"):
    P.h264(image, 60)


def test_h264_without_imageio_ffmpeg_says_how_to_install_it(image, monkeypatch):
  import sys
  monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails
  with pytest.raises(ImportError, match="pip install imageio-ffmpeg"):
    P.h264(image, 23)


def test_eval_transforms_of_a_perturbation_config(image):
  assert P.eval_transforms({}) == [] and P.eval_transforms(None) == []
  (augment,) = P.eval_transforms({"jpeg": {"p": 1.0, "quality": 50}})
  np.testing.assert_array_equal(augment.random_map({"image": image}, np.random.default_rng(0))["image"],
                                P.jpeg(image, 50))
  assert P.at_level("blur", 7) == {"blur": {"p": 1.0, "kernel_size": 7}}
  with pytest.raises(ValueError, match="unknown perturbation"):
    P.at_level("sharpen", 1)


_CONFIG = {
    "jpeg": {"p": 0.5, "quality": (60, 95)},
    "blur": {"p": 0.5, "kernel_size": (3, 9)},
    "noise": {"p": 0.5, "sigma": (1.0, 8.0)},
    "resize": {"p": 0.5, "scale": (0.5, 0.9)},
}


def test_augment_is_deterministic_and_leaves_masks(image):
  augment = P.ForensicAugment(_CONFIG)
  mask = np.zeros(image.shape[:2], np.uint8)
  mask[10:20, 10:20] = 1
  record = {"image": image, "mask": mask, "label": 1, "id": "x"}
  outs = [augment.random_map(record, np.random.default_rng(seed)) for seed in (7, 7, 8)]
  np.testing.assert_array_equal(outs[0]["image"], outs[1]["image"])
  assert outs[0]["mask"] is mask and outs[0]["label"] == 1 and outs[0]["id"] == "x"
  assert record["image"] is image  # input untouched
  assert outs[0]["image"].shape == image.shape and outs[0]["image"].dtype == np.uint8


def test_augment_draws_levels_in_range():
  augment = P.ForensicAugment(_CONFIG)
  rng = np.random.default_rng(0)
  seen = {name: [] for name in _CONFIG}
  for _ in range(400):
    for name, level in augment.sample(rng):
      seen[name].append(level)
  for name, levels in seen.items():
    assert 140 < len(levels) < 260, (name, len(levels))  # p = 0.5
  assert set(seen["blur"]) == {3, 5, 7, 9}
  assert min(seen["jpeg"]) >= 60 and max(seen["jpeg"]) <= 95
  assert all(isinstance(q, int) for q in seen["jpeg"])
  assert 0.5 <= min(seen["resize"]) and max(seen["resize"]) <= 0.9


def test_augment_uses_one_level_for_all_clip_frames(clip):
  augment = P.ForensicAugment({"jpeg": {"p": 1.0, "quality": (20, 90)},
                               "blur": {"p": 1.0, "kernel_size": (3, 11)}})
  rng = np.random.default_rng(5)
  out = augment.random_map({"frames": clip}, np.random.default_rng(5))["frames"]
  levels = dict(augment.sample(rng))
  expected = P.jpeg(P.gaussian_blur(clip, levels["blur"]), levels["jpeg"])
  np.testing.assert_array_equal(out, expected)


def test_augment_rejects_bad_configs_and_records(image):
  with pytest.raises(ValueError):
    P.ForensicAugment({"sharpen": {"p": 1.0}})
  with pytest.raises(ValueError):
    P.ForensicAugment({"jpeg": {"p": 1.0, "q": (50, 90)}})
  with pytest.raises(ValueError):
    P.ForensicAugment({"jpeg": {"p": 1.5, "quality": (50, 90)}})
  with pytest.raises(ValueError):
    P.ForensicAugment({"blur": {"p": 1.0, "kernel_size": (4, 4)}})
  augment = P.ForensicAugment({"jpeg": {"p": 1.0, "quality": 90}})
  with pytest.raises(ValueError, match="rec7"):
    augment.random_map({"mask": image[..., 0], "id": "rec7"}, np.random.default_rng(0))


def test_augment_in_a_grain_pipeline(image):
  records = [{"image": image, "label": i} for i in range(4)]
  augment = P.ForensicAugment({"noise": {"p": 1.0, "sigma": (2.0, 4.0)}})
  dataset = grain.MapDataset.source(records).seed(11).random_map(augment)
  first = [dataset[i]["image"] for i in range(4)]
  again = [dataset[i]["image"] for i in range(4)]
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(first[0] - image, first[1] - image)
