"""Raw frames -> model inputs -> maps at each frame's own resolution, for the three kinds of detector input.

* `image`: one frame is one input. By `resolution` (default: the manifest's `input.native`): "resize" resamples it
  to the trained size (Pillow bilinear, as training) and the map back (bilinear); "tiles" runs overlapping tiles of
  the trained size and averages their maps; "whole" runs the whole frame, reflect-padded up to the export's
  `multiple` (symbolic exports only).
* `clip`: T consecutive frames predict the middle one. A window slides one frame at a time; near the ends it is
  padded by repeating the first / last frame, so every frame gets a map. Tiles or resizing as for images.
* `face`: the face is found and cropped as training's crops (`common.data.faces.crops`), resized to the trained
  size, and the crop's map pasted back into the frame (0 outside the box).

Each yields one `FrameMap` per input frame. Batches are padded to `batch_size` so one compiled shape serves all.
"""
from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator
import dataclasses
import math

import cv2
import numpy as np

from common.data import transforms
from common.data.faces import crops as face_crops
from common.predict.media import Media
from common.train.serving import Served

RESOLUTIONS = ("auto", "tiles", "whole", "resize")


@dataclasses.dataclass
class FrameMap:
  """One frame's prediction: `probs` [H, W] at the frame's resolution; `score` the model's frame score, if it
  has one; `box` the face crop box; `outputs` the model's other outputs for this frame (e.g. a recovery)."""
  frame: np.ndarray
  probs: np.ndarray
  score: float | None = None
  box: tuple[int, int, int, int] | None = None
  crop: np.ndarray | None = None
  outputs: dict = dataclasses.field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ tiles
def tile_origins(length: int, tile: int) -> list[int]:
  """Start offsets of tiles of `tile` covering [0, length) with at least half a tile of overlap; [0] when the
  input is no longer than a tile (it is padded)."""
  if length <= tile:
    return [0]
  count = math.ceil((length - tile) / (tile / 2)) + 1
  return sorted({round(i * (length - tile) / (count - 1)) for i in range(count)})


def pad_to(x: np.ndarray, height: int, width: int) -> np.ndarray:
  """Reflect-pads the spatial axes (-3, -2) of `x` [..., H, W, C] up to at least (height, width)."""
  h, w = x.shape[-3:-1]
  if h >= height and w >= width:
    return x
  pads = [(0, 0)] * (x.ndim - 3) + [(0, max(0, height - h)), (0, max(0, width - w)), (0, 0)]
  return np.pad(x, pads, mode="reflect" if min(h, w) > 1 else "edge")


def cut_tiles(x: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, list[tuple[int, int]], tuple[int, int]]:
  """Tiles [N, ..., th, tw, C] of `x` [..., H, W, C] (padded up to one tile where smaller), their (y, x) origins
  and the padded (H, W)."""
  th, tw = size
  x = pad_to(x, th, tw)
  h, w = x.shape[-3:-1]
  origins = [(y, x0) for y in tile_origins(h, th) for x0 in tile_origins(w, tw)]
  return np.stack([x[..., y:y + th, x0:x0 + tw, :] for y, x0 in origins]), origins, (h, w)


def stitch(tiles: np.ndarray, origins: list[tuple[int, int]], padded: tuple[int, int],
           out: tuple[int, int]) -> np.ndarray:
  """The mean of overlapping tile maps `tiles` [N, th, tw] on the padded grid, cropped to `out` (H, W)."""
  total, count = np.zeros(padded, np.float64), np.zeros(padded, np.float64)
  th, tw = tiles.shape[1:3]
  for tile, (y, x) in zip(tiles, origins):
    total[y:y + th, x:x + tw] += tile
    count[y:y + th, x:x + tw] += 1
  return (total / count)[:out[0], :out[1]].astype(np.float32)


# ------------------------------------------------------------------------------------------------ batching
def run_batched(served: Served, name: str, items: Iterable[np.ndarray], batch_size: int) -> Iterator[dict]:
  """Runs `served` over uint8 arrays of one shape, `batch_size` at a time (the last batch padded by repeating
  its last item); yields each item's outputs {name: array}."""
  items = iter(items)
  while batch := [x for _, x in zip(range(batch_size), items)]:
    x = np.stack(batch + [batch[-1]] * (batch_size - len(batch)))
    out = {k: np.asarray(v) for k, v in served.fn({name: x}).items()}
    for i in range(len(batch)):
      yield {k: v[i] for k, v in out.items()}


def _resize_map(probs: np.ndarray, height: int, width: int) -> np.ndarray:
  probs = np.asarray(probs, np.float32)
  if probs.shape == (height, width):
    return probs
  return cv2.resize(probs, (width, height), interpolation=cv2.INTER_LINEAR)


