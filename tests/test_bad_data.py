"""Bad data fails loudly with the file's name; on_error='skip' drops and counts it when the index is built."""
import importlib
import inspect
import json
import logging
import os
import pickle
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from common.data.faces import detection as face_detection
from common.data.readers import DataError, FaceForensicsReader, ImageManipulationReader, VideoInpaintingReader, media
from tests.test_readers import ffpp_reader, make_ffpp_set, make_image_set, make_inpainting_set, write_video


@pytest.fixture(scope="module")
def ffpp_root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("ffpp_pristine"))
  make_ffpp_set(root)
  return root


@pytest.fixture
def ffpp_copy(ffpp_root, tmp_path):
  root = str(tmp_path / "ffpp")
  shutil.copytree(ffpp_root, root, ignore=shutil.ignore_patterns("cache"))
  return root


def _truncate(path, keep=0.5):
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:int(len(data) * keep)])


# ------------------------------------------------------------------------------------------------- media
def test_data_error_names_the_file_and_pickles():
  error = DataError("/data/x.png", "cannot decode image")
  assert str(error) == "/data/x.png: cannot decode image" and isinstance(error, ValueError)
  clone = pickle.loads(pickle.dumps(error))
  assert isinstance(clone, DataError) and str(clone) == str(error)


def test_truncated_and_unreadable_media(tmp_path):
  frames = np.stack([np.full((32, 48, 3), 10 * i, np.uint8) for i in range(20)])
  mkv = str(tmp_path / "clip.mkv")
  write_video(mkv, frames, "FFV1")
  assert media.probe_video(mkv).num_frames == 20
  _truncate(mkv)  # Matroska keeps its header: it opens, announces 20 frames, decodes fewer
  with pytest.raises(DataError, match=r"clip\.mkv: truncated video: the header announces 20 frames"):
    media.probe_video(mkv)
  with pytest.raises(DataError, match=r"clip\.mkv: truncated or corrupt video: frame \d+ cannot be decoded"):
    media.read_video_frames(mkv, [19])
  (tmp_path / "noise.mp4").write_bytes(b"\x00not a video" * 10)
  with pytest.raises(DataError, match=r"noise\.mp4: cannot open video"):
    media.probe_video(str(tmp_path / "noise.mp4"))
  with pytest.raises(DataError, match=r"absent\.mp4: video file not found"):
    media.read_video_frames(str(tmp_path / "absent.mp4"), [0])
  Image.fromarray(frames[3]).save(tmp_path / "frame.jpg")
  _truncate(str(tmp_path / "frame.jpg"), 0.6)
  with pytest.raises(DataError, match=r"frame\.jpg: cannot decode image"):
    media.read_image(str(tmp_path / "frame.jpg"))
  (tmp_path / "empty.png").write_bytes(b"")
  with pytest.raises(DataError, match=r"empty\.png: empty file"):
    media.read_mask(str(tmp_path / "empty.png"))


# ---------------------------------------------------------------------------------------- video inpainting
@pytest.fixture
def vi_root(tmp_path):
  root = str(tmp_path / "vi")
  make_inpainting_set(root)  # videos bear, car; methods VI, OP; 7 frames -> 3 clips per video and method
  return root


def _expect(make, match, skipped_len, skipped_match):
  with pytest.raises(DataError, match=match):
    make("raise")
  reader = make("skip")
  assert len(reader.skipped) >= 1 and any(skipped_match in f"{p}: {why}" for p, why in reader.skipped), \
      reader.skipped
  assert len(reader) == skipped_len
  return reader


def test_vi_mask_size_differs(vi_root):
  mask = os.path.join(vi_root, "Annotations", "car", "00003.png")
  Image.fromarray(np.zeros((20, 32), np.uint8)).save(mask)
  make = lambda on_error: VideoInpaintingReader(vi_root, on_error=on_error)
  reader = _expect(make, r"Annotations/car/00003\.png: mask is 20x32 but its frame .*Inpainted/OP/car/00003\.png "
                         r"is 24x32", 2 * 3, "Annotations/car/00003.png")
  assert all("/car/" not in reader[i]["id"] for i in range(len(reader)))
  unchecked = VideoInpaintingReader(vi_root, verify="none")  # the mismatch then surfaces when the clip is read
  with pytest.raises(DataError, match=r"Annotations/car/00003\.png: mask is 20x32"):
    [unchecked[i] for i in range(len(unchecked))]


