"""Decoding of images, masks and videos: one rule per input kind, errors that name the file and the problem.

Every failure raises `DataError` (a `ValueError`) whose message starts with the offending path. Images and masks
are decoded with Pillow, which refuses truncated files (OpenCV's decoders return a partially grey image with only
a warning); videos with OpenCV's FFmpeg backend, frame by frame, so a file that ends early is reported instead of
yielding fewer frames.

Rules, one per input kind:
  * Orientation. Images and masks are turned upright by their EXIF orientation (as `cv2.imread` and photo viewers
    do), both the same way, so a mask drawn on the displayed photo lines up; `image_size` reads the orientation
    from the header too, so header checks compare the sizes the readers return.
  * Images (`read_image`) -> uint8 [H, W, 3] RGB: palette, grey and alpha images are converted to RGB (alpha
    dropped, not composited); 16-bit grey is taken by its high byte (as Pillow reads 16-bit RGB).
  * Masks (`read_mask`) -> uint8 {0, 1} [H, W], 1 = foreground (manipulated / object / hole), decided per file:
    - palette images (DAVIS / YouTube-VOS annotations): 1 where the palette index is not 0, whatever the
      colours; transparency ignored. Index 0 must be black and no other index in use may be: otherwise (e.g.
      an optimised palette with white at index 0) ids cannot tell background from object, a DataError;
    - any other image: a pixel's level is the maximum over its colour channels (any channel counts, alpha is
      ignored: grey+alpha and RGBA masks read as grey and RGB), on the file's full scale S (1 bilevel, 255 8-bit,
      65535 16-bit). If some pixel is above half scale (level > S // 2: 127 for 8-bit, 32767 for 16-bit, i.e.
      > 127 once 16-bit is scaled to 8-bit), the file is a binary or anti-aliased grey mask (0/255, grey edges,
      JPEG, 16-bit 0/65535, coloured): 1 where level > S // 2. Otherwise, if some pixel is 0, it is a label map
      (0/1, or object ids >= 2): 1 where level != 0 (all zero: an empty mask). Otherwise every pixel lies in
      1..S // 2 (e.g. all ones: a 0/1 map all foreground, or a 0/255 map nearly black): a DataError.
      A label map with ids above S // 2 (over 127 objects in 8 bits) reads as a grey mask.
    IMDL-BenCo reads ground truths as RGB with the channel mean > 127.5: the same masks on its benchmarks' grey
    0/255 ground truths, but it zeroes 0/1 maps and drops pure red / green / blue pixels; the suite does not.
  * Mask videos (`read_mask_video_frames`, FF++'s lossy masks) -> uint8 {0, 1} [N, H, W]: channel mean > 127.
"""
from __future__ import annotations

import collections
import io
import os
import threading
from typing import Iterable, NamedTuple, Sequence

import cv2
import numpy as np
from absl import logging
from PIL import ExifTags, Image, ImageOps

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

  def report(self, reader) -> None:
    """Logs (absl) how many bad files `reader` skipped, naming the first few; nothing with on_error='raise'."""
    if self.on_error == "skip":
      named = "".join(f"\n  {path}: {problem}" for path, problem in self.skipped[:10])
      logging.log(logging.WARNING if self.skipped else logging.INFO, "%s: %d bad files skipped (on_error='skip')%s",
                  reader, len(self.skipped), named + ("\n  ..." if len(self.skipped) > 10 else ""))


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
  """The decoded image of a file, turned by its EXIF orientation."""
  data = _read_bytes(path)
  if not data:
    raise DataError(path, "empty file")
  try:
    with Image.open(io.BytesIO(data)) as image:
      return ImageOps.exif_transpose(image)  # decodes (a copy when upright)
  except MemoryError:
    raise
  except Exception as e:  # noqa: BLE001 -- any decoder failure is a bad file (Pillow raises many types)
    raise DataError(path, f"cannot decode image ({type(e).__name__}: {e})") from None


