"""Held-out F1 of a ViLocal model on the demo corpus's test clips at the trained size and at `--scale` times it.

  python -m benchmarks.native_resolution --model=EXPORT_OR_RUN_DIR --out=DIR [--scale=2] [--methods=telea,ns]

The larger clips are made exactly as the corpus makes its own (`common.data.demo.video.build_video_inpainting`):
the same source frames, cropped and area-resized to the larger size, masks drawn by the same seeded generator, and
the same OpenCV inpainting; only the size differs. Each clip goes through the shared predictor
(`common.predict.adapters.clip_maps`) as `predict` runs it: at the trained size as it is, and at the larger size
in native tiles of the trained size (ViLocal's default), whole through the symbolic export, and resampled to the
trained size (`--resolution=tiles|whole|resize`). Per frame, F1 at 0.5
against the clip's mask at its own size (IMDL-BenCo's per-image F1); the table holds the mean over every frame of
the test clips, per inpainting method. Writes DIR/native_resolution.md and .csv and prints the table.
"""
from __future__ import annotations

import os

import numpy as np

from common import tables
from common.data.demo import corpus, video as demo_video
from common.data.readers.media import read_mask
from common.metrics import kernels
from common.predict import adapters, media
from common.train import serving

COLUMNS = ("size", "resolution", "method", "clips", "frames", "pixel_f1")


def build_clips(out: str, size: tuple[int, int]) -> str:
  """The corpus's test clips at `size`, under `out/video_inpainting` (built once)."""
  root = os.path.join(out, "video_inpainting")
  if not os.path.isdir(root):
    scale = corpus.SCALES["full"]
    clips = tuple(c.name for c in demo_video.VIDEO_CLIPS if c.split == "test")
    demo_video.build_video_inpainting(out, corpus.DEFAULT_SEED, clips, scale.video_frames, size)
  return root


def clip_f1(served: serving.Served, root: str, method: str, clip: str, resolution: str) -> list[float]:
  """Per-frame F1 of one clip's predicted maps against its masks."""
  folder = os.path.join(root, "Inpainted", method, clip)
  maps = adapters.clip_maps(served, media.open_media(folder), resolution=resolution)
  scores = []
  for i, result in enumerate(maps):
    gt = read_mask(os.path.join(root, "Annotations", clip, f"{i:05d}.png"))
    scores.append(float(kernels.pixel_f1(result.probs[None], gt[None])[0]))
  return scores


def measure(served: serving.Served, out: str, scale: int, methods: list[str]) -> list[dict]:
  h, w = served.input.size
  big = (h * scale, w * scale)
  runs = [((h, w), "auto"), (big, "tiles"), (big, "whole"), (big, "resize")]
  rows = []
  for size, resolution in runs:
    root = build_clips(os.path.join(out, f"clips_{size[0]}x{size[1]}"), size)
    clips = sorted(os.listdir(os.path.join(root, "Annotations")))
    for method in methods:
      f1 = [s for clip in clips for s in clip_f1(served, root, method, clip, resolution)]
      rows.append({"size": f"{size[0]}x{size[1]}", "resolution": "as is" if size == (h, w) else resolution, "method": method, "clips": len(clips),
                   "frames": len(f1), "pixel_f1": float(np.mean(f1))})
      print(rows[-1], flush=True)
  return rows


def main(argv) -> None:
  from absl import flags
  del argv
  f = flags.FLAGS
  served = serving.load_path(f.model)
  if served.input.kind != "clip":
    raise ValueError(f"--model={f.model}: not a ViLocal model (input kind {served.input.kind!r})")
  rows = measure(served, f.out, f.scale, f.methods.split(","))
  md, _ = tables.write(rows, COLUMNS, os.path.join(f.out, "native_resolution"))
  with open(md, encoding="utf-8") as table:
    print(table.read())


if __name__ == "__main__":
  from absl import flags

  from common.train import tool

  flags.DEFINE_string("model", None, "ViLocal export or run directory (its stage2).", required=True)
  flags.DEFINE_string("out", None, "Output folder (clips and the table).", required=True)
  flags.DEFINE_integer("scale", 2, "Size factor of the larger clips.")
  flags.DEFINE_string("methods", "telea,ns", "Inpainting methods of the corpus to score.")
  tool.run_tool(main)
