"""Forensics perturbations: JPEG re-compression, Gaussian blur, Gaussian noise, resizing, H.264 re-encoding.

One module drives both training augmentation (`ForensicAugment`, a Grain `RandomMap`) and the robustness
evaluation (`PERTURBATIONS` with the sweep levels of `ROBUSTNESS_LEVELS`; `python -m common.train.robustness`).
Every method's evaluation pipeline ends with `ForensicAugment(config.data.perturbation)` when that field is set
(`Task.input_pipeline`), so one perturbation config degrades any detector's test records.

Every op is a pure function `op(images, level, rng=None) -> images` on uint8 RGB arrays, either one image
[H, W, 3] or the frames of a clip [T, H, W, 3]; it returns a new uint8 array of the same shape and applies
the same level to every frame. Only `gaussian_noise` is random; it needs `rng` (a `np.random.Generator`)
and draws independent noise for every frame.

* `jpeg(images, quality)`: encode and decode with OpenCV's libjpeg at quality 1..100 (4:2:0 chroma
  subsampling, OpenCV's default). Inputs are RGB and are swapped to BGR for the codec, so the colour
  transform is the standard one.
* `gaussian_blur(images, kernel_size, sigma=0)`: `cv2.GaussianBlur` with an odd square kernel; sigma 0
  means OpenCV's default kernel: its fixed tables for k <= 7, else sigma = 0.3 * ((k - 1) / 2 - 1) + 0.8.
  Border: reflect-101.
* `gaussian_noise(images, sigma, rng)`: add N(0, sigma^2) noise on the 0-255 scale, round, clip.
* `resize(images, scale, restore_size=True)`: downscale by `scale` (area interpolation), then, by
  default, upscale back to the input size (bilinear) so that masks stay aligned, as in the SPAN/PSCC
  robustness tables. With `restore_size=False` the smaller image is returned. Scale > 1 upscales
  (bilinear) and back (area).
* `h264(images, crf)`: re-encode with libx264 at constant rate factor `crf` (0..51; 18 is visually lossless,
  23 x264's default, every +6 roughly halves the bitrate), preset `medium`, yuv420p (BT.601, limited range, as
  ffmpeg converts RGB by default), one thread, 25 fps, in a temporary folder; then decode back to RGB. A clip is
  encoded as one video (inter-frame prediction across its frames: a clip's frames do not match the frames
  encoded alone); a single image as a one-frame clip (intra only). Odd heights / widths are padded by
  repeating the last row / column to even sizes for 4:2:0 and cropped back. Deterministic (same bytes for the
  same input). Needs the ffmpeg of `imageio-ffmpeg` (`pip install imageio-ffmpeg`; its binary has libx264);
  without it the op raises an ImportError saying so. About 20-60 ms per call plus the encode time.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
import dataclasses
import os
import subprocess
import tempfile
from typing import Any

import cv2
import grain
import numpy as np


def _check_images(images: np.ndarray) -> None:
  if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[-1] != 3:
    raise ValueError("expected uint8 [H, W, 3] or [T, H, W, 3] images, got "
                     f"{images.dtype} {images.shape}")


def _per_frame(fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
  """Applies an [H, W, 3] -> [H', W', 3] function to one image or every frame of a clip."""
  _check_images(images)
  if images.ndim == 3:
    return fn(images)
  return np.stack([fn(frame) for frame in images])


def jpeg(images: np.ndarray, quality: int, rng: np.random.Generator | None = None) -> np.ndarray:
  """JPEG re-compression at `quality` (1..100). images: uint8 [H, W, 3] or [T, H, W, 3] RGB."""
  del rng  # deterministic
  quality = int(quality)
  if not 1 <= quality <= 100:
    raise ValueError(f"JPEG quality must be in [1, 100], got {quality}")

  def compress(image: np.ndarray) -> np.ndarray:
    ok, buffer = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]),
                              [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
      raise RuntimeError("cv2.imencode('.jpg') failed")
    return cv2.imdecode(buffer, cv2.IMREAD_COLOR)[..., ::-1]

  return _per_frame(compress, images)


def gaussian_blur(images: np.ndarray, kernel_size: int, rng: np.random.Generator | None = None,
                  sigma: float = 0.0) -> np.ndarray:
  """Gaussian blur with an odd `kernel_size`; `sigma` 0 uses OpenCV's default. uint8 [.., H, W, 3]."""
  del rng  # deterministic
  kernel_size = int(kernel_size)
  if kernel_size < 1 or kernel_size % 2 == 0:
    raise ValueError(f"blur kernel size must be odd and positive, got {kernel_size}")
  return _per_frame(
      lambda image: cv2.GaussianBlur(image, (kernel_size, kernel_size), sigma,
                                     borderType=cv2.BORDER_REFLECT_101), images)


