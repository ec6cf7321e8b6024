"""SafePaint data: images (centre-cropped to a square, resized) and hole masks (1 = hole), as Grain sources.

As the official `src/dataset.py`: an image that is not square is centre-cropped, then resized to `size` with
Pillow bicubic. Masks (1 = hole) are decoded by `media.read_mask`'s rule (0/255, 0/1, grey, palette, ...), taken
as 0/255, resized bilinearly and thresholded `> threshold`: 0 is the official training rule (holes grow by about
a pixel on a 2x downscale); 127 keeps the hole ratio on larger downscales (the demo's 256 -> 64). On 0/255 mask
files (the official sets', the demo's) this is the official reading: the grey level resized, then thresholded.
Training draws a random mask per sample (`RandomMask`): one of the mask files, or a freshly generated free-form
mask (`common.data.masks.free_form_mask`) in a random hole-ratio bin. Test pairs mask i with image i (modulo the
mask count), as the official test loader. With `verify` ('header' or 'decode'; default 'none') the files are
checked when listed, and `on_error='skip'` leaves the bad ones out (logged; `ImageSource.skipped`); a file that
fails when read raises DataError naming it.

The embedded demo corpus (`common.data.demo`) holds such folders under `<corpus>/inpainting/<split>/{images,masks}`.
Records: {"image": uint8 [S, S, 3], "mask": uint8 {0, 1} [S, S], "id": str}.
"""
from __future__ import annotations

import os

import grain
import numpy as np
from PIL import Image

from common.data import demo
from common.data import masks as mask_lib
from common.data.readers import media
from common.data.readers.media import DataError, ErrorPolicy, image_size, read_image, read_mask

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def list_files(folder: str, what: str = "image", verify: str = "none", policy: ErrorPolicy | None = None) -> list[str]:
  """Sorted paths of the image files in `folder` (the official glob of jpg / png, case-insensitive).

  verify='header' (readable header) or 'decode' (decodable, as an image or, what='mask', as a mask) checks each
  file; a bad one raises DataError, or is left out and recorded by `policy` when it skips.
  """
  paths = [os.path.join(folder, name) for name in media.list_files(folder, EXTENSIONS, what=what)]
  if verify == "none":
    return paths
  read = {"header": image_size, "decode": read_mask if what == "mask" else read_image}[verify]
  usable = []
  for path in paths:
    try:
      read(path)
    except DataError as e:
      if policy is None:
        raise
      policy.handle(e)
      continue
    usable.append(path)
  if not usable:
    raise DataError(folder, f"no usable {what} file ({len(paths)} skipped)")
  return usable


def square_resize(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 [H, W, 3] -> centre square crop -> [size, size, 3] (Pillow bicubic)."""
  h, w = image.shape[:2]
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  image = image[top:top + side, left:left + side]
  if side == size:
    return np.ascontiguousarray(image)
  return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))


def read_hole_mask(path: str, size: int, threshold: int = 0) -> np.ndarray:
  """A mask file (1 = hole) -> uint8 {0, 1} [size, size]: the 0/255 mask resized bilinearly, then > threshold."""
  try:
    mask = read_mask(path)
  except DataError as e:
    raise DataError(path, f"cannot read mask ({e.problem})") from None
  grey = Image.fromarray(mask * np.uint8(255))
  if grey.size != (size, size):
    grey = grey.resize((size, size), Image.BILINEAR)
  return (np.asarray(grey) > threshold).astype(np.uint8)


def demo_folder(split: str, kind: str) -> str:
  return os.path.join(demo.ensure_demo_corpus(), "inpainting", split, kind)


class ImageSource:
  """Random-access source of {"image", "id"} (and "mask" when `mask_dir` is given: mask i mod #masks)."""

  def __init__(self, image_dir: str, size: int, mask_dir: str = "", mask_threshold: int = 0, verify: str = "none",
               on_error: str = "raise"):
    self._policy = ErrorPolicy(on_error)
    self.images = list_files(image_dir, "image", verify, self._policy)
    self.masks = list_files(mask_dir, "mask", verify, self._policy) if mask_dir else []
    self.size, self.image_dir, self.threshold = size, image_dir, mask_threshold
    self._policy.report(self)

  @property
  def skipped(self) -> list[tuple[str, str]]:
    """(path, problem) of every file left out with on_error='skip'."""
    return self._policy.skipped

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, index: int) -> dict:
    path = self.images[index]
    record = {"image": square_resize(read_image(path), self.size), "id": path}
    if self.masks:
      record["mask"] = read_hole_mask(self.masks[index % len(self.masks)], self.size, self.threshold)
    return record

  def __repr__(self) -> str:
    return f"ImageSource({self.image_dir!r}, {len(self)} images, {len(self.masks)} masks)"


class RandomMask(grain.transforms.RandomMap):
  """Adds a random hole mask: a random file of `mask_dir`, or (no `mask_dir`) a generated free-form mask
  whose hole ratio lies in a uniformly drawn bin of `bins`."""

  def __init__(self, size: int, mask_dir: str = "", bins=mask_lib.HOLE_RATIO_BINS, threshold: int = 0,
               verify: str = "none", on_error: str = "raise"):
    self.size, self.bins, self.threshold = size, tuple(tuple(b) for b in bins), threshold
    policy = ErrorPolicy(on_error)
    self.files = list_files(mask_dir, "mask", verify, policy) if mask_dir else []
    policy.report(f"RandomMask({mask_dir!r})")

  def random_map(self, record: dict, rng: np.random.Generator) -> dict:
    if self.files:
      mask = read_hole_mask(self.files[int(rng.integers(len(self.files)))], self.size, self.threshold)
    else:
      mask = mask_lib.free_form_mask(rng, self.size, self.size, self.bins[int(rng.integers(len(self.bins)))])
    return dict(record, mask=mask)
