"""Detect and localise face manipulation in an image or a video with an exported (or trained) MSCCNet.

  python -m msccnet_jax.predict --export=EXPORT_DIR --input=FACE.png|VIDEO.mp4 --out=DIR
  python -m msccnet_jax.predict --workdir=RUN_DIR --input=... --out=DIR        (a run's latest checkpoint)

Faces: with `--face=detect` (default) the face is found with scikit-image's LBP cascade (on every
`--detect_every`-th video frame, tracked in between as the FF++ reader does) and cropped as a square of
`--crop_scale` (1.3) times its box, the crops MSCCNet trains on; frames without any detection in the whole input
fall back to the full frame, with a warning. `--face=full` takes each frame as the face crop. Crops are resized
to the model's input size (Pillow bilinear, as training).

Output, in DIR, at each frame's own resolution (the crop's probability map resized bilinearly and pasted at the
crop box; 0 outside it):
  masks/00000.png     0/255 manipulation mask, probability > --threshold (0.5: MSCCNet's argmax);
  overlays/00000.png  the probability as a JET heatmap blended over the frame, the face box drawn;
  scores.json         per-frame score (softmax probability of "fake"), crop box, and the mean over frames.
"""
from __future__ import annotations

from collections.abc import Callable
import dataclasses
import json
import os

import numpy as np

from common import visualize
from common.data.faces import crops as face_crops
from common.train import serving


@dataclasses.dataclass(frozen=True)
class Predictor:
  """`fn({"image": float32 [B, S, S, 3], RGB 0-255}) -> {"score": [B], "probs": [B, S, S]}` and S."""
  fn: Callable[[dict], dict]
  size: int


def _predictor(served) -> Predictor:
  spec = served.inputs.get("image")
  if spec is None or len(spec["shape"]) != 3 or spec["shape"][-1] != 3 or not {"score", "probs"} <= set(served.outputs):
    raise ValueError(f"{served.source}: not an MSCCNet model (expected input image [S, S, 3] and outputs score, "
                     f"probs; got inputs {served.inputs}, outputs {list(served.outputs)})")
  return Predictor(served.fn, int(spec["shape"][0]))


def load(export_dir: str = "", workdir: str = "", step: int | None = None) -> Predictor:
  """The predictor of an export (needs only jax) or of a run's checkpoint (default: the latest)."""
  return _predictor(serving.load(export_dir, workdir, step))


def predict_file(predictor: Predictor, path: str, out_dir: str, *, face: str = "detect", crop_scale: float = 1.3,
                 detect_every: int = 5, threshold: float = 0.5, batch_size: int = 8, alpha: float = 0.5) -> dict:
  """Writes masks/, overlays/ and scores.json for the image or video `path`; returns the scores dict."""
  frames = face_crops.read_frames(path)
  height, width = frames[0].shape[:2]
  boxes = face_crops.face_boxes(frames, face, crop_scale, detect_every)
  os.makedirs(out_dir, exist_ok=True)
  records = []
  for chunk, crops in face_crops.crop_batches(frames, boxes, predictor.size, batch_size):
    out = predictor.fn({"image": crops})
    scores, probs = np.asarray(out["score"], np.float64), np.asarray(out["probs"], np.float32)
    for k, i in enumerate(chunk):
      name = f"{i:05d}.png"
      visualize.write_mask_and_overlay(os.path.join(out_dir, "masks", name), os.path.join(out_dir, "overlays", name),
                                       frames[i], face_crops.paste(probs[k], boxes[i], height, width),
                                       threshold=threshold, alpha=alpha, box=boxes[i])
      records.append({"frame": i, "score": float(scores[k]), "box": [int(v) for v in boxes[i]]})
  result = {"input": path, "mean_score": float(np.mean([r["score"] for r in records])), "frames": records}
  with open(os.path.join(out_dir, "scores.json"), "w", encoding="utf-8") as f:
    json.dump(result, f, indent=1)
  return result


def main(argv) -> None:
  from absl import flags
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  predictor = load(f.export, f.workdir)
  result = predict_file(predictor, f.input, f.out, face=f.face, crop_scale=f.crop_scale,
                        detect_every=f.detect_every, threshold=f.threshold, batch_size=f.batch_size, alpha=f.alpha)
  print(f"{f.input}: {len(result['frames'])} frame(s), mean fake score {result['mean_score']:.3f} -> {f.out}")


if __name__ == "__main__":
  from absl import flags

  from common.train import tool

  serving.define_flags()
  visualize.define_flags()
  face_crops.define_flags()
  flags.DEFINE_string("input", None, "Image or video file.", required=True)
  flags.DEFINE_string("out", None, "Output directory.", required=True)
  flags.DEFINE_integer("batch_size", 8, "Crops per forward pass.")
  tool.run_tool(main)
