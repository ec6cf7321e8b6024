"""`python -m common.data.prepare` writes ArrayRecord shards that read back exactly as the folder readers' records;
it resumes, refuses changed inputs, skips or names bad sources; every method reads either format identically."""
import itertools
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from common.data import demo, prepare, prepared
from common.data.faces import detection
from common.data.prepare import shards
from common.data.readers import DataError, FaceForensicsReader, ImageManipulationReader, VideoInpaintingReader
from common.train import config as config_lib
from common.train.errors import RunError
from safepaint_jax.data import ImageSource
from tests.test_readers import make_inpainting_set

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FACES = dict(face_boxes="face_boxes.json", frames_per_video=2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("demo") / "corpus")
  demo.build(out, seed=0, scale="tiny")
  return out


@pytest.fixture(scope="module")
def prepared_sets(corpus, tmp_path_factory):
  """{family: prepared dir} of the tiny demo corpus, small shards so that views cross shard boundaries."""
  out = tmp_path_factory.mktemp("prepared")
  sets = {"video_inpainting": ("video_inpainting", {}), "faceforensics": ("faces", FACES),
          "faces_32": ("faces", {**FACES, "face_size": 32}),  # resized to Delocate's smoke input size
          "image_manipulation": ("image_manipulation", {}),
          "inpainting_images": ("inpainting", {"size": 64, "mask_threshold": 127})}
  for name, (folder, options) in sets.items():
    family = "faceforensics" if folder == "faces" else name
    prepare.prepare(family, os.path.join(corpus, folder), str(out / name), options=options, examples_per_shard=5)
  return {name: str(out / name) for name in sets}


def assert_same_records(reader, source):
  assert len(source) == len(reader) > 0
  for index in range(len(reader)):
    want, got = reader[index], source[index]
    assert set(got) == set(want) and got["id"] == want["id"] and got.get("label") == want.get("label")
    for key in set(want) - {"id", "label"}:
      assert got[key].dtype == want[key].dtype == np.uint8 and got[key].flags.writeable, key
      np.testing.assert_array_equal(got[key], want[key], err_msg=f"{key} of {want['id']}")


@pytest.mark.parametrize("kwargs", [dict(clip_length=3), dict(clip_length=2, clip_stride=2, include_pristine=True),
                                    dict(clip_length=3, target="all", frame_step=1, methods=("telea",))])
def test_clips_of_any_length_and_stride_read_back_as_the_folder_reader(corpus, prepared_sets, kwargs):
  root = os.path.join(corpus, "video_inpainting")
  for split in ("train", "test", "train+val"):
    reader = VideoInpaintingReader(root, split, **kwargs) if "+" not in split else None
    if reader is not None:
      assert_same_records(reader, prepared.PreparedClips(prepared_sets["video_inpainting"], split, **kwargs))
  joined = prepared.PreparedClips(prepared_sets["video_inpainting"], "train+val", **kwargs)
  assert len(joined) == 2 * len(VideoInpaintingReader(root, "train", **kwargs))


@pytest.mark.parametrize("kwargs", [dict(methods=("FaceSwap", "NeuralTextures")),
                                    dict(methods=("NeuralTextures", "FaceSwap"), real_per_method=False),
                                    dict(methods=(), real_per_method=False), dict(methods=("FaceSwap",))])
@pytest.mark.parametrize("split", ["train", "test", "train+val"])
def test_face_crops_read_back_as_the_folder_reader_for_every_listing(corpus, prepared_sets, kwargs, split):
  root = os.path.join(corpus, "faces")
  boxes = detection.PrecomputedFaceBoxes(os.path.join(root, "face_boxes.json"))
  reader = FaceForensicsReader(root, split, frames_per_video=2, face_boxes=boxes, **kwargs)
  assert_same_records(reader, prepared.PreparedFaces(prepared_sets["faceforensics"], split, **kwargs))


