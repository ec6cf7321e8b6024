"""Localise inpainting in videos with an exported (or trained) ViLocal model.

  python -m vilocal_jax.predict --export=EXPORT_DIR --input=VIDEO|FRAME_FOLDER|FOLDER|GLOB --out=DIR
  python -m vilocal_jax.predict --workdir=RUN_DIR/stage2 --input=... --out=DIR      (a run's latest checkpoint)

ViLocal predicts the middle frame of a T-frame clip (the manifest's `input.clip_length`), so a window slides over
each video one frame at a time, padded at the ends by repeating the first / last frame (the official evaluation
never scores the first and last T//2 frames). The model reads a 3D SRM noise residual, which resampling smears:
frames are predicted at their own resolution, in overlapping tiles of the trained size (`--resolution=auto`);
`--resolution=whole` runs whole frames through the symbolic export (sizes padded up to a multiple of 8) and
`--resolution=resize` resamples them to the trained size (Pillow bilinear, as the official ToTensor pipeline). Outputs: `common.predict.run` (masks, overlays, overlay.mp4, scores per frame and per input).
"""
from __future__ import annotations

from common.predict import run

if __name__ == "__main__":
  from common.train import tool

  run.define_flags()
  tool.run_tool(lambda argv: run.main(argv, "ViLocal", "clip"))
