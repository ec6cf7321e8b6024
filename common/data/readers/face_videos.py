"""Cross-dataset face-video test sets, labelled per video, read as face crops: Celeb-DF v2, DFDC and DFD.

Their published layouts (ROOT is the folder the user supplies):
  celeb_df   ROOT/Celeb-real/, ROOT/Celeb-synthesis/, ROOT/YouTube-real/ (mp4) and the official test list
             ROOT/List_of_testing_videos.txt, lines '<label> <folder>/<name>.mp4' with label 1 = real, 0 = fake.
  dfdc       ROOT/*.mp4 with ROOT/metadata.json ({"<name>.mp4": {"label": "FAKE" | "REAL", ...}}, the training
             parts' and the test set's format) or else ROOT/labels.csv (header 'filename,label', label 1 = fake,
             the public test set's).
  dfd        FF++'s DeepFake Detection sequences: ROOT/original_sequences/actors/<c>/videos/*.mp4 (real) and
             ROOT/manipulated_sequences/DeepFakeDetection/<c>/videos/*.mp4 (fake), c = compression.

`FaceVideoReader` samples `frames_per_video` frames of each video (as the FF++ reader does), locates the face
(`CascadeFaceBoxes` with a cache, or precomputed boxes keyed by the video's path relative to ROOT without its
extension) and crops a square of `crop_scale` times the box. Records match `FaceForensicsReader`'s: {'image': uint8
[h, h, 3], 'mask': uint8 zeros [h, h], 'label', 'id'}. These sets have no pixel annotation: their masks are zeros
and only image- and video-level metrics mean anything on them.
"""
from __future__ import annotations

import csv
import json
import os

import numpy as np

from common.data.faces import detection as face_detection
from common.data.readers.faceforensics import default_cache_dir, sample_frame_indices
from common.data.readers.media import DataError, ErrorPolicy, probe_video, read_video_frames

CELEB_DF_TEST_LIST = "List_of_testing_videos.txt"


def celeb_df_videos(root: str) -> list[tuple[str, int]]:
  """[(video path, label 0 real / 1 fake)] of Celeb-DF v2's official test list."""
  path = os.path.join(root, CELEB_DF_TEST_LIST)
  try:
    with open(path, encoding="utf-8") as f:
      lines = [line.split() for line in f if line.strip()]
  except FileNotFoundError:
    raise DataError(path, "missing test list (is the root Celeb-DF v2's?)") from None
  videos = []
  for number, parts in enumerate(lines, 1):
    if len(parts) != 2 or parts[0] not in ("0", "1"):
      raise DataError(path, f"line {number}: expected '<1 real | 0 fake> <folder>/<video>.mp4', "
                            f"got {' '.join(parts)!r}")
    videos.append((os.path.join(root, parts[1]), 1 - int(parts[0])))
  return videos