def test_vi_missing_mask(vi_root):
  os.remove(os.path.join(vi_root, "Annotations", "bear", "00005.png"))
  make = lambda on_error: VideoInpaintingReader(vi_root, on_error=on_error)
  _expect(make, r"Annotations/bear/00005\.png: missing mask of frame .*Inpainted/OP/bear/00005\.png", 2 * 3,
          "missing mask")


def test_vi_empty_folder_and_short_video(vi_root):
  folder = os.path.join(vi_root, "Inpainted", "VI", "bear")
  shutil.rmtree(folder)
  os.makedirs(folder)
  make = lambda on_error: VideoInpaintingReader(vi_root, on_error=on_error)
  _expect(make, r"Inpainted/VI/bear: empty frames folder", 3 * 3, "empty frames folder")
  make = lambda on_error: VideoInpaintingReader(vi_root, methods=["OP"], clip_length=9, on_error=on_error)
  with pytest.raises(DataError, match=r"OP/bear: only 7 frames, a clip spans 9"):
    make("raise")
  with pytest.raises(DataError, match="no clip in split 'train' \\(2 videos skipped\\)"):
    make("skip")  # nothing usable at all is still an error


def test_vi_split_names_missing_video(vi_root):
  with open(os.path.join(vi_root, "ImageSets", "train.txt"), "a") as f:
    f.write("ghost\n")
  make = lambda on_error: VideoInpaintingReader(vi_root, on_error=on_error)
  _expect(make, r"Inpainted/OP/ghost: the split names video 'ghost' but its folder is missing", 2 * 2 * 3,
          "ghost")
  with pytest.raises(DataError, match=r"ImageSets/val\.txt: split file not found"):
    VideoInpaintingReader(vi_root, "val")


def test_vi_corrupt_frame(vi_root):
  _truncate(os.path.join(vi_root, "Inpainted", "VI", "car", "00002.png"), 0.5)
  make = lambda on_error: VideoInpaintingReader(vi_root, verify="decode", on_error=on_error)
  _expect(make, r"Inpainted/VI/car/00002\.png: cannot decode image", 3 * 3, "VI/car/00002.png")
  lazy = VideoInpaintingReader(vi_root, methods=["VI"], videos=["car"])  # headers are intact: found on read
  with pytest.raises(DataError, match=r"Inpainted/VI/car/00002\.png: cannot decode image"):
    lazy[0]


# -------------------------------------------------------------------------------------- image manipulation
def test_im_bad_pairs(tmp_path):
  root = str(tmp_path / "im")
  make_image_set(root)  # Tp a, b, c with Gt *_gt, Au z
  os.remove(os.path.join(root, "Gt", "b_gt.png"))
  Image.fromarray(np.zeros((5, 5), np.uint8)).save(os.path.join(root, "Gt", "c_gt.png"))
  Image.fromarray(np.zeros((5, 5), np.uint8)).save(os.path.join(root, "Gt", "orphan_gt.png"))
  make = lambda on_error: ImageManipulationReader(root, gt_suffix="_gt", on_error=on_error)
  with pytest.raises(DataError, match=r"Gt/b_gt\.png: missing mask of .*Tp/b\.png"):
    make("raise")
  reader = make("skip")
  assert len(reader) == 2 and sorted(reader[i]["id"] for i in range(2)) == ["Au/z.png", "Tp/a.png"]
  problems = "\n".join(f"{p}: {why}" for p, why in reader.skipped)
  assert "Gt/b_gt.png: missing mask of" in problems
  assert "Gt/c_gt.png: mask is 5x5 but its frame" in problems
  assert "Gt/orphan_gt.png: mask has no tampered image" in problems
  os.remove(os.path.join(root, "Gt", "orphan_gt.png"))
  with pytest.raises(DataError, match=r"im: Tp/ has 3 images but Gt/ has 2 masks; sorted pairing needs equal"):
    ImageManipulationReader(root, pairing="sorted")


