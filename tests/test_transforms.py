"""Resize and flip keep frames and masks aligned; resizing matches torchvision-on-PIL conventions."""
import numpy as np
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
