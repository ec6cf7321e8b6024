"""MSCCNet's SSIM-difference annotation of manipulated faces (re-annotation of FaceForensics++).

Given pixel-aligned crops of a real face and its manipulated version (cropped with the same box), the mask of
the manipulated region is derived from their structural dissimilarity, exactly as MSCCNet's
`annotation/annotation_ff.py` does (spec msccnet_delocate.md §1.11):

1. both crops to grayscale float in [0, 1] (OpenCV's BGR->gray weights, rounded to uint8 first, then / 255);
2. full SSIM map S of (fake, real) with scikit-image defaults (7x7 uniform window, K1 0.01, K2 0.03) and
   `data_range=2.0` given explicitly (what scikit-image < 0.20 used implicitly for float input);
3. d = 1 - S, min-max normalised to [0, 1], Gaussian blur 5x5 (sigma from the kernel size);
4. candidate pixels: d > 0.08 and the fake's intensity survives uint8 truncation (fake gray >= 1/255);
5. dilate with a 7x7 elliptical kernel, 3 iterations;
6. contours (RETR_TREE, CHAIN_APPROX_SIMPLE) with more than 5 points: the first as is, each later one as its
   convex hull; the convex hull of the union is filled as a single convex polygon;
7. erode with a 5x5 elliptical kernel, 3 iterations; Gaussian blur 7x7; mask = (uint8(blur * 255) > 0).

The result is a single filled convex region. Where the reference raises (no contour qualifies, including
identical crops, for which the min-max normalisation is 0/0) and writes no mask, this module returns an
all-zero mask with `found=False`, so callers can count such frames.
"""
from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
from skimage.metrics import structural_similarity

DIFF_THRESHOLD = 0.08
SSIM_DATA_RANGE = 2.0


class SsimAnnotation(NamedTuple):
  """Result of `annotate_ssim_difference`.

  mask: uint8 {0, 1} [H, W], the filled convex manipulated region (all zero when `found` is False).
  diff: uint8 [H, W], the reference's `<frame>_diff.png`: fake intensity * 255 where the blurred, normalised
    SSIM dissimilarity exceeds the threshold, else 0.
  found: whether any contour qualified (the reference writes no mask when none does).
  """
  mask: np.ndarray
  diff: np.ndarray
  found: bool


def _to_gray_unit(rgb: np.ndarray, name: str) -> np.ndarray:
  """uint8 [H, W, 3] RGB (or [H, W] gray) -> float64 [H, W] in [0, 1], as cv2.imread + BGR2GRAY / 255."""
  rgb = np.asarray(rgb)
  if rgb.dtype != np.uint8:
    raise ValueError(f"{name} must be uint8, got {rgb.dtype}")
  if rgb.ndim == 3 and rgb.shape[-1] == 3:
    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
  elif rgb.ndim == 2:
    gray = rgb
  else:
    raise ValueError(f"{name} must be [H, W, 3] RGB or [H, W] gray, got shape {rgb.shape}")
  return gray / 255.0


def annotate_ssim_difference(real_rgb: np.ndarray, fake_rgb: np.ndarray) -> SsimAnnotation:
  """MSCCNet's SSIM-difference annotation of one aligned real/fake crop pair.

  Args:
    real_rgb: uint8 [H, W, 3] RGB crop of the pristine frame (or [H, W] gray).
    fake_rgb: uint8 [H, W, 3] RGB crop of the manipulated frame at the same box (same shape as `real_rgb`).
  Returns:
    An `SsimAnnotation` (mask uint8 {0,1} [H, W], diff uint8 [H, W], found bool).
  """
  real = _to_gray_unit(real_rgb, "real_rgb")
  fake = _to_gray_unit(fake_rgb, "fake_rgb")
  if real.shape != fake.shape:
    raise ValueError(f"real and fake crops differ in size: {real.shape} vs {fake.shape}")
  height, width = fake.shape
  empty = np.zeros((height, width), np.uint8)
  if min(height, width) < 7:
    raise ValueError(f"crops of {height}x{width} are smaller than the 7x7 SSIM window")

  _, ssim_map = structural_similarity(fake, real, full=True, data_range=SSIM_DATA_RANGE)
  dissimilarity = 1.0 - ssim_map
  spread = dissimilarity.max() - dissimilarity.min()
  if not spread > 0:  # identical crops (or a constant map): the reference divides 0 by 0 and finds no contour.
    return SsimAnnotation(empty, empty.copy(), False)
  dissimilarity = (dissimilarity - dissimilarity.min()) / spread
  dissimilarity = cv2.GaussianBlur(dissimilarity, (5, 5), 0)
  diff = np.uint8(fake * (dissimilarity > DIFF_THRESHOLD) * 255)
  candidates = np.where(diff > 0, np.uint8(255), np.uint8(0))

  dilated = cv2.dilate(candidates, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)), iterations=3)
  contours, _ = cv2.findContours(dilated, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
  points = []
  for contour in contours:
    if contour.shape[0] > 5:
      points.append(contour if not points else cv2.convexHull(contour, clockwise=False))
  if not points:
    return SsimAnnotation(empty, diff, False)

  filled = cv2.fillConvexPoly(empty.copy(), cv2.convexHull(np.concatenate(points), clockwise=False), 255)
  eroded = cv2.erode(filled, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)), iterations=3)
  blurred = cv2.GaussianBlur(eroded / 255.0, (7, 7), 0)
  mask = (np.uint8(blurred * 255) > 0).astype(np.uint8)
  return SsimAnnotation(mask, diff, True)


def ssim_difference_mask(real_rgb: np.ndarray, fake_rgb: np.ndarray) -> np.ndarray:
  """uint8 {0, 1} [H, W] mask of the manipulated region of `fake_rgb` relative to `real_rgb`.

  Both inputs are uint8 [H, W, 3] RGB crops taken with the same box. MSCCNet's algorithm exactly (module
  docstring). Where the reference raises "no contour" and writes no mask (e.g. identical crops), this returns
  an all-zero mask; use `annotate_ssim_difference(...).found` to tell those frames apart.
  """
  return annotate_ssim_difference(real_rgb, fake_rgb).mask
