"""Face crops of an image or video for the face methods' `predict.py`, and their maps pasted back.

The crops are those the FaceForensics++ reader trains on: the largest detected face (scikit-image's LBP cascade
on every `detect_every`-th frame, tracked in between), a square of `crop_scale` times its box; frames of an input
where no face is found at all fall back to the whole frame, with a warning.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
import logging
import os

import cv2
import numpy as np

from common.data import transforms
from common.data.faces import detection as face_detection
from common.data.readers.media import IMAGE_EXTENSIONS, read_image

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def read_frames(path: str) -> list[np.ndarray]:
  """uint8 RGB frames [H, W, 3] of an image file (`media.read_image`: EXIF orientation applied, as the readers
  do) or a video file (anything OpenCV reads)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such image or video file")
  if path.lower().endswith(IMAGE_EXTENSIONS):
    return [read_image(path)]
  capture, frames = cv2.VideoCapture(path), []
  try:
    ok, frame = capture.read()
    while ok:
      frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
      ok, frame = capture.read()
  finally:
    capture.release()
  if not frames:
    raise ValueError(f"{path}: OpenCV cannot read a frame from this file (not an image or video, or empty)")
  return frames


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


def crop_batches(frames: list[np.ndarray], boxes: list[Box], size: int, batch_size: int
                 ) -> Iterator[tuple[list[int], np.ndarray]]:
  """(frame indices, float32 crops [batch_size, size, size, 3] on the 0-255 scale) per batch; the last batch is
  padded by repeating its last crop, so one compiled shape serves every batch (use the first len(indices))."""
  for start in range(0, len(frames), batch_size):
    chunk = list(range(start, min(start + batch_size, len(frames))))
    crops = np.stack([transforms.resize_image(np.ascontiguousarray(frames[i][y0:y1, x0:x1]), size, size)
                      for i in chunk for x0, y0, x1, y1 in [boxes[i]]])
    crops = np.concatenate([crops, np.repeat(crops[-1:], batch_size - len(chunk), 0)])
    yield chunk, crops.astype(np.float32)


def paste(probs: np.ndarray, box: Box, height: int, width: int) -> np.ndarray:
  """A crop's map [S, S] resized (bilinear) into its box of a zero [height, width] frame map."""
  x0, y0, x1, y1 = box
  full = np.zeros((height, width), np.float32)
  full[y0:y1, x0:x1] = cv2.resize(np.asarray(probs, np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
  return full


def define_flags() -> None:
  """Defines `--face`, `--crop_scale` and `--detect_every`, the arguments of `face_boxes` (for a face method's
  predict tool)."""
  from absl import flags
  flags.DEFINE_enum("face", "detect", ["detect", "full"], "Detect and crop the face, or take the full frame.")
  flags.DEFINE_float("crop_scale", 1.3, "Face crop side / detected box side (training's crops use 1.3).")
  flags.DEFINE_integer("detect_every", 5, "Run the face detector on every n-th video frame (tracked between).")
