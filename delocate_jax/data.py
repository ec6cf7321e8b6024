"""Delocate's data adapters over the face readers: record keys for video-level and per-manipulation metrics, and
the (fake, aligned real) crop pairs of stage 1's evaluation."""
from typing import Sequence
import zlib

import grain
import numpy as np

from common.data.readers import FaceForensicsReader
from common.data.readers.media import DataError


class FaceKeys(grain.transforms.Map):
  """Adds `video` (int32 hash of the source video path) and `domain` from the reader's `id` ('<relative video
  path>#frame<i>'): FF++ crops (`methods` given) 0 real, 1 + index in `methods` for a fake of that manipulation;
  the crops of a cross-dataset set (`methods=None`, no manipulation names) their label, 0 real, 1 fake."""

  def __init__(self, methods: Sequence[str] | None):
    self.methods = None if methods is None else tuple(methods)

  def map(self, record: dict) -> dict:
    path = record["id"].split("#")[0]
    parts = path.replace("\\", "/").split("/")
    domain = int(record["label"])
    if self.methods is not None:
      domain = 0
      if parts[0] == "manipulated_sequences":
        if parts[1] not in self.methods:
          raise DataError(path, f"manipulation {parts[1]!r} is not one of {self.methods}")
        domain = 1 + self.methods.index(parts[1])
    return {**record, "video": np.int32(zlib.crc32(path.encode()) & 0x7FFFFFFF), "domain": np.int32(domain)}


class PairedFaces:
  """(fake, aligned real) crop pairs of a `FaceForensicsReader` built with `real_per_method=True` (which lists
  the real crop of the same frame and box right after each fake one): records {'frames': uint8 [2, h, h, 3]
  (fake, real), 'mask': the fake's mask, 'label': 1, 'id'}."""

  def __init__(self, reader: FaceForensicsReader):
    self.reader = reader

  def __len__(self) -> int:
    return len(self.reader) // 2

  def __getitem__(self, index: int) -> dict:
    fake, real = self.reader[2 * index], self.reader[2 * index + 1]
    if (fake["label"], real["label"]) != (1, 0) or fake["image"].shape != real["image"].shape:
      raise DataError(fake["id"], f"expected a fake crop followed by its real crop, got {real['id']}")
    return {"frames": np.stack([fake["image"], real["image"]]), "mask": fake["mask"], "label": 1, "id": fake["id"]}