def read_image(path) -> np.ndarray:
  """uint8 [H, W, 3] RGB pixels of an image file (see the module docstring)."""
  image = _open_image(path)
  if image.mode.startswith("I;16"):
    return np.repeat((np.asarray(image) >> 8).astype(np.uint8)[..., None], 3, axis=-1)
  return np.array(image.convert("RGB"))  # a writable copy (np.asarray of a PIL image is read-only)


def image_size(path) -> tuple[int, int]:
  """(height, width) of an image as `read_image` returns it (EXIF orientation applied), from the header only."""
  try:
    with Image.open(path) as image:
      width, height = image.size
      # The base class reads the header's EXIF / XMP only (PNG's own getexif decodes the pixels first).
      orientation = Image.Image.getexif(image).get(ExifTags.Base.Orientation, 1)
  except FileNotFoundError:
    raise DataError(path, "file not found") from None
  except Exception as e:  # noqa: BLE001
    raise DataError(path, f"cannot read image header ({type(e).__name__}: {e})") from None
  return (width, height) if orientation in (5, 6, 7, 8) else (height, width)  # 5-8 turn by a quarter


_FULL_SCALE = {"1": 1, "L": 255, "LA": 255, "RGB": 255, "RGBA": 255, "RGBX": 255,
               "I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535}


def read_mask(path) -> np.ndarray:
  """uint8 {0, 1} [H, W] mask of an image file, by the mask rule of the module docstring."""
  image = _open_image(path)
  if image.mode in ("P", "PA"):
    ids = np.asarray(image)
    ids = ids[..., 0] if ids.ndim == 3 else ids
    palette = np.asarray(image.getpalette("RGB") or [], np.uint8).reshape(-1, 3)
    for i in np.flatnonzero(np.bincount(ids.ravel())):  # the indices in use
      if i < len(palette) and (i == 0) != (not palette[i].any()):
        raise DataError(path, f"palette mask: index {i} in use is {'not ' if i == 0 else ''}black "
                              f"{tuple(palette[i].tolist())}: ids cannot tell background (0, black) from objects")
    return (ids != 0).astype(np.uint8)
  scale = _FULL_SCALE.get(image.mode)
  if scale is None:
    raise DataError(path, f"unsupported mask pixel format {image.mode!r} (expected palette, bilevel, grey, RGB, "
                          "with or without alpha, 8 or 16 bits)")
  levels = np.asarray(image)
  if levels.ndim == 3:
    levels = levels[..., [i for i, band in enumerate(image.getbands()) if band not in ("A", "X")]].max(axis=-1)
  half = scale // 2
  grey = levels.max() > half
  if not grey and levels.min() > 0:
    raise DataError(path, f"ambiguous mask: its values lie in {levels.min()}..{levels.max()} of {scale}, no pixel "
                          "is 0 or above half scale (a 0/1 map all foreground, or a nearly black grey mask?)")
  return (levels > (half if grey else 0)).astype(np.uint8)


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
  """An open capture, the index of the frame its next `grab()` returns, and whether it seeks exactly."""

  def __init__(self, path, signature):
    self.path, self.signature = path, signature
    self.capture = _open_capture(path)
    self.position = 0
    self.seekable = path not in _inexact_seek


_local = threading.local()
_OPEN_VIDEOS_PER_THREAD = 4
# A forward gap up to this many frames is decoded rather than sought: a seek lands on the keyframe before the
# target and decodes from there, so it surely pays only once the gap exceeds the keyframe interval, which OpenCV
# does not report. 250 is x264's default (FF++'s videos; FFmpeg's MPEG-4 default is 12): on a 720p H.264 video,
# reading 20 sampled frames in order cost 10.9 CPU-s with a threshold of 12 and 1.3 s decoding forward.
SEEK_MIN_GAP = 250
_inexact_seek: set[str] = set()  # videos whose container did not land a seek on the requested frame
_inexact_seek_lock = threading.Lock()


def _open_video(path: str) -> _OpenVideo:
  """A per-thread open capture of `path` (LRU of a few videos), wherever it was left; reopened if the file was
  replaced since (its size or modification time changed)."""
  videos = getattr(_local, "videos", None)
  if videos is None:
    videos = _local.videos = collections.OrderedDict()
  try:
    stat = os.stat(path)
  except OSError as e:
    raise DataError(path, "video file not found" if isinstance(e, FileNotFoundError) else f"cannot stat: {e}") from e
  signature = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
  video = videos.pop(path, None)
  if video is not None and video.signature != signature:
    video.capture.release()
    video = None
  if video is None:
    video = _OpenVideo(path, signature)
  videos[path] = video
  while len(videos) > _OPEN_VIDEOS_PER_THREAD:
    videos.popitem(last=False)[1].capture.release()
  return video


def _close_video(path: str) -> None:
  video = getattr(_local, "videos", {}).pop(path, None)
  if video is not None:
    video.capture.release()


def _seek(video: _OpenVideo, target: int) -> bool:
  """Seeks `video` so its next grab returns frame `target`; False (and the video marked, with one log line)
  when the container does not land there. OpenCV's FFmpeg backend reports the position from the decoded
  frame's timestamp, so a seek that lands elsewhere is seen, not trusted."""
  video.capture.set(cv2.CAP_PROP_POS_FRAMES, target)
  if int(round(video.capture.get(cv2.CAP_PROP_POS_FRAMES))) == target:
    video.position = target
    return True
  with _inexact_seek_lock:
    first = video.path not in _inexact_seek
    _inexact_seek.add(video.path)
  if first:
    logging.warning("%s: the container does not seek to exact frames, so each read decodes from the start; "
                    "prepared ArrayRecord shards (python -m common.data.prepare) give O(1) random access", video.path)
  video.seekable = False
  video.capture.release()
  video.capture, video.position = _open_capture(video.path), 0
  return False


def _position_at(video: _OpenVideo, target: int) -> None:
  """Moves `video` so its next grab returns frame `target`: by a seek (backwards, or forwards over more than
  `SEEK_MIN_GAP` frames) where the container seeks exactly, else by decoding (from the start if needed)."""
  if video.position == target:
    return
  if video.seekable and (target < video.position or target - video.position > SEEK_MIN_GAP):
    if _seek(video, target):
      return
  if target < video.position:
    video.capture.release()
    video.capture, video.position = _open_capture(video.path), 0
  while video.position < target:
    if not video.capture.grab():
      _close_video(video.path)
      raise DataError(video.path, f"truncated or corrupt video: frame {video.position} cannot be decoded "
                                  f"(frame {target} requested)")
    video.position += 1


def read_video_frames(path, indices: Iterable[int]) -> np.ndarray:
  """uint8 [N, H, W, 3] RGB frames at the given (non-negative) indices: exact frames, each decoded once.

  Captures stay open per thread (a few videos at a time). A read seeks to its first frame where the container
  seeks exactly (checked on every seek: see `_seek`), so it decodes from the keyframe before that frame, not from
  the start of the video; where it does not, it decodes from where the previous read stopped, or from the start.
  """
  indices = [int(i) for i in indices]
  if not indices:
    raise ValueError("no frame indices given")
  if min(indices) < 0:
    raise ValueError(f"negative frame index in {indices}")
  path = os.fspath(path)
  video = _open_video(path)
  frames = {}
  for index in sorted(set(indices)):
    _position_at(video, index)
    if not video.capture.grab():
      _close_video(path)
      raise DataError(path, f"truncated or corrupt video: frame {index} cannot be decoded "
                            f"(frames up to {max(indices)} requested)")
    ok, frame = video.capture.retrieve()
    if not ok or frame is None:
      _close_video(path)
      raise DataError(path, f"frame {index} cannot be decoded")
    frames[index] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    video.position = index + 1
  return np.stack([frames[i] for i in indices])


def read_mask_video_frames(path, indices: Iterable[int], threshold: int = 127) -> np.ndarray:
  """uint8 {0, 1} [N, H, W] masks from a mask video (e.g. FF++'s): channel mean > threshold."""
  frames = read_video_frames(path, indices)
  return (frames.astype(np.float32).mean(axis=-1) > threshold).astype(np.uint8)
