"""What `prepare` stores for each dataset family: units decoded once, grouped by source, and each split's index.

A unit is one stored record {'image': uint8 [h, w, 3], 'mask': uint8 {0,1} [h, w], 'label', 'id'}:
  video_inpainting     one frame of one inpainted (or pristine) video and its mask; clips are gathered at read
                       time (`prepared.PreparedClips`), so every clip length and stride reads the same shards
  faceforensics        one face crop (fake or real) at the prepared crop scale, with its mask (the method's mask
                       video, or MSCCNet's SSIM annotation, computed here); each distinct crop is stored once, at
                       its own resolution or (face_size N) resized to N x N
  image_manipulation   one image and its mask, as `ImageManipulationReader` returns them
  inpainting_images    one image resized to `size` (SafePaint's `ImageSource`), with its hole mask where the split
                       has a masks folder
The units are read through the folder readers, so decoding, checks and errors are theirs. A group is the units
of one source (a video, an image): a group that raises a DataError is left out whole with on_error='skip', and
its file and problem go into the manifest.

Each split's index (`SplitPlan.structure`, in unit keys) is what the read-side views need to list records in the
folder reader's order without opening a source file.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import re
from typing import Any, Callable, ClassVar

import numpy as np

from common.data.readers import DataError, FaceForensicsReader, ImageManipulationReader, VideoInpaintingReader
from common.data.readers.media import ErrorPolicy


@dataclasses.dataclass
class Group:
  """Units of one source: records `indices` of `readers[reader]`, stored under `keys`; `source` names the file."""
  reader: str
  indices: list[int]
  keys: list[str]
  source: str


@dataclasses.dataclass
class SplitPlan:
  """What one split stores: its readers (picklable), unit groups in write order, index and indexing skips."""
  readers: dict[str, Any]
  groups: list[Group]
  structure: dict
  skipped: list[tuple[str, str]]


@dataclasses.dataclass(frozen=True)
class Family:
  """A dataset family: its TFDS dataset name, options (name -> default), split discovery, planning and units."""
  name: str
  dataset_name: str
  options: dict
  discover_splits: Callable[[str, dict], list[str]]
  plan: Callable[[str, str, dict], SplitPlan]
  unit: Callable[[dict], tuple[dict, dict]]  # reader record -> (unit example, extra index fields)
  # Per-source work run in parallel before a split is planned, whose results planning reads from a cache (FF++:
  # face detection); each job is a picklable callable.
  jobs: Callable[[str, str, dict], list] = lambda root, split, options: []


def _split_files(root: str, pattern: str) -> list[str]:
  found = [s for s in ("train", "val", "test") if os.path.exists(os.path.join(root, pattern.format(split=s)))]
  if not found:
    raise DataError(os.path.join(root, pattern), "no split file for any of train, val, test")
  return found


# ------------------------------------------------------------------------------------------ video inpainting
VIDEO_INPAINTING_OPTIONS = {"methods": (), "include_pristine": True, "frames_dir": "JPEGImages",
                            "masks_dir": "Annotations", "inpainted_dir": "Inpainted",
                            "split_file": os.path.join("ImageSets", "{split}.txt"), "on_error": "raise"}


def _plan_video_inpainting(root: str, split: str, o: dict) -> SplitPlan:
  reader = VideoInpaintingReader(root, split, methods=tuple(o["methods"]) or None, clip_length=1,
                                 include_pristine=o["include_pristine"], frames_dir=o["frames_dir"],
                                 masks_dir=o["masks_dir"], inpainted_dir=o["inpainted_dir"],
                                 split_file=o["split_file"], verify="header", on_error=o["on_error"])
  by_video: dict[str, Group] = {}
  videos = []
  for index in range(len(reader)):
    name, label, (frame,) = reader.clip_source(index)
    if name not in by_video:
      parts = os.path.relpath(name, o["inpainted_dir"]).split(os.sep)
      method = parts[0] if label == 1 else ""
      by_video[name] = Group("frames", [], [], name)
      videos.append({"name": name, "label": label, "method": method, "frames": by_video[name].keys})
    by_video[name].indices.append(index)
    by_video[name].keys.append(f"{name}/{frame}")
  return SplitPlan({"frames": reader}, list(by_video.values()),
                   {"methods": list(reader.methods), "video_names": list(reader.video_names), "videos": videos},
                   list(reader.skipped))


def _video_frame_unit(record: dict) -> tuple[dict, dict]:
  name, frame = record["id"].rsplit("/", 1)
  return ({"image": record["frames"][0], "mask": record["mask"], "label": record["label"],
           "id": f"{name}/{frame.split('..')[0]}"}, {"object": bool(record["mask"].any())})


# ---------------------------------------------------------------------------------------------- FF++ faces
FACEFORENSICS_OPTIONS = {"methods": (), "compression": "c23", "frames_per_video": 20, "crop_scale": 1.3,
                         "mask_source": "auto", "face_boxes": "", "face_size": 0, "on_error": "raise"}


@dataclasses.dataclass
class ResizedFaces:
  """A face reader whose crops (and masks) come resized to `size` x `size` by `transforms.Resize`, the first thing
  Delocate's (and MSCCNet's un-augmented) pipeline does: stored so, a record reads a few KB instead of a full-size
  crop, and the task's own Resize is then the identity."""
  reader: Any
  size: int

  def __len__(self) -> int:
    return len(self.reader)

  def __getitem__(self, index: int) -> dict:
    from common.data import transforms
    return transforms.Resize(self.size, self.size).map(self.reader[index])


