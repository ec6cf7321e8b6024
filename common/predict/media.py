"""What predict reads: a file, a folder or a glob of images and videos, each opened as a stream of RGB frames.

An image is a one-frame input. A video is any file OpenCV reads. For clip models (ViLocal) a folder holding frame
images and no videos is one frame sequence, taken in file-name order with digit runs compared as numbers
(`f2.png` before `f10.png`); otherwise a folder lists its image and video files, one input each.
"""
from __future__ import annotations

from collections.abc import Iterator
import dataclasses
import glob
import os
import re

import cv2
import numpy as np

from common.data.readers.media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, DataError, read_image

FOLDER_FPS = 25.0


def natural_key(name: str) -> list:
  return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _media_files(folder: str) -> list[str]:
  names = sorted((n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)),
                 key=natural_key)
  return [os.path.join(folder, n) for n in names]


def is_frame_folder(path: str) -> bool:
  """A folder of frame images with no video among them."""
  if not os.path.isdir(path):
    return False
  files = _media_files(path)
  return bool(files) and all(f.lower().endswith(IMAGE_EXTENSIONS) for f in files)


def list_inputs(pattern: str, *, frame_folders: bool = False) -> list[str]:
  """The inputs named by a file, a folder or a glob (sorted). `frame_folders`: a folder of frame images is one
  input (clip models), not one input per image. Raises naming `pattern` when it matches nothing."""
  if os.path.isfile(pattern) or (frame_folders and is_frame_folder(pattern)):
    return [pattern]
  if os.path.isdir(pattern):
    found = _media_files(pattern)
    if frame_folders:  # a folder of sequences: its subfolders of frames, and its videos
      found = [f for f in found if f.lower().endswith(VIDEO_EXTENSIONS)] + sorted(
          (os.path.join(pattern, d) for d in os.listdir(pattern) if is_frame_folder(os.path.join(pattern, d))),
          key=natural_key)
    if not found:
      raise FileNotFoundError(f"{pattern}: the folder holds no images or videos "
                              f"({', '.join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)})")
    return found
  matches = sorted(glob.glob(pattern), key=natural_key)
  if not matches:
    raise FileNotFoundError(f"{pattern}: no such file or folder, and no file matches it as a glob")
  return matches


@dataclasses.dataclass
class Media:
  """An opened input: `frames` streams uint8 RGB [H, W, 3]; `count` is the number of frames (OpenCV's estimate
  for a video), `fps` its rate (25 for images and frame folders)."""
  path: str
  frames: Iterator[np.ndarray]
  count: int
  fps: float
  is_video: bool


def _folder_frames(paths: list[str]) -> Iterator[np.ndarray]:
  size = None
  for path in paths:
    frame = read_image(path)
    if size is None:
      size = frame.shape
    elif frame.shape != size:
      raise DataError(path, f"frame of size {frame.shape[:2]}, but the folder's first frame is {size[:2]}")
    yield frame


def _video_frames(capture: cv2.VideoCapture, first: np.ndarray) -> Iterator[np.ndarray]:
  try:
    frame = first
    while frame is not None:
      yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
      ok, frame = capture.read()
      frame = frame if ok else None
  finally:
    capture.release()


def open_media(path: str) -> Media:
  """Opens an image, a video or a folder of frames; frames are read lazily. A missing path, an unreadable image
  and an unreadable or empty video raise here (`DataError` / `FileNotFoundError`), naming the path."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such image, video or frame folder")
  if os.path.isdir(path):
    if not is_frame_folder(path):
      raise DataError(path, f"the folder holds no frame images ({', '.join(IMAGE_EXTENSIONS)})")
    files = _media_files(path)
    return Media(path, _folder_frames(files), len(files), FOLDER_FPS, True)
  if path.lower().endswith(IMAGE_EXTENSIONS):
    return Media(path, iter([read_image(path)]), 1, FOLDER_FPS, False)
  capture = cv2.VideoCapture(path)
  ok, first = capture.read() if capture.isOpened() else (False, None)
  if not ok:
    capture.release()
    raise DataError(path, "OpenCV cannot read a frame from this file (not an image or video, or empty)")
  fps = capture.get(cv2.CAP_PROP_FPS)
  count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
  return Media(path, _video_frames(capture, first), max(count, 1), fps if fps > 0 else FOLDER_FPS, True)


def stem(path: str) -> str:
  """The output name of an input: its file or folder name without extension."""
  return os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