def dfdc_videos(root: str) -> list[tuple[str, int]]:
  """[(video path, label)] from ROOT/metadata.json, else ROOT/labels.csv."""
  metadata, labels = os.path.join(root, "metadata.json"), os.path.join(root, "labels.csv")
  if os.path.isfile(metadata):
    try:
      with open(metadata, encoding="utf-8") as f:
        table = {name: entry["label"] for name, entry in json.load(f).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
      raise DataError(metadata, f"cannot read DFDC metadata ({type(e).__name__}: {e})") from None
    bad = sorted(name for name, label in table.items() if label not in ("REAL", "FAKE"))
    if bad:
      raise DataError(metadata, f"labels must be 'REAL' or 'FAKE' ({bad[0]!r} is not)")
    return [(os.path.join(root, name), int(label == "FAKE")) for name, label in sorted(table.items())]
  if os.path.isfile(labels):
    with open(labels, encoding="utf-8", newline="") as f:
      rows = list(csv.DictReader(f))
    if not rows or not {"filename", "label"} <= set(rows[0]):
      raise DataError(labels, "expected a header 'filename,label' and at least one row")
    return [(os.path.join(root, r["filename"]), int(float(r["label"]) >= 0.5)) for r in rows]
  raise DataError(root, "no metadata.json or labels.csv (is the root a DFDC part or its test set?)")


def dfd_videos(root: str, compression: str = "c23") -> list[tuple[str, int]]:
  """[(video path, label)] of FF++'s DeepFake Detection actors (real) and DeepFakeDetection (fake) sequences."""
  videos = []
  for folder, label in ((os.path.join(root, "original_sequences", "actors", compression, "videos"), 0),
                        (os.path.join(root, "manipulated_sequences", "DeepFakeDetection", compression, "videos"), 1)):
    if not os.path.isdir(folder):
      raise DataError(folder, "missing folder (is the root FF++'s, with the DeepFake Detection sequences?)")
    videos += [(os.path.join(folder, name), label) for name in sorted(os.listdir(folder)) if name.endswith(".mp4")]
  return videos


LAYOUTS = {"celeb_df": celeb_df_videos, "dfdc": dfdc_videos, "dfd": dfd_videos}


class FaceVideoReader:
  """Grain random-access source of face crops from labelled videos (see the module docstring).

  Args:
    root: the set's root; layout: 'celeb_df' | 'dfdc' | 'dfd' (`LAYOUTS`); compression: DFD's.
    frames_per_video, crop_scale: as `FaceForensicsReader`'s.
    face_boxes: a `FaceBoxProvider` (e.g. `PrecomputedFaceBoxes`); default `CascadeFaceBoxes` cached under
      `default_cache_dir(root)`/faces.
    on_error: 'raise' on the first bad video, or 'skip' it (listed in `skipped`).
  """

  def __init__(self, root: str, layout: str, *, compression: str = "c23", frames_per_video: int = 20,
               crop_scale: float = 1.3, face_boxes=None, on_error: str = "raise"):
    if layout not in LAYOUTS:
      raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    self.root, self.layout = os.fspath(root), layout
    self.frames_per_video, self.crop_scale = frames_per_video, crop_scale
    self.face_boxes = face_boxes if face_boxes is not None else face_detection.CascadeFaceBoxes(
        cache_dir=os.path.join(default_cache_dir(self.root), "faces"))
    self._policy = ErrorPolicy(on_error)
    videos = LAYOUTS[layout](self.root, compression) if layout == "dfd" else LAYOUTS[layout](self.root)
    self._items: list[tuple[str, int, tuple, int, tuple[int, int]]] = []  # video, frame, box, label, (h, w)
    for path, label in videos:
      try:
        self._items += self._index(path, label)
      except DataError as e:
        self._policy.handle(e)
    self._policy.report(self)
    if not self._items:
      raise DataError(self.root, f"no usable video in this {layout} set"
                      + (f" ({len(self.skipped)} skipped)" if self.skipped else ""))

  @property
  def skipped(self) -> list[tuple[str, str]]:
    return self._policy.skipped

  def _index(self, path: str, label: int) -> list[tuple]:
    if not os.path.isfile(path):
      raise DataError(path, f"listed by the {self.layout} set but missing")
    info = probe_video(path, "header")
    indices = sample_frame_indices(info.num_frames, self.frames_per_video)
    video_id = os.path.splitext(os.path.relpath(path, self.root))[0]
    boxes = self.face_boxes.boxes(path, indices, video_id)
    return [(path, i, face_detection.enlarge_box(boxes[i], self.crop_scale, info.height, info.width), label,
             (info.height, info.width)) for i in indices]

  def __len__(self) -> int:
    return len(self._items)

  def __getitem__(self, index: int) -> dict:
    path, frame_index, (x0, y0, x1, y1), label, size = self._items[index]
    frame = read_video_frames(path, [frame_index])[0]
    if frame.shape[:2] != size:
      raise DataError(path, f"frame {frame_index} decodes to {frame.shape[0]}x{frame.shape[1]} but the video was "
                            f"indexed as {size[0]}x{size[1]}")
    return {"image": np.ascontiguousarray(frame[y0:y1, x0:x1]), "mask": np.zeros((y1 - y0, x1 - x0), np.uint8),
            "label": label, "id": f"{os.path.relpath(path, self.root)}#frame{frame_index}"}

  def __repr__(self) -> str:
    return f"FaceVideoReader(root={self.root!r}, layout={self.layout!r}, records={len(self)})"


def reader_from_config(d) -> FaceVideoReader:
  """The `FaceVideoReader` a face config's `data` fields describe: `layout`, `root` ("" = the demo corpus's copy
  of the layout, `common.data.demo.face_sets`), `compression`, `frames_per_video`, `crop_scale`, `face_boxes`
  (a JSON of boxes relative to the root; "" = detection) and `on_error`. Read from the source videos only: a
  prepared ArrayRecord set holds FF++, so `data.format` must be 'folder'."""
  if d.layout not in LAYOUTS:
    raise ValueError(f"data.layout: {d.layout!r} is not a face-video test set layout ({sorted(LAYOUTS)})")
  if d.get("format", "folder") != "folder":
    raise ValueError(f"data.format: the {d.layout} set is read from its videos; set data.format='folder'")
  if d.root:
    root = d.root
  else:
    from common.data.demo import face_sets  # imported here: face_sets imports the readers
    root = face_sets.ensure_face_set(d.layout)
  boxes = face_detection.PrecomputedFaceBoxes(os.path.join(root, d.face_boxes)) if d.face_boxes else None
  return FaceVideoReader(root, d.layout, compression=d.compression, frames_per_video=d.frames_per_video,
                         crop_scale=d.crop_scale, face_boxes=boxes, on_error=d.on_error)