def _ffpp_methods(root: str, o: dict) -> tuple[str, ...]:
  if o["methods"]:
    return tuple(o["methods"])
  folder = os.path.join(root, "manipulated_sequences")
  if not os.path.isdir(folder):
    raise DataError(folder, "missing folder (is --root the FF++ root?)")
  return tuple(m for m in sorted(os.listdir(folder)) if os.path.isdir(os.path.join(folder, m, o["compression"])))


@dataclasses.dataclass(frozen=True)
class DetectFaces:
  """Detects the faces of one real video at the frames the reader samples from it, into the detection cache that
  `FaceForensicsReader` (default `cache_dir`) then reads: a split's real videos are detected in parallel before
  planning instead of one after another while the index is built. A video that fails here is left to planning,
  which reads it again and names it (or skips it) under `on_error`."""
  video: str
  video_id: str
  frames_per_video: int
  cache_dir: str
  WHAT: ClassVar[str] = "detecting faces in the real videos"

  def __call__(self) -> None:
    from common.data.faces import detection
    from common.data.readers.faceforensics import sample_frame_indices
    from common.data.readers.media import probe_video
    try:
      indices = sample_frame_indices(probe_video(self.video, "header").num_frames, self.frames_per_video)
      detection.CascadeFaceBoxes(cache_dir=self.cache_dir).boxes(self.video, indices, self.video_id)
    except DataError:
      return


def _faceforensics_jobs(root: str, split: str, o: dict) -> list[DetectFaces]:
  """A `DetectFaces` per real video of the split, unless boxes come from a JSON (`face_boxes`)."""
  from common.data.readers.faceforensics import default_cache_dir, read_split_pairs, video_file
  if o["face_boxes"]:
    return []
  folder = os.path.join(root, "original_sequences", "youtube", o["compression"], "videos")
  split_files = [os.path.join(root, "splits", f"{name}.json") for name in split.split("+")]
  ids = sorted({v for path in split_files for pair in read_split_pairs(path) for v in pair})
  paths = {i: video_file(folder, i) for i in ids}
  cache = os.path.join(default_cache_dir(root), "faces")
  return [DetectFaces(path, i, o["frames_per_video"], cache) for i, path in paths.items() if path]


def _plan_faceforensics(root: str, split: str, o: dict) -> SplitPlan:
  from common.data.faces import detection  # imports scikit-image: only when faces are prepared
  kwargs = dict(compression=o["compression"], frames_per_video=o["frames_per_video"], crop_scale=o["crop_scale"],
                mask_source=o["mask_source"], verify="header", on_error=o["on_error"],
                face_boxes=detection.PrecomputedFaceBoxes(os.path.join(root, o["face_boxes"])) if o["face_boxes"]
                else None)
  methods = _ffpp_methods(root, o)
  # The two listings the tasks read: each fake crop followed by the real crop of its frame ('twin'), and each
  # real video's own sampled frames. Every distinct crop (video, frame, box) is stored once.
  paired = FaceForensicsReader(root, split, methods=methods, real_per_method=True, **kwargs)
  reals = FaceForensicsReader(root, split, methods=(), real_per_method=False, **kwargs)
  groups: dict[str, Group] = {}
  seen: set[str] = set()

  def add(reader_name: str, reader, index: int) -> str:
    video, frame, box, _ = reader.item_source(index)
    key = f"{video}#frame{frame}@{','.join(map(str, box))}"
    if key not in seen:
      seen.add(key)
      group = groups.setdefault(video, Group(reader_name, [], [], os.path.join(root, video)))
      if group.reader != reader_name:  # a real video listed by both readers: its crops go in a second group
        group = groups.setdefault(f"{video}|{reader_name}", Group(reader_name, [], [], os.path.join(root, video)))
      group.indices.append(index)
      group.keys.append(key)
    return key

  fakes = collections.defaultdict(list)
  for index in range(0, len(paired), 2):
    video = paired.item_source(index)[0]
    fakes[video.split(os.sep)[1]].append([add("paired", paired, index), add("paired", paired, index + 1)])
  reals_own = [[reals.item_source(i)[0], add("reals", reals, i)] for i in range(len(reals))]
  skipped = list(dict.fromkeys(paired.skipped + reals.skipped))
  if o["face_size"]:
    paired, reals = ResizedFaces(paired, o["face_size"]), ResizedFaces(reals, o["face_size"])
  return SplitPlan({"paired": paired, "reals": reals}, list(groups.values()),
                   {"methods": list(methods), "fakes": dict(fakes), "reals_own": reals_own}, skipped)


def _record_unit(record: dict) -> tuple[dict, dict]:
  return {k: record[k] for k in ("image", "mask", "label", "id")}, {}


