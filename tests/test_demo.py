"""Tests of the embedded demo corpus (common.data.demo): determinism, layout and content of a tiny build."""
import glob
import hashlib
import json
import os

import cv2
import numpy as np
import pytest
import skimage.data

from common.data import demo
from common.data.demo import corpus as demo_corpus
from common.data.demo import faces as demo_faces
from common.data.demo import images as demo_images
from common.data.demo import media as demo_media
from common.data import masks as mask_lib


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  root = tmp_path_factory.mktemp("demo")
  path = str(root / "tiny")
  manifest = demo.build(path, seed=0, scale="tiny")
  return path, manifest


def _gray(path):
  image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
  assert image is not None, path
  return image


def _rgb(path):
  image = cv2.imread(path, cv2.IMREAD_COLOR)
  assert image is not None, path
  return image[..., ::-1]


def _video(path):
  capture = cv2.VideoCapture(path)
  frames = []
  while True:
    ok, frame = capture.read()
    if not ok:
      break
    frames.append(frame[..., ::-1])
  capture.release()
  assert frames, path
  return np.stack(frames)


def _lines(path):
  with open(path) as f:
    return [line.strip() for line in f if line.strip()]


def test_same_seed_gives_identical_bytes(corpus, tmp_path):
  path, manifest = corpus
  again = demo.build(str(tmp_path / "again"), seed=0, scale="tiny")
  assert again == manifest
  with open(os.path.join(path, "manifest.json"), "rb") as a, open(tmp_path / "again" / "manifest.json", "rb") as b:
    assert a.read() == b.read()
  other = demo.build(str(tmp_path / "other"), seed=1, scale="tiny")
  assert other["files"] != manifest["files"]


def test_manifest_lists_every_file_with_its_hash(corpus):
  path, manifest = corpus
  on_disk = sorted(os.path.relpath(p, path).replace(os.sep, "/")
                   for p in glob.glob(os.path.join(path, "**", "*"), recursive=True) if os.path.isfile(p))
  assert on_disk == sorted(list(manifest["files"]) + ["manifest.json"])
  assert manifest["version"] == demo.VERSION and manifest["scale"] == "tiny" and manifest["seed"] == 0
  for name in list(manifest["files"])[:20]:
    with open(os.path.join(path, name), "rb") as f:
      assert hashlib.sha256(f.read()).hexdigest() == manifest["files"][name]["sha256"]
  assert not [p for p in os.listdir(os.path.dirname(path)) if ".building-" in p]


def test_video_inpainting_layout_and_content(corpus):
  path, manifest = corpus
  root = os.path.join(path, "video_inpainting")
  scale = demo.SCALES["tiny"]
  videos = {split: _lines(os.path.join(root, "ImageSets", f"{split}.txt")) for split in ("train", "val", "test")}
  assert all(videos.values()) and not set(videos["train"]) & set(videos["test"] + videos["val"])
  assert sorted(sum(videos.values(), [])) == sorted(scale.video_clips)
  for video in sum(videos.values(), []):
    frames = sorted(os.listdir(os.path.join(root, "JPEGImages", video)))
    assert frames == [f"{t:05d}.jpg" for t in range(scale.video_frames)]
    for t in range(scale.video_frames):
      pristine = _rgb(os.path.join(root, "JPEGImages", video, f"{t:05d}.jpg"))
      mask = _gray(os.path.join(root, "Annotations", video, f"{t:05d}.png"))
      assert pristine.shape == (*scale.video_size, 3)
      assert mask.shape == scale.video_size and mask.dtype == np.uint8
      assert set(np.unique(mask)) == {0, 255}
      hole = mask > 0
      for method in ("telea", "ns"):
        inpainted = _rgb(os.path.join(root, "Inpainted", method, video, f"{t:05d}.png"))
        assert inpainted.shape == pristine.shape
        np.testing.assert_array_equal(inpainted[~hole], pristine[~hole])  # only the hole changes
        changed = np.any(inpainted != pristine, axis=-1)
        assert changed[hole].mean() > 0.5


