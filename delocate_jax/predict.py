"""Detect and localise face manipulation in a face image or video with an exported (or trained) Delocate model.

  python -m delocate_jax.predict --export=EXPORT_DIR --input=FACE.png|VIDEO.mp4 --out=DIR
  python -m delocate_jax.predict --workdir=RUN_DIR/stage2 --input=... --out=DIR   (a run's latest checkpoint)

Faces: with `--face=detect` (default) the face is found with scikit-image's LBP cascade (every `--detect_every`-th
frame, tracked in between, as the FF++ reader does) and cropped as a square of `--crop_scale` (1.3) times its box,
the crops Delocate trains on (its ROIs assume that geometry); `--face=full` takes each frame as the face crop.

Output, in DIR: masks/00000.png (0/255, probability > --threshold) and overlays/00000.png (heatmap over the frame,
face box drawn) at each frame's resolution, recoveries/00000.png (the model's recovery of the face crop next to
the crop), and scores.json: per-frame score and box, and the video score (`--aggregation` of the frame scores,
mean as in training's evaluation).
"""
from __future__ import annotations

from collections.abc import Callable
import dataclasses
import json
import os

import cv2
import numpy as np

from common import visualize
from common.data.faces import crops as face_crops
from common.train import serving

OUTPUTS = {"score", "probs", "recovery"}


@dataclasses.dataclass(frozen=True)
class Predictor:
  """`fn({"image": float32 [B, S, S, 3] RGB 0-255}) -> {"score": [B], "probs": [B, S, S], "recovery": [B, S, S, 3]}`."""
  fn: Callable[[dict], dict]
  size: int


def load(export_dir: str = "", workdir: str = "", step: int | None = None) -> Predictor:
  """The predictor of an export (needs only jax) or of a run's checkpoint (default: the latest)."""
  served = serving.load(export_dir, workdir, step)
  spec = served.inputs.get("image")
  if spec is None or len(spec["shape"]) != 3 or not OUTPUTS <= set(served.outputs):
    raise ValueError(f"{served.source}: not a Delocate model (expected input image [S, S, 3] and outputs "
                     f"{sorted(OUTPUTS)}; got inputs {served.inputs}, outputs {list(served.outputs)})")
  return Predictor(served.fn, int(spec["shape"][0]))


def predict_file(predictor: Predictor, path: str, out_dir: str, *, face: str = "detect", crop_scale: float = 1.3,
                 detect_every: int = 5, threshold: float = 0.5, aggregation: str = "mean", batch_size: int = 8,
                 alpha: float = 0.5) -> dict:
  """Writes masks/, overlays/, recoveries/ and scores.json for the image or video `path`; returns the scores."""
  if aggregation not in ("mean", "max"):
    raise ValueError(f"aggregation must be 'mean' or 'max', got {aggregation!r}")
  frames = face_crops.read_frames(path)
  height, width = frames[0].shape[:2]
  boxes = face_crops.face_boxes(frames, face, crop_scale, detect_every)
  records = []
  for chunk, crops in face_crops.crop_batches(frames, boxes, predictor.size, batch_size):
    out = predictor.fn({"image": crops})
    scores, probs = np.asarray(out["score"], np.float64), np.asarray(out["probs"], np.float32)
    recovery = np.clip(np.rint(np.asarray(out["recovery"], np.float32)), 0, 255).astype(np.uint8)
    for k, i in enumerate(chunk):
      full = face_crops.paste(probs[k], boxes[i], height, width)
      name = f"{i:05d}.png"
      visualize.write_mask_and_overlay(os.path.join(out_dir, "masks", name), os.path.join(out_dir, "overlays", name),
                                       frames[i], full, threshold=threshold, alpha=alpha, box=boxes[i])
      side_by_side = cv2.cvtColor(np.concatenate([crops[k].astype(np.uint8), recovery[k]], axis=1), cv2.COLOR_RGB2BGR)
      os.makedirs(os.path.join(out_dir, "recoveries"), exist_ok=True)
      if not cv2.imwrite(os.path.join(out_dir, "recoveries", name), side_by_side):
        raise OSError(f"{out_dir}/recoveries/{name}: OpenCV cannot write this PNG")
      records.append({"frame": i, "score": float(scores[k]), "box": [int(v) for v in boxes[i]]})
  frame_scores = [r["score"] for r in records]
  result = {"input": path, "aggregation": aggregation,
            "video_score": float(np.mean(frame_scores) if aggregation == "mean" else np.max(frame_scores)),
            "frames": records}
  with open(os.path.join(out_dir, "scores.json"), "w", encoding="utf-8") as f:
    json.dump(result, f, indent=1)
  return result


def main(argv) -> None:
  from absl import flags
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  result = predict_file(load(f.export, f.workdir), f.input, f.out, face=f.face, crop_scale=f.crop_scale,
                        detect_every=f.detect_every, threshold=f.threshold, aggregation=f.aggregation,
                        batch_size=f.batch_size, alpha=f.alpha)
  print(f"{f.input}: {len(result['frames'])} frame(s), video fake score {result['video_score']:.3f} -> {f.out}")


if __name__ == "__main__":
  from absl import flags

  from common.train import tool

  serving.define_flags()
  visualize.define_flags()
  face_crops.define_flags()
  flags.DEFINE_string("input", None, "Face image or video file.", required=True)
  flags.DEFINE_string("out", None, "Output directory.", required=True)
  flags.DEFINE_enum("aggregation", "mean", ["mean", "max"], "Video score from the frame scores.")
  flags.DEFINE_integer("batch_size", 8, "Crops per forward pass.")
  tool.run_tool(main)