# -------------------------------------------------------------------------------------- image manipulation
IMAGE_MANIPULATION_OPTIONS = {"gt_suffix": "", "pairing": "stem", "tp_dir": "Tp", "single_split": "test",
                              "on_error": "raise"}


def image_manipulation_splits(root: str, tp_dir: str = "Tp", single_split: str = "test") -> dict[str, dict]:
  """split name -> reader arguments: a Tp/ folder in `root` is split `single_split`; each sub-folder holding a
  Tp/ folder is a split named after it; each `<name>.json` pair list is split <name> (non-word characters become
  '_'; a pair list wins over a folder of the same name)."""
  sources = {}
  if os.path.isdir(os.path.join(root, tp_dir)):
    sources[single_split] = {"root": root}
  for entry in sorted(os.listdir(root)):
    path = os.path.join(root, entry)
    name = re.sub(r"\W", "_", os.path.splitext(entry)[0])
    if os.path.isdir(os.path.join(path, tp_dir)) and name not in sources:
      sources[name] = {"root": path}
    elif entry.endswith(".json") and os.path.isfile(path):
      sources[name] = {"json_path": path}
  if not sources:
    raise DataError(root, f"no {tp_dir}/ folder, no sub-folder with one and no .json pair list")
  return sources


def _plan_one_unit_per_record(reader) -> SplitPlan:
  groups = [Group("records", [i], [str(i)], repr(reader)) for i in range(len(reader))]
  return SplitPlan({"records": reader}, groups, {}, list(reader.skipped))


def _plan_image_manipulation(root: str, split: str, o: dict) -> SplitPlan:
  sources = image_manipulation_splits(root, o["tp_dir"], o["single_split"])
  if split not in sources:
    raise DataError(root, f"no split {split!r}: found {sorted(sources)}")
  source = sources[split]
  extra = {} if "json_path" in source else {"pairing": o["pairing"]}
  reader = ImageManipulationReader(**source, **extra, gt_suffix=o["gt_suffix"], tp_dir=o["tp_dir"],
                                   verify="header", on_error=o["on_error"])
  return _plan_one_unit_per_record(reader)


# --------------------------------------------------------------------------------------- inpainting images
INPAINTING_IMAGES_OPTIONS = {"size": 256, "mask_threshold": 0, "on_error": "raise"}


def _inpainting_image_splits(root: str, o: dict) -> list[str]:
  found = sorted(s for s in os.listdir(root) if os.path.isdir(os.path.join(root, s, "images")))
  if not found:
    raise DataError(root, "no <split>/images folder")
  return found


def _plan_inpainting_images(root: str, split: str, o: dict) -> SplitPlan:
  from safepaint_jax.data import ImageSource  # the source SafePaint trains from
  masks = os.path.join(root, split, "masks")
  source = ImageSource(os.path.join(root, split, "images"), o["size"], masks if os.path.isdir(masks) else "",
                       o["mask_threshold"], verify="header", on_error=o["on_error"])
  plan = _plan_one_unit_per_record(source)
  plan.structure = {"masks": bool(source.masks)}
  return plan


def _image_unit(record: dict) -> tuple[dict, dict]:
  mask = record.get("mask")
  return {"image": record["image"], "mask": np.zeros((0, 0), np.uint8) if mask is None else mask, "label": 0,
          "id": record["id"]}, {}


FAMILIES = {
    "video_inpainting": Family("video_inpainting", "video_inpainting_frames", VIDEO_INPAINTING_OPTIONS,
                               lambda root, o: _split_files(root, o["split_file"]), _plan_video_inpainting,
                               _video_frame_unit),
    "faceforensics": Family("faceforensics", "ffpp_faces", FACEFORENSICS_OPTIONS,
                            lambda root, o: _split_files(root, os.path.join("splits", "{split}.json")),
                            _plan_faceforensics, _record_unit, _faceforensics_jobs),
    "image_manipulation": Family("image_manipulation", "image_manipulation", IMAGE_MANIPULATION_OPTIONS,
                                 lambda root, o: list(image_manipulation_splits(root, o["tp_dir"],
                                                                                o["single_split"])),
                                 _plan_image_manipulation, _record_unit),
    "inpainting_images": Family("inpainting_images", "inpainting_images", INPAINTING_IMAGES_OPTIONS,
                                _inpainting_image_splits, _plan_inpainting_images, _image_unit),
}


def family(name: str) -> Family:
  if name not in FAMILIES:
    raise ValueError(f"--family: unknown family {name!r}; choose from {sorted(FAMILIES)}")
  return FAMILIES[name]


def resolve_options(fam: Family, given: dict) -> dict:
  """The family's options with `given` (name -> value) applied; an unknown name is a ValueError naming it."""
  unknown = sorted(set(given) - set(fam.options))
  if unknown:
    raise ValueError(f"option(s) {unknown} do not apply to family {fam.name!r} (its options: {sorted(fam.options)})")
  options = {**fam.options, **given}
  ErrorPolicy(options["on_error"])  # validates the value
  return options


