"""Delocate's predict: a face video (or image) in, per-frame scores, a video score, masks, overlays and recoveries
out, at each frame's resolution; bad inputs and non-Delocate models are refused with clear errors."""
import json

import cv2
import jax
import numpy as np
import pytest

from common.data.demo import faces as demo_faces
from common.train import config as config_lib, serving
from configs import delocate as delocate_configs
from delocate_jax import predict


@pytest.fixture(scope="module")
def predictor():
  c = delocate_configs.get_config("smoke")
  c.stage = 2
  task = config_lib.build_task(c)
  state = jax.jit(task.init)(task.key(0))
  apply = jax.jit(lambda state, inputs: task.predict(task.models(state), inputs))
  return predict.Predictor(lambda inputs: apply(state, inputs), c.data.size)


def _video(path, frames=3):
  rng = np.random.default_rng(0)
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
  for _ in range(frames):
    writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
  writer.release()


def test_video_in_scores_masks_overlays_and_recoveries_out(predictor, tmp_path):
  path = str(tmp_path / "clip.mp4")
  _video(path)
  result = predict.predict_file(predictor, path, str(tmp_path / "out"), face="full", batch_size=2)
  frames = result["frames"]
  assert [f["frame"] for f in frames] == [0, 1, 2]
  assert result["video_score"] == pytest.approx(np.mean([f["score"] for f in frames]))
  assert all(0.0 <= f["score"] <= 1.0 for f in frames)
  for kind, shape in (("masks", (48, 64)), ("overlays", (48, 64, 3)), ("recoveries", (32, 64, 3))):
    image = cv2.imread(str(tmp_path / "out" / kind / "00002.png"), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.shape == shape, kind
  with open(tmp_path / "out" / "scores.json") as f:
    assert json.load(f)["video_score"] == pytest.approx(result["video_score"])
  maxed = predict.predict_file(predictor, path, str(tmp_path / "max"), face="full", aggregation="max")
  assert maxed["video_score"] == pytest.approx(max(f["score"] for f in frames))


def test_face_image_is_detected_and_cropped(predictor, tmp_path):
  frame = demo_faces.demo_media.read_video(demo_faces.SOURCE_VIDEO, [0])[0]
  path = str(tmp_path / "face.png")
  cv2.imwrite(path, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
  result = predict.predict_file(predictor, path, str(tmp_path / "out"))
  x0, y0, x1, y1 = result["frames"][0]["box"]
  assert x1 - x0 == y1 - y0 and x1 - x0 < min(frame.shape[:2])  # a square face crop, not the frame


def test_bad_inputs_are_refused(predictor, tmp_path):
  with pytest.raises(FileNotFoundError, match="missing.mp4"):
    predict.predict_file(predictor, str(tmp_path / "missing.mp4"), str(tmp_path / "out"))
  bad = tmp_path / "bad.mp4"
  bad.write_bytes(b"not a video")
  with pytest.raises(ValueError, match="bad.mp4"):
    predict.predict_file(predictor, str(bad), str(tmp_path / "out"))
  with pytest.raises(ValueError, match="aggregation"):
    predict.predict_file(predictor, str(bad), str(tmp_path / "out"), aggregation="median")


def test_other_models_are_refused(monkeypatch):
  served = serving.Served(lambda x: x, {"image": {"shape": [32, 32, 3], "dtype": "float32"}},
                          {"score": "", "probs": ""}, "elsewhere")
  monkeypatch.setattr(serving, "load", lambda *a, **k: served)
  with pytest.raises(ValueError, match="not a Delocate model"):
    predict.load(workdir="elsewhere")
