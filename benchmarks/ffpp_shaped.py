"""A FaceForensics++-shaped benchmark set: the demo corpus's face clips at FF++'s real size, H.264.

  python -m benchmarks.ffpp_shaped --out DIR [--videos 4] [--frames 300] [--width 1280 --height 720] [--crf 23]
                                   [--preset veryfast] [--gop 250] [--mask_crf 23] [--demo DIR] [--force]

The demo's faces (`common.data.demo`, `<demo>/faces`: 176x144 segments of 15 frames, mp4v, in FF++'s layout)
are small and short, so a folder reader decodes them far faster than real FF++ videos (about 1280x720,
about 300 frames, H.264 c23). This script re-encodes them in FF++'s real shape:

- every frame is scaled by min(W / w, H / h) (bicubic; masks nearest) and centred, the rest of the frame
  filled by reflection (masks: zero), and the face boxes are mapped the same way;
- each clip is played forwards and backwards (0 .. n-1, n-2 .. 1, 0 ..) up to `--frames` frames;
- real and fake videos are H.264 (libx264 through imageio-ffmpeg's static ffmpeg, yuv420p, `--crf`, `--preset`,
  a keyframe every `--gop` frames: x264's default, 250, as in a default-settings encode like FF++'s, so a random
  frame of a 300-frame video lies about 100 frames past its keyframe); the mask videos are H.264 too
  (`--mask_crf`; FF++'s masks are lossy mp4 as well), checked here to decode to the source masks under the
  readers' gray > 127 threshold (at most `MAX_MASK_ERROR` of the pixels differ).

Written under `--out` (atomically; `--force` replaces it):

  original_sequences/youtube/c23/videos/<id>.mp4                  `--videos` real videos (ids 000, 001, ...)
  manipulated_sequences/<Method>/c23/videos/<t>_<s>.mp4           both directions of each pair, every demo method
  manipulated_sequences/<Method>/masks/videos/<t>_<s>.mp4
  splits/train.json   every pair (the benchmark reads 'train'); val.json and test.json: the last pair
  face_boxes.json     {video: {frame: [x0, y0, x1, y1]}} for every real id and every fake
  ffpp_shaped.json    the build's parameters, encoder, file sizes, bitrate and mask check

Pair j of the output is the demo's pair j modulo the demo's pair count (ids renumbered), so `--videos` above the
demo's 8 repeats content in new files. The set indexes with `FaceForensicsReader(out, 'train',
face_boxes=PrecomputedFaceBoxes(out/face_boxes.json), verify='header')`, which this script checks at the end.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app, flags, logging
import cv2
import numpy as np

from common.data import demo
from common.data.readers.media import DataError, probe_video, read_mask_video_frames, read_video_frames

COMPRESSION = "c23"
FPS = 30000 / 1001
MAX_MASK_ERROR = 0.01  # largest fraction of mask pixels allowed to flip through the lossy mask encode


def define_flags() -> None:
  """The command line's flags (defined only when run: tests import this module beside other tools)."""
  flags.DEFINE_string("out", None, "destination folder")
  flags.DEFINE_integer("videos", 4, "real videos (even: pairs of ids); fakes: 2 per pair and method")
  flags.DEFINE_integer("frames", 300, "frames per video (the demo clip played forwards and backwards)")
  flags.DEFINE_integer("width", 1280, "frame width (even)")
  flags.DEFINE_integer("height", 720, "frame height (even)")
  flags.DEFINE_integer("crf", 23, "x264 constant rate factor of the real and fake videos (FF++ c23: 23)")
  flags.DEFINE_integer("mask_crf", 23, "x264 constant rate factor of the mask videos")
  flags.DEFINE_string("preset", "veryfast", "x264 preset (FF++ used ffmpeg's default, 'medium': about 2x slower "
                      "to encode here)")
  flags.DEFINE_integer("gop", 250, "frames per group of pictures (x264 keyint; its default is 250)")
  flags.DEFINE_string("demo", None, "a built demo corpus (default: the cached one, built on first use)")
  flags.DEFINE_boolean("force", False, "replace an existing --out folder")
  flags.DEFINE_integer("jobs", 2, "videos encoded at once")


