"""Resize, crop and flip keep frames and masks aligned; resizing matches torchvision-on-PIL conventions."""
import numpy as np
import pytest
from PIL import Image

from common.data import transforms


def _record(rng, t=None):
  shape = (t, 12, 20) if t else (12, 20)
  mask = np.zeros(shape, np.uint8)
  mask[..., 3:7, 4:11] = 1
  key = "frames" if t else "image"
  return {key: rng.integers(0, 256, (*shape, 3), dtype=np.uint8), "mask": mask, "label": 1}


def test_resize_uses_pillow_bilinear_for_images_and_nearest_for_masks():
  rec = _record(np.random.default_rng(0), t=3)
  out = transforms.Resize(6, 10).map(rec)
  assert out["frames"].shape == (3, 6, 10, 3) and out["mask"].shape == (3, 6, 10)
  expected = np.asarray(Image.fromarray(rec["frames"][1]).resize((10, 6), Image.BILINEAR))
  np.testing.assert_array_equal(out["frames"][1], expected)
  assert set(np.unique(out["mask"])) <= {0, 1}
  np.testing.assert_array_equal(out["mask"][0], rec["mask"][0][1::2, 1::2])  # Pillow samples pixel centres
  assert out["label"] == 1 and rec["frames"].shape == (3, 12, 20, 3)  # input left untouched


def test_flip_moves_image_and_mask_together():
  rec = _record(np.random.default_rng(1))
  flip = transforms.RandomHorizontalFlip(p=1.0)
  out = flip.random_map(rec, np.random.default_rng(0))
  np.testing.assert_array_equal(out["image"], rec["image"][:, ::-1])
  np.testing.assert_array_equal(out["mask"], rec["mask"][:, ::-1])
  same = transforms.RandomHorizontalFlip(p=0.0).random_map(rec, np.random.default_rng(0))
  np.testing.assert_array_equal(same["image"], rec["image"])


def test_random_crop_takes_one_window_from_every_frame_and_the_mask():
  rec = _record(np.random.default_rng(2), t=3)
  out = transforms.RandomCrop(5, 8).random_map(rec, np.random.default_rng(3))
  assert out["frames"].shape == (3, 5, 8, 3) and out["mask"].shape == (3, 5, 8)
  # locate the window from frame 0 and check every frame and the mask use the same one
  hits = [(t, l) for t in range(12 - 5 + 1) for l in range(20 - 8 + 1)
          if np.array_equal(rec["frames"][0, t:t + 5, l:l + 8], out["frames"][0])]
  assert len(hits) == 1
  t, l = hits[0]
  np.testing.assert_array_equal(out["frames"], rec["frames"][:, t:t + 5, l:l + 8])
  np.testing.assert_array_equal(out["mask"], rec["mask"][:, t:t + 5, l:l + 8])
  windows = {transforms.RandomCrop(5, 8).random_map(rec, np.random.default_rng(s))["frames"].tobytes()
             for s in range(10)}
  assert len(windows) > 1  # the window moves with the seed
  with pytest.raises(ValueError, match="13x8"):
    transforms.RandomCrop(13, 8).random_map(rec, np.random.default_rng(0))


def test_rescale_sets_the_longer_side_and_keeps_the_mask_binary():
  rec = _record(np.random.default_rng(4))
  sides = set()
  for seed in range(20):
    out = transforms.RandomRescale(40, (0.5, 2.0)).random_map(rec, np.random.default_rng(seed))
    h, w = out["image"].shape[:2]
    assert out["mask"].shape == (h, w) and set(np.unique(out["mask"])) <= {0, 1}
    assert 20 <= w <= 80 and abs(h / w - 12 / 20) < 0.1
    sides.add(w)
  assert len(sides) > 10


def test_crop_retries_until_both_classes_and_no_class_dominates():
  rec = _record(np.random.default_rng(5))
  mask = np.zeros((40, 40), np.uint8)
  mask[26:40, 26:40] = 1  # forged corner: most 16x16 windows are all-authentic
  rec = {"image": np.zeros((40, 40, 3), np.uint8), "mask": mask}
  plain = [transforms.RandomCrop(16, 16).random_map(rec, np.random.default_rng(s))["mask"].mean() for s in range(50)]
  tried = [transforms.RandomCrop(16, 16, cat_max_ratio=0.75, tries=10).random_map(rec, np.random.default_rng(s))
           ["mask"].mean() for s in range(50)]
  assert np.mean([0 < m < 0.75 for m in tried]) > np.mean([0 < m < 0.75 for m in plain]) + 0.3


def test_small_records_are_kept_then_padded_with_ignored_mask():
  rec = _record(np.random.default_rng(6))
  with pytest.raises(ValueError, match="cannot crop"):
    transforms.RandomCrop(16, 16).random_map(rec, np.random.default_rng(0))
  out = transforms.RandomCrop(16, 16, smaller="keep").random_map(rec, np.random.default_rng(0))
  assert out["image"].shape == (12, 16, 3)
  padded = transforms.CenterPad(16, 16, fill=(1, 2, 3), mask_fill=255).map(out)
  assert padded["image"].shape == (16, 16, 3) and padded["mask"].shape == (16, 16)
  np.testing.assert_array_equal(padded["image"][2:14], out["image"])
  assert (padded["image"][:2] == (1, 2, 3)).all() and (padded["mask"][:2] == 255).all()
  np.testing.assert_array_equal(padded["mask"][2:14], out["mask"])


def test_photometric_distortion_changes_colours_only_within_range():
  image = np.random.default_rng(7).integers(40, 200, (8, 8, 3), dtype=np.uint8)
  rec = {"image": image, "mask": np.ones((8, 8), np.uint8)}
  changed = 0
  for seed in range(10):
    out = transforms.PhotoMetricDistortion().random_map(rec, np.random.default_rng(seed))
    assert out["image"].dtype == np.uint8 and out["image"].shape == image.shape
    assert out["mask"] is rec["mask"]
    changed += int(np.abs(out["image"].astype(int) - image).max() > 2)
  assert changed >= 7
  grey = {"image": np.full((4, 4, 3), 100, np.uint8)}
  for quirk in (False, True):  # hue and saturation leave a grey image grey
    out = transforms.PhotoMetricDistortion(brightness=0, contrast=(1, 1), bgr_as_rgb_quirk=quirk).random_map(
        grey, np.random.default_rng(0))
    assert np.ptp(out["image"].astype(int), axis=-1).max() <= 1
