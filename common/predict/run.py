"""The predict command every detector shares: inputs in, masks, overlays and a score table out.

  python -m <method>_jax.predict --export=EXPORT | --workdir=RUN --input=FILE|FOLDER|GLOB --out=DIR

For each input (`common.predict.media`), in DIR/<input name>/:
  masks/00000.png     0/255 mask, probability > --threshold, one per frame at the frame's resolution;
  overlays/00000.png  the probability as a JET heatmap blended over the frame (the face box drawn);
  overlay.mp4         for videos and frame folders, the overlays as a video (mp4v, the input's frame rate);
  scores.json         per-frame score (models with a score output), maximum probability and masked share;
and over all inputs DIR/scores.csv and DIR/scores.json: one row per input (`score`: the mean, or --aggregation, of
the frame scores; `max_prob`, `mask_share`; `error` for an input that could not be read). An unreadable input is
one line on stderr and a row with its error; the others go on, and the command exits 1 at the end, naming them.
Images and clips meet sizes other than the trained one as `--resolution` says (`common.predict.adapters`).

The model card's training line is printed first; a model trained on the embedded demo corpus gets a warning.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
import json
import logging
import os

import cv2
import numpy as np

from common import progress, tables, visualize
from common.data.readers.media import DataError
from common.predict import adapters, media
from common.train import model_card, serving

COLUMNS = ("input", "frames", "score", "max_prob", "mask_share", "error")
AGGREGATIONS = ("mean", "max")

# (frame map, per-input output folder, frame index) -> extra files and per-frame record fields
Extra = Callable[[adapters.FrameMap, str, int], dict]


def announce(served: serving.Served, report: Callable[[str], None] = print) -> None:
  """Prints the model card's line, and the demo warning where it applies."""
  card = served.card
  report(f"model: {card.get('summary') or served.source + ' (no model card)'}")
  if card.get("demo"):
    report(f"warning: {model_card.DEMO_WARNING}")


class _VideoWriter:
  """Overlays -> an mp4v video, opened at the first frame."""

  def __init__(self, path: str, fps: float):
    self.path, self.fps, self.writer = path, fps, None

  def write(self, rgb: np.ndarray) -> None:
    if self.writer is None:
      self.writer = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                    (rgb.shape[1], rgb.shape[0]))
      if not self.writer.isOpened():
        raise OSError(f"{self.path}: OpenCV cannot write an mp4v video")
    self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

  def close(self) -> None:
    if self.writer is not None:
      self.writer.release()


def predict_input(served: serving.Served, maps: Callable[..., Iterator[adapters.FrameMap]], path: str, out_dir: str,
                  *, threshold: float = 0.5, alpha: float = 0.5, aggregation: str = "mean", extra: Extra | None = None,
                  **adapter_args) -> dict:
  """Writes one input's masks, overlays, video and scores.json into `out_dir`; returns its table row."""
  if aggregation not in AGGREGATIONS:
    raise ValueError(f"--aggregation={aggregation!r}: expected one of {AGGREGATIONS}")
  opened = media.open_media(path)
  video = _VideoWriter(os.path.join(out_dir, "overlay.mp4"), opened.fps) if opened.is_video else None
  counter = progress.Progress(path, opened.count, "frames") if opened.is_video else None
  records = []
  try:
    for i, result in enumerate(maps(served, opened, **adapter_args)):
      name = f"{i:05d}.png"
      overlay = visualize.write_mask_and_overlay(
          os.path.join(out_dir, "masks", name), os.path.join(out_dir, "overlays", name), result.frame,
          result.probs, threshold=threshold, alpha=alpha, box=result.box)
      if video is not None:
        video.write(overlay)
      record = {"frame": i, "max_prob": float(result.probs.max()),
                "mask_share": float(np.mean(result.probs > threshold))}
      if result.score is not None:
        record["score"] = result.score
      if result.box is not None:
        record["box"] = [int(v) for v in result.box]
      record.update(extra(result, out_dir, i) if extra else {})
      records.append(record)
      if counter is not None:
        counter.update()
  finally:
    if video is not None:
      video.close()
  if not records:
    raise DataError(path, "no frame could be read")
  scores = [r["score"] for r in records if "score" in r]
  row = {"input": path, "frames": len(records),
         "score": float(np.mean(scores) if aggregation == "mean" else np.max(scores)) if scores else "",
         "max_prob": max(r["max_prob"] for r in records),
         "mask_share": float(np.mean([r["mask_share"] for r in records])), "error": ""}
  with open(os.path.join(out_dir, "scores.json"), "w", encoding="utf-8") as f:
    json.dump({**row, "aggregation": aggregation, "frames": records}, f, indent=1)
  return row


