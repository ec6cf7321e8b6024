"""Robust decoding of images, masks and videos, with errors that name the file and the problem.

Every failure raises `DataError` (a `ValueError`) whose message starts with the offending path. Images are
decoded with Pillow, which refuses truncated files (OpenCV's decoders return a partially grey image with only a
warning); videos with OpenCV's FFmpeg backend, frame by frame, so a file that ends early is reported instead of
yielding fewer frames.
"""
from __future__ import annotations

import collections
import io
import os
import threading
from typing import Iterable, NamedTuple, Sequence

import cv2
import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm")


class DataError(ValueError):
  """A dataset file is missing, unreadable, truncated or inconsistent with its pair.

  Attributes:
    path: the offending file (or folder).
    problem: what is wrong with it.
  """

  def __init__(self, path, problem: str):
    self.path = os.fspath(path)
    self.problem = problem
    super().__init__(f"{self.path}: {problem}")

  def __reduce__(self):  # picklable across Grain worker processes
    return (DataError, (self.path, self.problem))


class ErrorPolicy:
  """`on_error='raise'` re-raises a `DataError`; `'skip'` records `(path, problem)` once in `skipped` instead."""

  def __init__(self, on_error: str):
    if on_error not in ("raise", "skip"):
      raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    self.on_error = on_error
    self.skipped: list[tuple[str, str]] = []

  def handle(self, error: DataError) -> None:
    if self.on_error == "raise":
      raise error
    if (error.path, error.problem) not in self.skipped:
      self.skipped.append((error.path, error.problem))


def list_files(folder, extensions: Sequence[str], *, what: str) -> list[str]:
  """Sorted file names in `folder` with one of `extensions` (case-insensitive); DataError if none or absent."""
  if not os.path.isdir(folder):
    raise DataError(folder, f"missing {what} folder")
  names = sorted(n for n in os.listdir(folder) if n.lower().endswith(tuple(extensions)) and not n.startswith("."))
  if not names:
    raise DataError(folder, f"empty {what} folder (no {'/'.join(extensions)} files)")
  return names


def _read_bytes(path) -> bytes:
  try:
    with open(path, "rb") as f:
      return f.read()
  except FileNotFoundError:
    raise DataError(path, "file not found") from None
  except OSError as e:
    raise DataError(path, f"cannot read file ({e})") from None


def _open_image(path) -> Image.Image:
  data = _read_bytes(path)
  if not data:
    raise DataError(path, "empty file")
  try:
    image = Image.open(io.BytesIO(data))
    image.load()
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise DataError(path, f"cannot decode image ({e})") from None
  return image


def read_image(path) -> np.ndarray:
  """uint8 [H, W, 3] RGB pixels of an image file (palette, gray and alpha images converted to RGB)."""
  return np.array(_open_image(path).convert("RGB"))  # a writable copy (np.asarray of a PIL image is read-only)


def image_size(path) -> tuple[int, int]:
  """(height, width) from the image header, without decoding the pixels."""
  try:
    with Image.open(path) as image:
      width, height = image.size
  except FileNotFoundError:
    raise DataError(path, "file not found") from None
  except (OSError, SyntaxError, ValueError) as e:
    raise DataError(path, f"cannot read image header ({e})") from None
  return height, width


def read_mask(path, rule: str = "object") -> np.ndarray:
  """uint8 {0, 1} [H, W] mask from an image file.

  Rules:
    'object' (segmentation annotations, DAVIS / YouTube-VOS): a palette PNG is 1 where its palette index is
      nonzero (any object); any other image is 1 where its level (the maximum over color channels, so that
      colored object masks count) is > 127, except 0/1 label maps (maximum 1), which are taken as they are.
    'benco' (IMDL-BenCo's ground truths): the image as RGB, 1 where the mean over the channels is > 127.5.
  """
  image = _open_image(path)
  if rule == "benco":
    return (np.asarray(image.convert("RGB"), np.float32).mean(axis=-1) > 127.5).astype(np.uint8)
  if rule != "object":
    raise ValueError(f"unknown mask rule {rule!r}")
  if image.mode == "P":
    return (np.asarray(image) != 0).astype(np.uint8)
  values = np.asarray(image)
  if values.ndim == 3:
    values = values[..., :3].max(axis=-1)
  if values.max(initial=0) <= 1:
    return (values > 0).astype(np.uint8)
  return (values > 127).astype(np.uint8)


