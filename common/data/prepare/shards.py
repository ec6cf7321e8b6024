"""Writing one shard: units read through the family's readers, serialised with TFDS features into ArrayRecord.

A shard task is self-contained and picklable (it names the plan file holding the readers, not the readers), so
any runner can execute it: in process, a local process pool, or Apache Beam workers. A shard is written to a
temporary name and renamed, then its metadata (`<shard>.json`: unit keys, labels, extra fields, skipped groups) is
written the same way; a shard whose metadata exists is done, so an interrupted preparation redoes only the
shards that had not finished.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import pickle

import cv2
import numpy as np

from common.data.prepare import families
from common.data.readers import DataError
from common.data.readers.media import ErrorPolicy

RECORD_OPTIONS = "group_size:1"  # ArrayRecord: one record per chunk, for O(1) random access (as TFDS writes)
LABEL_NAMES = ("real", "fake")


@functools.cache
def features():
  """The one feature set of every family: PNG `image`, zlib uint8 `mask` (bit-exact), `label`, `id`."""
  import tensorflow_datasets as tfds
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
      "mask": tfds.features.Tensor(shape=(None, None), dtype=np.uint8, encoding=tfds.features.Encoding.ZLIB),
      "label": tfds.features.ClassLabel(names=LABEL_NAMES),
      "id": tfds.features.Text(),
  })


def filename_template(out: str, dataset_name: str, split: str = ""):
  from tensorflow_datasets.core import naming
  template = naming.ShardedFileTemplate(data_dir=out, dataset_name=dataset_name, filetype_suffix="array_record")
  return template.replace(split=split) if split else template


def shard_path(out: str, dataset_name: str, split: str, index: int, num_shards: int) -> str:
  return os.fspath(filename_template(out, dataset_name, split).sharded_filepath(shard_index=index,
                                                                                  num_shards=num_shards))


@dataclasses.dataclass
class ShardTask:
  """Shard `index` of `num_shards` of `split`: the units of `groups`, read with the readers in `plan_file`."""
  out: str
  family: str
  dataset_name: str
  split: str
  index: int
  num_shards: int
  plan_file: str
  groups: list
  on_error: str

  @property
  def path(self) -> str:
    return shard_path(self.out, self.dataset_name, self.split, self.index, self.num_shards)

  @property
  def meta_path(self) -> str:
    return self.path + ".json"

  @property
  def units(self) -> int:
    return sum(len(g.keys) for g in self.groups)


@functools.lru_cache(maxsize=4)
def load_plan(plan_file: str) -> families.SplitPlan:
  with open(plan_file, "rb") as f:
    return pickle.load(f)


def _png(image: np.ndarray) -> bytes:
  ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
  if not ok:
    raise ValueError(f"PNG encoding failed for an image of shape {image.shape}")
  return encoded.tobytes()


def _write_json(path: str, value) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(value, f)
  os.replace(tmp, path)


def write_shard(task: ShardTask) -> dict:
  """Writes the shard (unless done) and returns its metadata {'units': [[key, label, extra], ...], 'skipped'}."""
  if os.path.exists(task.meta_path):
    with open(task.meta_path) as f:
      return json.load(f)
  from array_record.python import array_record_module
  from tensorflow_datasets.core import example_serializer
  feats = features()
  serializer = example_serializer.ExampleSerializer(feats.get_serialized_info())
  plan = load_plan(task.plan_file)
  unit = families.family(task.family).unit
  policy = ErrorPolicy(task.on_error)
  units = []
  tmp = f"{task.path}.tmp-{os.getpid()}"
  writer = array_record_module.ArrayRecordWriter(tmp, RECORD_OPTIONS)
  try:
    for group in task.groups:
      reader = plan.readers[group.reader]
      try:
        encoded = []
        for index, key in zip(group.indices, group.keys):
          example, extra = unit(reader[index])
          example = {**example, "image": _png(example["image"])}
          encoded.append((serializer.serialize_example(feats.encode_example(example)),
                          [key, int(example["label"]), extra]))
      except DataError as e:
        policy.handle(e)
        continue
      for record, meta in encoded:
        writer.write(record)
        units.append(meta)
  except BaseException:
    writer.close()
    os.remove(tmp)
    raise
  writer.close()
  os.replace(tmp, task.path)
  meta = {"units": units, "skipped": policy.skipped}
  _write_json(task.meta_path, meta)
  return meta
