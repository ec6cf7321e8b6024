"""Delocate through the shared predictor: a face video (or image) in, per-frame scores, the input's score, masks,
overlays and recoveries out, at each frame's resolution; an unreadable input is a row with its error while the
others go on; a model of another kind is refused."""
import json

import cv2
import jax
import numpy as np
import pytest

from common import inference
from common.data.demo import faces as demo_faces
from common.predict import run as predict_run
from common.train import config as config_lib, serving
from configs import delocate as delocate_configs
from delocate_jax import predict


@pytest.fixture(scope="module")
def served():
  c = delocate_configs.get_config("smoke")
  c.stage = 2
  task = config_lib.build_task(c)
  return serving.from_task(task, jax.jit(task.init)(task.key(0)), {}, "smoke")


def _video(path, frames=3):
  rng = np.random.default_rng(0)
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
  for _ in range(frames):
    writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
  writer.release()


def _scores(folder):
  with open(folder / "scores.json") as f:
    return json.load(f)


def test_video_in_scores_masks_overlays_and_recoveries_out(served, tmp_path):
  path = str(tmp_path / "clip.mp4")
  _video(path)
  (row,) = predict_run.predict_all(served, path, str(tmp_path / "out"), face="full", batch_size=2,
                                   extra=predict.write_recovery)
  frames = _scores(tmp_path / "out" / "clip")["frames"]
  assert [f["frame"] for f in frames] == [0, 1, 2]
  assert row["score"] == pytest.approx(np.mean([f["score"] for f in frames]))
  assert all(0.0 <= f["score"] <= 1.0 for f in frames)
  for kind, shape in (("masks", (48, 64)), ("overlays", (48, 64, 3)), ("recoveries", (32, 64, 3))):
    image = cv2.imread(str(tmp_path / "out" / "clip" / kind / "00002.png"), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.shape == shape, kind
  (maxed,) = predict_run.predict_all(served, path, str(tmp_path / "max"), face="full", aggregation="max")
  assert maxed["score"] == pytest.approx(max(f["score"] for f in frames))


def test_face_image_is_detected_and_cropped(served, tmp_path):
  frame = demo_faces.demo_media.read_video(demo_faces.SOURCE_VIDEO, [0])[0]
  path = str(tmp_path / "face.png")
  cv2.imwrite(path, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
  predict_run.predict_all(served, path, str(tmp_path / "out"))
  x0, y0, x1, y1 = _scores(tmp_path / "out" / "face")["frames"][0]["box"]
  assert x1 - x0 == y1 - y0 and x1 - x0 < min(frame.shape[:2])  # a square face crop, not the frame


def test_an_unreadable_input_is_one_line_and_the_others_go_on(served, tmp_path, capsys):
  inputs = tmp_path / "inputs"
  inputs.mkdir()
  _video(str(inputs / "a.mp4"))
  (inputs / "b.mp4").write_bytes(b"not a video")
  rows = predict_run.predict_all(served, str(inputs), str(tmp_path / "out"), face="full")
  assert [r["error"] == "" for r in rows] == [True, False] and "b.mp4: OpenCV cannot read" in rows[1]["error"]
  assert "error: " in capsys.readouterr().err
  with open(tmp_path / "out" / "scores.csv") as f:
    assert "b.mp4" in f.read()
  with pytest.raises(FileNotFoundError, match="missing.mp4"):
    predict_run.predict_all(served, str(tmp_path / "missing.mp4"), str(tmp_path / "out"))
  with pytest.raises(ValueError, match="aggregation"):
    predict_run.predict_all(served, str(inputs / "a.mp4"), str(tmp_path / "out"), aggregation="median")


def test_other_models_are_refused(served):
  clip = serving.Served(None, {}, inference.InputSpec("clip", (8, 8), clip_length=5, fixed_reason="x"), {}, {}, "there")
  with pytest.raises(ValueError, match="there: not a Delocate model"):
    predict_run.require_kind(clip, "Delocate", "face")
  assert predict_run.require_kind(served, "Delocate", "face") is served