def test_video_masks_move_smoothly(corpus):
  path, _ = corpus
  root = os.path.join(path, "video_inpainting", "Annotations")
  for video in os.listdir(root):
    masks = [_gray(p) > 0 for p in sorted(glob.glob(os.path.join(root, video, "*.png")))]
    for a, b in zip(masks, masks[1:]):
      assert (a & b).sum() / (a | b).sum() > 0.6
      assert not np.array_equal(a, b)


def test_image_manipulation_layout_and_masks(corpus):
  path, manifest = corpus
  root = os.path.join(path, "image_manipulation")
  size = demo.SCALES["tiny"].image_size
  sources = {}
  for split, per_kind in demo.SCALES["tiny"].images_per_kind.items():
    with open(os.path.join(root, f"{split}.json")) as f:
      pairs = json.load(f)
    negatives = [image for image, mask in pairs if mask == "Negative"]
    assert len(negatives) == per_kind and len(pairs) == 4 * per_kind
    for image_path, mask_path in pairs:
      image = _rgb(os.path.join(root, image_path))
      assert image.shape == (size, size, 3)
      if mask_path == "Negative":
        assert image_path.startswith(f"{split}/Au/")
        continue
      assert image_path.startswith(f"{split}/Tp/") and mask_path == image_path.replace("/Tp/", "/Gt/")
      mask = _gray(os.path.join(root, mask_path))
      assert mask.shape == (size, size) and set(np.unique(mask)) == {0, 255}
      assert 0.005 < (mask > 0).mean() < 0.3
    assert sorted(os.listdir(os.path.join(root, split, "Tp"))) == sorted(os.listdir(os.path.join(root, split, "Gt")))
    sources[split] = {item["source"] for item in manifest["parts"]["image_manipulation"][split]["items"]}
  assert not sources["train"] & sources["test"]  # the test split is held out by source picture


def test_inpainting_hole_ratios_follow_the_bins(corpus):
  path, _ = corpus
  size = demo.SCALES["tiny"].inpainting_size
  for split, count in demo.SCALES["tiny"].inpainting_pairs.items():
    root = os.path.join(path, "inpainting", split)
    with open(os.path.join(root, "hole_ratios.json")) as f:
      ratios = json.load(f)
    assert len(ratios) == count
    for i in range(count):
      image = _rgb(os.path.join(root, "images", f"{i:05d}.png"))
      mask = _gray(os.path.join(root, "masks", f"{i:05d}.png"))
      assert image.shape == (size, size, 3) and mask.shape == (size, size)
      assert set(np.unique(mask)) <= {0, 255}
      low, high = mask_lib.HOLE_RATIO_BINS[i % len(mask_lib.HOLE_RATIO_BINS)]
      ratio = (mask > 0).mean()
      assert low < ratio < high and abs(ratio - ratios[f"{i:05d}"]) < 1e-4