def _mode(served: Served, resolution: str) -> str:
  """'tiles', 'whole' or 'resize': `resolution`, or the model's own choice (`input.native`) for 'auto'."""
  if resolution not in RESOLUTIONS:
    raise ValueError(f"--resolution={resolution!r}: expected one of {RESOLUTIONS}")
  mode = served.input.native if resolution == "auto" else resolution
  if mode == "whole" and not served.input.symbolic:
    raise ValueError(f"--resolution=whole: {served.source} is exported at a fixed size ({served.input.fixed_reason})")
  return mode


def _input_name(served: Served) -> str:
  (name,) = served.inputs
  return name


# ------------------------------------------------------------------------------------------------ adapters
def spatial_maps(served: Served, units: Iterable, frame_of, resolution: str = "auto", batch_size: int = 8
                 ) -> Iterator[FrameMap]:
  """Shared by images and clips: `units` are uint8 arrays [..., H, W, 3] (an image, or a clip of frames),
  `frame_of(unit)` the frame the map belongs to."""
  name, spec = _input_name(served), served.input
  mode = _mode(served, resolution)
  th, tw = spec.size
  units = iter(units)
  while chunk := [u for _, u in zip(range(batch_size), units)]:  # resized inputs and tiles batch across units
    frames = [frame_of(u) for u in chunk]
    if mode == "resize":
      resized = [transforms.resize_image(u, th, tw) if u.ndim == 3 else
                 np.stack([transforms.resize_image(f, th, tw) for f in u]) for u in chunk]
      for frame, out in zip(frames, run_batched(served, name, resized, batch_size)):
        yield FrameMap(frame, _resize_map(out["probs"], *frame.shape[:2]), _score(out))
    elif mode == "tiles":
      cuts = [cut_tiles(u, (th, tw)) for u in chunk]
      outs = run_batched(served, name, (tile for tiles, _, _ in cuts for tile in tiles), batch_size)
      for frame, (tiles, origins, padded) in zip(frames, cuts):
        probs = np.stack([next(outs)["probs"] for _ in tiles])
        yield FrameMap(frame, stitch(probs, origins, padded, frame.shape[:2]))
    else:  # whole: one input at its own size (padded up to the export's multiple)
      m = spec.multiple
      for unit, frame in zip(chunk, frames):
        h, w = frame.shape[:2]
        (out,) = run_batched(served, name, [pad_to(unit, math.ceil(h / m) * m, math.ceil(w / m) * m)], 1)
        yield FrameMap(frame, np.asarray(out["probs"], np.float32)[:h, :w], _score(out))


def _score(out: dict) -> float | None:
  return float(out["score"]) if "score" in out else None


def image_maps(served: Served, media: Media, *, resolution: str = "auto", batch_size: int = 8,
               **_) -> Iterator[FrameMap]:
  yield from spatial_maps(served, media.frames, lambda frame: frame, resolution, batch_size)


def sliding_windows(items: Iterable, length: int) -> Iterator[list]:
  """One window of `length` consecutive items per item, that item at index `length // 2`; the ends are
  padded by repeating the first and last items. Streams: holds `length` items at a time."""
  before = length // 2
  after = length - 1 - before
  window: collections.deque = collections.deque(maxlen=length)
  last = None
  for item in items:
    if last is None:
      window.extend([item] * before)
    window.append(item)
    last = item
    if len(window) == length:
      yield list(window)
  for _ in range(after if last is not None else 0):
    window.append(last)
    if len(window) == length:
      yield list(window)


def clip_maps(served: Served, media: Media, *, resolution: str = "auto", batch_size: int = 8,
              **_) -> Iterator[FrameMap]:
  t = served.input.clip_length
  clips = (np.stack(window) for window in sliding_windows(media.frames, t))
  yield from spatial_maps(served, clips, lambda clip: clip[t // 2], resolution, batch_size)


def face_maps(served: Served, media: Media, *, face: str = "detect", crop_scale: float = 0.0, detect_every: int = 5,
              batch_size: int = 8, **_) -> Iterator[FrameMap]:
  """`crop_scale` 0: the model's own (`input.face_crop_scale`)."""
  frames = list(media.frames)
  height, width = frames[0].shape[:2]
  boxes = face_crops.face_boxes(frames, face, crop_scale or served.input.face_crop_scale, detect_every)
  size = served.input.size[0]
  crops = [transforms.resize_image(np.ascontiguousarray(f[y0:y1, x0:x1]), size, size)
           for f, (x0, y0, x1, y1) in zip(frames, boxes)]
  for frame, box, crop, out in zip(frames, boxes, crops, run_batched(served, _input_name(served), crops, batch_size)):
    extra = {k: v for k, v in out.items() if k not in ("probs", "score")}
    yield FrameMap(frame, face_crops.paste(out["probs"], box, height, width), _score(out), box, crop, extra)


ADAPTERS = {"image": image_maps, "clip": clip_maps, "face": face_maps}
