"""MSCCNet predict script on a face video and a face image: masks, overlays and scores from an export and from a
run directory (the thin golden weights converted into a smoke-config step-0 run), which agree; bad inputs."""
import json
import os

import cv2
import numpy as np
import pytest

from common.data import demo
from common.data.faces import crops as face_crops
from common.train import export, serving, weights
from configs import msccnet as msccnet_configs
from msccnet_jax import convert, predict

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


def test_video_from_export_and_workdir_agree(run_dir, face_video, tmp_path, monkeypatch):
  # A fixed face box (the LBP cascade finds the face in only about a quarter of the demo frames).
  monkeypatch.setattr(face_crops.face_detection, "LbpCascadeDetector",
                      lambda: lambda frame: np.array([[60.0, 40.0, 110.0, 100.0]], np.float32))
  export.export(run_dir, str(tmp_path / "export"), platforms=("cpu",))
  exported = predict.load(export_dir=str(tmp_path / "export"))
  assert exported.size == 64
  result = predict.predict_file(exported, face_video, str(tmp_path / "a"), batch_size=2)
  frames = face_crops.read_frames(face_video)
  assert len(result["frames"]) == len(frames) and 0.0 <= result["mean_score"] <= 1.0
  mask = cv2.imread(str(tmp_path / "a" / "masks" / "00000.png"), cv2.IMREAD_UNCHANGED)
  overlay = cv2.imread(str(tmp_path / "a" / "overlays" / "00000.png"))
  assert mask.shape == frames[0].shape[:2] and set(np.unique(mask)) <= {0, 255}
  assert overlay.shape == frames[0].shape
  x0, y0, x1, y1 = result["frames"][0]["box"]
  assert (x0, y0, x1, y1) == (46, 31, 124, 109)   # the box enlarged 1.3x to a square around its centre
  outside = np.ones(mask.shape, bool)
  outside[y0:y1, x0:x1] = False
  assert not mask[outside].any()

  live = predict.predict_file(predict.load(workdir=run_dir), face_video, str(tmp_path / "b"), batch_size=2)
  np.testing.assert_allclose([r["score"] for r in live["frames"]], [r["score"] for r in result["frames"]],
                             atol=1e-5)
  with open(tmp_path / "b" / "scores.json") as f:
    assert json.load(f)["mean_score"] == pytest.approx(live["mean_score"])


def test_face_image_as_full_crop_and_bad_inputs(run_dir, tmp_path):
  predictor = predict.load(workdir=run_dir)
  image = np.random.default_rng(0).integers(0, 256, (50, 40, 3), dtype=np.uint8)
  path = str(tmp_path / "face.png")
  cv2.imwrite(path, image)
  result = predict.predict_file(predictor, path, str(tmp_path / "out"), face="full")
  assert result["frames"][0]["box"] == [0, 0, 40, 50]
  assert cv2.imread(str(tmp_path / "out" / "masks" / "00000.png")).shape[:2] == (50, 40)
  with pytest.raises(FileNotFoundError, match="no such image"):
    face_crops.read_frames(str(tmp_path / "missing.mp4"))
  (tmp_path / "bad.mp4").write_bytes(b"not a video")
  with pytest.raises(ValueError, match="cannot read a frame"):
    face_crops.read_frames(str(tmp_path / "bad.mp4"))
  with pytest.raises(ValueError, match="not an MSCCNet model"):
    predict._predictor(serving.Served(None, {"frames": {"shape": [5, 8, 8, 3]}}, {"probs": ""}, "x"))
