"""Detect and localise face manipulation in images and videos with an exported (or trained) MSCCNet.

  python -m msccnet_jax.predict --export=EXPORT_DIR --input=FACE.png|VIDEO.mp4|FOLDER|GLOB --out=DIR
  python -m msccnet_jax.predict --workdir=RUN_DIR --input=... --out=DIR        (a run's latest checkpoint)

Faces (`--face=detect`): scikit-image's LBP cascade on every `--detect_every`-th frame, tracked in between as the
FF++ reader does, cropped as a square of the model's crop scale (its manifest's `input.face_crop_scale`, 1.3)
times the box: the crops MSCCNet trains on. `--face=full` takes each frame as the face crop. The score is the
softmax probability of "fake"; the map is pasted back at the crop box. Outputs: `common.predict.run`.
"""
from __future__ import annotations

from common.predict import run

if __name__ == "__main__":
  from common.train import tool

  run.define_flags(face=True)
  tool.run_tool(lambda argv: run.main(argv, "MSCCNet", "face"))
