"""FaceForensics++ in its official layout: face crops of sampled frames, real and fake, with pixel masks.

Layout (as the official download script writes it, spec msccnet_delocate.md §3):
  <root>/original_sequences/youtube/<compression>/videos/<id>.mp4
  <root>/manipulated_sequences/<Method>/<compression>/videos/<target>_<source>.mp4
  <root>/manipulated_sequences/<Method>/masks/videos/<target>_<source>.mp4     (absent for FaceShifter)
  split JSON: [[a, b], ...] id pairs; the fake videos of a pair are a_b and b_a, the real ones a and b.

Per fake video, `frames_per_video` frames are sampled at floor(linspace(0, n - 1, N)) (n the number of frames
of the shorter of the fake and its real target; MSCCNet's lists use N = 20; a mask video shorter than its fake is a
DataError, not a silent cut of the frames past its end). The face is located in the **real** target video (a
pluggable `FaceBoxProvider`: scikit-image's LBP cascade with tracking and a cache by default, or precomputed
boxes), enlarged to a square of `crop_scale` (1.3, as the FF++ baselines) times its size, and the real and the
fake frames are cropped with that same box, so the crops are pixel-aligned. Fake crops get label 1 and a mask
from the method's mask video (gray > 127) or, where there is none (or `mask_source='ssim'`), MSCCNet's
SSIM-difference annotation of the fake crop against the real crop (`common.data.faces.annotation`; a frame where
it finds no contour gets an all-zero mask). A fake frame may have an empty mask (a frame the manipulation left
alone), but a fake video whose every sampled frame's mask is empty is a DataError naming the mask video (or, for
SSIM masks, the fake): it would train as fake without a fake pixel. Real crops get label 0 and an all-zero mask;
by default one real crop is listed after each fake crop (the same frame of the target video), as MSCCNet's
loader does, which balances real and fake 1:1 (`real_per_method=False` lists each real frame once instead, at
the real video's own sampled frames).

Records: {'image': uint8 [h, h, 3], 'mask': uint8 {0,1} [h, h], 'label': int, 'id': str}; the crop side varies
per video (resizing is a transform's job).

Every video is probed when the index is built (frame count; with verify='decode', every frame decoded, which
catches truncated files, and each fake video's masks checked not to be all empty), sizes of fake, real and mask
videos are compared, and faces are located, so that `on_error='skip'` decides which videos to drop before
`__len__` is known. Problems found later, when a record is read (a frame that no longer decodes, or decodes to
another size than probed, empty masks with verify='header'), raise DataError naming the video. Probes and
detections are cached as small JSON files under `cache_dir`, so a second construction over the same files is fast.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np

from common.data.faces import annotation as face_annotation
from common.data.faces import detection as face_detection  # module import: it imports readers.media
from common.data.readers.media import (VIDEO_EXTENSIONS, DataError, ErrorPolicy, VideoInfo, probe_video,
                                       read_mask_video_frames, read_video_frames)

METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")


def default_cache_dir(root: str) -> str:
  """`$JAX_FORENSICS_CACHE` (default ~/.cache/jax_forensics) / ffpp_index / <hash of the dataset root>."""
  base = os.environ.get("JAX_FORENSICS_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "jax_forensics"))
  digest = hashlib.sha1(os.path.abspath(root).encode()).hexdigest()[:12]
  return os.path.join(base, "ffpp_index", digest)


def sample_frame_indices(num_frames: int, count: int) -> list[int]:
  """floor(linspace(0, num_frames - 1, count)), without repeats (all frames when the video is shorter)."""
  return sorted(set(int(i) for i in np.floor(np.linspace(0, num_frames - 1, count))))


def video_file(folder: str, name: str) -> Optional[str]:
  """`folder/name` with the first of `VIDEO_EXTENSIONS` that exists, else None."""
  return next((p for p in (os.path.join(folder, name + e) for e in VIDEO_EXTENSIONS) if os.path.isfile(p)), None)


def read_split_pairs(path) -> list[tuple[str, str]]:
  """Official FF++ split JSON -> [(a, b), ...]."""
  try:
    with open(path) as f:
      pairs = json.load(f)
  except FileNotFoundError:
    raise DataError(path, "split file not found") from None
  except (OSError, json.JSONDecodeError) as e:
    raise DataError(path, f"cannot read split file ({e})") from None
  if not isinstance(pairs, list) or not all(
      isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(v, str) for v in p) for p in pairs):
    raise DataError(path, "split file must be a JSON list of [id, id] pairs of strings")
  if not pairs:
    raise DataError(path, "split file lists no video pairs")
  return [(a, b) for a, b in pairs]


class _Item(NamedTuple):
  video: str        # the video the crop is taken from
  frame: int
  box: tuple        # (x0, y0, x1, y1) crop box, integers
  label: int
  mask_video: Optional[str]  # fake with an official mask
  real_video: Optional[str]  # fake annotated with SSIM against this real video


class FaceForensicsReader:
  """Grain random-access source of FF++ face crops (see the module docstring).

  Args:
    root: dataset root (holding original_sequences/ and manipulated_sequences/).
    split: 'train' | 'val' | 'test', read from `split_file`; splits joined by '+' (e.g. 'train+val') read
      the pairs of each default split file.
    split_file: the official split JSON; default `<root>/splits/<split>.json` (relative paths are taken
      against `root`).
    methods: manipulation methods to include.
    compression: 'raw' | 'c23' | 'c40'.
    frames_per_video: frames sampled per fake video.
    crop_scale: face box enlargement (square crop).
    face_boxes: a `FaceBoxProvider`; default `CascadeFaceBoxes` caching under `cache_dir`.
    mask_source: 'auto' (mask videos where the method has them, else SSIM), 'official' (mask videos required),
      'ssim' (always MSCCNet's SSIM annotation).
    include_real: list real crops too.
    real_per_method: one real crop after each fake crop (MSCCNet) rather than each real frame once.
    verify: 'decode' (decode every frame of every video when indexing) or 'header' (trust frame counts).
    cache_dir: folder for probe and detection caches (default `default_cache_dir(root)`).
    on_error: 'raise' on the first bad video, or 'skip' bad videos and record them in `skipped`.
  """

  def __init__(self, root: str, split: str = "train", *, split_file: Optional[str] = None,
               methods: Sequence[str] = METHODS, compression: str = "c23", frames_per_video: int = 20,
               crop_scale: float = 1.3, face_boxes: Optional["face_detection.FaceBoxProvider"] = None,
               mask_source: str = "auto", include_real: bool = True, real_per_method: bool = True,
               verify: str = "decode", cache_dir: Optional[str] = None, on_error: str = "raise"):
    if mask_source not in ("auto", "official", "ssim"):
      raise ValueError(f"mask_source must be 'auto', 'official' or 'ssim', got {mask_source!r}")
    self.root = os.fspath(root)
    self.split = split
    if split_file is not None and "+" in split:
      raise ValueError(f"split {split!r} joins several splits: it reads their default files, not split_file")
    names = [split_file] if split_file is not None else [os.path.join("splits", f"{s}.json") for s in split.split("+")]
    self.split_files = [os.path.join(self.root, name) for name in names]
    self.methods = tuple(methods)
    self.compression = compression
    self.frames_per_video = frames_per_video
    self.crop_scale = crop_scale
    self.mask_source = mask_source
    self.verify = verify
    self.cache_dir = os.fspath(cache_dir) if cache_dir is not None else default_cache_dir(self.root)
    self.face_boxes = face_boxes if face_boxes is not None else face_detection.CascadeFaceBoxes(
        cache_dir=os.path.join(self.cache_dir, "faces"))
    self._policy = ErrorPolicy(on_error)
    self._probes: dict[str, VideoInfo] = {}
    self._fakes: dict[str, list[_Item]] = {}  # fake video -> its items
    self._has_mask: set[str] = set()  # fake videos seen with a non-empty mask
    self._items = self._build_index(include_real, real_per_method)
    self._policy.report(self)

  @property
  def skipped(self) -> list[tuple[str, str]]:
    """(path, problem) of every video dropped with on_error='skip'."""
    return self._policy.skipped

  # ----------------------------------------------------------------------------------------------- index
  def _folder(self, *parts) -> str:
    folder = os.path.join(self.root, *parts)
    if not os.path.isdir(folder):
      raise DataError(folder, "missing folder (is the FF++ root / compression / method right?)")
    return folder

  def _video_path(self, folder: str, name: str) -> str:
    path = video_file(folder, name)
    if path is not None:
      return path
    raise DataError(os.path.join(folder, name + ".mp4"),
                    f"the split {' + '.join(map(os.path.basename, self.split_files))} names video {name!r} "
                    "but it is missing")

  def _probe(self, path: str) -> VideoInfo:
    if path in self._probes:
      return self._probes[path]
    rel = os.path.relpath(path, self.root)
    cache = os.path.join(self.cache_dir, "video_info", re.sub(r"[^A-Za-z0-9_.-]", "_", rel) + ".json")
    stat = os.stat(path)
    key = {"size": stat.st_size, "mtime": stat.st_mtime, "verify": self.verify}
    info = None
    if os.path.exists(cache):
      with open(cache) as f:
        cached = json.load(f)
      if all(cached.get(k) == v for k, v in key.items()):
        info = VideoInfo(*cached["info"])
    if info is None:
      info = probe_video(path, self.verify)
      os.makedirs(os.path.dirname(cache), exist_ok=True)
      tmp = f"{cache}.{os.getpid()}.tmp"
      with open(tmp, "w") as f:
        json.dump({**key, "info": list(info)}, f)
      os.replace(tmp, cache)
    self._probes[path] = info
    return info

  def _crop_boxes(self, real: str, indices: list[int]) -> dict[int, tuple]:
    info = self._probe(real)
    video_id = os.path.splitext(os.path.basename(real))[0]  # e.g. '000', the key of precomputed boxes
    boxes = self.face_boxes.boxes(real, indices, video_id)
    return {i: face_detection.enlarge_box(boxes[i], self.crop_scale, info.height, info.width) for i in indices}

  def _build_index(self, include_real: bool, real_per_method: bool) -> list[_Item]:
    pairs = [pair for path in self.split_files for pair in read_split_pairs(path)]
    real_folder = self._folder("original_sequences", "youtube", self.compression, "videos")
    fake_folders = {m: self._folder("manipulated_sequences", m, self.compression, "videos") for m in self.methods}
    fakes = [(t, s) for a, b in pairs for t, s in ((a, b), (b, a))]
    items: list[_Item] = []
    box_memo: dict[tuple, dict[int, tuple]] = {}
    bad_reals: dict[str, DataError] = {}

    def real_boxes(target: str, indices: list[int]):
      if target in bad_reals:
        raise bad_reals[target]
      try:
        real = self._video_path(real_folder, target)
        key = (real, tuple(indices))
        if key not in box_memo:
          box_memo[key] = self._crop_boxes(real, indices)
      except DataError as e:
        bad_reals[target] = e
        raise
      return real, box_memo[key]

    for method in self.methods:
      mask_folder = os.path.join(self.root, "manipulated_sequences", method, "masks", "videos")
      for target, source in fakes:
        try:
          fake = self._video_path(fake_folders[method], f"{target}_{source}")
          fake_info = self._probe(fake)
          real = self._video_path(real_folder, target)
          real_info = self._probe(real)
          if fake_info[1:] != real_info[1:]:
            raise DataError(fake, f"fake video is {fake_info.height}x{fake_info.width} but its real video "
                                  f"{real} is {real_info.height}x{real_info.width}")
          num_frames = min(fake_info.num_frames, real_info.num_frames)
          mask_video = None
          if self.mask_source != "ssim":
            try:
              mask_video = self._video_path(mask_folder, f"{target}_{source}")
            except DataError:
              if self.mask_source == "official":
                raise DataError(os.path.join(mask_folder, f"{target}_{source}.mp4"),
                                f"missing mask video of {fake}") from None
            if mask_video is not None:
              mask_info = self._probe(mask_video)
              if mask_info[1:] != fake_info[1:]:
                raise DataError(mask_video, f"mask video is {mask_info.height}x{mask_info.width} but its fake "
                                            f"video {fake} is {fake_info.height}x{fake_info.width}")
              if mask_info.num_frames < fake_info.num_frames:
                raise DataError(mask_video, f"mask video has {mask_info.num_frames} frames but its fake video "
                                            f"{fake} has {fake_info.num_frames}")
          indices = sample_frame_indices(num_frames, self.frames_per_video)
          _, boxes = real_boxes(target, indices)
          fake_items = [_Item(fake, i, boxes[i], 1, mask_video, None if mask_video else real) for i in indices]
          if self.verify == "decode":
            self._check_has_mask(fake_items)
        except DataError as e:
          self._policy.handle(e)
          continue
        self._fakes[fake] = fake_items
        for item in fake_items:
          items.append(item)
          if include_real and real_per_method:
            items.append(_Item(real, item.frame, item.box, 0, None, None))

    if include_real and not real_per_method:
      for target in sorted({t for t, _ in fakes}):
        try:
          real = self._video_path(real_folder, target)
          indices = sample_frame_indices(self._probe(real).num_frames, self.frames_per_video)
          _, boxes = real_boxes(target, indices)
        except DataError as e:
          if target not in bad_reals:
            self._policy.handle(e)
          continue
        items.extend(_Item(real, i, boxes[i], 0, None, None) for i in indices)
    if not items:
      raise DataError(" + ".join(self.split_files), "no usable video in this split"
                      + (f" ({len(self.skipped)} skipped)" if self.skipped else ""))
    return items

  # ------------------------------------------------------------------------------------------ records
  def __len__(self) -> int:
    return len(self._items)

  def __repr__(self) -> str:
    return (f"FaceForensicsReader(root={self.root!r}, split={self.split!r}, methods={self.methods}, "
            f"compression={self.compression!r}, frames_per_video={self.frames_per_video}, "
            f"crop_scale={self.crop_scale}, mask_source={self.mask_source!r}, records={len(self)})")

  def item_source(self, index: int) -> tuple[str, int, tuple, int]:
    """(video path relative to root, frame, crop box (x0, y0, x1, y1), label) of record `index`, without decoding."""
    item = self._items[index]
    return os.path.relpath(item.video, self.root), item.frame, tuple(int(v) for v in item.box), item.label

  def __getitem__(self, index: int) -> dict:
    item = self._items[index]
    crop = self._crop(item.video, item)
    mask = self._mask(item, crop)
    if item.label == 1 and not mask.any() and item.video not in self._has_mask:
      self._check_has_mask(self._fakes[item.video])
    return {"image": crop, "mask": mask, "label": item.label,
            "id": f"{os.path.relpath(item.video, self.root)}#frame{item.frame}"}

  def _crop(self, path: str, item: _Item, read: Callable = read_video_frames) -> np.ndarray:
    """`read(path, [frame])`'s frame of `item` (checked to have the size the index probed), cropped to its box."""
    frame = read(path, [item.frame])[0]
    info = self._probes[path]
    if frame.shape[:2] != (info.height, info.width):
      raise DataError(path, f"frame {item.frame} decodes to {frame.shape[0]}x{frame.shape[1]} but the video was "
                            f"indexed as {info.height}x{info.width}")
    x0, y0, x1, y1 = item.box
    return np.ascontiguousarray(frame[y0:y1, x0:x1])

  def _mask(self, item: _Item, crop: Optional[np.ndarray] = None) -> np.ndarray:
    """uint8 {0,1} [h, h] mask of `item`, whose image crop is `crop` (read here when needed and not given)."""
    if item.mask_video is not None:
      return self._crop(item.mask_video, item, read_mask_video_frames)
    if item.real_video is not None:
      crop = self._crop(item.video, item) if crop is None else crop
      return face_annotation.ssim_difference_mask(self._crop(item.real_video, item), crop)
    x0, y0, x1, y1 = item.box
    return np.zeros((y1 - y0, x1 - x0), np.uint8)

  def _check_has_mask(self, fakes: list[_Item]) -> None:
    """DataError naming the mask video (else the fake) when the mask of every item of one fake video is empty."""
    if not any(self._mask(item).any() for item in fakes):
      source = fakes[0].mask_video or fakes[0].video
      how = "" if fakes[0].mask_video else f" (SSIM annotation against {fakes[0].real_video})"
      raise DataError(source, f"every mask of the {len(fakes)} sampled frames of this fake video (label 1) is "
                              f"empty (all zero){how}")
    self._has_mask.add(fakes[0].video)