def test_im_empty_folder_and_bad_json(tmp_path):
  os.makedirs(tmp_path / "im" / "Tp")
  os.makedirs(tmp_path / "im" / "Gt")
  for on_error in ("raise", "skip"):  # nothing to read at all is an error in both modes
    with pytest.raises(DataError, match=r"im/Tp: empty tampered-image folder"):
      ImageManipulationReader(str(tmp_path / "im"), on_error=on_error)
  (tmp_path / "pairs.json").write_text(json.dumps([["Tp/x.png", "Gt/x.png"], ["Au/y.png", "Negative"]]))
  with pytest.raises(DataError, match=r"Tp/x\.png: image file not found"):
    ImageManipulationReader(json_path=str(tmp_path / "pairs.json"))
  (tmp_path / "bad.json").write_text('{"not": "a list"}')
  with pytest.raises(DataError, match=r"bad\.json: pair list must be a JSON list"):
    ImageManipulationReader(json_path=str(tmp_path / "bad.json"))


# --------------------------------------------------------------------------------------------------- FF++
FAKE = os.path.join("manipulated_sequences", "FaceShifter", "c23", "videos", "000_001.avi")


def test_ffpp_truncated_and_unreadable_videos(ffpp_copy):
  _truncate(os.path.join(ffpp_copy, FAKE))  # FFV1 .avi: opens, then decodes only part of its frames
  make = lambda on_error: ffpp_reader(ffpp_copy, on_error=on_error)
  reader = _expect(make, r"FaceShifter/c23/videos/000_001\.avi: truncated video: the header announces 30 frames "
                         r"but only \d+ decode", 3 * 4 * 2, "000_001.avi")
  assert not any("FaceShifter/c23/videos/000_001" in reader[i]["id"] for i in range(len(reader)))
  _truncate(os.path.join(ffpp_copy, "original_sequences", "youtube", "c23", "videos", "001.mp4"))  # no moov atom
  make = lambda on_error: ffpp_reader(ffpp_copy, on_error=on_error)
  reader = _expect(make, r"youtube/c23/videos/001\.mp4: cannot open video \(unreadable or truncated file\)",
                   1 * 4 * 2, "001.mp4")  # only FaceSwap/000_001 is left


def test_ffpp_missing_and_resized_mask_videos(ffpp_copy):
  with pytest.raises(DataError, match=r"FaceShifter/masks/videos/000_001\.mp4: missing mask video of"):
    ffpp_reader(ffpp_copy, mask_source="official")
  mask = os.path.join(ffpp_copy, "manipulated_sequences", "FaceSwap", "masks", "videos", "001_000.mp4")
  write_video(mask, np.zeros((30, 72, 88), np.uint8))
  make = lambda on_error: ffpp_reader(ffpp_copy, on_error=on_error)
  _expect(make, r"FaceSwap/masks/videos/001_000\.mp4: mask video is 72x88 but its fake video .* is 144x176",
          3 * 4 * 2, "001_000.mp4")


def test_ffpp_split_names_missing_video(ffpp_copy):
  with open(os.path.join(ffpp_copy, "splits", "train.json"), "w") as f:
    json.dump([["000", "001"], ["002", "003"]], f)
  make = lambda on_error: ffpp_reader(ffpp_copy, on_error=on_error)
  _expect(make, r"FaceSwap/c23/videos/002_003\.mp4: the split train\.json names video '002_003' but it is missing",
          2 * 2 * 4 * 2, "002_003")
  with pytest.raises(DataError, match=r"splits/test\.json: split file not found"):
    FaceForensicsReader(ffpp_copy, "test", cache_dir=os.path.join(ffpp_copy, "cache"))


def test_ffpp_video_without_any_face(ffpp_copy):
  blank = os.path.join(ffpp_copy, "original_sequences", "youtube", "c23", "videos", "001.mp4")
  write_video(blank, np.full((30, 144, 176, 3), 128, np.uint8))
  boxes = face_detection.CascadeFaceBoxes(cache_dir=os.path.join(ffpp_copy, "faces"))
  make = lambda on_error: ffpp_reader(ffpp_copy, methods=("FaceSwap",), face_boxes=boxes, on_error=on_error)
  _expect(make, r"youtube/c23/videos/001\.mp4: no face detected in any of the 30 frames", 4 * 2, "001.mp4")