def test_images_read_back_as_the_folder_sources(corpus, prepared_sets):
  for split in ("train", "test"):
    assert_same_records(ImageManipulationReader(json_path=os.path.join(corpus, "image_manipulation", f"{split}.json")),
                        prepared.PreparedRecords(prepared_sets["image_manipulation"], split))
  folder = os.path.join(corpus, "inpainting")
  assert_same_records(ImageSource(os.path.join(folder, "train", "images"), 64),
                      prepared.PreparedRecords(prepared_sets["inpainting_images"], "train", with_masks=False))
  assert_same_records(ImageSource(os.path.join(folder, "test", "images"), 64, os.path.join(folder, "test", "masks"),
                                  mask_threshold=127),
                      prepared.PreparedRecords(prepared_sets["inpainting_images"], "test"))


def test_manifest_and_tfds_metadata(prepared_sets, corpus):
  import tensorflow_datasets as tfds
  manifest = prepared.manifest(prepared_sets["faceforensics"])
  assert manifest["options"]["frames_per_video"] == 2 and manifest["sources"]["files"] > 0
  assert manifest["splits"]["train"]["fake_crops_by_method"] == {"FaceSwap": 4, "NeuralTextures": 4}
  assert manifest["code"]["commit"] and manifest["libraries"]["numpy"]
  # Every distinct crop is stored once: 8 fakes and the 4 real crops they share (and the reals' own frames).
  assert manifest["splits"]["train"]["records"] == 12
  builder = tfds.builder_from_directory(prepared_sets["faceforensics"])
  assert builder.info.splits["train"].num_examples == 12 and builder.info.splits["train"].shard_lengths == [6, 6]
  video = prepared.manifest(prepared_sets["video_inpainting"])["splits"]["train"]
  assert video["videos_by_method"] == {"ns": 1, "telea": 1, "pristine": 1}


def test_interrupted_preparation_resumes_without_redoing_finished_shards(tmp_path, monkeypatch):
  make_inpainting_set(str(tmp_path / "vi"), videos=("bear", "car", "cow"))
  out = str(tmp_path / "out")
  written = []
  real_write = shards.write_shard

  def interrupted_after_two(task):
    if len(written) == 2:
      raise KeyboardInterrupt
    written.append(task.index)
    return real_write(task)

  monkeypatch.setattr(prepare, "write_shard", interrupted_after_two)
  with pytest.raises(KeyboardInterrupt):
    prepare.prepare("video_inpainting", str(tmp_path / "vi"), out, examples_per_shard=7)
  assert not os.path.exists(os.path.join(out, "manifest.json"))
  assert not [f for f in os.listdir(out) if ".tmp-" in f]
  done = {f: os.path.getmtime(os.path.join(out, f)) for f in os.listdir(out) if f.endswith(".json") and "-of-" in f}
  assert len(done) == 2
  written.clear()
  monkeypatch.setattr(prepare, "write_shard", lambda task: written.append(task.index) or real_write(task))
  manifest = prepare.prepare("video_inpainting", str(tmp_path / "vi"), out, examples_per_shard=7)
  assert written == [2, 3, 4, 5, 6, 7, 8]  # 9 videos of 7 frames, one per shard: only the unfinished ones
  assert all(os.path.getmtime(os.path.join(out, f)) == t for f, t in done.items())
  assert manifest["splits"]["train"]["records"] == 9 * 7
  reader = VideoInpaintingReader(str(tmp_path / "vi"), include_pristine=True)
  assert_same_records(reader, prepared.PreparedClips(out, "train", include_pristine=True))


