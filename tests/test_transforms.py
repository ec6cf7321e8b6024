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