def pingpong(k: int, n: int) -> int:
  """Source frame of output frame `k` when an `n`-frame clip plays forwards then backwards, repeatedly."""
  if n == 1:
    return 0
  k %= 2 * (n - 1)
  return k if k < n else 2 * (n - 1) - k


class Placement:
  """Maps an h x w frame onto an H x W one: scaled by min(W / w, H / h), centred."""

  def __init__(self, src_hw: tuple[int, int], out_hw: tuple[int, int]):
    (h, w), (self.height, self.width) = src_hw, out_hw
    self.scale = min(self.width / w, self.height / h)
    self.size = (min(self.width, round(w * self.scale)), min(self.height, round(h * self.scale)))  # (w, h)
    self.left = (self.width - self.size[0]) // 2
    self.top = (self.height - self.size[1]) // 2

  def frame(self, frame: np.ndarray, mask: bool = False) -> np.ndarray:
    """uint8 [h, w, 3] -> [H, W, 3]: bicubic and reflected borders, or for a mask nearest and zero borders."""
    scaled = cv2.resize(frame, self.size, interpolation=cv2.INTER_NEAREST if mask else cv2.INTER_CUBIC)
    right, bottom = self.width - self.size[0] - self.left, self.height - self.size[1] - self.top
    border = cv2.BORDER_CONSTANT if mask else cv2.BORDER_REFLECT_101
    return cv2.copyMakeBorder(scaled, self.top, bottom, self.left, right, border, value=0)

  def box(self, box) -> list[float]:
    x0, y0, x1, y1 = box
    s = self.scale
    return [round(x0 * s + self.left, 2), round(y0 * s + self.top, 2),
            round(x1 * s + self.left, 2), round(y1 * s + self.top, 2)]


def encode(path: str, frames: list[np.ndarray], order: list[int], crf: int, preset: str, gop: int) -> None:
  """Writes frames[order[0]], frames[order[1]], ... (uint8 [H, W, 3] RGB) as H.264 yuv420p to `path`."""
  height, width = frames[0].shape[:2]
  # ffmpeg itself, frames piped in: imageio_ffmpeg.write_frames forks with a preexec_fn, which can hang when
  # other threads run (its issue 58).
  command = [_imageio_ffmpeg().get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
             "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{FPS:.6f}", "-i", "-",
             "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(crf), "-preset", preset, "-g", str(gop),
             path]
  process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
  try:
    for i in order:
      process.stdin.write(np.ascontiguousarray(frames[i]).tobytes())
  except BrokenPipeError:
    pass  # ffmpeg failed: its message follows
  process.stdin.close()
  error = process.stderr.read().decode(errors="replace").strip()
  if process.wait():
    raise RuntimeError(f"{path}: ffmpeg failed: {error[-500:]}")


def _read_all(path: str) -> np.ndarray:
  return read_video_frames(path, range(probe_video(path, "header").num_frames))


def _demo_pairs(faces: str) -> list[tuple[str, str]]:
  pairs = []
  for name in ("train", "val", "test"):
    with open(os.path.join(faces, "splits", f"{name}.json")) as f:
      pairs += [tuple(p) for p in json.load(f)]
  return pairs