def test_faces_are_detected_before_planning_and_planning_reads_them(corpus, tmp_path, monkeypatch, capsys):
  """Without a boxes JSON, the real videos' faces are detected first (in worker processes with --workers) into
  the reader's cache; planning then detects nothing itself, and the records are the folder reader's. (The LBP
  cascade finds no face in the demo's synthetic faces: a stand-in detector returns one box per frame.)"""
  monkeypatch.setenv("JAX_FORENSICS_CACHE", str(tmp_path / "cache"))
  monkeypatch.setattr(detection.LbpCascadeDetector, "__call__", lambda self, frame: np.array([[40., 30., 120., 110.]]))
  root = os.path.join(corpus, "faces")
  with open(os.path.join(root, "splits", "test.json")) as f:
    real_videos = {v for pair in json.load(f) for v in pair}
  detect, plan, planning = detection.CascadeFaceBoxes._detect, prepare._plan, []

  def detect_before_planning(self, video, frames, found):
    assert not (planning and frames), f"{video} {frames} detected while planning"
    detect(self, video, frames, found)

  monkeypatch.setattr(detection.CascadeFaceBoxes, "_detect", detect_before_planning)
  monkeypatch.setattr(prepare, "_plan", lambda *a: planning.append(True) or plan(*a))
  out = str(tmp_path / "out")
  prepare.prepare("faceforensics", root, out, splits=("test",), options={"frames_per_video": 2})
  n = len(real_videos)
  assert f"prepare: detecting faces in the real videos: {n}/{n} in " in capsys.readouterr().out
  assert len(os.listdir(tmp_path / "cache" / "ffpp_index")) == 1
  methods = tuple(prepared.face_methods(out))
  assert_same_records(FaceForensicsReader(root, "test", methods=methods, frames_per_video=2),
                      prepared.PreparedFaces(out, "test", methods=methods))


def test_changed_options_or_sources_are_refused_on_resumption(tmp_path):
  make_inpainting_set(str(tmp_path / "vi"), videos=("bear",))
  out = str(tmp_path / "out")
  prepare.prepare("video_inpainting", str(tmp_path / "vi"), out)
  with pytest.raises(ValueError, match=r"other inputs \(options: .*'include_pristine': True.*False"):
    prepare.prepare("video_inpainting", str(tmp_path / "vi"), out, options={"include_pristine": False})
  os.remove(os.path.join(tmp_path, "vi", "Inpainted", "VI", "bear", "00006.png"))
  with pytest.raises(ValueError, match=r"other inputs \(sources_digest: "):
    prepare.prepare("video_inpainting", str(tmp_path / "vi"), out)
  with pytest.raises(ValueError, match=r"not empty and holds no preparation"):
    prepare.prepare("video_inpainting", str(tmp_path / "vi"), str(tmp_path / "vi"))
  with pytest.raises(ValueError, match=r"\['compression'\] do not apply to family 'video_inpainting'"):
    prepare.prepare("video_inpainting", str(tmp_path / "vi"), str(tmp_path / "o2"), options={"compression": "c40"})


def test_a_live_preparation_locks_its_out_folder(tmp_path):
  """A second preparation on the same --out is refused while the first lives; a dead one's lock is taken over."""
  make_inpainting_set(str(tmp_path / "vi"), videos=("bear",), methods=("VI",))
  out = tmp_path / "out"
  out.mkdir()
  holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
  try:
    (out / "run.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid, "started": 0,
                                              "token": 7, "beat": 0}))
    with pytest.raises(RunError, match=rf"run\.lock: the run directory is in use by host .*, pid {holder.pid}"):
      prepare.prepare("video_inpainting", str(tmp_path / "vi"), str(out))
    assert os.listdir(out) == ["run.lock"]
  finally:
    holder.kill()
    holder.wait()
  assert prepare.prepare("video_inpainting", str(tmp_path / "vi"), str(out))["splits"]["train"]["records"] == 14
  assert not os.path.exists(out / "run.lock")


