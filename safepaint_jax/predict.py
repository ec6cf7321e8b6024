"""Inpaint images with an exported (or trained) SafePaint generator.

  python -m safepaint_jax.predict --export=EXPORT_DIR --image=IMAGE|FOLDER|GLOB --mask=MASK|FOLDER|GLOB --out=DIR
  python -m safepaint_jax.predict --workdir=RUN_DIR --image=... --mask=... --out=DIR   (latest checkpoint)

As the official test script: the image is centre-cropped to a square and resized to the model's size (the
manifest's `input`: Pillow bicubic); the mask (white = hole) is resized to the same size and thresholded > 0;
mask i goes with image i (modulo the mask count). Writes, at the model's size, <stem>_inpainted.png (the final
composite) and <stem>_stage1.png (the stage-1 composite), pixel values truncated as the official
`(x * 255).int()`, and DIR/inpainted.csv / .md (input, mask, hole share, error). An unreadable image or mask is one
line, and the others go on; the command then exits 1 naming them.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from common import progress, tables
from common.data.readers.media import DataError, read_image
from common.predict import media, run
from common.train import serving
from safepaint_jax import data

COLUMNS = ("input", "mask", "hole_share", "error")


def to_uint8(x: np.ndarray) -> np.ndarray:
  """[0, 1] floats -> uint8 by truncation (the official `.int()` of x * 255)."""
  return np.floor(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def inpaint(served: serving.Served, images: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
  """uint8 [B, S, S, 3] images and {0, 1} [B, S, S] masks -> {'inpainted', 'stage1'}: float [B, S, S, 3]."""
  out = served.fn({"image": images, "mask": masks.astype(np.uint8)})
  return {k: np.asarray(out[k], np.float32) for k in ("inpainted", "stage1")}


def _inpaint_file(served: serving.Served, image_path: str, mask_path: str, out_dir: str) -> dict:
  size = served.input.size[0]
  image = data.square_resize(read_image(image_path), size)
  mask = data.read_hole_mask(mask_path, size)
  out = inpaint(served, image[None], mask[None])
  stem = os.path.join(out_dir, media.stem(image_path))
  for name in ("inpainted", "stage1"):
    Image.fromarray(to_uint8(out[name][0])).save(f"{stem}_{name}.png")
  return {"input": image_path, "mask": mask_path, "hole_share": float(mask.mean()), "error": ""}


def predict_files(served: serving.Served, image_pattern: str, mask_pattern: str, out_dir: str) -> list[dict]:
  """Writes <stem>_inpainted.png / <stem>_stage1.png for every image, and the table; returns its rows."""
  if served.input.kind != "inpaint":
    raise ValueError(f"{served.source}: not a SafePaint model (its input kind is {served.input.kind!r})")
  images, masks = media.list_inputs(image_pattern), media.list_inputs(mask_pattern)
  os.makedirs(out_dir, exist_ok=True)
  counter, rows = progress.Progress("inpaint", len(images), "images"), []
  for i, path in enumerate(images):
    mask_path = masks[i % len(masks)]
    try:
      rows.append(_inpaint_file(served, path, mask_path, out_dir))
    except (DataError, FileNotFoundError) as e:
      progress.print_line(f"error: {e} (skipped)")
      rows.append({"input": path, "mask": mask_path, "hole_share": "", "error": str(e)})
    counter.update()
  tables.write(rows, COLUMNS, os.path.join(out_dir, "inpainted"))
  return rows


def main(argv) -> None:
  from absl import flags
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  served = serving.load(f.export, f.workdir)
  run.announce(served)
  rows = predict_files(served, f.image, f.mask, f.out)
  print(f"{sum(not r['error'] for r in rows)} of {len(rows)} image(s) inpainted -> {f.out}")
  run.raise_if_failed(rows, os.path.join(f.out, "inpainted.csv"))


if __name__ == "__main__":
  from absl import flags

  from common.train import tool

  serving.define_flags()
  flags.DEFINE_string("image", None, "An image, a folder of images or a glob.", required=True)
  flags.DEFINE_string("mask", None, "A mask, a folder of masks or a glob (white = hole).", required=True)
  flags.DEFINE_string("out", None, "Output folder.", required=True)
  tool.run_tool(main)
