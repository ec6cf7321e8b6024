"""Detect and localise face manipulation in images and videos with an exported (or trained) Delocate model.

  python -m delocate_jax.predict --export=EXPORT_DIR --input=FACE.png|VIDEO.mp4|FOLDER|GLOB --out=DIR
  python -m delocate_jax.predict --workdir=RUN_DIR/stage2 --input=... --out=DIR   (a run's latest checkpoint)

Faces as MSCCNet's predict (the crops Delocate trains on; its facial ROIs assume that geometry). Besides
`common.predict.run`'s outputs, each frame's recovery (the model's real-looking face) is written next to its crop
in recoveries/00000.png; an input's score is the `--aggregation` (mean, as training's evaluation) of its frames'.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

from common.predict import adapters, run


def write_recovery(result: adapters.FrameMap, out_dir: str, index: int) -> dict:
  """recoveries/<index>.png: the face crop and the model's recovery of it, side by side."""
  recovery = np.clip(np.rint(np.asarray(result.outputs["recovery"], np.float32)), 0, 255).astype(np.uint8)
  path = os.path.join(out_dir, "recoveries", f"{index:05d}.png")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if not cv2.imwrite(path, cv2.cvtColor(np.concatenate([result.crop, recovery], axis=1), cv2.COLOR_RGB2BGR)):
    raise OSError(f"{path}: OpenCV cannot write this PNG")
  return {}


if __name__ == "__main__":
  from common.train import tool

  run.define_flags(face=True)
  tool.run_tool(lambda argv: run.main(argv, "Delocate", "face", extra=write_recovery))
