"""Where a result came from: the code's commit and the library versions, written next to every run's config."""
from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess

LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "numpy", "ml-collections", "clu",
             "opencv-python-headless", "scikit-image", "scikit-video", "imageio", "pillow", "scipy")
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@functools.cache
def code_version() -> dict:
  """{'commit': sha or 'unknown', 'dirty': uncommitted changes to tracked files, 'dirty_paths': those files and
  the untracked ones (they can be imported too)} of the suite's checkout."""
  def git(*args):
    return subprocess.run(["git", "-C", _REPO, *args], capture_output=True, text=True, timeout=30, check=True).stdout
  try:
    status = git("status", "--porcelain").splitlines()
    return {"commit": git("rev-parse", "HEAD").strip(), "dirty": any(not line.startswith("??") for line in status),
            "dirty_paths": [line.strip() for line in status]}
  except (OSError, subprocess.SubprocessError):
    return {"commit": "unknown (not a git checkout)", "dirty": False, "dirty_paths": []}


@functools.cache
def library_versions() -> dict[str, str]:
  """{distribution: version} of the libraries that decide numerics and data decoding ('absent' if missing)."""
  versions = {}
  for name in LIBRARIES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = "absent"
  versions["python"] = platform.python_version()
  return versions