# ------------------------------------------------------------------------- found when a record is read
def test_vi_mixed_frame_sizes_name_the_frame(vi_root):
  odd = os.path.join(vi_root, "Inpainted", "VI", "car", "00003.png")
  Image.fromarray(np.zeros((20, 32, 3), np.uint8)).save(odd)
  unchecked = VideoInpaintingReader(vi_root, methods=["VI"], videos=["car"], verify="none")
  with pytest.raises(DataError, match=r"Inpainted/VI/car/00003\.png: frame is 20x32 but frame .*VI/car/00001\.png "
                                      r"of the same video is 24x32"):
    unchecked[1]  # formerly a bare numpy stacking error
  with pytest.raises(DataError, match=r"Inpainted/VI/car/00003\.png: frame is 20x32 but frame .*VI/car/00000\.png"):
    VideoInpaintingReader(vi_root, methods=["VI"], videos=["car"])


def test_every_reader_names_a_file_that_fails_after_indexing(vi_root, ffpp_copy, tmp_path):
  """Files that pass the index's checks and break before they are read (mid-training) raise DataError naming
  them from `__getitem__`."""
  clips = VideoInpaintingReader(vi_root, methods=["VI"], videos=["car"])
  os.remove(os.path.join(vi_root, "Annotations", "car", "00003.png"))
  with pytest.raises(DataError, match=r"Annotations/car/00003\.png: file not found"):
    clips[1]
  root = str(tmp_path / "im")
  make_image_set(root)
  images = ImageManipulationReader(root, gt_suffix="_gt")
  ids = [images[i]["id"] for i in range(len(images))]
  _truncate(os.path.join(root, "Tp", "a.png"))
  os.remove(os.path.join(root, "Gt", "b_gt.png"))
  with pytest.raises(DataError, match=r"Tp/a\.png: cannot decode image"):
    images[ids.index("Tp/a.png")]
  with pytest.raises(DataError, match=r"Gt/b_gt\.png: file not found"):
    images[ids.index("Tp/b.png")]
  crops = ffpp_reader(ffpp_copy, methods=("FaceShifter",))
  real = os.path.join(ffpp_copy, "original_sequences", "youtube", "c23", "videos", "001.mp4")
  write_video(real, np.zeros((30, 72, 88, 3), np.uint8))  # replaced by a video of another size
  with pytest.raises(DataError, match=r"youtube/c23/videos/001\.mp4: frame \d+ decodes to 72x88 but the video was "
                                      r"indexed as 144x176"):
    [crops[i] for i in range(len(crops))]
  assert crops[6]["id"] == f"{FAKE}#frame29"
  _truncate(os.path.join(ffpp_copy, FAKE), 0.5)
  with pytest.raises(DataError, match=r"FaceShifter/c23/videos/000_001\.avi: truncated or corrupt video"):
    crops[6]


def test_safepaint_sources_name_bad_files(tmp_path):
  from safepaint_jax import data as safepaint_data
  for kind in ("images", "masks"):
    os.makedirs(tmp_path / kind)
    for i in range(3):
      Image.fromarray(np.full((8, 8, 3) if kind == "images" else (8, 8), 255 * (i % 2), np.uint8)).save(
          tmp_path / kind / f"{i}.png")
  source = safepaint_data.ImageSource(str(tmp_path / "images"), 8, str(tmp_path / "masks"))
  (tmp_path / "images" / "1.png").write_bytes(b"not a png")
  with pytest.raises(DataError, match=r"images/1\.png: cannot decode image"):
    source[1]
  (tmp_path / "masks" / "2.png").write_bytes(b"")
  with pytest.raises(DataError, match=r"masks/2\.png: cannot read mask \(empty file\)"):
    source[2]
  with pytest.raises(DataError, match=r"images/1\.png: cannot read image header"):
    safepaint_data.ImageSource(str(tmp_path / "images"), 8, verify="header")
  skipping = safepaint_data.ImageSource(str(tmp_path / "images"), 8, str(tmp_path / "masks"), verify="decode",
                                        on_error="skip")
  assert len(skipping) == 2 and len(skipping.masks) == 2 and len(skipping.skipped) == 2


# ------------------------------------------------------------------------------- masks that cannot be right
def test_ffpp_mask_video_shorter_than_its_video(ffpp_copy):
  mask = os.path.join(ffpp_copy, "manipulated_sequences", "FaceSwap", "masks", "videos", "001_000.mp4")
  frames = media.read_video_frames(mask, range(20))
  write_video(mask, frames)  # 20 of the fake's 30 frames: the last sampled frame (29) has no mask
  make = lambda on_error: ffpp_reader(ffpp_copy, on_error=on_error)
  _expect(make, r"FaceSwap/masks/videos/001_000\.mp4: mask video has 20 frames but its fake video .*001_000\.avi "
                r"has 30", 3 * 4 * 2, "001_000.mp4")
  make = lambda on_error: ffpp_reader(ffpp_copy, verify="header", on_error=on_error)
  _expect(make, r"001_000\.mp4: mask video has 20 frames", 3 * 4 * 2, "001_000.mp4")


