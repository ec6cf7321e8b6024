"""Face crop boxes of an image or video for the face methods' predictor, and their maps pasted back.

The crops are those the FaceForensics++ reader trains on: the largest detected face (scikit-image's LBP cascade
on every `detect_every`-th frame, tracked in between), a square of `crop_scale` times its box; frames of an input
where no face is found at all fall back to the whole frame, with a warning.
"""
from __future__ import annotations

from collections.abc import Callable
import logging

import cv2
import numpy as np

from common.data.faces import detection as face_detection

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def face_boxes(frames: list[np.ndarray], face: str = "detect", crop_scale: float = 1.3, detect_every: int = 1,
               detector: Callable | None = None) -> list[Box]:
  """Square crop box per frame (see the module docstring); `face='full'` takes every whole frame."""
  if face not in ("detect", "full"):
    raise ValueError(f"face must be 'detect' or 'full', got {face!r}")
  height, width = frames[0].shape[:2]
  if face == "full":
    return [(0, 0, width, height)] * len(frames)
  detector = detector or face_detection.LbpCascadeDetector()
  indices = list(range(len(frames)))
  detections = {i: (tuple(found[0]) if len(found := detector(frames[i])) else None)
                for i in indices[::max(1, detect_every)]}
  if all(box is None for box in detections.values()):
    logging.warning("no face detected: using the whole frame as the face crop")
    return [(0, 0, width, height)] * len(frames)
  tracked = face_detection.track_boxes(detections, indices, smooth_window=5 if len(frames) > 1 else 1)
  return [face_detection.enlarge_box(tracked[i], crop_scale, height, width) for i in indices]


def paste(probs: np.ndarray, box: Box, height: int, width: int) -> np.ndarray:
  """A crop's map [S, S] resized (bilinear) into its box of a zero [height, width] frame map."""
  x0, y0, x1, y1 = box
  full = np.zeros((height, width), np.float32)
  full[y0:y1, x0:x1] = cv2.resize(np.asarray(probs, np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
  return full