def check_same_size(image_path, mask_path, image_hw: tuple[int, int], mask_hw: tuple[int, int]) -> None:
  """DataError naming the mask when its (height, width) differs from its image's."""
  if tuple(image_hw) != tuple(mask_hw):
    raise DataError(mask_path, f"mask is {mask_hw[0]}x{mask_hw[1]} but its frame {os.fspath(image_path)} is "
                               f"{image_hw[0]}x{image_hw[1]} (height x width)")


class VideoInfo(NamedTuple):
  """Frame count and size of a video. `num_frames` is the decodable count when probed with verify='decode'."""
  num_frames: int
  height: int
  width: int


def _open_capture(path) -> cv2.VideoCapture:
  if not os.path.isfile(path):
    raise DataError(path, "video file not found")
  capture = cv2.VideoCapture(os.fspath(path), cv2.CAP_FFMPEG)
  if not capture.isOpened():
    raise DataError(path, "cannot open video (unreadable or truncated file)")
  return capture


def probe_video(path, verify: str = "decode") -> VideoInfo:
  """Frame count and size of a video.

  verify='header' trusts the container's frame count; 'decode' decodes every frame and raises if fewer frames
  decode than the header announces (a truncated file) or if none decode.
  """
  capture = _open_capture(path)
  try:
    announced = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    if verify == "header":
      if announced <= 0:
        raise DataError(path, "video header announces no frames")
      return VideoInfo(announced, height, width)
    if verify != "decode":
      raise ValueError(f"verify must be 'header' or 'decode', got {verify!r}")
    decoded = 0
    while capture.grab():
      decoded += 1
  finally:
    capture.release()
  if decoded == 0:
    raise DataError(path, "no frame could be decoded")
  if announced > 0 and decoded < announced:
    raise DataError(path, f"truncated video: the header announces {announced} frames but only {decoded} decode")
  return VideoInfo(decoded, height, width)


class _OpenVideo:
  """An open capture and the index of the frame its next `grab()` returns."""

  def __init__(self, path):
    self.capture = _open_capture(path)
    self.position = 0


_local = threading.local()
_OPEN_VIDEOS_PER_THREAD = 4


def _open_video(path: str, first_index: int) -> _OpenVideo:
  """A per-thread open capture of `path` positioned at or before `first_index` (LRU of a few videos)."""
  videos = getattr(_local, "videos", None)
  if videos is None:
    videos = _local.videos = collections.OrderedDict()
  video = videos.pop(path, None)
  if video is not None and video.position > first_index:
    video.capture.release()
    video = None
  if video is None:
    video = _OpenVideo(path)
  videos[path] = video
  while len(videos) > _OPEN_VIDEOS_PER_THREAD:
    videos.popitem(last=False)[1].capture.release()
  return video


def _close_video(path: str) -> None:
  video = getattr(_local, "videos", {}).pop(path, None)
  if video is not None:
    video.capture.release()


def read_video_frames(path, indices: Iterable[int]) -> np.ndarray:
  """uint8 [N, H, W, 3] RGB frames at the given (non-negative) indices, decoded sequentially (exact frames).

  Captures stay open per thread (a few videos at a time), so reading later frames of a video continues where
  the previous call stopped instead of decoding from the start.
  """
  indices = [int(i) for i in indices]
  if not indices:
    raise ValueError("no frame indices given")
  if min(indices) < 0:
    raise ValueError(f"negative frame index in {indices}")
  path = os.fspath(path)
  video = _open_video(path, min(indices))  # every requested frame is at or after video.position
  wanted = set(indices)
  frames = {}
  last = max(indices)
  while video.position <= last:
    if not video.capture.grab():
      _close_video(path)
      raise DataError(path, f"truncated or corrupt video: frame {video.position} cannot be decoded "
                            f"(frames up to {last} requested)")
    if video.position in wanted:
      ok, frame = video.capture.retrieve()
      if not ok or frame is None:
        _close_video(path)
        raise DataError(path, f"frame {video.position} cannot be decoded")
      frames[video.position] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    video.position += 1
  return np.stack([frames[i] for i in indices])


def read_mask_video_frames(path, indices: Iterable[int], threshold: int = 127) -> np.ndarray:
  """uint8 {0, 1} [N, H, W] masks from a mask video (e.g. FF++'s): gray level > threshold."""
  frames = read_video_frames(path, indices)
  return (frames.astype(np.float32).mean(axis=-1) > threshold).astype(np.uint8)
