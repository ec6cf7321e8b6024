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
import logging
import os

import cv2
import numpy as np

from common import visualize
from common.data import face_detection, transforms
from common.data.readers.media import IMAGE_EXTENSIONS
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


def read_frames(path: str) -> list[np.ndarray]:
  """uint8 RGB frames [H, W, 3] of an image file or a video file (anything OpenCV reads)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such image or video file")
  if path.lower().endswith(IMAGE_EXTENSIONS):
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
      raise ValueError(f"{path}: OpenCV cannot read this image")
    return [cv2.cvtColor(image, cv2.COLOR_BGR2RGB)]
  capture = cv2.VideoCapture(path)
  frames = []
  try:
    while True:
      ok, frame = capture.read()
      if not ok:
        break
      frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
  finally:
    capture.release()
  if not frames:
    raise ValueError(f"{path}: OpenCV cannot read a frame from this file (not an image or video, or empty)")
  return frames


def face_boxes(frames: list[np.ndarray], crop_scale: float = 1.3, detect_every: int = 1,
               detector: Callable | None = None) -> list[tuple[int, int, int, int]]:
  """Square crop box (x0, y0, x1, y1) per frame: the largest detected face, tracked over the frames, enlarged
  by `crop_scale`; the full frame (its central square) where nothing is detected anywhere."""
  detector = detector or face_detection.LbpCascadeDetector()
  height, width = frames[0].shape[:2]
  indices = list(range(len(frames)))
  detections = {}
  for i in indices[::max(1, detect_every)]:
    found = detector(frames[i])
    detections[i] = tuple(found[0]) if len(found) else None
  if not any(box is not None for box in detections.values()):
    logging.warning("no face detected: using the whole frame as the face crop")
    return [(0, 0, width, height)] * len(frames)
  tracked = face_detection.track_boxes(detections, indices, smooth_window=5 if len(frames) > 1 else 1)
  return [face_detection.enlarge_box(tracked[i], crop_scale, height, width) for i in indices]


def predict_file(predictor: Predictor, path: str, out_dir: str, *, face: str = "detect", crop_scale: float = 1.3,
                 detect_every: int = 5, threshold: float = 0.5, batch_size: int = 8, alpha: float = 0.5) -> dict:
  """Writes masks/, overlays/ and scores.json for the image or video `path`; returns the scores dict."""
  if face not in ("detect", "full"):
    raise ValueError(f"face must be 'detect' or 'full', got {face!r}")
  frames = read_frames(path)
  height, width = frames[0].shape[:2]
  boxes = (face_boxes(frames, crop_scale, detect_every) if face == "detect"
           else [(0, 0, width, height)] * len(frames))
  s = predictor.size
  os.makedirs(out_dir, exist_ok=True)
  records = []
  for start in range(0, len(frames), batch_size):
    chunk = list(range(start, min(start + batch_size, len(frames))))
    crops = np.stack([transforms.resize_image(np.ascontiguousarray(frames[i][y0:y1, x0:x1]), s, s)
                      for i in chunk for x0, y0, x1, y1 in [boxes[i]]])
    crops = np.concatenate([crops, np.repeat(crops[-1:], batch_size - len(chunk), 0)])  # one compiled shape
    out = predictor.fn({"image": crops.astype(np.float32)})
    scores, probs = np.asarray(out["score"], np.float64), np.asarray(out["probs"], np.float32)
    for k, i in enumerate(chunk):
      x0, y0, x1, y1 = boxes[i]
      full = np.zeros((height, width), np.float32)
      full[y0:y1, x0:x1] = cv2.resize(probs[k], (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
      name = f"{i:05d}.png"
      visualize.write_mask_and_overlay(os.path.join(out_dir, "masks", name), os.path.join(out_dir, "overlays", name),
                                       frames[i], full, threshold=threshold, alpha=alpha, box=boxes[i])
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
  from absl import app, flags

  flags.DEFINE_string("export", "", "Export directory (common.train.export).")
  flags.DEFINE_string("workdir", "", "Run directory: use its latest checkpoint instead of an export.")
  flags.DEFINE_string("input", None, "Image or video file.", required=True)
  flags.DEFINE_string("out", None, "Output directory.", required=True)
  flags.DEFINE_enum("face", "detect", ["detect", "full"], "Detect and crop the face, or take the full frame.")
  flags.DEFINE_float("crop_scale", 1.3, "Face crop side / detected box side.")
  flags.DEFINE_integer("detect_every", 5, "Run the face detector on every n-th video frame (tracked between).")
  flags.DEFINE_float("threshold", 0.5, "Mask threshold on the manipulation probability.")
  flags.DEFINE_integer("batch_size", 8, "Crops per forward pass.")
  flags.DEFINE_float("alpha", 0.5, "Heatmap weight in the overlays.")
  app.run(main)