def test_im_empty_mask_of_a_tampered_image(tmp_path):
  root = str(tmp_path / "im")
  make_image_set(root)
  Image.fromarray(np.zeros((21, 28), np.uint8)).save(os.path.join(root, "Gt", "b_gt.png"))
  lazy = ImageManipulationReader(root, gt_suffix="_gt")  # header checks cannot see it: found when read
  with pytest.raises(DataError, match=r"Gt/b_gt\.png: the mask of the tampered image .*Tp/b\.png \(label 1\) is "
                                      r"empty \(all zero\)"):
    [lazy[i] for i in range(len(lazy))]
  make = lambda on_error: ImageManipulationReader(root, gt_suffix="_gt", verify="decode", on_error=on_error)
  _expect(make, r"Gt/b_gt\.png: the mask of the tampered image", 3, "b_gt.png")


def test_vi_clip_without_any_mask(vi_root):
  masks = os.path.join(vi_root, "Annotations", "car")
  for t in (0, 1, 2, 3):  # car: 7 frames, clips of 3 start at 0..4; clips 0-1 have no object at all
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(os.path.join(masks, f"{t:05d}.png"))
  lazy = VideoInpaintingReader(vi_root, methods=["VI"], videos=["car"], clip_length=3)
  assert lazy[2]["label"] == 1 and not lazy[2]["mask"].any()  # frames 2-4: the object is back in frame 4
  with pytest.raises(DataError, match=r"Annotations/car/00001\.png: every mask of the inpainted clip "
                                      r"00000\.png\.\.00002\.png \(label 1\) is empty"):
    lazy[0]
  make = lambda on_error: VideoInpaintingReader(vi_root, clip_length=3, verify="decode", on_error=on_error)
  _expect(make, r"car/00001\.png: every mask of the inpainted clip 00000\.png\.\.00002\.png", 2 * 5, "car/00001.png")


def test_ffpp_fake_video_without_any_mask(ffpp_copy):
  mask = os.path.join(ffpp_copy, "manipulated_sequences", "FaceSwap", "masks", "videos", "000_001.mp4")
  frames = media.read_video_frames(mask, range(30))
  frames[:19] = 0  # frames 0 and 9 of the sampled 0, 9, 19, 29 lose their mask: fine
  write_video(mask, frames)
  reader = ffpp_reader(ffpp_copy)
  assert not reader[0]["mask"].any() and reader[0]["label"] == 1
  write_video(mask, np.zeros_like(frames))
  make = lambda on_error: ffpp_reader(ffpp_copy, on_error=on_error)
  _expect(make, r"FaceSwap/masks/videos/000_001\.mp4: every mask of the 4 sampled frames of this fake video "
                r"\(label 1\) is empty", 3 * 4 * 2, "000_001.mp4")
  lazy = ffpp_reader(ffpp_copy, verify="header")
  with pytest.raises(DataError, match=r"000_001\.mp4: every mask of the 4 sampled frames"):
    lazy[0]
  real = media.read_video_frames(os.path.join(ffpp_copy, "original_sequences", "youtube", "c23", "videos", "000.mp4"),
                                 range(30))
  write_video(os.path.join(ffpp_copy, FAKE), real, "FFV1")  # a "fake" identical to its real video
  with pytest.raises(DataError, match=r"FaceShifter/c23/videos/000_001\.avi: every mask of the 4 sampled frames .* "
                                      r"\(SSIM annotation against .*youtube/c23/videos/000\.mp4\)"):
    ffpp_reader(ffpp_copy, methods=("FaceShifter",))


def test_skipped_files_are_counted_in_the_log(vi_root, caplog):
  os.remove(os.path.join(vi_root, "Annotations", "bear", "00005.png"))
  with caplog.at_level(logging.INFO):
    VideoInpaintingReader(vi_root, on_error="skip")
  assert "2 bad files skipped (on_error='skip')" in caplog.text and "Annotations/bear/00005.png" in caplog.text


