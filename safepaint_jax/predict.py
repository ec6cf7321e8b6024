"""Inpaint images with an exported (or trained) SafePaint generator.

  python -m safepaint_jax.predict --export=EXPORT_DIR --image=IMAGE --mask=MASK --out=DIR
  python -m safepaint_jax.predict --workdir=RUN_DIR --image=FOLDER --mask=FOLDER --out=DIR   (latest checkpoint)

As the official test script: the image is centre-cropped to a square and resized to the model's size (Pillow
bicubic); the mask (white = hole) is resized to the same size and thresholded > 0; mask i goes with image i of a
folder (modulo the mask count). Writes, at the model's size, <stem>_inpainted.png (the final composite) and
<stem>_stage1.png (the stage-1 composite), pixel values truncated as the official `(x * 255).int()`.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from common.data.readers.media import read_image
from common.train import serving
from safepaint_jax import data


def input_size(served: serving.Served) -> int:
  spec = served.inputs.get("image")
  if spec is None or "mask" not in served.inputs or "inpainted" not in served.outputs:
    raise ValueError(f"{served.source}: not a SafePaint model (expected inputs image, mask and output inpainted; "
                     f"got inputs {list(served.inputs)}, outputs {list(served.outputs)})")
  return int(spec["shape"][0])


def to_uint8(x: np.ndarray) -> np.ndarray:
  """[0, 1] floats -> uint8 by truncation (the official `.int()` of x * 255)."""
  return np.floor(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def inpaint(served: serving.Served, images: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
  """uint8 [B, S, S, 3] images and {0, 1} [B, S, S] masks -> {'inpainted', 'stage1'}: float [B, S, S, 3]."""
  out = served.fn({"image": images.astype(np.float32) / 255.0, "mask": masks.astype(np.float32)})
  return {k: np.asarray(out[k], np.float32) for k in ("inpainted", "stage1")}


def _paths(path: str) -> list[str]:
  return [path] if os.path.isfile(path) else data.list_files(path)


def predict_files(served: serving.Served, image_path: str, mask_path: str, out_dir: str) -> list[str]:
  """Writes <stem>_inpainted.png / <stem>_stage1.png for every image; returns the inpainted paths."""
  size = input_size(served)
  images, masks = _paths(image_path), _paths(mask_path)
  os.makedirs(out_dir, exist_ok=True)
  written = []
  for i, path in enumerate(images):
    image = data.square_resize(read_image(path), size)
    mask = data.read_hole_mask(masks[i % len(masks)], size)
    out = inpaint(served, image[None], mask[None])
    stem = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0])
    for name in ("inpainted", "stage1"):
      Image.fromarray(to_uint8(out[name][0])).save(f"{stem}_{name}.png")
    written.append(f"{stem}_inpainted.png")
  return written


def main(argv) -> None:
  from absl import flags
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  served = serving.load(f.export, f.workdir)
  for path in predict_files(served, f.image, f.mask, f.out):
    print(path)


if __name__ == "__main__":
  from absl import flags

  from common.train import tool

  serving.define_flags()
  flags.DEFINE_string("image", None, "An image or a folder of images.", required=True)
  flags.DEFINE_string("mask", None, "A mask or a folder of masks (white = hole).", required=True)
  flags.DEFINE_string("out", None, "Output folder.", required=True)
  tool.run_tool(main)
