"""Grain sources over a prepared dataset (`python -m common.data.prepare`): the folder readers' records, O(1) each.

Each source lists its records from `index-<split>.json` (read once, no source file opened) in the order of the
folder reader it stands for, and reads only the units a record needs from the ArrayRecord shards:
  PreparedRecords   image_manipulation / inpainting_images: record i = unit i (ImageManipulationReader, ImageSource)
  PreparedClips     video_inpainting: a clip = its T frame units (VideoInpaintingReader, any clip length/stride)
  PreparedFaces     faceforensics: each fake crop with or without its real twin, or each real video's own crops
                    (FaceForensicsReader with methods / real_per_method / include_real)
Splits joined by '+' ('train+val') list their records as the reader does for joined split files.

Tasks switch with `config.data.format` ('folder' | 'arrayrecord') and `config.data.prepared_dir`; `dataset_dir`
refuses a prepared set of another family, or one whose preparation options differ from the config's (one error
naming the key and both values).
"""
from __future__ import annotations

import functools
import json
import os
import threading
from typing import Optional, Sequence

import numpy as np

from common.data.readers import DataError
from common.data.readers.media import ErrorPolicy

FORMATS = ("folder", "arrayrecord")
_OPEN_LOCK = threading.Lock()


@functools.lru_cache(maxsize=8)
def manifest(prepared_dir: str) -> dict:
  path = os.path.join(prepared_dir, "manifest.json")
  if not os.path.exists(path):
    raise DataError(path, "no prepared dataset here (missing manifest.json; run python -m common.data.prepare, or "
                          "resume it if it was interrupted)")
  with open(path) as f:
    return json.load(f)


@functools.lru_cache(maxsize=16)
def split_index(prepared_dir: str, split: str) -> dict:
  if split not in manifest(prepared_dir)["splits"]:
    raise DataError(prepared_dir, f"no split {split!r} in this prepared dataset (it has "
                                  f"{sorted(manifest(prepared_dir)['splits'])})")
  with open(os.path.join(prepared_dir, f"index-{split}.json")) as f:
    return json.load(f)


def dataset_dir(data, family: str, **expected) -> str:
  """`data.prepared_dir` once it is checked to hold `family` prepared with each option in `expected` at that value
  (`data` is a config's `data` block with `format == 'arrayrecord'`); a DataError / ValueError names the key."""
  if not data.prepared_dir:
    raise ValueError("data.prepared_dir is empty: data.format='arrayrecord' reads the --out folder of "
                     f"python -m common.data.prepare --family={family}")
  m = manifest(data.prepared_dir)
  if m["family"] != family:
    raise DataError(data.prepared_dir, f"holds a {m['family']} dataset, not {family}")
  for key, value in expected.items():
    stored = m["options"].get(key)
    if stored != (list(value) if isinstance(value, (tuple, list)) else value):
      raise DataError(data.prepared_dir, f"prepared with {key}={stored!r}, but the config asks data.{key}={value!r}: "
                                         f"prepare again with --{key}, or change data.{key}")
  return data.prepared_dir


FACE_OPTIONS = ("compression", "frames_per_video", "crop_scale", "mask_source", "face_boxes")  # data.* = prepare's


def faces_dir(data, resizes_first: bool) -> str:
  """`dataset_dir` of a faceforensics preparation, checked against the config's `FACE_OPTIONS`. Crops prepared at
  a fixed size (`face_size`) serve only a pipeline that `resizes_first` to that very `data.size`."""
  path = dataset_dir(data, "faceforensics", **{k: data[k] for k in FACE_OPTIONS})
  face_size = manifest(path)["options"].get("face_size", 0)
  if face_size and not resizes_first:
    raise DataError(path, f"prepared with face_size={face_size}, but this config's training augments the crop at its "
                          "own resolution (data.augment): prepare again with --face_size=0")
  if face_size and face_size != data.size:
    raise DataError(path, f"prepared with face_size={face_size}, but the config asks data.size={data.size}: "
                          f"prepare again with --face_size={data.size} (or 0)")
  return path


def face_methods(prepared_dir: str) -> list[str]:
  """The manipulation methods a faceforensics preparation holds crops of (sorted)."""
  return sorted({m for entry in manifest(prepared_dir)["splits"].values() for m in entry["fake_crops_by_method"]})