def test_faces_layout_masks_and_splits(corpus):
  path, manifest = corpus
  root = os.path.join(path, "faces")
  scale = demo.SCALES["tiny"]
  splits = {}
  for split in ("train", "val", "test"):
    with open(os.path.join(root, "splits", f"{split}.json")) as f:
      splits[split] = json.load(f)
    assert splits[split] and all(len(pair) == 2 for pair in splits[split])
  ids = [vid for pairs in splits.values() for pair in pairs for vid in pair]
  assert len(ids) == len(set(ids)) == scale.face_segments
  originals = {vid: _video(os.path.join(root, "original_sequences", "youtube", "c23", "videos", f"{vid}.mp4"))
               for vid in ids}
  with open(os.path.join(root, "face_boxes.json")) as f:
    boxes = json.load(f)
  for vid, frames in originals.items():
    assert frames.shape == (scale.face_frames, 144, 176, 3)
    assert len(boxes[vid]) == scale.face_frames
  for method in ("FaceSwap", "NeuralTextures"):
    for pairs in splits.values():
      for a, b in pairs:
        for target, source in ((a, b), (b, a)):
          name = f"{target}_{source}"
          fake = _video(os.path.join(root, "manipulated_sequences", method, "c23", "videos", f"{name}.mp4"))
          masks = _video(os.path.join(root, "manipulated_sequences", method, "masks", "videos", f"{name}.mp4"))
          assert fake.shape == masks.shape == originals[target].shape
          assert set(np.unique(masks)) == {0, 255}  # lossless: exactly binary
          real = originals[target].astype(np.float64)
          for t in range(len(fake)):
            region = masks[t, ..., 0] > 127
            assert region.any(), (method, name, t)
            difference = np.abs(fake[t] - real[t]).mean(-1)
            # NeuralTextures-like eye swaps are subtle (~1 gray level on average over the convex SSIM region).
            assert difference[region].mean() > 5 * difference[~region].mean() + 0.5
  assert manifest["parts"]["faces"]["frames_without_ssim_mask"] == 0


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
  def broken(out_dir, seed, scale):
    with open(os.path.join(out_dir, "partial.txt"), "w") as f:
      f.write("half")
    raise KeyboardInterrupt

  monkeypatch.setattr(demo_corpus, "_build_parts", broken)
  with pytest.raises(KeyboardInterrupt):
    demo.build(str(tmp_path / "corpus"), scale="tiny")
  assert os.listdir(tmp_path) == []


def test_ensure_demo_corpus_builds_once_into_the_cache(tmp_path, monkeypatch):
  calls = []

  def fake_parts(out_dir, seed, scale):
    calls.append(out_dir)
    with open(os.path.join(out_dir, "data.txt"), "w") as f:
      f.write("x")
    return {}

  monkeypatch.setattr(demo_corpus, "_build_parts", fake_parts)
  monkeypatch.setenv(demo.CACHE_ENV, str(tmp_path / "env_root"))
  path = demo.ensure_demo_corpus()
  assert path == str(tmp_path / "env_root" / demo.VERSION)
  assert demo.ensure_demo_corpus() == path and len(calls) == 1
  assert demo.load_manifest(path)["files"]["data.txt"]["bytes"] == 1
  explicit = demo.ensure_demo_corpus(str(tmp_path / "explicit"))
  assert explicit == str(tmp_path / "explicit" / demo.VERSION) and len(calls) == 2
  os.makedirs(tmp_path / "bad" / demo.VERSION)
  with pytest.raises(RuntimeError, match="no manifest"):
    demo.ensure_demo_corpus(str(tmp_path / "bad"))
  with pytest.raises(FileExistsError):
    demo.build(path, scale="tiny")


def test_ensure_demo_corpus_accepts_a_concurrent_build(tmp_path, monkeypatch):
  final = tmp_path / demo.VERSION

  def racing_parts(out_dir, seed, scale):  # another process finishes first while this one builds
    os.makedirs(final)
    (final / demo.MANIFEST).write_text(json.dumps({"version": demo.VERSION, "scale": "full", "winner": True}))
    return {}

  monkeypatch.setattr(demo_corpus, "_build_parts", racing_parts)
  assert demo.ensure_demo_corpus(str(tmp_path)) == str(final)
  assert demo.load_manifest(str(final))["winner"]
  assert sorted(os.listdir(tmp_path)) == [demo.VERSION]


@pytest.mark.slow
def test_full_build(tmp_path):
  manifest = demo.build(str(tmp_path / "full"), seed=0, scale="full")
  parts = manifest["parts"]
  videos = parts["video_inpainting"]["videos"]
  assert (len(videos["train"]), len(videos["val"]), len(videos["test"])) == (10, 3, 3)
  assert parts["image_manipulation"]["train"]["authentic"] == 60
  assert parts["image_manipulation"]["train"]["tampered"] == 180
  assert parts["image_manipulation"]["test"]["tampered"] == 48
  assert parts["inpainting"]["train"]["pairs"] == 240 and parts["inpainting"]["test"]["pairs"] == 60
  assert len(parts["faces"]["originals"]) == 8 and parts["faces"]["frames_without_ssim_mask"] == 0
  assert 40e6 < manifest["total_bytes"] < 200e6


