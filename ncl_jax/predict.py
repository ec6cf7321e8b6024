"""Localise manipulations in images with an exported (or trained) NCL model.

  python -m ncl_jax.predict --export=EXPORT_DIR --input=IMAGE_OR_FOLDER --out=DIR
  python -m ncl_jax.predict --workdir=RUN_DIR --input=... --out=DIR      (a run's latest checkpoint)

Each image is read as RGB (`media.read_image`: EXIF orientation applied, as in training), resized to the model's
input size (the export manifest's `image: [S, S, 3]`; Pillow bilinear, as the notebook's PIL resize), scaled to
[0, 1] and ImageNet-normalised. Output in DIR, at each image's own resolution (the probability map is resized
bilinearly), named after the input's stem:
  <stem>_mask.png     0/255 mask: tampered probability > --threshold (0.5 = the notebook's 2-class argmax);
  <stem>_overlay.png  the probability as a JET heatmap blended over the image.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

from common import visualize
from common.data import transforms
from common.data.readers.media import IMAGE_EXTENSIONS, read_image
from common.train import serving
from ncl_jax.task import IMAGENET_MEAN, IMAGENET_STD


def input_size(served: serving.Served) -> int:
  spec = served.inputs.get("image")
  if spec is None or len(spec["shape"]) != 3 or spec["shape"][-1] != 3 or "probs" not in served.outputs:
    raise ValueError(f"{served.source}: not an NCL model (expected input image [S, S, 3] and output probs; got "
                     f"inputs {served.inputs}, outputs {list(served.outputs)})")
  return int(spec["shape"][0])


def list_images(path: str) -> list[str]:
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such image or folder")
  if os.path.isfile(path):
    return [path]
  names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
  if not names:
    raise ValueError(f"{path}: the folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
  return [os.path.join(path, n) for n in names]


def predict_images(served: serving.Served, path: str, out_dir: str, *, threshold: float = 0.5,
                   alpha: float = 0.5) -> list[str]:
  """Writes <stem>_mask.png and <stem>_overlay.png for every image of `path`; returns the mask paths."""
  size = input_size(served)
  os.makedirs(out_dir, exist_ok=True)
  written = []
  for image_path in list_images(path):
    image = read_image(image_path)
    x = (transforms.resize_image(image, size, size).astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    probs = np.asarray(served.fn({"image": x[None]})["probs"][0], np.float32)
    probs = cv2.resize(probs, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    stem = os.path.join(out_dir, os.path.splitext(os.path.basename(image_path))[0])
    visualize.write_mask_and_overlay(stem + "_mask.png", stem + "_overlay.png", image, probs,
                                     threshold=threshold, alpha=alpha)
    written.append(stem + "_mask.png")
  return written


def main(argv) -> None:
  from absl import flags
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  served = serving.load(f.export, f.workdir)
  masks = predict_images(served, f.input, f.out, threshold=f.threshold, alpha=f.alpha)
  print(f"{f.input}: {len(masks)} images -> {f.out}")


if __name__ == "__main__":
  from absl import flags

  from common.train import tool

  serving.define_flags()
  visualize.define_flags()
  flags.DEFINE_string("input", None, "Image file or folder of images.", required=True)
  flags.DEFINE_string("out", None, "Output directory.", required=True)
  tool.run_tool(main)
