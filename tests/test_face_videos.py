"""Cross-dataset face-video sets (Celeb-DF v2, DFDC, DFD) in their published layouts, built from the tiny demo
corpus's FF++ videos: labels, the FF++ reader's crops for the same frames, and one-line errors."""
import json
import os
import shutil

import numpy as np
import pytest

from common.data import demo
from common.data.faces import detection
from common.data.readers import DataError, FaceForensicsReader
from common.data.readers.face_videos import FaceVideoReader


@pytest.fixture(scope="module")
def ffpp(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("demo") / "corpus")
  demo.build(out, seed=0, scale="tiny")
  return os.path.join(out, "faces")


def real(ffpp, vid):
  return os.path.join(ffpp, "original_sequences", "youtube", "c23", "videos", f"{vid}.mp4")


def fake(ffpp, name):
  return os.path.join(ffpp, "manipulated_sequences", "FaceSwap", "c23", "videos", f"{name}.mp4")


def layout(root, ffpp, files: dict[str, str]):
  """Copies {relative path: source video} under `root` with face boxes keyed as the reader keys them (the
  relative path without extension; a fake takes its target's boxes, as FF++'s crops do)."""
  with open(os.path.join(ffpp, "face_boxes.json")) as f:
    demo_boxes = json.load(f)
  boxes = {}
  for rel, source in files.items():
    os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
    shutil.copy(source, os.path.join(root, rel))
    boxes[os.path.splitext(rel)[0]] = demo_boxes[os.path.basename(source)[:3]]
  with open(os.path.join(root, "boxes.json"), "w") as f:
    json.dump(boxes, f)
  return detection.PrecomputedFaceBoxes(os.path.join(root, "boxes.json"))


def test_celeb_df_lists_its_test_videos_with_real_as_label_0_and_crops_as_ff_does(ffpp, tmp_path):
  root = str(tmp_path / "celeb")
  boxes = layout(root, ffpp, {"Celeb-real/id6_0000.mp4": real(ffpp, "004"),
                              "Celeb-synthesis/id6_id7_0000.mp4": fake(ffpp, "004_005"),
                              "YouTube-real/00007.mp4": real(ffpp, "005")})
  (tmp_path / "celeb" / "List_of_testing_videos.txt").write_text(
      "1 YouTube-real/00007.mp4\n0 Celeb-synthesis/id6_id7_0000.mp4\n1 Celeb-real/id6_0000.mp4\n")
  reader = FaceVideoReader(root, "celeb_df", frames_per_video=2, face_boxes=boxes)
  assert [(r["id"].split("#")[0], r["label"]) for r in (reader[i] for i in range(0, 6, 2))] == [
      ("YouTube-real/00007.mp4", 0), ("Celeb-synthesis/id6_id7_0000.mp4", 1), ("Celeb-real/id6_0000.mp4", 0)]
  ff = FaceForensicsReader(ffpp, "test", methods=("FaceSwap",), frames_per_video=2, real_per_method=True,
                           face_boxes=detection.PrecomputedFaceBoxes(os.path.join(ffpp, "face_boxes.json")))
  ff_records = {ff[i]["id"]: ff[i] for i in range(len(ff))}
  for i in range(len(reader)):
    record = reader[i]
    video, frame = record["id"].split("#")
    source = {"YouTube-real/00007.mp4": "original_sequences/youtube/c23/videos/005.mp4",
              "Celeb-synthesis/id6_id7_0000.mp4": "manipulated_sequences/FaceSwap/c23/videos/004_005.mp4",
              "Celeb-real/id6_0000.mp4": "original_sequences/youtube/c23/videos/004.mp4"}[video]
    np.testing.assert_array_equal(record["image"], ff_records[f"{source}#{frame}"]["image"], err_msg=record["id"])
    assert record["mask"].shape == record["image"].shape[:2] and not record["mask"].any()


def test_dfdc_metadata_or_labels_csv_and_dfd_sequences(ffpp, tmp_path):
  root = str(tmp_path / "dfdc")
  boxes = layout(root, ffpp, {"aaa.mp4": real(ffpp, "004"), "bbb.mp4": fake(ffpp, "004_005")})
  (tmp_path / "dfdc" / "labels.csv").write_text("filename,label\naaa.mp4,0\nbbb.mp4,1\n")
  labels = lambda r: sorted({(r[i]["id"].split("#")[0], r[i]["label"]) for i in range(len(r))})
  assert labels(FaceVideoReader(root, "dfdc", frames_per_video=2, face_boxes=boxes)) == [("aaa.mp4", 0), ("bbb.mp4", 1)]
  (tmp_path / "dfdc" / "metadata.json").write_text(
      json.dumps({"aaa.mp4": {"label": "FAKE"}, "bbb.mp4": {"label": "REAL"}}))
  assert labels(FaceVideoReader(root, "dfdc", frames_per_video=2, face_boxes=boxes)) == [("aaa.mp4", 1), ("bbb.mp4", 0)]
  root = str(tmp_path / "dfd")
  fakes = "manipulated_sequences/DeepFakeDetection/c23/videos"
  boxes = layout(root, ffpp, {"original_sequences/actors/c23/videos/01__walk.mp4": real(ffpp, "004"),
                              f"{fakes}/01_02__walk.mp4": fake(ffpp, "004_005")})
  assert [label for _, label in labels(FaceVideoReader(root, "dfd", frames_per_video=2, face_boxes=boxes))] == [1, 0]


def test_bad_sets_are_one_error_naming_the_file_or_a_counted_skip(ffpp, tmp_path):
  root = str(tmp_path / "celeb")
  boxes = layout(root, ffpp, {"Celeb-real/id6_0000.mp4": real(ffpp, "004")})
  with pytest.raises(DataError, match=r"List_of_testing_videos\.txt: missing test list"):
    FaceVideoReader(root, "celeb_df", face_boxes=boxes)
  (tmp_path / "celeb" / "List_of_testing_videos.txt").write_text("1 Celeb-real/id6_0000.mp4\nreal Celeb-real/x.mp4\n")
  with pytest.raises(DataError, match=r"line 2: expected '<1 real \| 0 fake> <folder>/<video>.mp4', got 'real"):
    FaceVideoReader(root, "celeb_df", face_boxes=boxes)
  (tmp_path / "celeb" / "List_of_testing_videos.txt").write_text(
      "1 Celeb-real/id6_0000.mp4\n0 Celeb-synthesis/gone.mp4\n")
  with pytest.raises(DataError, match=r"Celeb-synthesis/gone\.mp4: listed by the celeb_df set but missing"):
    FaceVideoReader(root, "celeb_df", face_boxes=boxes)
  reader = FaceVideoReader(root, "celeb_df", frames_per_video=2, face_boxes=boxes, on_error="skip")
  assert len(reader) == 2 and [os.path.basename(p) for p, _ in reader.skipped] == ["gone.mp4"]
  with pytest.raises(DataError, match="no metadata.json or labels.csv"):
    FaceVideoReader(str(tmp_path), "dfdc", face_boxes=boxes)
  with pytest.raises(ValueError, match="layout must be one of"):
    FaceVideoReader(root, "celebdf")