def output_folders(paths: list[str], out: str) -> list[str]:
  """One folder per input under `out`, named after the input (a numbered suffix where two names collide)."""
  seen: dict[str, int] = {}
  folders = []
  for path in paths:
    name = media.stem(path)
    seen[name] = seen.get(name, 0) + 1
    folders.append(os.path.join(out, name if seen[name] == 1 else f"{name}-{seen[name]}"))
  return folders


def predict_all(served: serving.Served, pattern: str, out: str, *, extra: Extra | None = None,
                report: Callable[[str], None] = progress.print_line, **args) -> list[dict]:
  """Predicts every input `pattern` names (module docstring); returns the table rows. Inputs that cannot be read
  get a row with their error; the caller decides what that means for the exit status (`raise_if_failed`)."""
  kind = served.input.kind
  if kind not in adapters.ADAPTERS:
    raise ValueError(f"{served.source}: a model of input kind {kind!r}, which predict cannot feed "
                     f"(expected one of {sorted(adapters.ADAPTERS)})")
  paths = media.list_inputs(pattern, frame_folders=kind == "clip")
  os.makedirs(out, exist_ok=True)
  rows = []
  for index, (path, folder) in enumerate(zip(paths, output_folders(paths, out))):
    try:
      row = predict_input(served, adapters.ADAPTERS[kind], path, folder, extra=extra, **args)
    except (DataError, FileNotFoundError) as e:
      report(f"error: {e} (skipped)")
      logging.warning("predict: %s", e, exc_info=True)
      row = {"input": path, "frames": 0, "score": "", "max_prob": "", "mask_share": "", "error": str(e)}
    rows.append(row)
    report(f"[{index + 1}/{len(paths)}] {path}: " + ("error" if row["error"] else
           f"{row['frames']} frame(s)" + (f", score {row['score']:.4f}" if row["score"] != "" else "")
           + f", max probability {row['max_prob']:.3f}"))
  tables.write(rows, COLUMNS, os.path.join(out, "scores"))
  with open(os.path.join(out, "scores.json"), "w", encoding="utf-8") as f:
    json.dump(rows, f, indent=1)
  return rows


def raise_if_failed(rows: list[dict], table: str) -> None:
  """A DataError naming the inputs whose row holds an error (the exit status 1 of a batch that went on)."""
  failed = [r["input"] for r in rows if r["error"]]
  if failed:
    raise DataError(failed[0], f"{len(failed)} of {len(rows)} inputs could not be read (see {table}): "
                               + ", ".join(failed[:5]))


def require_kind(served: serving.Served, method: str, kind: str) -> serving.Served:
  """`served`, if its input kind is `kind` (`method`'s); else a ValueError naming both."""
  if served.input.kind != kind:
    raise ValueError(f"{served.source}: not a {method} model (its input kind is {served.input.kind!r}, "
                     f"{method}'s is {kind!r}; trained as {served.card.get('task', '?')})")
  return served


def main(argv: list[str], method: str, kind: str, extra: Extra | None = None) -> None:
  """The `main` of `method`'s predict tool (a model of input `kind`): flags -> `predict_all`; exit status 1 when
  an input failed."""
  from absl import flags
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  served = require_kind(serving.load(f.export, f.workdir), method, kind)
  announce(served)
  args = {name: getattr(f, name) for name in ("threshold", "alpha", "batch_size", "resolution", "aggregation",
                                               "face", "crop_scale", "detect_every") if name in f}
  rows = predict_all(served, f.input, f.out, extra=extra, **args)
  print(f"{sum(not r['error'] for r in rows)} of {len(rows)} input(s) -> {f.out} (scores.csv, scores.json)")
  raise_if_failed(rows, os.path.join(f.out, "scores.csv"))


def define_flags(face: bool = False) -> None:
  """The flags of every detector's predict tool (`face`: also --face, --crop_scale, --detect_every)."""
  from absl import flags
  serving.define_flags()
  visualize.define_flags()
  flags.DEFINE_string("input", None, "An image, a video, a folder of frames or of media files, or a glob.",
                      required=True)
  flags.DEFINE_string("out", None, "Output folder.", required=True)
  flags.DEFINE_integer("batch_size", 8, "Model inputs (crops, clips or tiles) per forward pass.")
  flags.DEFINE_enum("aggregation", "mean", list(AGGREGATIONS), "An input's score from its frames' scores.")
  if face:
    flags.DEFINE_enum("face", "detect", ["detect", "full"], "Detect and crop the face, or take the full frame.")
    flags.DEFINE_float("crop_scale", 0.0, "Face crop side / detected box side (0: the model's, from its card).")
    flags.DEFINE_integer("detect_every", 5, "Run the face detector on every n-th video frame (tracked between).")
  else:
    flags.DEFINE_enum("resolution", "auto", list(adapters.RESOLUTIONS),
                      "auto: as the manifest's input.native says (tiles for noise-reading models); tiles: "
                      "overlapping tiles of the trained size at the input's own pixels; whole: the whole input at "
                      "its size (symbolic exports); resize: resampled to the trained size.")