# ------------------------------------------------------------------------------------------------ tasks
def _vilocal_set(tmp_path):
  root = str(tmp_path / "vi")
  make_inpainting_set(root)
  shutil.copy(os.path.join(root, "ImageSets", "train.txt"), os.path.join(root, "ImageSets", "test.txt"))
  os.remove(os.path.join(root, "Annotations", "car", "00005.png"))
  return {"root": root}, r"Annotations/car/00005\.png: missing mask of frame"


def _ncl_set(tmp_path):
  root = str(tmp_path / "im")
  make_image_set(root)
  pairs = os.path.join(root, "pairs.json")
  with open(pairs, "w") as f:
    json.dump([["Tp/a.png", "Gt/a_gt.png"], ["Tp/b.png", "Gt/b.png"]], f)
  return {"sets": {"train": pairs, "test": pairs}}, r"Gt/b\.png: missing mask of .*Tp/b\.png"


def _ffpp_set(tmp_path, ffpp_root, **data):
  root = str(tmp_path / "ffpp")
  shutil.copytree(ffpp_root, root, ignore=shutil.ignore_patterns("cache"))
  shutil.copy(os.path.join(root, "splits", "train.json"), os.path.join(root, "splits", "test.json"))
  mask = os.path.join(root, "manipulated_sequences", "FaceSwap", "masks", "videos", "001_000.mp4")
  write_video(mask, media.read_video_frames(mask, range(20)))
  return dict(root=root, face_boxes="boxes.json", **data), r"001_000\.mp4: mask video has 20 frames"


def _safepaint_set(tmp_path):
  for kind in ("images", "masks"):
    os.makedirs(tmp_path / kind)
    for i in range(2):
      Image.fromarray(np.full((8, 8), 255 * i, np.uint8)).save(tmp_path / kind / f"{i}.png")
  (tmp_path / "masks" / "2.png").write_bytes(b"not a png")
  folders = dict(test_images=str(tmp_path / "images"), test_masks=str(tmp_path / "masks"), verify="header")
  return folders, r"masks/2\.png: cannot read image header"


TASK_SETS = {"vilocal": _vilocal_set, "ncl": _ncl_set, "safepaint": _safepaint_set,
             "msccnet": lambda tmp, ffpp: _ffpp_set(tmp, ffpp),
             "delocate": lambda tmp, ffpp: _ffpp_set(tmp, ffpp, methods=("FaceSwap",), cross_methods=("FaceShifter",))}


def test_configs_expose_the_readers_defaults():
  from configs import delocate, msccnet, ncl, safepaint, vilocal
  from safepaint_jax import data as safepaint_data
  for module, reader in ((vilocal, VideoInpaintingReader), (ncl, ImageManipulationReader),
                         (msccnet, FaceForensicsReader), (delocate, FaceForensicsReader),
                         (safepaint, safepaint_data.ImageSource)):
    defaults = inspect.signature(reader).parameters
    for variant in ("demo", "smoke", "paper"):
      d = module.get_config(variant).data
      assert (d.verify, d.on_error) == (defaults["verify"].default, defaults["on_error"].default), module


@pytest.mark.parametrize("method", sorted(TASK_SETS))
def test_task_indexes_its_eval_split_when_the_pipeline_is_made(method, ffpp_root, tmp_path, monkeypatch, caplog):
  """`input_pipeline(split)` builds (and checks) the split's reader at once, before any batch is drawn, builds it
  once per split, and passes `data.verify` / `data.on_error` to it."""
  monkeypatch.setenv("JAX_FORENSICS_CACHE", str(tmp_path / "cache"))
  config = importlib.import_module(f"configs.{method}").get_config("smoke")
  make = TASK_SETS[method]
  data, problem = make(tmp_path, ffpp_root) if method in ("msccnet", "delocate") else make(tmp_path)
  config.data.update(data)
  config.steps_per_epoch = 1  # the task's construction need not index the training split
  module, _, name = config.task.partition(":")
  task = getattr(importlib.import_module(module), name)(config)
  with pytest.raises(DataError, match=problem):
    task.input_pipeline(config.eval_split)
  config.data.on_error = "skip"
  with caplog.at_level(logging.INFO):
    task.input_pipeline(config.eval_split)
    task.input_pipeline(config.eval_split)
  assert len(re.findall(r"\b[1-9]\d* bad files skipped \(on_error='skip'\)", caplog.text)) == 1, caplog.text
