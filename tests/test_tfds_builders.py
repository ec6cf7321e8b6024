"""TFDS builders write ArrayRecord from the folder readers; TfdsSource reads back exactly the same records."""
import os
import pickle
import subprocess
import sys

import array_record  # noqa: F401 (install_requires: a missing install must fail, not skip)
import numpy as np
import pytest
import tensorflow_datasets as tfds

from common.data import pipeline
from common.data.faces import detection as face_detection
from common.data.readers import DataError, FaceForensicsReader, ImageManipulationReader, VideoInpaintingReader
from common.data.tfds_builders import _base
from common.data.tfds_builders.ffpp_faces import ffpp_faces_dataset_builder
from common.data.tfds_builders.image_manipulation import image_manipulation_dataset_builder
from common.data.tfds_builders.source import TfdsSource
from common.data.tfds_builders.video_inpainting_clips import video_inpainting_clips_dataset_builder
from tests.test_readers import CROP_SCALE, make_ffpp_set, make_image_set, make_inpainting_set


def _build(builder_cls, data_dir, manual_dir, config):
  builder = builder_cls(data_dir=str(data_dir), config=config, file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


def _assert_same_records(reader, source):
  assert len(source) == len(reader) > 0
  for index in range(len(reader)):
    expected, actual = reader[index], source[index]
    assert set(actual) == set(expected)
    assert actual["id"] == expected["id"] and actual["label"] == expected["label"]
    for key in set(expected) - {"id", "label"}:
      assert actual[key].dtype == expected[key].dtype == np.uint8, key
      assert actual[key].flags.writeable and expected[key].flags.writeable, key
      np.testing.assert_array_equal(actual[key], expected[key], err_msg=f"{key} of {expected['id']}")


def test_video_inpainting_clips_round_trip(tmp_path):
  make_inpainting_set(str(tmp_path / "vi"))
  builder = _build(video_inpainting_clips_dataset_builder.Builder, tmp_path / "tfds", tmp_path / "vi",
                   "clip5_middle_with_pristine")
  files = os.listdir(builder.data_dir)
  assert "video_inpainting_clips-train.array_record-00000-of-00001" in files
  source = TfdsSource("video_inpainting_clips/clip5_middle_with_pristine", "train", str(tmp_path / "tfds"))
  _assert_same_records(VideoInpaintingReader(str(tmp_path / "vi"), "train", include_pristine=True), source)
  clone = pickle.loads(pickle.dumps(source))
  np.testing.assert_array_equal(clone[3]["frames"], source[3]["frames"])
  batch = next(iter(pipeline.train_dataset(source, seed=0, batch_size=4)))
  assert batch["frames"].shape == (4, 5, 24, 32, 3) and batch["mask"].shape == (4, 24, 32)


@pytest.mark.slow  # 10-30 s: the fresh interpreter imports tensorflow_datasets (and TensorFlow)
def test_all_masks_config_and_reading_in_a_fresh_process(tmp_path):
  make_inpainting_set(str(tmp_path / "vi"), videos=("bear",), methods=("VI",))
  config = _base.ReaderConfig(name="clip3_all", reader_kwargs={"clip_length": 3, "target": "all"})
  _build(video_inpainting_clips_dataset_builder.Builder, tmp_path / "tfds", tmp_path / "vi", config)
  source = TfdsSource("video_inpainting_clips/clip3_all", "train", str(tmp_path / "tfds"))
  reader = VideoInpaintingReader(str(tmp_path / "vi"), clip_length=3, target="all")
  _assert_same_records(reader, source)
  # A process that never imported the builder (like a Grain worker) reads the dataset from its files alone.
  code = ("import pickle, sys; source = pickle.loads(sys.stdin.buffer.read()); r = source[2]; "
          "print(len(source), r['frames'].shape, r['mask'].shape, int(r['mask'].sum()), r['id'])")
  out = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(source), capture_output=True, check=True,
                       cwd=os.path.dirname(os.path.dirname(__file__)), timeout=120).stdout.decode().strip()
  expected = reader[2]
  assert out == (f"{len(reader)} (3, 24, 32, 3) (3, 24, 32) {int(expected['mask'].sum())} {expected['id']}")


