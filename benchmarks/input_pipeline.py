"""Input-pipeline throughput: examples/s of each dataset family's Grain training pipeline.

  python -m benchmarks.input_pipeline [--corpus DIR] [--scale tiny|full] [--workers N] [--batch_size B]
                                      [--batches K] [--size S] [--source folder|tfds] [--families a,b,c]

Reads the embedded demo corpus (built into a temporary folder at `--scale` unless `--corpus` names a built one,
e.g. the path printed by `python -m common.data.demo`) through the folder readers, or through ArrayRecord files
written by the TFDS builders (`--source tfds`, built into a temporary folder first; needs TensorFlow), and
times `common.data.pipeline.train_dataset` (shuffle, repeat, decode, resize to SxS, batch) with `--workers`
Grain worker processes. Prints one JSON line per family.
"""
from __future__ import annotations

import json
import os
import tempfile
import time

from absl import app, flags
import cv2
import grain
import numpy as np

from common.data import demo, pipeline
from common.data.faces import detection as face_detection
from common.data.readers import FaceForensicsReader, ImageManipulationReader, VideoInpaintingReader

FAMILIES = ("video_inpainting", "faces", "image_manipulation")

_CORPUS = flags.DEFINE_string("corpus", None, "a built demo corpus; default: build one into a temporary folder")
_SCALE = flags.DEFINE_enum("scale", "tiny", ["tiny", "full"], "scale of the corpus built when --corpus is unset")
_WORKERS = flags.DEFINE_integer("workers", 0, "Grain worker processes (0: decode in the main process)")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "examples per batch")
_BATCHES = flags.DEFINE_integer("batches", 20, "timed batches per family (after 2 warm-up batches)")
_SIZE = flags.DEFINE_integer("size", 224, "frames, images and masks are resized to size x size")
_SOURCE = flags.DEFINE_enum("source", "folder", ["folder", "tfds"], "folder readers or TFDS-built ArrayRecord")
_CLIP_LENGTH = flags.DEFINE_integer("clip_length", None, "video clip length; default 5 (3 on the tiny corpus, "
                                                        "whose videos have 4 frames)")
_FAMILIES = flags.DEFINE_list("families", list(FAMILIES), f"families to time, among {FAMILIES}")


class ResizeRecord(grain.transforms.Map):
  """Resizes `frames` [T,H,W,3] / `image` [H,W,3] (bilinear) and `mask` (nearest) to size x size; drops `id`."""

  def __init__(self, size: int):
    self.size = size

  def map(self, record: dict) -> dict:
    shape = (self.size, self.size)
    out = {"label": np.int32(record["label"])}
    for key in ("frames", "image"):
      if key in record:
        pixels = record[key]
        frames = pixels if key == "frames" else pixels[None]
        resized = np.stack([cv2.resize(f, shape, interpolation=cv2.INTER_LINEAR) for f in frames])
        out[key] = resized if key == "frames" else resized[0]
    mask = record["mask"]
    masks = mask if mask.ndim == 3 else mask[None]
    resized = np.stack([cv2.resize(m, shape, interpolation=cv2.INTER_NEAREST) for m in masks])
    out["mask"] = resized if mask.ndim == 3 else resized[0]
    return out


def folder_source(family: str, corpus: str, cache_dir: str, clip_length: int):
  """The family's folder reader over the demo corpus (train split)."""
  if family == "video_inpainting":
    return VideoInpaintingReader(os.path.join(corpus, "video_inpainting"), "train", clip_length=clip_length)
  if family == "faces":
    faces = os.path.join(corpus, "faces")
    return FaceForensicsReader(faces, "train", methods=("FaceSwap", "NeuralTextures"), frames_per_video=20,
                               face_boxes=face_detection.PrecomputedFaceBoxes(os.path.join(faces, "face_boxes.json")),
                               cache_dir=cache_dir)
  if family == "image_manipulation":
    return ImageManipulationReader(os.path.join(corpus, "image_manipulation", "train"))
  raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")


def tfds_source(family: str, corpus: str, cache_dir: str, clip_length: int, data_dir: str):
  """Builds the family's TFDS dataset (ArrayRecord) from the demo corpus and returns a TfdsSource on it."""
  import tensorflow_datasets as tfds
  from common.data.tfds_builders import _base
  from common.data.tfds_builders.ffpp_faces import ffpp_faces_dataset_builder
  from common.data.tfds_builders.image_manipulation import image_manipulation_dataset_builder
  from common.data.tfds_builders.source import TfdsSource
  from common.data.tfds_builders.video_inpainting_clips import video_inpainting_clips_dataset_builder

  faces = os.path.join(corpus, "faces")
  builds = {
      "video_inpainting": (video_inpainting_clips_dataset_builder.Builder, "video_inpainting", _base.ReaderConfig(
          name=f"clip{clip_length}_middle", reader_kwargs={"clip_length": clip_length}), "train"),
      "faces": (ffpp_faces_dataset_builder.Builder, "faces", _base.ReaderConfig(name="demo", reader_kwargs=dict(
          methods=("FaceSwap", "NeuralTextures"), frames_per_video=20, cache_dir=cache_dir,
          face_boxes=face_detection.PrecomputedFaceBoxes(os.path.join(faces, "face_boxes.json")))), "train"),
      "image_manipulation": (image_manipulation_dataset_builder.Builder, "image_manipulation", "default", "train"),
  }
  builder_cls, folder, config, split = builds[family]
  builder = builder_cls(data_dir=data_dir, config=config, file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=os.path.join(corpus, folder)))
  return TfdsSource(f"{builder.name}/{builder.builder_config.name}", split, data_dir)


def time_family(source, batch_size: int, batches: int, workers: int, size: int) -> tuple[float, int]:
  """Seconds for `batches` batches after two warm-up batches, and the examples they held."""
  dataset = pipeline.train_dataset(source, seed=0, batch_size=batch_size, transforms=(ResizeRecord(size),),
                                   worker_count=workers)
  iterator = iter(dataset)
  for _ in range(2):
    next(iterator)
  start = time.perf_counter()
  examples = 0
  for _ in range(batches):
    batch = next(iterator)
    examples += len(batch["label"])
  seconds = time.perf_counter() - start
  del iterator
  return seconds, examples


def main(argv):
  del argv
  with tempfile.TemporaryDirectory(prefix="input_pipeline_bench-") as scratch:
    corpus = _CORPUS.value
    if corpus is None:
      corpus = os.path.join(scratch, "corpus")
      demo.build(corpus, seed=0, scale=_SCALE.value)
    clip_length = _CLIP_LENGTH.value or (3 if demo.load_manifest(corpus)["scale"] == "tiny" else 5)
    for family in _FAMILIES.value:
      cache_dir = os.path.join(scratch, "cache")
      if _SOURCE.value == "folder":
        source = folder_source(family, corpus, cache_dir, clip_length)
      else:
        source = tfds_source(family, corpus, cache_dir, clip_length, os.path.join(scratch, "tfds"))
      seconds, examples = time_family(source, _BATCH_SIZE.value, _BATCHES.value, _WORKERS.value, _SIZE.value)
      print(json.dumps({"family": family, "source": _SOURCE.value, "workers": _WORKERS.value,
                        "batch_size": _BATCH_SIZE.value, "size": _SIZE.value, "records": len(source),
                        **({"clip_length": clip_length} if family == "video_inpainting" else {}),
                        "examples": examples, "seconds": round(seconds, 3),
                        "examples_per_s": round(examples / seconds, 1), "corpus": corpus}), flush=True)


if __name__ == "__main__":
  app.run(main)