def use_prepared(data) -> bool:
  """True for data.format 'arrayrecord', False for 'folder'; anything else is a ValueError naming the key."""
  if data.get("format", "folder") not in FORMATS:
    raise ValueError(f"data.format must be one of {FORMATS}, got {data.format!r}")
  return data.get("format", "folder") == "arrayrecord"


class _Units:
  """Picklable random access to the units of one split (the TFDS data source opens lazily in each process)."""

  def __init__(self, prepared_dir: str, split: str):
    self.prepared_dir, self.split = os.fspath(prepared_dir), split
    self._source = None

  def __getstate__(self):
    return {**self.__dict__, "_source": None}

  def __getitem__(self, index: int) -> dict:
    if self._source is None:
      # Grain's read threads: tensorflow_datasets imports lazily (etils), and first imports from two threads at
      # once deadlock. One thread opens the source and reads a record, which imports what decoding needs.
      with _OPEN_LOCK:
        if self._source is None:
          import tensorflow_datasets as tfds
          source = tfds.builder_from_directory(self.prepared_dir).as_data_source(self.split)
          if len(source):
            source[0]
          self._source = source
    example = self._source[index]
    identifier = example["id"]
    return {"image": np.array(example["image"], np.uint8), "mask": np.array(example["mask"], np.uint8),
            "label": int(example["label"]), "id": identifier.decode() if isinstance(identifier, bytes) else identifier}


class _View:
  """A source whose record i reads units `self._records[i]` (a list of (split, unit) pairs)."""

  def __init__(self, prepared_dir: str, splits: Sequence[str]):
    self.prepared_dir = os.fspath(prepared_dir)
    self._units = {s: _Units(self.prepared_dir, s) for s in splits}

  def __len__(self) -> int:
    return len(self._records)

  def _read(self, ref) -> dict:
    split, unit = ref
    return self._units[split][unit]


def _splits(split: str) -> list[str]:
  return split.split("+")


@functools.lru_cache(maxsize=16)  # shared, read-only: each view of a split (train, eval, stages) looks keys up
def _key_index(prepared_dir: str, split: str) -> dict[str, int]:
  return {key: i for i, key in enumerate(split_index(prepared_dir, split)["keys"])}


class PreparedRecords(_View):
  """image_manipulation / inpainting_images: record i of the split (`ImageManipulationReader` / `ImageSource`
  records; inpainting_images records carry their hole 'mask' with `with_masks`, which needs a split prepared
  with a masks folder)."""

  def __init__(self, prepared_dir: str, split: str, *, with_masks: bool = True):
    super().__init__(prepared_dir, _splits(split))
    self.family = manifest(self.prepared_dir)["family"]
    self._records = [(s, i) for s in _splits(split) for i in range(len(split_index(self.prepared_dir, s)["keys"]))]
    self.with_masks = with_masks
    if self.family == "inpainting_images" and with_masks:
      for s in _splits(split):
        if not split_index(self.prepared_dir, s)["structure"]["masks"]:
          raise DataError(self.prepared_dir, f"split {s!r} was prepared without masks (no {s}/masks folder)")

  def __getitem__(self, index: int) -> dict:
    unit = self._read(self._records[index])
    if self.family == "inpainting_images":
      return {"image": unit["image"], "id": unit["id"], **({"mask": unit["mask"]} if self.with_masks else {})}
    return unit

  def __repr__(self) -> str:
    return f"PreparedRecords({self.prepared_dir!r}, records={len(self)})"


