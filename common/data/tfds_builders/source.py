"""Grain source over a TFDS-built dataset (ArrayRecord), yielding the folder readers' record format.

`TfdsSource(name, split, data_dir)[i]` reads example i through `tfds.data_source` (random access into the
ArrayRecord files, NumPy decoding: no tf.data) and converts it back to a reader record: Video features, which
decode to a list of frames, are stacked to uint8 [T, H, W, 3]; `label` becomes an int and `id` a str. The
builders write in the reader's order, so `TfdsSource(...)[i]` equals the folder reader's record i.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np


def to_record(example: dict) -> dict:
  """A decoded TFDS example -> {'frames' or 'image': uint8, 'mask': uint8, 'label': int, 'id': str}."""
  record = {}
  if "frames" in example:
    record["frames"] = np.stack([np.asarray(f, np.uint8) for f in example["frames"]])
  if "image" in example:
    record["image"] = np.array(example["image"], np.uint8)  # writable copies: decoded buffers may be read-only
  record["mask"] = np.array(example["mask"], np.uint8)
  record["label"] = int(example["label"])
  identifier = example["id"]
  record["id"] = identifier.decode() if isinstance(identifier, bytes) else str(identifier)
  return record


class TfdsSource:
  """Grain random-access source over split `split` of a built TFDS dataset.

  Args:
    name: the dataset, e.g. 'video_inpainting_clips/clip5_middle' (optionally ':1.0.0'). The builder module
      need not be imported: the dataset is read from its files under `data_dir`.
    split: a split name or TFDS slice ('train', 'test[:10%]').
    data_dir: the `data_dir` the builder wrote to.
  Picklable: the data source is opened lazily in each process.
  """

  def __init__(self, name: str, split: str, data_dir: Optional[str] = None):
    self.name = name
    self.split = split
    self.data_dir = os.fspath(data_dir) if data_dir is not None else None
    self._source = None

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_source"] = None
    return state

  @property
  def source(self):
    if self._source is None:
      import tensorflow_datasets as tfds  # imported here: building and reading code paths stay separate
      self._source = tfds.data_source(self.name, split=self.split, data_dir=self.data_dir, download=False)
    return self._source

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict:
    return to_record(self.source[index])

  def __repr__(self) -> str:
    return f"TfdsSource(name={self.name!r}, split={self.split!r}, data_dir={self.data_dir!r})"