@pytest.fixture(scope="module")
def crops():
  return (np.ascontiguousarray(skimage.data.astronaut()[100:356, 100:356]),
          np.ascontiguousarray(skimage.data.coffee()[50:306, 200:456]))


@pytest.mark.parametrize("kind", ["cm", "sp", "rm"])
def test_image_forgeries_change_exactly_their_mask(kind, crops):
  image, donor = crops
  for seed in range(4):
    rng = np.random.default_rng(seed)
    if kind == "cm":
      tampered, mask = demo_images.copy_move(rng, image)
    elif kind == "sp":
      tampered, mask = demo_images.splice(rng, image, donor)
    else:
      tampered, mask, _ = demo_images.remove_object(rng, image)
    assert tampered.shape == image.shape and tampered.dtype == np.uint8
    assert mask.shape == image.shape[:2] and set(np.unique(mask)) == {0, 1}
    changed = np.any(tampered != image, axis=-1)
    assert not np.any(changed & (mask == 0))
    assert changed[mask > 0].mean() > 0.5


def _residual_energy(image: np.ndarray) -> np.ndarray:
  """float [H, W]: mean absolute difference to the 3x3 median, a noise-level proxy."""
  return np.abs(image.astype(np.float32) - cv2.medianBlur(image, 3).astype(np.float32)).mean(-1)


def test_sensor_noise_is_what_a_removal_erases(crops):
  image = np.full((128, 128, 3), 120, np.uint8)  # flat: any residual is the added noise
  levels = [_residual_energy(demo_images.with_sensor_noise(np.random.default_rng(s), image)).mean() for s in range(8)]
  low, high = demo_images.SENSOR_NOISE_SIGMA
  assert 0.5 * low < min(levels) and max(levels) < high and max(levels) > 1.5 * min(levels)  # sigma varies by crop
  noisy = demo_images.with_sensor_noise(np.random.default_rng(0), crops[0])
  tampered, mask, _ = demo_images.remove_object(np.random.default_rng(1), noisy)
  energy = _residual_energy(tampered)
  assert energy[mask > 0].mean() < 0.5 * energy[mask == 0].mean()


def test_neural_textures_stand_in_renders_the_part_smoother_than_the_camera():
  frame = demo_media.read_video(demo_faces.SOURCE_VIDEO, [40])[0]
  source = demo_media.read_video(demo_faces.SOURCE_VIDEO, [100])[0]
  box, source_box = demo_faces.face_track([40, 100])
  fake = demo_faces.part_swap_frame(frame, box, source, source_box, "mouth")
  changed = np.any(fake != frame, axis=-1)
  laplacian = lambda x: np.abs(cv2.Laplacian(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.CV_32F))
  assert changed.mean() > 0.005
  assert laplacian(fake)[changed].mean() < 0.7 * laplacian(frame)[changed].mean()


def test_mask_generators_are_deterministic_and_sized():
  blob = [mask_lib.blob_mask(np.random.default_rng(3), 96, 128, 0.1) for _ in range(2)]
  np.testing.assert_array_equal(*blob)
  assert abs(mask_lib.hole_ratio(blob[0]) - 0.1) < 0.01
  clips = [mask_lib.moving_blob_masks(np.random.default_rng(4), 6, 64, 96, num_objects=2) for _ in range(2)]
  np.testing.assert_array_equal(*clips)
  assert clips[0].shape == (6, 64, 96) and clips[0].dtype == np.uint8 and clips[0].max() == 1
  assert all(frame.any() for frame in clips[0])
  for low, high in mask_lib.HOLE_RATIO_BINS:
    mask = mask_lib.free_form_mask(np.random.default_rng(5), 64, 64, (low, high))
    assert low < mask_lib.hole_ratio(mask) < high
  with pytest.raises(ValueError):
    mask_lib.free_form_mask(np.random.default_rng(0), 64, 64, (0.5, 0.4))
