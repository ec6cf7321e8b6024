"""Where a result came from: the code's commit and the library versions, written next to every run's config."""
from __future__ import annotations

import functools
import importlib.metadata
import os
import subprocess

LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "numpy", "ml-collections", "clu",
             "opencv-python-headless", "scikit-image", "scikit-video", "imageio", "pillow")
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@functools.cache
def code_version() -> dict[str, str | bool]:
  """{'commit': sha or 'unknown', 'dirty': uncommitted changes to tracked files} of the suite's checkout."""
  def git(*args):
    return subprocess.run(["git", "-C", _REPO, *args], capture_output=True, text=True, timeout=30, check=True).stdout
  try:
    return {"commit": git("rev-parse", "HEAD").strip(), "dirty": bool(git("status", "--porcelain", "-uno").strip())}
  except (OSError, subprocess.SubprocessError):
    return {"commit": "unknown (not a git checkout)", "dirty": False}


@functools.cache
def library_versions() -> dict[str, str]:
  """{distribution: version} of the libraries that decide numerics and data decoding ('absent' if missing)."""
  versions = {}
  for name in LIBRARIES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = "absent"
  return versions
