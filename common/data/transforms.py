"""Spatial transforms on records (Grain map / random-map operations), applied identically to frames and masks.

Records hold uint8 `image` [H, W, 3] or `frames` [T, H, W, 3] and uint8 {0,1} `mask` [H, W] or [T, H, W];
transforms keep uint8 (cheap over worker shared memory); conversion to float happens on the device.
Resizing follows torchvision-on-PIL, as the official codes load data: bilinear (antialiased when shrinking,
Pillow's filter) for images, nearest for masks.
"""
from __future__ import annotations

import cv2
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
  `smaller='error'` refuses records smaller than the window; `smaller='keep'` crops only the axes that are
  larger (mmseg's RandomCrop; pad afterwards with `CenterPad`). With `cat_max_ratio` < 1, up to `tries`
  windows are drawn until one whose mask has more than one class and no class above that fraction of the
  pixels (ignored pixels excluded); otherwise the last one is kept (mmseg's rule, 0.75 and 10 in MSCCNet).
  """

  def __init__(self, height: int, width: int, *, smaller: str = "error", cat_max_ratio: float = 1.0,
               tries: int = 10, ignore_index: int = 255):
    if smaller not in ("error", "keep"):
      raise ValueError(f"smaller must be 'error' or 'keep', got {smaller!r}")
    self.height, self.width, self.smaller = height, width, smaller
    self.cat_max_ratio, self.tries, self.ignore_index = cat_max_ratio, tries, ignore_index

  def _window(self, h: int, w: int, rng: np.random.Generator) -> tuple[slice, slice]:
    top = int(rng.integers(0, max(h - self.height, 0) + 1))
    left = int(rng.integers(0, max(w - self.width, 0) + 1))
    return slice(top, top + self.height), slice(left, left + self.width)

  def _balanced(self, mask: np.ndarray) -> bool:
    """True when the window's class pixels (ignore_index excluded) hold two classes or more and no class exceeds
    cat_max_ratio of them. Masks are non-negative ints (uint8): a histogram, 10x faster than np.unique at 512^2."""
    counts = np.bincount(mask.ravel())
    if 0 <= self.ignore_index < len(counts):
      counts[self.ignore_index] = 0
    counts = counts[counts > 0]
    return len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio

  def random_map(self, record: dict, rng: np.random.Generator) -> dict:
    record = dict(record)
    image_key = next(k for k in IMAGE_KEYS if k in record)
    h, w = record[image_key].shape[-3:-1]
    if self.smaller == "error" and (h < self.height or w < self.width):
      raise ValueError(f"cannot crop {self.height}x{self.width} from the {h}x{w} record {record.get('id', '')!r}")
    rows, cols = self._window(h, w, rng)
    if self.cat_max_ratio < 1.0 and "mask" in record:
      for _ in range(self.tries - 1):
        if self._balanced(record["mask"][..., rows, cols]):
          break
        rows, cols = self._window(h, w, rng)
    for k in IMAGE_KEYS:
      if k in record:
        record[k] = np.ascontiguousarray(record[k][..., rows, cols, :])
    for k in MASK_KEYS:
      if k in record:
        record[k] = np.ascontiguousarray(record[k][..., rows, cols])
    return record


class RandomRescale(grain.transforms.RandomMap):
  """Resizes an image and its mask, keeping the aspect ratio, so that the longer side becomes `base * s`
  with s ~ U[ratio_range) (mmseg's Resize with `ratio_range`, as MSCCNet's 520 x [0.5, 2)): image bilinear,
  mask nearest (OpenCV, as mmcv's imresize)."""

  def __init__(self, base: int, ratio_range: tuple[float, float] = (0.5, 2.0)):
    self.base, self.ratio_range = base, tuple(ratio_range)

  def random_map(self, record: dict, rng: np.random.Generator) -> dict:
    record = dict(record)
    h, w = record["image"].shape[:2]
    scale = self.base * rng.uniform(*self.ratio_range) / max(h, w)
    size = (max(int(w * scale + 0.5), 1), max(int(h * scale + 0.5), 1))
    record["image"] = cv2.resize(record["image"], size, interpolation=cv2.INTER_LINEAR)
    if "mask" in record:
      record["mask"] = cv2.resize(record["mask"], size, interpolation=cv2.INTER_NEAREST)
    return record


class CenterPad(grain.transforms.Map):
  """Pads an image and its mask, centred, to at least (height, width): the image with `fill` (RGB), the mask
  with `mask_fill` (an ignored label). MSCCNet pads the normalised image with 0, i.e. with the mean colour,
  which uint8 records approximate by the rounded mean."""

  def __init__(self, height: int, width: int, fill=(0, 0, 0), mask_fill: int = 255):
    self.height, self.width, self.fill, self.mask_fill = height, width, tuple(fill), mask_fill

  def map(self, record: dict) -> dict:
    h, w = record["image"].shape[:2]
    if h >= self.height and w >= self.width:
      return record
    record = dict(record)
    top, left = max(self.height - h, 0) // 2, max(self.width - w, 0) // 2
    pad = ((top, max(self.height - h, 0) - top), (left, max(self.width - w, 0) - left))
    image = np.empty((h + sum(pad[0]), w + sum(pad[1]), 3), np.uint8)
    image[...] = np.asarray(self.fill, np.uint8)
    image[top:top + h, left:left + w] = record["image"]
    record["image"] = image
    if "mask" in record:
      record["mask"] = np.pad(record["mask"], pad, constant_values=self.mask_fill)
    return record


class PhotoMetricDistortion(grain.transforms.RandomMap):
  """mmseg's PhotoMetricDistortion on a uint8 RGB `image`, each step with probability 1/2: brightness
  +U[-32, 32]; contrast xU[0.5, 1.5] (first or last, at random); saturation xU[0.5, 1.5]; hue +U[-18, 18]
  (the 0-180 hue of OpenCV's 8-bit HSV). Values are clipped to 0-255 after each step, as mmseg does. The steps and
  ranges are mmseg's; the colour arithmetic is 8-bit HSV, not mmcv's float HSV, so it is not bit-exact.

  `bgr_as_rgb_quirk`: the official pipeline holds BGR arrays but converts them with the RGB<->HSV codes, so
  its "saturation" and "hue" act on channel-swapped colours; True reproduces that, False (default) applies
  them to the true colours.
  """

  def __init__(self, brightness: int = 32, contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue: int = 18,
               bgr_as_rgb_quirk: bool = False):
    self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue
    self.quirk = bgr_as_rgb_quirk

  def _contrast(self, image, rng):
    return np.clip(image * rng.uniform(*self.contrast), 0, 255) if rng.integers(2) else image

  def random_map(self, record: dict, rng: np.random.Generator) -> dict:
    record = dict(record)
    image = record["image"].astype(np.float32)
    if rng.integers(2):
      image = np.clip(image + rng.uniform(-self.brightness, self.brightness), 0, 255)
    contrast_first = bool(rng.integers(2))
    if contrast_first:
      image = self._contrast(image, rng)
    colours = np.ascontiguousarray(image[..., ::-1]) if self.quirk else image
    hsv = cv2.cvtColor(colours.astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
    if rng.integers(2):
      hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(*self.saturation), 0, 255)
    if rng.integers(2):
      hsv[..., 0] = (hsv[..., 0].astype(np.int32) + int(rng.integers(-self.hue, self.hue))) % 180
    colours = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    image = colours[..., ::-1] if self.quirk else colours
    if not contrast_first:
      image = self._contrast(image, rng)
    record["image"] = np.ascontiguousarray(image).astype(np.uint8)
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
