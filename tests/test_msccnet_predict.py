"""MSCCNet through the shared predictor's face adapter on a face video and a face image: masks, overlays and scores
from an export and from a run directory (the thin golden weights converted into a smoke-config step-0 run), which
agree; the command line refuses a model of another kind."""
import json
import os

import cv2
import numpy as np
import pytest

from common.data import demo
from common.data.faces import crops as face_crops
from common.predict import media, run as predict_run
from common.train import export, serving, weights
from configs import msccnet as msccnet_configs
from msccnet_jax import convert

GOLDEN = os.path.join(os.path.dirname(__file__), "testdata", "golden")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  data = np.load(os.path.join(GOLDEN, "msccnet_thin_full.npz"), allow_pickle=False)
  params = {k[len("param/"):]: data[k] for k in data.files if k.startswith("param/")}
  config = msccnet_configs.get_config("smoke")
  config.model.depth = 50  # the thin golden model's depth (the smoke config trains a ResNet-26)
  workdir = str(tmp_path_factory.mktemp("msccnet_run"))
  module, _ = convert.from_torch_state_dict(params, config)
  weights.to_workdir(module, config, workdir)
  return workdir


@pytest.fixture(scope="module")
def face_video(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("demo") / "corpus")
  demo.build(out, seed=0, scale="tiny")
  return os.path.join(out, "faces", "manipulated_sequences", "FaceSwap", "c23", "videos", "000_001.mp4")


def _frames(out_dir):
  with open(os.path.join(out_dir, "scores.json")) as f:
    return json.load(f)["frames"]


def test_video_from_export_and_workdir_agree(run_dir, face_video, tmp_path, monkeypatch):
  # A fixed face box (the LBP cascade finds the face in only about a quarter of the demo frames).
  monkeypatch.setattr(face_crops.face_detection, "LbpCascadeDetector",
                      lambda: lambda frame: np.array([[60.0, 40.0, 110.0, 100.0]], np.float32))
  export.export(run_dir, str(tmp_path / "export"), platforms=("cpu",))
  exported = serving.load_export(str(tmp_path / "export"))
  assert exported.input.size == (64, 64) and exported.input.face_crop_scale == 1.3
  assert exported.inputs["image"]["dtype"] == "uint8" and "DCT" in exported.input.fixed_reason
  (row,) = predict_run.predict_all(exported, face_video, str(tmp_path / "a"), batch_size=2)
  frames = list(media.open_media(face_video).frames)
  records = _frames(tmp_path / "a" / "000_001")
  assert row["frames"] == len(records) == len(frames) and 0.0 <= row["score"] <= 1.0
  mask = cv2.imread(str(tmp_path / "a" / "000_001" / "masks" / "00000.png"), cv2.IMREAD_UNCHANGED)
  overlay = cv2.imread(str(tmp_path / "a" / "000_001" / "overlays" / "00000.png"))
  assert mask.shape == frames[0].shape[:2] and set(np.unique(mask)) <= {0, 255}
  assert overlay.shape == frames[0].shape
  x0, y0, x1, y1 = records[0]["box"]
  assert (x0, y0, x1, y1) == (46, 31, 124, 109)   # the box enlarged 1.3x to a square around its centre
  outside = np.ones(mask.shape, bool)
  outside[y0:y1, x0:x1] = False
  assert not mask[outside].any()

  (live,) = predict_run.predict_all(serving.load_workdir(run_dir), face_video, str(tmp_path / "b"), batch_size=2)
  np.testing.assert_allclose([r["score"] for r in _frames(tmp_path / "b" / "000_001")],
                             [r["score"] for r in records], atol=1e-5)
  assert live["score"] == pytest.approx(row["score"], abs=1e-5)


def test_face_image_as_full_crop(run_dir, tmp_path):
  served = serving.load_workdir(run_dir)
  image = np.random.default_rng(0).integers(0, 256, (50, 40, 3), dtype=np.uint8)
  path = str(tmp_path / "face.png")
  cv2.imwrite(path, image)
  predict_run.predict_all(served, path, str(tmp_path / "out"), face="full")
  assert _frames(tmp_path / "out" / "face")[0]["box"] == [0, 0, 40, 50]
  assert cv2.imread(str(tmp_path / "out" / "face" / "masks" / "00000.png")).shape[:2] == (50, 40)
