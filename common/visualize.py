"""What every `predict.py` writes: thresholded masks and heatmap overlays of a probability map.

Images are uint8 RGB [H, W, 3]; probability maps float [H, W] in [0, 1], at the image's resolution.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def heatmap_overlay(image: np.ndarray, probs: np.ndarray, alpha: float = 0.5, box: Box | None = None) -> np.ndarray:
  """uint8 RGB [H, W, 3]: `image` blended with a JET colormap of `probs` [H, W] (weight `alpha`).

  With `box`, only the box is blended and it is outlined in green (a face crop pasted back into its frame).
  """
  heat = cv2.applyColorMap(np.round(np.clip(probs, 0.0, 1.0) * 255).astype(np.uint8), cv2.COLORMAP_JET)
  heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
  if box is None:
    return cv2.addWeighted(image, 1.0 - alpha, heat, alpha, 0.0)
  x0, y0, x1, y1 = box
  out = image.copy()
  out[y0:y1, x0:x1] = cv2.addWeighted(image[y0:y1, x0:x1], 1.0 - alpha, heat[y0:y1, x0:x1], alpha, 0.0)
  cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0), 1)
  return out


def write_mask_and_overlay(mask_path: str, overlay_path: str, image: np.ndarray, probs: np.ndarray, *,
                           threshold: float = 0.5, alpha: float = 0.5, box: Box | None = None) -> np.ndarray:
  """Writes the 0/255 mask `probs > threshold` and the heatmap overlay as PNGs; returns the overlay (RGB)."""
  if probs.shape != image.shape[:2]:
    raise ValueError(f"{mask_path}: probability map {probs.shape} does not match the image {image.shape[:2]}")
  overlay = heatmap_overlay(image, probs, alpha, box)
  for path, picture in ((mask_path, np.where(probs > threshold, 255, 0).astype(np.uint8)),
                        (overlay_path, cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if not cv2.imwrite(path, picture):
      raise OSError(f"{path}: OpenCV cannot write this PNG")
  return overlay


def define_flags() -> None:
  """Defines `--threshold` and `--alpha`, the arguments of `write_mask_and_overlay` (for a predict tool's `__main__`)."""
  from absl import flags
  flags.DEFINE_float("threshold", 0.5, "Mask threshold on the manipulation probability.")
  flags.DEFINE_float("alpha", 0.5, "Heatmap weight in the overlays.")
