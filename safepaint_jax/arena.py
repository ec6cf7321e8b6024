"""The anti-forensic arena: the suite's own detectors judge SafePaint, its stage-1 output and OpenCV Telea
inpainting of the same holes.

  python -m safepaint_jax.arena --inpainter=SAFEPAINT_RUN_OR_EXPORT --detector=ncl=/tmp/runs/ncl_demo \
      [--detector=vilocal=EXPORT_DIR@unit ...] [--images=FOLDER --masks=FOLDER] [--limit=N] --out=DIR

Inpainters, on the same test images and holes (default: the embedded demo corpus's inpainting test split,
mask i with image i), at the SafePaint model's size:
  safepaint  the final composite I*(1-M) + O2*M;  stage1  the stage-1 composite I*(1-M) + O1*M;
  telea      cv2.inpaint(I, M, radius 3, INPAINT_TELEA).
(Images are quantised to uint8 as saved files would be: SafePaint truncates as the official code.)

Detectors are exported models (`common.train.export`) or run directories (latest checkpoint), loaded through
`common.train.serving`; each takes an image [S, S, 3] or a clip [T, H, W, 3] (the image is repeated over T, a
static clip) and returns `probs`, a per-pixel forgery probability map. The inpainted image is resized to the
detector's input (Pillow bilinear) and normalised as the detector's manifest says: `imagenet` (RGB / 255, ImageNet
mean / std), `unit` ([0, 1]) or `255` (0-255 values); recognised from the manifest's `normalisation` text, or
forced with `name=path@mode`. The hole mask, resized to the map's size (nearest), is the ground truth.

Per detector and inpainter: pixel F1 at 0.5 and pixel AUC per image (common.metrics, IMDL-BenCo conventions),
averaged over the images; lower means stronger anti-forensics. Quality columns: PSNR and SSIM of each inpainter
against the original. Writes DIR/arena.md, DIR/arena.csv and DIR/arena.png (F1 and AUC bars per inpainter).
"""
from __future__ import annotations

import csv
import os

import cv2
import numpy as np
from PIL import Image

from common import image_quality
from common import metrics
from common.train import serving
from safepaint_jax import data
from safepaint_jax import predict as predict_lib

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
NORMALISATIONS = ("imagenet", "unit", "255")
INPAINTERS = ("safepaint", "stage1", "telea")


def detect_normalisation(text: str) -> str:
  """'imagenet' | 'unit' | '255' from a manifest's normalisation text; raises if it says none of them."""
  if "0-255" in text:
    return "255"
  if "imagenet" in text.lower():
    return "imagenet"
  if "[0, 1]" in text:
    return "unit"
  raise ValueError(f"cannot tell the input normalisation from {text!r}: append @imagenet, @unit or @255 to the "
                   "--detector flag")


class Detector:
  """A served detector with its input layout and normalisation: `probs(uint8 [B, S, S, 3]) -> [B, h, w]`."""

  def __init__(self, name: str, spec: str):
    path, _, mode = spec.partition("@")
    self.name, self.path = name, path
    self.served = serving.load_path(path)
    self.mode = mode or detect_normalisation(self.served.normalisation)
    if self.mode not in NORMALISATIONS:
      raise ValueError(f"detector {name}: unknown normalisation {self.mode!r}; expected one of {NORMALISATIONS}")
    if "probs" not in self.served.outputs:
      raise ValueError(f"detector {name} ({path}): no per-pixel 'probs' output (outputs {list(self.served.outputs)})")
    (self.key, spec_), = [(k, v) for k, v in self.served.inputs.items() if k in ("image", "frames")] or [(None, None)]
    if self.key is None:
      raise ValueError(f"detector {name} ({path}): expected an 'image' or 'frames' input, got {list(self.served.inputs)}")
    self.shape = tuple(spec_["shape"])

  def normalise(self, images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float32)
    if self.mode == "255":
      return x
    x = x / 255.0
    return (x - IMAGENET_MEAN) / IMAGENET_STD if self.mode == "imagenet" else x

  def probs(self, images: np.ndarray) -> np.ndarray:
    h, w = self.shape[-3:-1]
    resized = np.stack([np.asarray(Image.fromarray(im).resize((w, h), Image.BILINEAR)) for im in images])
    x = self.normalise(resized)
    if self.key == "frames":
      x = np.repeat(x[:, None], self.shape[0], axis=1)
    return np.asarray(self.served.fn({self.key: x})["probs"], np.float32)


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
    probs = detector.probs(images[i:i + batch])
    h, w = probs.shape[1:3]
    gt = np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in masks[i:i + batch]])
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
  size = predict_lib.input_size(inpainter)
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
      raise ValueError(f"--detector={value!r}: expected name=path[@imagenet|unit|255]")
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
  flags.DEFINE_multi_string("detector", [], "name=path[@imagenet|unit|255]: an export or run directory.")
  flags.DEFINE_string("images", "", "Test image folder (default: the demo corpus's inpainting test split).")
  flags.DEFINE_string("masks", "", "Test mask folder (white = hole), mask i with image i.")
  flags.DEFINE_integer("limit", 0, "Use the first N test images (0: all).")
  flags.DEFINE_integer("mask_threshold", 0, "Resized mask > this (0-255) is a hole: 0 official, 127 as the demo "
                       "config (keeps hole ratios on 256 -> 64).")
  flags.DEFINE_string("out", None, "Output folder (arena.md, arena.csv, arena.png).", required=True)
  from common.train import tool
  tool.run_tool(main)
