"""Video inpainting localisation sets in the DAVIS / YouTube-VOS layout: clips of inpainted frames with masks.

Layout (sub-folder names configurable; DAVIS has `JPEGImages/480p/<video>` and `Annotations/480p/<video>`):
  <root>/JPEGImages/<video>/<frame>.jpg|png            pristine frames
  <root>/Annotations/<video>/<frame>.png                per-frame object masks (`media.read_mask`'s rule: 0/255
                                                        grey, DAVIS palette PNG, 0/1 or id maps, ...)
  <root>/Inpainted/<method>/<video>/<frame>.png|jpg     the frames with the masked objects inpainted by <method>
  <root>/ImageSets/{train,val,test}.txt                 one video name per line

Each record is a clip of `clip_length` frames, `frame_step` apart, starting every `clip_stride` frames of a video
(ViLocal: 5 consecutive frames predicting the mask of the middle one). Inpainted clips have label 1 and the mask
of the target (middle) frame, or the masks of all frames with `target='all'`; pristine clips (a switch) have
label 0 and all-zero masks. Frames of a video are ordered by file name; inpainted frames are paired with masks by
file stem. An inpainted clip whose every mask frame (of all T frames, whatever `target`) is empty is a DataError
naming its middle mask: an object may leave some frames of a clip, but a clip without any is mislabelled or its
masks are misread. Frames (and masks) of one video must share one size (DataError naming the odd frame).

With `ratio_bin`, only the inpainted videos whose mean mask ratio (the share of object pixels, averaged over
every mask frame of the video) falls in that ViLocal bin are kept: 'small' (< 0.05), 'medium' (< 0.25) or
'large' (the rest), the rule of the official `split_files.py` that splits MOSE100 per inpainter.

Records: {'frames': uint8 [T, H, W, 3], 'mask': uint8 {0,1} [H, W] (or [T, H, W]), 'label': int, 'id': str}.

The index is built and checked in `__init__` (missing or empty folders, frames without masks, mask sizes
differing from their frames, videos too short for a clip), so `on_error='skip'` drops bad videos before
`__len__` is fixed; with verify='decode' every file is fully decoded at that point too (and clips without any
mask are found then). Problems found later, when a record is read, raise DataError naming the file.
"""
from __future__ import annotations

import os
from typing import NamedTuple, Optional, Sequence

import numpy as np

from common import metrics
from common.data.readers.media import (IMAGE_EXTENSIONS, DataError, ErrorPolicy, check_same_size, image_size,
                                       list_files, read_image, read_mask)


def read_video_list(path) -> list[str]:
  """Video names from a split file (one per line; blank lines and '#' comments ignored)."""
  try:
    with open(path) as f:
      names = [line.strip() for line in f]
  except FileNotFoundError:
    raise DataError(path, "split file not found") from None
  except OSError as e:
    raise DataError(path, f"cannot read split file ({e})") from None
  names = [n for n in names if n and not n.startswith("#")]
  if not names:
    raise DataError(path, "split file lists no video")
  return names


class _Video(NamedTuple):
  frames: tuple[str, ...]
  masks: Optional[tuple[str, ...]]  # None for pristine videos (all-zero masks)
  label: int
  name: str  # e.g. "Inpainted/VI/bear", for ids


