"""The anti-forensic arena: the suite's own detectors judge SafePaint, its stage-1 output and OpenCV Telea
inpainting of the same holes.

  python -m safepaint_jax.arena --inpainter=SAFEPAINT_RUN_OR_EXPORT --detector=ncl=/tmp/runs/ncl_demo \
      [--detector=vilocal=EXPORT_DIR ...] [--images=FOLDER --masks=FOLDER] [--limit=N] --out=DIR

Inpainters, on the same test images and holes (default: the embedded demo corpus's inpainting test split,
mask i with image i), at the SafePaint model's size:
  safepaint  the final composite I*(1-M) + O2*M;  stage1  the stage-1 composite I*(1-M) + O1*M;
  telea      cv2.inpaint(I, M, radius 3, INPAINT_TELEA).
(Images are quantised to uint8 as saved files would be: SafePaint truncates as the official code.)

Detectors are exported models (`common.train.export`) or run directories (latest checkpoint), loaded through
`common.train.serving`: image models, or clip models (the image repeated over the clip, a static clip), that
return `probs`, a per-pixel forgery probability map. Each gets the uint8 image as its predict does
(`common.predict.adapters`: the manifest's `input` fields say whether it is resized to the trained size or read in
tiles at its own resolution); the map comes back at the image's size, where the hole mask is the ground truth.

Per detector and inpainter: pixel F1 at 0.5 and pixel AUC per image (common.metrics, IMDL-BenCo conventions),
averaged over the images; lower means stronger anti-forensics. Quality columns: PSNR and SSIM of each inpainter
against the original. Writes DIR/arena.md, DIR/arena.csv and DIR/arena.png (F1 and AUC bars per inpainter).
"""
from __future__ import annotations

import csv
import os

import cv2
import numpy as np

from common import image_quality
from common import metrics
from common.predict import adapters
from common.train import serving
from safepaint_jax import data
from safepaint_jax import predict as predict_lib

INPAINTERS = ("safepaint", "stage1", "telea")