def gaussian_noise(images: np.ndarray, sigma: float,
                   rng: np.random.Generator | None = None) -> np.ndarray:
  """Adds N(0, sigma^2) noise (0-255 scale), rounds and clips. uint8 [.., H, W, 3]."""
  _check_images(images)
  if rng is None:
    raise ValueError("gaussian_noise needs an rng (np.random.Generator)")
  if sigma < 0:
    raise ValueError(f"noise sigma must be >= 0, got {sigma}")
  noisy = images.astype(np.float32) + rng.normal(0.0, sigma, images.shape).astype(np.float32)
  return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def resize(images: np.ndarray, scale: float, rng: np.random.Generator | None = None,
           restore_size: bool = True) -> np.ndarray:
  """Resizes by `scale` and, by default, back to the input size. uint8 [.., H, W, 3]."""
  del rng  # deterministic
  if scale <= 0:
    raise ValueError(f"resize scale must be positive, got {scale}")
  height, width = images.shape[-3:-1]
  small = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
  down = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
  up = cv2.INTER_LINEAR if scale < 1 else cv2.INTER_AREA

  def rescale(image: np.ndarray) -> np.ndarray:
    resized = cv2.resize(image, small, interpolation=down)
    return cv2.resize(resized, (width, height), interpolation=up) if restore_size else resized

  return _per_frame(rescale, images)


def ffmpeg_exe() -> str:
  """The ffmpeg binary of `imageio-ffmpeg` (static, with libx264); an ImportError saying how to install it."""
  try:
    import imageio_ffmpeg
  except ImportError as e:
    raise ImportError("the 'h264' perturbation needs the ffmpeg binary of imageio-ffmpeg, which is not installed: "
                      "pip install imageio-ffmpeg (it is in this package's [test] and [bench] extras)") from e
  return imageio_ffmpeg.get_ffmpeg_exe()