class VideoInpaintingReader:
  """Grain random-access source of inpainted (and optionally pristine) clips (see the module docstring).

  Args:
    root: dataset root.
    split: split name, read from `split_file.format(split=split)` unless `videos` is given.
    videos: explicit video names (overrides the split file).
    methods: inpainting methods (sub-folders of `inpainted_dir`); None: all of them; () for pristine only.
    clip_length: frames per clip (T).
    clip_stride: distance between the first frames of consecutive clips.
    frame_step: distance between consecutive frames within a clip.
    target: 'middle' (mask of frame T // 2, [H, W]) or 'all' (masks of all frames, [T, H, W]).
    include_pristine: also list clips of the pristine frames (label 0).
    ratio_bin: 'small' | 'medium' | 'large': keep the inpainted videos of that mean mask ratio; None: all.
    frames_dir, masks_dir, inpainted_dir: sub-folders of root.
    split_file: split file path relative to root, with a `{split}` field.
    verify: 'header' (check sizes from file headers), 'decode' (decode every file) or 'none'.
    on_error: 'raise' on the first bad video, or 'skip' bad videos and record them in `skipped`.
  """

  def __init__(self, root: str, split: str = "train", *, videos: Optional[Sequence[str]] = None,
               methods: Optional[Sequence[str]] = None, clip_length: int = 5, clip_stride: int = 1,
               frame_step: int = 1, target: str = "middle", include_pristine: bool = False,
               frames_dir: str = "JPEGImages", masks_dir: str = "Annotations", inpainted_dir: str = "Inpainted",
               split_file: str = os.path.join("ImageSets", "{split}.txt"), verify: str = "header",
               ratio_bin: Optional[str] = None, on_error: str = "raise"):
    if target not in ("middle", "all"):
      raise ValueError(f"target must be 'middle' or 'all', got {target!r}")
    if verify not in ("none", "header", "decode"):
      raise ValueError(f"verify must be 'none', 'header' or 'decode', got {verify!r}")
    if clip_length < 1 or clip_stride < 1 or frame_step < 1:
      raise ValueError("clip_length, clip_stride and frame_step must be >= 1")
    if ratio_bin not in (None, *metrics.RATIO_BINS):
      raise ValueError(f"ratio_bin must be None or one of {metrics.RATIO_BINS}, got {ratio_bin!r}")
    self.ratio_bin = ratio_bin
    self.root = os.fspath(root)
    self.split = split
    self.clip_length = clip_length
    self.clip_stride = clip_stride
    self.frame_step = frame_step
    self.target = target
    self.frames_dir, self.masks_dir, self.inpainted_dir = frames_dir, masks_dir, inpainted_dir
    self.verify = verify
    self._policy = ErrorPolicy(on_error)
    if not os.path.isdir(self.root):
      raise DataError(self.root, "dataset root not found")
    if videos is None:
      videos = read_video_list(os.path.join(self.root, split_file.format(split=split)))
    self.video_names = tuple(videos)
    if methods is None:
      inpainted = os.path.join(self.root, inpainted_dir)
      if not os.path.isdir(inpainted):
        raise DataError(inpainted, "missing inpainted-frames folder")
      methods = sorted(d for d in os.listdir(inpainted) if os.path.isdir(os.path.join(inpainted, d)))
      if not methods:
        raise DataError(inpainted, "empty folder: no inpainting method sub-folder")
    self.methods = tuple(methods)
    self._videos: list[_Video] = []
    self._clips: list[tuple[int, int]] = []  # (video index, first frame)
    for method in self.methods:
      for name in self.video_names:
        self._add(lambda: self._inpainted_video(method, name))
    if include_pristine:
      for name in self.video_names:
        self._add(lambda: self._pristine_video(name))
    if not self._clips:
      raise DataError(self.root, f"no clip in split {split!r}"
                      + (f" with mean mask ratio in bin {ratio_bin!r}" if ratio_bin else "")
                      + (f" ({len(self.skipped)} videos skipped)" if self.skipped else ""))
    self._policy.report(self)

  @property
  def skipped(self) -> list[tuple[str, str]]:
    """(path, problem) of every video dropped with on_error='skip'."""
    return self._policy.skipped

  # ----------------------------------------------------------------------------------------------- index
  @property
  def _span(self) -> int:
    return (self.clip_length - 1) * self.frame_step + 1

  def _starts(self, video: _Video) -> range:
    return range(0, len(video.frames) - self._span + 1, self.clip_stride)

  def _positions(self, start: int) -> range:
    return range(start, start + self._span, self.frame_step)

  def _add(self, make_video) -> None:
    try:
      video = make_video()
      if len(video.frames) < self._span:
        raise DataError(os.path.dirname(video.frames[0]),
                        f"only {len(video.frames)} frames, a clip spans {self._span}")
      self._check(video)
      if self.ratio_bin and video.masks is not None and self._ratio_bin(video) != self.ratio_bin:
        return
    except DataError as e:
      self._policy.handle(e)
      return
    index = len(self._videos)
    self._videos.append(video)
    self._clips.extend((index, start) for start in self._starts(video))

  @staticmethod
  def _ratio_bin(video: _Video) -> str:
    """The ViLocal bin of the video's mean mask ratio over all of its mask frames."""
    ratio = float(np.mean([read_mask(m).mean() for m in video.masks]))
    return metrics.RATIO_BINS[int(metrics.mask_ratio_bin(ratio))]

  def _frame_folder(self, folder: str, video: str) -> tuple[str, list[str]]:
    if not os.path.isdir(folder):
      raise DataError(folder, f"the split names video {video!r} but its folder is missing")
    return folder, list_files(folder, IMAGE_EXTENSIONS, what="frames")

  def _inpainted_video(self, method: str, name: str) -> _Video:
    folder, frames = self._frame_folder(os.path.join(self.root, self.inpainted_dir, method, name), name)
    mask_folder = os.path.join(self.root, self.masks_dir, name)
    if not os.path.isdir(mask_folder):
      raise DataError(mask_folder, f"missing mask folder of video {name!r}")
    by_stem = {}
    for m in list_files(mask_folder, IMAGE_EXTENSIONS, what="mask"):
      by_stem.setdefault(os.path.splitext(m)[0], m)
    masks = []
    for frame in frames:
      stem = os.path.splitext(frame)[0]
      if stem not in by_stem:
        raise DataError(os.path.join(mask_folder, stem + ".png"),
                        f"missing mask of frame {os.path.join(folder, frame)}")
      masks.append(os.path.join(mask_folder, by_stem[stem]))
    return _Video(tuple(os.path.join(folder, f) for f in frames), tuple(masks), 1,
                  os.path.join(self.inpainted_dir, method, name))

  def _pristine_video(self, name: str) -> _Video:
    folder, frames = self._frame_folder(os.path.join(self.root, self.frames_dir, name), name)
    return _Video(tuple(os.path.join(folder, f) for f in frames), None, 0, os.path.join(self.frames_dir, name))

  def _check(self, video: _Video) -> None:
    if self.verify == "none":
      return
    decode = self.verify == "decode"
    first, has_object = None, []
    for k, frame in enumerate(video.frames):
      hw = read_image(frame).shape[:2] if decode else image_size(frame)
      first = hw if k == 0 else first
      _check_frame_size(video, k, hw, 0, first)
      if video.masks is not None:
        mask = read_mask(video.masks[k]) if decode else None
        check_same_size(frame, video.masks[k], hw, mask.shape if decode else image_size(video.masks[k]))
        has_object.append(decode and mask.any())
    if decode and video.masks is not None:
      for start in self._starts(video):
        if not any(has_object[p] for p in self._positions(start)):
          raise self._empty_clip(video, start)

  # ------------------------------------------------------------------------------------------ records
  def __len__(self) -> int:
    return len(self._clips)

  def __repr__(self) -> str:
    return (f"VideoInpaintingReader(root={self.root!r}, split={self.split!r}, methods={self.methods}, "
            f"clip_length={self.clip_length}, clip_stride={self.clip_stride}, frame_step={self.frame_step}, "
            f"target={self.target!r}, videos={len(self._videos)}, clips={len(self)})")

  def clip_source(self, index: int) -> tuple[str, int, tuple[str, ...]]:
    """(video name, label, frame file names) of clip `index`, without decoding."""
    video_index, start = self._clips[index]
    video = self._videos[video_index]
    return video.name, video.label, tuple(os.path.basename(video.frames[p]) for p in self._positions(start))

  def __getitem__(self, index: int) -> dict:
    video_index, start = self._clips[index]
    video = self._videos[video_index]
    positions = self._positions(start)
    frames = [read_image(video.frames[p]) for p in positions]
    for p, frame in zip(positions, frames):
      _check_frame_size(video, p, frame.shape[:2], positions[0], frames[0].shape[:2])
    frames = np.stack(frames)
    height, width = frames.shape[1:3]
    mask_positions = list(positions) if self.target == "all" else [positions[self.clip_length // 2]]
    if video.masks is None:
      masks = np.zeros((len(mask_positions), height, width), np.uint8)
    else:
      masks = np.stack([self._mask(video, p, (height, width)) for p in mask_positions])
      if not masks.any() and not any(self._mask(video, p, (height, width)).any()
                                     for p in positions if p not in mask_positions):
        raise self._empty_clip(video, start)
    names = [os.path.basename(video.frames[p]) for p in (positions[0], positions[-1])]
    return {"frames": frames, "mask": masks if self.target == "all" else masks[0], "label": video.label,
            "id": f"{video.name}/{names[0]}..{names[1]}"}

  def _mask(self, video: _Video, position: int, frame_hw: tuple[int, int]) -> np.ndarray:
    mask = read_mask(video.masks[position])
    check_same_size(video.frames[position], video.masks[position], frame_hw, mask.shape)
    return mask

  def _empty_clip(self, video: _Video, start: int) -> DataError:
    positions = self._positions(start)
    names = [os.path.basename(video.masks[p]) for p in (positions[0], positions[-1])]
    return DataError(video.masks[positions[len(positions) // 2]],
                     f"every mask of the inpainted clip {names[0]}..{names[1]} (label 1) is empty (all zero)")


def _check_frame_size(video: _Video, k: int, hw: tuple[int, int], first: int, first_hw: tuple[int, int]) -> None:
  """DataError naming frame k of `video` when its (height, width) `hw` differs from frame `first`'s."""
  if tuple(hw) != tuple(first_hw):
    raise DataError(video.frames[k], f"frame is {hw[0]}x{hw[1]} but frame {video.frames[first]} of the same video "
                                     f"is {first_hw[0]}x{first_hw[1]} (height x width)")
