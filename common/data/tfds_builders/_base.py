"""Shared pieces of the dataset builders: reader-backed configs, features and example generation."""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

LABEL_NAMES = ("real", "fake")  # label 0 real, 1 fake, as in the reader records


@dataclasses.dataclass(eq=False)
class ReaderConfig(tfds.core.BuilderConfig):
  """A builder config carrying keyword arguments for the family's folder reader (all but root and split)."""
  reader_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


def label_mask_id_features(mask_shape: tuple) -> dict[str, tfds.features.FeatureConnector]:
  """`mask` as a zlib-compressed uint8 tensor (bit-exact), `label` real/fake, `id` text."""
  return {
      "mask": tfds.features.Tensor(shape=mask_shape, dtype=np.uint8, encoding=tfds.features.Encoding.ZLIB),
      "label": tfds.features.ClassLabel(names=LABEL_NAMES),
      "id": tfds.features.Text(),
  }


def generate_examples(reader, pixel_key: str) -> Iterator[tuple[int, dict]]:
  """(index, example) for every record of a folder reader, in the reader's order."""
  if reader.skipped:
    logging.warning("%r skipped %d bad files: %s", reader, len(reader.skipped),
                    "; ".join(f"{path}: {problem}" for path, problem in reader.skipped))
  for index in range(len(reader)):
    record = reader[index]
    yield index, {pixel_key: record[pixel_key], "mask": record["mask"], "label": int(record["label"]),
                  "id": record["id"]}