class Detector:
  """A served image or clip detector: `probs(uint8 [B, S, S, 3]) -> [B, S, S]` at the images' size."""

  def __init__(self, name: str, path: str):
    self.name, self.path = name, path
    self.served = serving.load_path(path)
    if self.served.input.kind not in ("image", "clip") or "probs" not in self.served.outputs:
      raise ValueError(f"detector {name} ({path}): expected an image or clip model with a per-pixel 'probs' "
                       f"output, got input kind {self.served.input.kind!r}, outputs {list(self.served.outputs)}")

  def probs(self, images: np.ndarray) -> np.ndarray:
    t = self.served.input.clip_length
    units = [np.repeat(im[None], t, axis=0) for im in images] if t else list(images)
    maps = adapters.spatial_maps(self.served, units, lambda unit: unit[t // 2] if t else unit)
    return np.stack([m.probs for m in maps])


def telea(images: np.ndarray, masks: np.ndarray, radius: int = 3) -> np.ndarray:
  """OpenCV Telea inpainting of uint8 RGB [B, S, S, 3] with {0, 1} holes [B, S, S]."""
  return np.stack([cv2.inpaint(im, (m > 0).astype(np.uint8) * 255, radius, cv2.INPAINT_TELEA)
                   for im, m in zip(images, masks)])


def load_test_set(images: str, masks: str, size: int, limit: int, mask_threshold: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
  source = data.ImageSource(images or data.demo_folder("test", "images"), size,
                            masks or data.demo_folder("test", "masks"), mask_threshold)
  n = min(len(source), limit) if limit else len(source)
  records = [source[i] for i in range(n)]
  return np.stack([r["image"] for r in records]), np.stack([r["mask"] for r in records])


def inpaint_all(inpainter: serving.Served, images: np.ndarray, masks: np.ndarray, batch: int = 8
                ) -> dict[str, np.ndarray]:
  """{inpainter name: uint8 [B, S, S, 3]}."""
  out = {"safepaint": [], "stage1": []}
  for i in range(0, len(images), batch):
    result = predict_lib.inpaint(inpainter, images[i:i + batch], masks[i:i + batch])
    out["safepaint"].append(predict_lib.to_uint8(result["inpainted"]))
    out["stage1"].append(predict_lib.to_uint8(result["stage1"]))
  return {"safepaint": np.concatenate(out["safepaint"]), "stage1": np.concatenate(out["stage1"]),
          "telea": telea(images, masks)}


def judge(detector: Detector, images: np.ndarray, masks: np.ndarray, batch: int = 8) -> dict[str, float]:
  """Mean per-image pixel F1 (0.5) and AUC of `detector` on uint8 images with {0, 1} hole masks."""
  f1s, aucs = [], []
  for i in range(0, len(images), batch):
    probs, gt = detector.probs(images[i:i + batch]), masks[i:i + batch]
    f1s.append(np.asarray(metrics.pixel_f1(probs, gt)))
    auc = metrics.pixel_auc(probs, gt)
    aucs.append(np.where(np.asarray(auc.defined), np.asarray(auc.auc), np.nan))
  return {"pixel_f1": float(np.mean(np.concatenate(f1s))), "pixel_auc": float(np.nanmean(np.concatenate(aucs)))}


def quality(images: np.ndarray, inpainted: np.ndarray) -> dict[str, float]:
  x, y = inpainted.astype(np.float32) / 255.0, images.astype(np.float32) / 255.0
  return {"psnr": float(np.mean(image_quality.psnr(x, y))), "ssim": float(np.mean(image_quality.ssim(x, y)))}


def run_arena(inpainter_path: str, detectors: dict[str, str], out_dir: str, *, images: str = "", masks: str = "",
              limit: int = 0, mask_threshold: int = 0) -> list[dict]:
  """Runs the arena and writes the table and the plot; returns the table rows."""
  if not detectors:
    raise ValueError("give at least one --detector=name=path")
  inpainter = serving.load_path(inpainter_path)
  if inpainter.input.kind != "inpaint":
    raise ValueError(f"--inpainter={inpainter_path}: not a SafePaint model (input kind {inpainter.input.kind!r})")
  size = inpainter.input.size[0]
  originals, holes = load_test_set(images, masks, size, limit, mask_threshold)
  outputs = inpaint_all(inpainter, originals, holes)
  scores = {name: quality(originals, outputs[name]) for name in INPAINTERS}
  rows = []
  for det_name, spec in detectors.items():
    detector = Detector(det_name, spec)
    for name in INPAINTERS:
      rows.append({"detector": det_name, "inpainter": name, **judge(detector, outputs[name], holes), **scores[name],
                   "images": len(originals)})
  write_table(rows, out_dir)
  return rows


def write_table(rows: list[dict], out_dir: str) -> None:
  os.makedirs(out_dir, exist_ok=True)
  fields = ["detector", "inpainter", "pixel_f1", "pixel_auc", "psnr", "ssim", "images"]
  with open(os.path.join(out_dir, "arena.csv"), "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fields)
    writer.writeheader()
    writer.writerows(rows)
  fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)
  lines = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
  lines += ["| " + " | ".join(fmt(r[k]) for k in fields) + " |" for r in rows]
  with open(os.path.join(out_dir, "arena.md"), "w", encoding="utf-8") as f:
    f.write("Pixel F1 (0.5) / AUC of each detector on each inpainter's output (lower = harder to detect); "
            "PSNR / SSIM against the originals.\n\n" + "\n".join(lines) + "\n")
  plot(rows, os.path.join(out_dir, "arena.png"))


def plot(rows: list[dict], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  detectors = list(dict.fromkeys(r["detector"] for r in rows))
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
  width = 0.8 / len(INPAINTERS)
  for ax, key in zip(axes, ("pixel_f1", "pixel_auc")):
    for j, name in enumerate(INPAINTERS):
      values = [next(r[key] for r in rows if r["detector"] == d and r["inpainter"] == name) for d in detectors]
      ax.bar(np.arange(len(detectors)) + (j - 1) * width, values, width, label=name)
    ax.set_xticks(np.arange(len(detectors)), detectors)
    ax.set_title(key)
    ax.set_ylim(0, 1)
  axes[0].legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def parse_detectors(values: list[str]) -> dict[str, str]:
  out = {}
  for value in values:
    name, sep, spec = value.partition("=")
    if not sep or not name or not spec:
      raise ValueError(f"--detector={value!r}: expected name=path")
    out[name] = spec
  return out


def main(argv) -> None:
  from absl import flags
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  rows = run_arena(f.inpainter, parse_detectors(f.detector), f.out, images=f.images, masks=f.masks, limit=f.limit,
                   mask_threshold=f.mask_threshold)
  with open(os.path.join(f.out, "arena.md"), encoding="utf-8") as table:
    print(table.read())
  del rows


if __name__ == "__main__":
  from absl import flags

  flags.DEFINE_string("inpainter", None, "SafePaint export or run directory.", required=True)
  flags.DEFINE_multi_string("detector", [], "name=path: an export or run directory.")
  flags.DEFINE_string("images", "", "Test image folder (default: the demo corpus's inpainting test split).")
  flags.DEFINE_string("masks", "", "Test mask folder (white = hole), mask i with image i.")
  flags.DEFINE_integer("limit", 0, "Use the first N test images (0: all).")
  flags.DEFINE_integer("mask_threshold", 0, "Resized mask > this (0-255) is a hole: 0 official, 127 as the demo "
                       "config (keeps hole ratios on 256 -> 64).")
  flags.DEFINE_string("out", None, "Output folder (arena.md, arena.csv, arena.png).", required=True)
  from common.train import tool
  tool.run_tool(main)