def h264(images: np.ndarray, crf: int, rng: np.random.Generator | None = None,
         preset: str = "medium") -> np.ndarray:
  """H.264 (libx264) re-encoding at constant rate factor `crf` (0..51; higher = stronger compression), decoded
  back. images: uint8 [H, W, 3] (a one-frame clip) or [T, H, W, 3] (encoded as one clip) RGB."""
  del rng  # deterministic
  _check_images(images)
  crf = int(crf)
  if not 0 <= crf <= 51:
    raise ValueError(f"H.264 CRF must be in [0, 51], got {crf}")
  clip = images[None] if images.ndim == 3 else images
  frames, height, width = clip.shape[:3]
  padded = np.pad(clip, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
  ph, pw = padded.shape[1:3]
  exe = ffmpeg_exe()
  with tempfile.TemporaryDirectory(prefix="h264-") as folder:
    raw, video = os.path.join(folder, "clip.rgb"), os.path.join(folder, "clip.mp4")
    np.ascontiguousarray(padded).tofile(raw)
    _ffmpeg([exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
             "-s", f"{pw}x{ph}", "-framerate", "25", "-i", raw, "-an", "-c:v", "libx264", "-preset", preset,
             "-crf", str(crf), "-pix_fmt", "yuv420p", "-threads", "1", "-y", video], "encode")
    decoded = _ffmpeg([exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "1", "-i", video,
                       "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], "decode")
  if len(decoded) != frames * ph * pw * 3:
    raise RuntimeError(f"h264: decoded {len(decoded)} bytes, expected {frames} frames of {pw}x{ph} RGB")
  out = np.frombuffer(decoded, np.uint8).reshape(frames, ph, pw, 3)[:, :height, :width]
  return np.ascontiguousarray(out[0] if images.ndim == 3 else out)


def _ffmpeg(command: list[str], what: str) -> bytes:
  done = subprocess.run(command, capture_output=True, check=False)
  if done.returncode:
    raise RuntimeError(f"h264: ffmpeg failed to {what} (exit {done.returncode}): "
                       f"{done.stderr.decode(errors='replace').strip()[-500:]}")
  return done.stdout


Perturbation = Callable[..., np.ndarray]

# name -> op(images, level, rng=None); the level is quality, kernel size, sigma, scale or CRF.
PERTURBATIONS: dict[str, Perturbation] = {
    "jpeg": jpeg,
    "blur": gaussian_blur,
    "noise": gaussian_noise,
    "resize": resize,
    "h264": h264,
}

# Robustness sweeps (specs/safepaint_anchors_benchmarks.md §4.1), levels in the ops' units:
# JPEG quality 100..50 step 10 and blur kernel 3..23 step 4 are IMDL-BenCo's `test_robust.py` sweeps;
# noise is a standard deviation on the 0-255 scale, 3..23 step 4 (BenCo passes these numbers to
# albumentations as a *variance*; use sigma = sqrt(v) to reproduce BenCo exactly); resize scales are
# the SPAN/PSCC-Net table's 0.78 and 0.25 plus 0.5; H.264 CRF 18 (visually lossless) .. 38 step 5 spans the
# video-forensics range (FaceForensics++ c23 is CRF 23; its c40 is CRF 40, just past the sweep's end).
# Every list runs from the mildest level to the strongest.
ROBUSTNESS_LEVELS: dict[str, tuple[float, ...]] = {
    "jpeg": (100, 90, 80, 70, 60, 50),
    "blur": (3, 7, 11, 15, 19, 23),
    "noise": (3, 7, 11, 15, 19, 23),
    "resize": (0.78, 0.5, 0.25),
    "h264": (18, 23, 28, 33, 38),
}

# The SPAN / PSCC-Net / ObjectFormer NIST16 robustness table (two levels per distortion).
NIST16_ROBUSTNESS_LEVELS: dict[str, tuple[float, ...]] = {
    "resize": (0.78, 0.25),
    "blur": (3, 15),
    "noise": (3, 15),
    "jpeg": (100, 50),
}


@dataclasses.dataclass(frozen=True)
class _OpSpec:
  """How `ForensicAugment` draws the level of one op from a [low, high] range."""
  param: str
  integer: bool
  odd: bool = False


_OP_SPECS: dict[str, _OpSpec] = {
    "resize": _OpSpec("scale", integer=False),
    "blur": _OpSpec("kernel_size", integer=True, odd=True),
    "noise": _OpSpec("sigma", integer=False),
    "jpeg": _OpSpec("quality", integer=True),
    "h264": _OpSpec("crf", integer=True),
}
# Application order: geometry, then blur, then noise, then compression last (as a re-saved upload).
AUGMENT_ORDER: tuple[str, ...] = ("resize", "blur", "noise", "jpeg", "h264")


def _as_range(value: Any, name: str) -> tuple[float, float]:
  if isinstance(value, (int, float)):
    return float(value), float(value)
  low, high = value
  if low > high:
    raise ValueError(f"{name}: range low > high: {value}")
  return float(low), float(high)


class ForensicAugment(grain.transforms.RandomMap):
  """Random forensics degradations for image and clip records (a Grain `RandomMap`).

  `config` maps op names ("resize", "blur", "noise", "jpeg", "h264") to `{"p": probability, <param>: range}`,
  with the parameter named `scale`, `kernel_size`, `sigma`, `quality` or `crf` and given as a number or an
  inclusive (low, high) pair, e.g. IMDL-BenCo's defaults::

      {"jpeg": {"p": 0.2, "quality": (70, 100)}, "blur": {"p": 0.2, "kernel_size": (3, 7)}}

  Ops run in `AUGMENT_ORDER`; each fires with its probability and a level drawn uniformly (integers for
  quality, odd integers for kernel size). A record holding `image` uint8 [H, W, 3] or `frames` uint8
  [T, H, W, 3] gets the op on that array, with the same level for every frame of a clip; every other
  key (masks, labels) is passed through unchanged. `resize` restores the input size so masks stay
  aligned. The input record is not modified.
  """

  def __init__(self, config: Mapping[str, Mapping[str, Any]]):
    self._ops: list[tuple[str, float, tuple[float, float]]] = []
    unknown = set(config) - set(_OP_SPECS)
    if unknown:
      raise ValueError(f"unknown perturbations {sorted(unknown)}; known: {sorted(_OP_SPECS)}")
    for name in AUGMENT_ORDER:
      if name not in config:
        continue
      options = dict(config[name])
      spec = _OP_SPECS[name]
      extra = set(options) - {"p", spec.param}
      if extra or spec.param not in options or "p" not in options:
        raise ValueError(f"{name}: expected keys 'p' and '{spec.param}', got {sorted(options)}")
      probability = float(options["p"])
      if not 0 <= probability <= 1:
        raise ValueError(f"{name}: p must be in [0, 1], got {probability}")
      level_range = _as_range(options[spec.param], name)
      if spec.odd and not any(int(k) % 2 for k in range(int(level_range[0]), int(level_range[1]) + 1)):
        raise ValueError(f"{name}: no odd kernel size in {level_range}")
      self._ops.append((name, probability, level_range))

  def _draw_level(self, name: str, level_range: tuple[float, float],
                  rng: np.random.Generator) -> float:
    spec = _OP_SPECS[name]
    low, high = level_range
    if not spec.integer:
      return float(rng.uniform(low, high)) if high > low else low
    choices = np.arange(int(np.ceil(low)), int(np.floor(high)) + 1)
    if spec.odd:
      choices = choices[choices % 2 == 1]
    return int(rng.choice(choices))

  def sample(self, rng: np.random.Generator) -> list[tuple[str, float]]:
    """Draws the (op, level) list that one record gets, in application order."""
    chosen = []
    for name, probability, level_range in self._ops:
      if rng.uniform() < probability:
        chosen.append((name, self._draw_level(name, level_range, rng)))
    return chosen

  def random_map(self, element: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    keys = [key for key in ("image", "frames") if key in element]
    if len(keys) != 1:
      raise ValueError(f"record {element.get('id', '?')!r}: expected exactly one of 'image' or "
                       f"'frames', got keys {sorted(element)}")
    key = keys[0]
    images = np.asarray(element[key])
    expected_ndim = 3 if key == "image" else 4
    if images.ndim != expected_ndim:
      raise ValueError(f"record {element.get('id', '?')!r}: '{key}' has shape {images.shape}")
    for name, level in self.sample(rng):
      images = PERTURBATIONS[name](images, level, rng)
    return {**element, key: images}


def level_name(op: str) -> str:
  """What an op's level is: 'quality', 'kernel_size', 'sigma', 'scale' or 'crf'."""
  return _OP_SPECS[op].param


def at_level(op: str, level: float) -> dict[str, dict[str, Any]]:
  """The `ForensicAugment` config that applies `op` at `level` to every record (a robustness sweep's point)."""
  if op not in _OP_SPECS:
    raise ValueError(f"unknown perturbation {op!r}; known: {sorted(_OP_SPECS)}")
  return {op: {"p": 1.0, _OP_SPECS[op].param: level}}


def eval_transforms(config: Mapping[str, Any] | None) -> list:
  """[ForensicAugment(config)] for a non-empty perturbation config (a ConfigDict or a dict), else []: what
  `Task.input_pipeline` appends to every evaluation split's transforms (`config.data.perturbation`)."""
  if not config:
    return []
  config = config.to_dict() if hasattr(config, "to_dict") else config
  return [ForensicAugment({k: dict(v) for k, v in config.items()})]