def test_a_bad_source_is_skipped_into_the_manifest_or_named(tmp_path):
  make_inpainting_set(str(tmp_path / "vi"))
  bad = tmp_path / "vi" / "Inpainted" / "VI" / "car" / "00002.png"
  bad.write_bytes(bad.read_bytes()[:bad.stat().st_size // 2])  # the header reads: found when it is decoded
  with pytest.raises(DataError, match=r"Inpainted/VI/car/00002\.png: cannot decode image"):
    prepare.prepare("video_inpainting", str(tmp_path / "vi"), str(tmp_path / "raise"))
  manifest = prepare.prepare("video_inpainting", str(tmp_path / "vi"), str(tmp_path / "skip"),
                             options={"on_error": "skip"})
  (path, problem), = manifest["splits"]["train"]["skipped"]
  assert path.endswith("Inpainted/VI/car/00002.png") and "cannot decode" in problem
  clips = prepared.PreparedClips(str(tmp_path / "skip"), "train", clip_length=3)
  assert not [i for i in range(len(clips)) if clips[i]["id"].startswith("Inpainted/VI/car/")]
  assert len(clips) == 3 * 5  # VI/bear, OP/bear, OP/car: 7 frames, 5 clips each


def test_cli_prints_a_summary_and_one_line_errors(tmp_path):
  make_inpainting_set(str(tmp_path / "vi"), videos=("bear",), methods=("VI",))
  run = lambda *args: subprocess.run([sys.executable, "-m", "common.data.prepare", *args], capture_output=True,
                                     text=True, cwd=REPO, timeout=300)
  done = run("--family=video_inpainting", f"--root={tmp_path / 'vi'}", f"--out={tmp_path / 'out'}")
  assert done.returncode == 0, done.stderr
  assert "prepare: 1/1 shards, 14 records written" in done.stdout and "ETA done" in done.stdout
  assert json.loads(done.stdout.strip().splitlines()[-1])["splits"]["train"]["records"] == 14
  bad = run("--family=video_inpainting", f"--root={tmp_path / 'missing'}", f"--out={tmp_path / 'o2'}")
  assert bad.returncode == 1 and bad.stderr.splitlines()[0].endswith("missing: --root: dataset folder not found")
  bad = run("--family=faceforensics", f"--root={tmp_path / 'vi'}", f"--out={tmp_path / 'o3'}", "--gt_suffix=_gt")
  assert bad.returncode == 1 and "['gt_suffix'] do not apply to family 'faceforensics'" in bad.stderr.splitlines()[0]


@pytest.mark.slow  # 30-50 s: Beam's DirectRunner starts two worker processes
def test_beam_direct_runner_with_two_workers_writes_the_same_records(tmp_path):
  make_inpainting_set(str(tmp_path / "vi"))
  local = prepare.prepare("video_inpainting", str(tmp_path / "vi"), str(tmp_path / "local"), examples_per_shard=7)
  beam = prepare.prepare("video_inpainting", str(tmp_path / "vi"), str(tmp_path / "beam"), examples_per_shard=7,
                         runner="beam", workers=2)
  assert beam["splits"] == local["splits"] and beam["runner"] == "beam"
  names = sorted(f for f in os.listdir(tmp_path / "local") if "array_record" in f)
  assert names == sorted(f for f in os.listdir(tmp_path / "beam") if "array_record" in f) and len(names) == 2 * 6
  assert (tmp_path / "local" / "index-train.json").read_text() == (tmp_path / "beam" / "index-train.json").read_text()
  # The same examples (protobuf may order a record's features differently in another process: compare decoded).
  assert_same_records(prepared.PreparedClips(str(tmp_path / "local"), "train", clip_length=1, include_pristine=True),
                      prepared.PreparedClips(str(tmp_path / "beam"), "train", clip_length=1, include_pristine=True))


# ---------------------------------------------------------------------------------------- every method
def method_config(method: str, corpus: str, prepared_sets: dict, fmt: str, stage: int = 1,
                  faces: str = "faceforensics"):
  import importlib
  c = importlib.import_module(f"configs.{method}").get_config("smoke")
  d = c.data
  if method == "vilocal":
    d.root, family = os.path.join(corpus, "video_inpainting"), "video_inpainting"
  elif method in ("msccnet", "delocate"):
    d.root, family = os.path.join(corpus, "faces"), faces
    d.update(FACES)
    c.stage = stage
  elif method == "ncl":
    d.sets = {s: os.path.join(corpus, "image_manipulation", f"{s}.json") for s in ("train", "test")}
    family = "image_manipulation"
  else:
    folder = os.path.join(corpus, "inpainting")
    d.update(dict(train_images=os.path.join(folder, "train", "images"), train_masks=os.path.join(folder, "train", "masks"),
                  test_images=os.path.join(folder, "test", "images"), test_masks=os.path.join(folder, "test", "masks"),
                  size=64))
    family = "inpainting_images"
  d.format, d.prepared_dir = fmt, prepared_sets[family] if fmt == "arrayrecord" else ""
  return c


@pytest.mark.parametrize("method,stage,faces", [("vilocal", 1, ""), ("msccnet", 1, "faceforensics"),
                                                ("delocate", 1, "faceforensics"), ("delocate", 2, "faceforensics"),
                                                ("delocate", 1, "faces_32"), ("ncl", 1, ""), ("safepaint", 1, "")])
def test_every_method_reads_identical_batches_from_both_formats(method, stage, faces, corpus, prepared_sets):
  """faces_32: crops stored at Delocate's input size give the batches of crops resized in the pipeline. The
  training loop sees only these batches; a whole run from shards ending as the folder run ends is the rehearsal
  (tests/test_rehearsal.py: ViLocal, two processes from shards against one from folders). A smoke run of each of
  the other four methods per format ended equal too (2026-12-07), at 96-527 s of the suite's time."""
  tasks = {fmt: config_lib.build_task(method_config(method, corpus, prepared_sets, fmt, stage, faces))
           for fmt in ("folder", "arrayrecord")}
  for split in ("train", "test"):
    folder, arrayrecord = (list(itertools.islice(tasks[fmt].input_pipeline(split), 2)) for fmt in tasks)
    assert len(arrayrecord) == len(folder) > 0
    for want, got in zip(folder, arrayrecord):
      assert set(got) == set(want), split
      for key in want:
        np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(want[key]), err_msg=f"{split} {key}")


def test_a_prepared_set_that_does_not_match_the_config_is_refused(corpus, prepared_sets):
  c = method_config("msccnet", corpus, prepared_sets, "arrayrecord")
  c.data.frames_per_video = 3
  with pytest.raises(DataError, match=r"prepared with frames_per_video=2, but the config asks "
                                      r"data.frames_per_video=3: prepare again with --frames_per_video"):
    config_lib.build_task(c).source("train")
  c = method_config("msccnet", corpus, prepared_sets, "arrayrecord", faces="faces_32")
  with pytest.raises(DataError, match=r"prepared with face_size=32, but the config asks data.size=64: prepare "
                                      r"again with --face_size=64 \(or 0\)"):
    config_lib.build_task(c).source("train")
  c.data.size, c.data.augment = 32, True
  with pytest.raises(DataError, match=r"face_size=32, but this config's training augments the crop at its own "
                                      r"resolution \(data.augment\): prepare again with --face_size=0"):
    config_lib.build_task(c).source("train")
  c = method_config("ncl", corpus, prepared_sets, "arrayrecord")
  c.data.prepared_dir = prepared_sets["faceforensics"]
  with pytest.raises(DataError, match=r"holds a faceforensics dataset, not image_manipulation"):
    config_lib.build_task(c).source("train")
  c.data.format = "tfrecord"
  with pytest.raises(ValueError, match=r"data.format must be one of \('folder', 'arrayrecord'\), got 'tfrecord'"):
    config_lib.build_task(c).source("train")
  c.data.format, c.data.prepared_dir = "arrayrecord", ""
  with pytest.raises(ValueError, match=r"data.prepared_dir is empty"):
    config_lib.build_task(c).source("train")