def test_ffpp_faces_round_trip(tmp_path):
  make_ffpp_set(str(tmp_path / "ffpp"))
  reader_kwargs = {"methods": ("FaceSwap", "FaceShifter"), "frames_per_video": 3, "crop_scale": CROP_SCALE,
                   "cache_dir": str(tmp_path / "cache"),
                   "face_boxes": face_detection.PrecomputedFaceBoxes(str(tmp_path / "ffpp" / "boxes.json"))}
  config = _base.ReaderConfig(name="fixture", reader_kwargs=reader_kwargs)
  _build(ffpp_faces_dataset_builder.Builder, tmp_path / "tfds", tmp_path / "ffpp", config)
  source = TfdsSource("ffpp_faces/fixture", "train", str(tmp_path / "tfds"))
  reader = FaceForensicsReader(str(tmp_path / "ffpp"), "train", **reader_kwargs)
  _assert_same_records(reader, source)
  assert sum(source[i]["mask"].any() for i in range(len(source))) == len(source) // 2  # every fake has a mask


def test_image_manipulation_round_trip_and_split_discovery(tmp_path):
  make_image_set(str(tmp_path / "im" / "casia_v1"))
  make_image_set(str(tmp_path / "im" / "columbia"))
  (tmp_path / "im" / "pairs.json").write_text('[["casia_v1/Tp/a.png", "casia_v1/Gt/a_gt.png"], '
                                              '["columbia/Au/z.png", "Negative"]]')
  builder = _build(image_manipulation_dataset_builder.Builder, tmp_path / "tfds", tmp_path / "im", "casia")
  assert set(builder.info.splits) == {"casia_v1", "columbia", "pairs"}
  for split, reader in [("casia_v1", ImageManipulationReader(str(tmp_path / "im" / "casia_v1"), gt_suffix="_gt")),
                        ("pairs", ImageManipulationReader(json_path=str(tmp_path / "im" / "pairs.json")))]:
    _assert_same_records(reader, TfdsSource("image_manipulation/casia", split, str(tmp_path / "tfds")))


def test_builder_errors_name_the_missing_split_files(tmp_path):
  os.makedirs(tmp_path / "empty")
  with pytest.raises(AssertionError, match=r"Manual directory .*empty does not exist or is empty(.|\n)*ImageSets"):
    _build(video_inpainting_clips_dataset_builder.Builder, tmp_path / "tfds", tmp_path / "empty", "clip5_middle")
  (tmp_path / "empty" / "notes.txt").write_text("not a dataset")
  with pytest.raises(DataError, match=r"empty/ImageSets/\{split\}\.txt: no split file"):
    _build(video_inpainting_clips_dataset_builder.Builder, tmp_path / "tfds", tmp_path / "empty", "clip5_middle")
  with pytest.raises(DataError, match=r"empty: no Tp/ folder"):
    _build(image_manipulation_dataset_builder.Builder, tmp_path / "tfds", tmp_path / "empty", "default")


@pytest.mark.slow
def test_demo_corpus_converts_to_array_record_and_reads_back_like_the_folder_readers(tmp_path):
  from common.data import demo
  corpus = str(tmp_path / "demo")
  demo.build(corpus, seed=0, scale="tiny")
  clip3 = _base.ReaderConfig(name="clip3", reader_kwargs={"clip_length": 3})  # tiny demo videos have 4 frames
  _build(video_inpainting_clips_dataset_builder.Builder, tmp_path / "tfds", os.path.join(corpus, "video_inpainting"),
         clip3)
  source = TfdsSource("video_inpainting_clips/clip3", "test", str(tmp_path / "tfds"))
  _assert_same_records(VideoInpaintingReader(os.path.join(corpus, "video_inpainting"), "test", clip_length=3),
                       source)
  builder = _build(image_manipulation_dataset_builder.Builder, tmp_path / "tfds",
                   os.path.join(corpus, "image_manipulation"), "default")
  assert "test" in builder.info.splits
  _assert_same_records(ImageManipulationReader(json_path=os.path.join(corpus, "image_manipulation", "test.json")),
                       TfdsSource("image_manipulation/default", "test", str(tmp_path / "tfds")))