def build(out: str, *, demo_dir: str | None = None, videos: int = 4, frames: int = 300, width: int = 1280,
          height: int = 720, crf: int = 23, mask_crf: int = 23, preset: str = "veryfast", gop: int = 250,
          jobs: int = 2, force: bool = False) -> dict:
  """Builds the set into `out` (see the module docstring) and returns its manifest."""
  if videos < 2 or videos % 2:
    raise ValueError(f"--videos must be an even number >= 2 (pairs of real ids), got {videos}")
  if width % 2 or height % 2 or width <= 0 or height <= 0:
    raise ValueError(f"--width and --height must be positive and even (yuv420p), got {width}x{height}")
  if frames < 1:
    raise ValueError(f"--frames must be >= 1, got {frames}")
  out = os.path.abspath(out)
  if os.path.exists(out) and not force:
    raise FileExistsError(f"{out} exists; pass --force to replace it")
  faces = os.path.join(demo_dir or demo.ensure_demo_corpus(), "faces")
  if not os.path.isdir(os.path.join(faces, "manipulated_sequences")):
    raise FileNotFoundError(f"{faces} is not a demo corpus's faces folder (no manipulated_sequences/)")
  methods = sorted(os.listdir(os.path.join(faces, "manipulated_sequences")))
  src_pairs = _demo_pairs(faces)
  with open(os.path.join(faces, "face_boxes.json")) as f:
    src_boxes = json.load(f)

  start = time.perf_counter()
  os.makedirs(os.path.dirname(out), exist_ok=True)
  staging = tempfile.mkdtemp(prefix=os.path.basename(out) + ".partial-", dir=os.path.dirname(out))
  real_dir = os.path.join(staging, "original_sequences", "youtube", COMPRESSION, "videos")
  pairs, boxes, work = [], {}, []
  for j in range(videos // 2):
    a, b = src_pairs[j % len(src_pairs)]
    ids = {a: f"{2 * j:03d}", b: f"{2 * j + 1:03d}"}
    pairs.append([ids[a], ids[b]])
    for src in (a, b):
      work.append(("real", os.path.join(faces, "original_sequences", "youtube", COMPRESSION, "videos", src + ".mp4"),
                   os.path.join(real_dir, ids[src] + ".mp4"), src, ids[src]))
    for method in methods:
      for t, s in ((a, b), (b, a)):
        name = f"{ids[t]}_{ids[s]}"
        base = os.path.join(faces, "manipulated_sequences", method)
        dest = os.path.join(staging, "manipulated_sequences", method)
        work.append(("fake", os.path.join(base, COMPRESSION, "videos", f"{t}_{s}.mp4"),
                     os.path.join(dest, COMPRESSION, "videos", name + ".mp4"), t, name))
        work.append(("mask", os.path.join(base, "masks", "videos", f"{t}_{s}.mp4"),
                     os.path.join(dest, "masks", "videos", name + ".mp4"), t, name))

  src_hw = read_video_frames(work[0][1], [0]).shape[1:3]
  place = Placement(src_hw, (height, width))
  mask_errors = []

  def one(kind, src, dest, box_id, name):
    clip = _read_all(src)
    order = [pingpong(k, len(clip)) for k in range(frames)]
    is_mask = kind == "mask"
    scaled = [place.frame(f, mask=is_mask) for f in clip]
    if is_mask:
      scaled = [np.where(m > 127, 255, 0).astype(np.uint8) for m in scaled]
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    encode(dest, scaled, order, mask_crf if is_mask else crf, preset, gop)
    if is_mask:  # the readers' threshold must give back the masks
      check = sorted({0, len(order) // 2, len(order) - 1})
      decoded = read_mask_video_frames(dest, check)
      expected = np.stack([scaled[order[k]][..., 0] > 127 for k in check])
      mask_errors.append(float(np.mean(decoded.astype(bool) != expected)))
    if kind != "mask":
      table = src_boxes[box_id]
      boxes[name] = {str(k): place.box(table[str(order[k])]) for k in range(frames)}

  logging.info("encoding %d videos (%d real, %dx%d, %d frames) into %s", len(work),
               sum(w[0] == "real" for w in work), width, height, frames, staging)
  try:
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
      for future in concurrent.futures.as_completed([pool.submit(one, *w) for w in work]):
        future.result()
    worst = max(mask_errors, default=0.0)
    if worst > MAX_MASK_ERROR:
      raise RuntimeError(f"mask videos at crf {mask_crf} flip {worst:.3%} of the mask pixels under the gray > 127 "
                         f"threshold (more than {MAX_MASK_ERROR:.0%}): lower --mask_crf")
    os.makedirs(os.path.join(staging, "splits"))
    split_pairs = {"train": pairs, "val": pairs[-1:], "test": pairs[-1:]}
    for name, listed in split_pairs.items():
      with open(os.path.join(staging, "splits", f"{name}.json"), "w") as f:
        json.dump(listed, f)
    with open(os.path.join(staging, "face_boxes.json"), "w") as f:
      json.dump(boxes, f)
    sizes = {kind: sum(os.path.getsize(w[2]) for w in work if w[0] == kind) for kind in ("real", "fake", "mask")}
    counts = {kind: sum(w[0] == kind for w in work) for kind in ("real", "fake", "mask")}
    seconds = frames / FPS
    manifest = {
        "name": "FaceForensics++-shaped benchmark set", "source": faces, "methods": methods,
        "compression": COMPRESSION, "videos": counts, "frames": frames, "width": width, "height": height,
        "placement": {"scale": place.scale, "left": place.left, "top": place.top},
        "encoder": {"codec": "libx264", "pix_fmt": "yuv420p", "crf": crf, "mask_crf": mask_crf, "preset": preset,
                    "gop": gop, "ffmpeg": _ffmpeg_version()},
        "bytes": sizes,
        "mbit_per_s": {k: round(8 * sizes[k] / counts[k] / seconds / 1e6, 3) for k in sizes},
        "mask_pixel_error_max": worst, "splits": split_pairs, "build_seconds": round(time.perf_counter() - start, 1),
    }
    with open(os.path.join(staging, "ffpp_shaped.json"), "w") as f:
      json.dump(manifest, f, indent=1)
    if os.path.exists(out):
      shutil.rmtree(out)
    os.replace(staging, out)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return manifest


def _imageio_ffmpeg():
  try:
    import imageio_ffmpeg  # the `bench` extra: a static ffmpeg with libx264 (OpenCV's wheel encodes only mp4v)
  except ImportError:
    raise RuntimeError("imageio-ffmpeg is not installed: pip install -e '.[bench]'") from None
  return imageio_ffmpeg


def _ffmpeg_version() -> str:
  line = subprocess.run([_imageio_ffmpeg().get_ffmpeg_exe(), "-version"], capture_output=True, text=True).stdout
  return line.split("\n", 1)[0]


def check(root: str, methods) -> dict:
  """Indexes `root`'s train split with the folder reader and reads its first fake and real records."""
  from common.data.faces.detection import PrecomputedFaceBoxes
  from common.data.readers import FaceForensicsReader
  with tempfile.TemporaryDirectory() as cache:
    reader = FaceForensicsReader(root, "train", methods=methods, compression=COMPRESSION, verify="header",
                                 face_boxes=PrecomputedFaceBoxes(os.path.join(root, "face_boxes.json")),
                                 mask_source="official", cache_dir=cache)
    fake, real = reader[0], reader[1]
  if fake["label"] != 1 or not fake["mask"].any() or real["label"] != 0:
    raise RuntimeError(f"{root}: the reader's first records are not a fake with a mask and its real frame")
  return {"records": len(reader), "crop": list(fake["image"].shape)}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if not f.out:
    raise app.UsageError("--out is required")
  try:
    manifest = build(f.out, demo_dir=f.demo, videos=f.videos, frames=f.frames, width=f.width, height=f.height,
                     crf=f.crf, mask_crf=f.mask_crf, preset=f.preset, gop=f.gop, jobs=f.jobs, force=f.force)
    checked = check(f.out, manifest["methods"])
  except (ValueError, RuntimeError, OSError, DataError) as e:  # bad flags, an existing --out, no encoder
    sys.exit(f"error: {e}")
  summary = {k: manifest[k] for k in ("videos", "frames", "width", "height", "mbit_per_s", "mask_pixel_error_max",
                                      "build_seconds")}
  print(json.dumps({"out": os.path.abspath(f.out), **summary, "train_split": checked}), flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
