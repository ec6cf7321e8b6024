"""Spatial transforms on records (Grain map / random-map operations), applied identically to frames and masks.

Records hold uint8 `image` [H, W, 3] or `frames` [T, H, W, 3] and uint8 {0,1} `mask` [H, W] or [T, H, W];
transforms keep uint8 (cheap over worker shared memory); conversion to float happens on the device.
Resizing follows torchvision-on-PIL, as the official codes load data: bilinear (antialiased when shrinking,
Pillow's filter) for images, nearest for masks.
"""
from __future__ import annotations

import grain
import numpy as np
from PIL import Image

IMAGE_KEYS = ("image", "frames")
MASK_KEYS = ("mask",)


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 [H, W, C] -> [height, width, C], Pillow bilinear (what torchvision's Resize does on PIL images)."""
  if image.shape[:2] == (height, width):
    return image
  return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 {0,1} [H, W] -> [height, width], nearest neighbour (Pillow NEAREST)."""
  if mask.shape == (height, width):
    return mask
  return np.asarray(Image.fromarray(mask).resize((width, height), Image.NEAREST))


def _leading(fn, array: np.ndarray, spatial_rank: int, height: int, width: int) -> np.ndarray:
  """Applies `fn` over any leading (time) axes."""
  if array.ndim == spatial_rank:
    return fn(array, height, width)
  return np.stack([fn(a, height, width) for a in array])


class Resize(grain.transforms.Map):
  """Resizes images / clips (bilinear) and masks (nearest) to (height, width)."""

  def __init__(self, height: int, width: int):
    self.height, self.width = height, width

  def map(self, record: dict) -> dict:
    record = dict(record)
    for k in IMAGE_KEYS:
      if k in record:
        record[k] = _leading(resize_image, record[k], 3, self.height, self.width)
    for k in MASK_KEYS:
      if k in record:
        record[k] = _leading(resize_mask, record[k], 2, self.height, self.width)
    return record


class RandomCrop(grain.transforms.RandomMap):
  """Crops images / clips and masks at one random (height, width) window, the same for every frame.

  Keeps native resolution (no resampling), so pixel-level traces such as noise residuals survive augmentation.
  """

  def __init__(self, height: int, width: int):
    self.height, self.width = height, width

  def random_map(self, record: dict, rng: np.random.Generator) -> dict:
    record = dict(record)
    image_key = next(k for k in IMAGE_KEYS if k in record)
    h, w = record[image_key].shape[-3:-1]
    if h < self.height or w < self.width:
      raise ValueError(f"cannot crop {self.height}x{self.width} from the {h}x{w} record {record.get('id', '')!r}")
    rows = slice(top := int(rng.integers(0, h - self.height + 1)), top + self.height)
    cols = slice(left := int(rng.integers(0, w - self.width + 1)), left + self.width)
    for k in IMAGE_KEYS:
      if k in record:
        record[k] = np.ascontiguousarray(record[k][..., rows, cols, :])
    for k in MASK_KEYS:
      if k in record:
        record[k] = np.ascontiguousarray(record[k][..., rows, cols])
    return record


class RandomHorizontalFlip(grain.transforms.RandomMap):
  """Flips images, clips and masks left-right together with probability `p`."""

  def __init__(self, p: float = 0.5):
    self.p = p

  def random_map(self, record: dict, rng: np.random.Generator) -> dict:
    if rng.random() >= self.p:
      return record
    record = dict(record)
    for k in IMAGE_KEYS:
      if k in record:
        record[k] = np.ascontiguousarray(record[k][..., ::-1, :])
    for k in MASK_KEYS:
      if k in record:
        record[k] = np.ascontiguousarray(record[k][..., ::-1])
    return record
