"""Localise inpainting in a video with an exported (or trained) ViLocal model.

  python -m vilocal_jax.predict --export=EXPORT_DIR --input=VIDEO_OR_FRAME_FOLDER --out=DIR
  python -m vilocal_jax.predict --workdir=RUN_DIR --input=... --out=DIR      (a run's latest checkpoint)

Input: a video file (anything OpenCV reads) or a folder of frame images (`media.read_image`, EXIF orientation
applied, as in training), taken in file-name order with digit runs compared as numbers (`f2.png` before
`f10.png`; the official `inference.py` does not sort at all); the frames of a folder must share one size.
Each frame is resized to the model's input size (the export manifest's `frames: [T, H, W, 3]`; Pillow
bilinear, as the official ToTensor pipeline) and scaled to [0, 1]. ViLocal predicts the middle frame of a
T-frame clip, so a window of T frames slides over the video, one step per frame: frame i is predicted from
frames i - T//2 ... i + (T - 1 - T//2) (i-2 ... i+2 for T = 5). Near the ends the window is padded by
repeating the first / last frame, so every frame gets a mask (the official evaluation instead never scores
the first and last T//2 frames).

Output, in DIR, at each input frame's own resolution (the probability map is resized bilinearly):
  masks/00000.png     0/255 mask: probability > --threshold (default 0.5, the official protocol's);
  overlays/00000.png  the probability as a JET heatmap blended over the frame;
  overlay.mp4         the overlays as a video (mp4v, the input's frame rate; 25 fps for frame folders).
"""
from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
import dataclasses
import itertools
import logging
import os
import re

import cv2
import numpy as np

from common import visualize
from common.data import transforms
from common.data.readers.media import IMAGE_EXTENSIONS, DataError, read_image
from common.train import serving

FOLDER_FPS = 25.0


@dataclasses.dataclass(frozen=True)
class Predictor:
  """`fn({"frames": float32 [B, T, H, W, 3] in [0, 1]}) -> {"probs": [B, H, W]}` and its input size."""
  fn: Callable[[dict], dict]
  clip_length: int
  height: int
  width: int


def _predictor(served: serving.Served) -> Predictor:
  spec = served.inputs.get("frames")
  if spec is None or len(spec["shape"]) != 4 or spec["shape"][-1] != 3 or "probs" not in served.outputs:
    raise ValueError(f"{served.source}: not a ViLocal model (expected inputs frames [T, H, W, 3] and output "
                     f"probs; got inputs {served.inputs}, outputs {list(served.outputs)})")
  t, h, w, _ = (int(n) for n in spec["shape"])
  return Predictor(served.fn, t, h, w)


def load(export_dir: str = "", workdir: str = "", step: int | None = None) -> Predictor:
  """The predictor of an export (needs only jax) or of a run's checkpoint (default: the latest)."""
  return _predictor(serving.load(export_dir, workdir, step))


def _natural_key(name: str) -> list:
  return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _folder_frames(folder: str, names: list[str]) -> Iterator[np.ndarray]:
  size = None
  for name in names:
    path = os.path.join(folder, name)
    try:
      frame = read_image(path)
    except DataError as e:
      raise DataError(path, f"cannot read the frame image: {e.problem}") from None
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


def open_frames(path: str) -> tuple[Iterator[np.ndarray], float]:
  """(uint8 RGB frames [H, W, 3] in order, frames per second) of a video file or a folder of images.

  Frames are read lazily; a missing path, an unreadable or empty video and a folder without images raise
  here, naming the path.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such video file or frame folder")
  if os.path.isdir(path):
    names = sorted((n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS)), key=_natural_key)
    if not names:
      raise ValueError(f"{path}: the folder holds no frame images ({', '.join(IMAGE_EXTENSIONS)})")
    return _folder_frames(path, names), FOLDER_FPS
  capture = cv2.VideoCapture(path)
  ok, first = capture.read() if capture.isOpened() else (False, None)
  if not ok:
    capture.release()
    raise ValueError(f"{path}: OpenCV cannot read a frame from this file (not a video, or empty)")
  fps = capture.get(cv2.CAP_PROP_FPS)
  return _video_frames(capture, first), fps if fps > 0 else FOLDER_FPS


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


def predict_video(predictor: Predictor, path: str, out_dir: str, *, threshold: float = 0.5,
                  batch_size: int = 8, alpha: float = 0.5) -> int:
  """Writes masks/, overlays/ and overlay.mp4 for the video or frame folder `path`; returns the frame count."""
  frames, fps = open_frames(path)
  t, h, w = predictor.clip_length, predictor.height, predictor.width
  os.makedirs(out_dir, exist_ok=True)
  items = ((frame, transforms.resize_image(frame, h, w)) for frame in frames)
  windows = sliding_windows(items, t)
  video, count = None, 0
  try:
    while batch := list(itertools.islice(windows, batch_size)):
      clips = np.stack([np.stack([resized for _, resized in window]) for window in batch])
      clips = np.concatenate([clips, np.repeat(clips[-1:], batch_size - len(batch), 0)])  # one compiled shape
      probs = np.asarray(predictor.fn({"frames": clips.astype(np.float32) / 255.0})["probs"], np.float32)
      for window, prob in zip(batch, probs):
        frame = window[t // 2][0]
        prob = cv2.resize(prob, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_LINEAR)
        name = f"{count:05d}.png"
        overlay = visualize.write_mask_and_overlay(
            os.path.join(out_dir, "masks", name), os.path.join(out_dir, "overlays", name), frame, prob,
            threshold=threshold, alpha=alpha)
        overlay = cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR)
        if video is None:
          video_path = os.path.join(out_dir, "overlay.mp4")
          video = cv2.VideoWriter(video_path, cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                  (frame.shape[1], frame.shape[0]))
          if not video.isOpened():
            raise OSError(f"{video_path}: OpenCV cannot write an mp4v video")
        video.write(overlay)
        count += 1
      logging.info("%s: %d frames done", path, count)
  finally:
    if video is not None:
      video.release()
  return count


def main(argv) -> None:
  from absl import flags
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  predictor = load(f.export, f.workdir)
  count = predict_video(predictor, f.input, f.out, threshold=f.threshold, batch_size=f.batch_size,
                        alpha=f.alpha)
  print(f"{f.input}: {count} frames -> {f.out}/masks, {f.out}/overlays, {f.out}/overlay.mp4")


if __name__ == "__main__":
  from absl import flags

  from common.train import tool

  serving.define_flags()
  visualize.define_flags()
  flags.DEFINE_string("input", None, "Video file or folder of frame images.", required=True)
  flags.DEFINE_string("out", None, "Output directory.", required=True)
  flags.DEFINE_integer("batch_size", 8, "Clips per forward pass.")
  tool.run_tool(main)