class PreparedClips(_View):
  """video_inpainting clips, listed and checked as `VideoInpaintingReader` lists them (same arguments)."""

  def __init__(self, prepared_dir: str, split: str, *, methods: Optional[Sequence[str]] = None,
               clip_length: int = 5, clip_stride: int = 1, frame_step: int = 1, target: str = "middle",
               include_pristine: bool = False, on_error: str = "raise"):
    super().__init__(prepared_dir, _splits(split))
    if target not in ("middle", "all"):
      raise ValueError(f"target must be 'middle' or 'all', got {target!r}")
    self.clip_length, self.target = clip_length, target
    policy = ErrorPolicy(on_error)
    span = (clip_length - 1) * frame_step + 1
    videos, prepared_methods = [], []
    for s in _splits(split):
      index = split_index(self.prepared_dir, s)
      keys = _key_index(self.prepared_dir, s)
      objects = index["extra"].get("object", [])
      prepared_methods += [m for m in index["structure"]["methods"] if m not in prepared_methods]
      for video in index["structure"]["videos"]:
        units = [keys.get(k) for k in video["frames"]]
        videos.append((s, video, units, objects))
    methods = prepared_methods if methods is None else list(methods)
    missing = sorted(set(methods) - set(prepared_methods))
    if missing:
      raise DataError(self.prepared_dir, f"methods {missing} were not prepared (prepared: {prepared_methods})")
    order = [(m, v) for m in methods for v in videos if v[1]["method"] == m]
    if include_pristine:
      pristine = [v for v in videos if v[1]["label"] == 0]
      if not pristine:
        raise DataError(self.prepared_dir, "include_pristine needs pristine videos: prepare with --include_pristine")
      order += [("", v) for v in pristine]
    self._records = []
    for _, (s, video, units, objects) in order:
      if None in units:
        continue  # skipped in preparation (on_error='skip'): named in the manifest
      try:
        if len(units) < span:
          raise DataError(video["name"], f"only {len(units)} frames, a clip spans {span}")
        clips = []
        for start in range(0, len(units) - span + 1, clip_stride):
          positions = list(range(start, start + span, frame_step))
          if video["label"] == 1 and not any(objects[units[p]] for p in positions):
            first, last = (video["frames"][p].rsplit("/", 1)[1] for p in (positions[0], positions[-1]))
            raise DataError(video["frames"][positions[len(positions) // 2]],
                            f"every mask of the inpainted clip {first}..{last} (label 1) is empty (all zero)")
          clips.append([(s, units[p]) for p in positions])
      except DataError as e:
        policy.handle(e)
        continue
      self._records.extend(clips)
    if not self._records:
      raise DataError(self.prepared_dir, f"no clip in split {split!r}")

  def __getitem__(self, index: int) -> dict:
    frames = [self._read(ref) for ref in self._records[index]]
    mask_at = list(range(self.clip_length)) if self.target == "all" else [self.clip_length // 2]
    masks = np.stack([frames[p]["mask"] for p in mask_at])
    first, last = frames[0]["id"], frames[-1]["id"].rsplit("/", 1)[1]
    return {"frames": np.stack([f["image"] for f in frames]), "mask": masks if self.target == "all" else masks[0],
            "label": frames[0]["label"], "id": f"{first}..{last}"}

  def __repr__(self) -> str:
    return f"PreparedClips({self.prepared_dir!r}, clip_length={self.clip_length}, clips={len(self)})"


class PreparedFaces(_View):
  """faceforensics crops, listed as `FaceForensicsReader(split, methods=..., real_per_method=..., include_real=...)`
  lists them: per method each fake crop (then its real twin with `real_per_method`); without it, each real video's
  own sampled crops after all fakes (targets sorted). Crops whose preparation failed are left out."""

  def __init__(self, prepared_dir: str, split: str, *, methods: Optional[Sequence[str]] = None,
               real_per_method: bool = True, include_real: bool = True):
    super().__init__(prepared_dir, _splits(split))
    indexes = {s: split_index(self.prepared_dir, s) for s in _splits(split)}
    keys = {s: _key_index(self.prepared_dir, s) for s in _splits(split)}
    prepared = [m for s in _splits(split) for m in indexes[s]["structure"]["methods"]]
    methods = list(dict.fromkeys(prepared)) if methods is None else list(methods)
    missing = sorted(set(methods) - set(prepared))
    if missing:
      raise DataError(self.prepared_dir, f"methods {missing} were not prepared (prepared: {sorted(set(prepared))})")
    self._records = []
    for method in methods:
      for s in _splits(split):
        for fake, twin in indexes[s]["structure"]["fakes"].get(method, []):
          refs = [keys[s].get(fake)] + ([keys[s].get(twin)] if include_real and real_per_method else [])
          if None not in refs:
            self._records.extend((s, r) for r in refs)
    if include_real and not real_per_method:
      reals = sorted(((target, s, key) for s in _splits(split) for target, key in indexes[s]["structure"]["reals_own"]),
                     key=lambda r: r[0])  # stable: each video's frames keep their order
      seen = {}
      for target, s, key in reals:
        if seen.setdefault(target, s) == s and key in keys[s]:
          self._records.append((s, keys[s][key]))
    if not self._records:
      raise DataError(self.prepared_dir, f"no usable crop in split {split!r} for methods {methods}")

  def __getitem__(self, index: int) -> dict:
    return self._read(self._records[index])

  def __repr__(self) -> str:
    return f"PreparedFaces({self.prepared_dir!r}, records={len(self)})"
