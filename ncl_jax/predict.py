"""Localise manipulations in images with an exported (or trained) NCL model.

  python -m ncl_jax.predict --export=EXPORT_DIR --input=IMAGE|FOLDER|GLOB --out=DIR
  python -m ncl_jax.predict --workdir=RUN_DIR --input=... --out=DIR      (a run's latest checkpoint)

Each image (EXIF orientation applied, as in training) is resized to the model's size (the manifest's
`input.size`; Pillow bilinear, as the notebook's PIL resize). The export is fully convolutional (any size that is
a multiple of the output stride): `--resolution=whole` predicts at the image's own size, reflect-padded up to that
multiple. Outputs: `common.predict.run` (masks, overlays, scores per input).
"""
from __future__ import annotations

from common.predict import run

if __name__ == "__main__":
  from common.train import tool

  run.define_flags()
  tool.run_tool(lambda argv: run.main(argv, "NCL", "image"))
