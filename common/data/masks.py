"""Random region masks: object-like blobs (still and moving) and free-form brush-stroke holes.

All masks are uint8 {0, 1} arrays, [H, W] for one image and [T, H, W] for a clip; 1 marks the region
(forged pixels, or the hole to inpaint). Every generator takes a `np.random.Generator`, rasterises with
OpenCV at fixed sub-pixel precision and is therefore deterministic given the generator's state.

* `blob_mask`: one smooth star-shaped region ("an object"): a polygon whose radius is a sum of a few
  low-order harmonics, stretched and rotated, with a requested area fraction.
* `moving_blob_masks`: the same shapes moving along smooth bounded trajectories while their outline,
  scale and orientation drift slowly, as the object masks of a DAVIS-style video.
* `free_form_mask`: DeepFill-v2-style brush strokes (thick polylines with round joints) added one by one
  until the hole ratio reaches a target, as in the irregular-mask sets used to train inpainters.
  `HOLE_RATIO_BINS` are the hole-ratio bins of the irregular-mask protocol (0-10% ... 50-60%).
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

HOLE_RATIO_BINS: tuple[tuple[float, float], ...] = (
    (0.0, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.5), (0.5, 0.6))

_SHIFT = 4  # fillPoly / line sub-pixel bits: coordinates are rounded to 1/16 pixel.
_NUM_VERTICES = 96
_HARMONICS = np.arange(2, 6)  # radial harmonics 2..5 give lobed, organic outlines.


def hole_ratio(mask: np.ndarray) -> float:
  """Fraction of nonzero pixels of a mask of any shape."""
  return float(np.count_nonzero(mask)) / mask.size


def _fill_polygon(height: int, width: int, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
  """Rasterises one polygon (vertex arrays in pixel units) to a uint8 {0,1} [H, W] mask."""
  mask = np.zeros((height, width), np.uint8)
  points = np.round(np.stack([xs, ys], -1) * (1 << _SHIFT)).astype(np.int32)
  cv2.fillPoly(mask, [points], 1, lineType=cv2.LINE_8, shift=_SHIFT)
  return mask


@dataclasses.dataclass(frozen=True)
class _BlobShape:
  """Outline parameters of a star-shaped blob of unit mean radius."""
  amplitudes: np.ndarray  # [K] relative amplitude of each harmonic
  phases: np.ndarray      # [K] radians
  aspect: float           # x/y stretch; area-preserving
  angle: float            # radians

  @classmethod
  def sample(cls, rng: np.random.Generator) -> _BlobShape:
    amplitudes = rng.uniform(0.0, 0.22, len(_HARMONICS)) / np.sqrt(_HARMONICS - 1)
    return cls(amplitudes=amplitudes, phases=rng.uniform(0, 2 * np.pi, len(_HARMONICS)),
               aspect=float(np.exp(rng.uniform(-0.5, 0.5))), angle=float(rng.uniform(0, np.pi)))

  def vertices(self, center_x: float, center_y: float, area: float) -> tuple[np.ndarray, np.ndarray]:
    """Polygon vertices (x, y) of the blob with the given area in pixels."""
    theta = np.linspace(0, 2 * np.pi, _NUM_VERTICES, endpoint=False)
    radius = 1 + np.sum(self.amplitudes[:, None] * np.cos(
        _HARMONICS[:, None] * theta[None] + self.phases[:, None]), axis=0)
    # Area of r(theta) = r0 (1 + sum a_k cos(k theta + phi_k)) is pi r0^2 (1 + sum a_k^2 / 2).
    r0 = np.sqrt(area / (np.pi * (1 + 0.5 * np.sum(self.amplitudes ** 2))))
    x = r0 * radius * np.cos(theta) * np.sqrt(self.aspect)
    y = r0 * radius * np.sin(theta) / np.sqrt(self.aspect)
    cos, sin = np.cos(self.angle), np.sin(self.angle)
    return center_x + cos * x - sin * y, center_y + sin * x + cos * y


def blob_mask(rng: np.random.Generator, height: int, width: int, area_fraction: float,
              center: tuple[float, float] | None = None) -> np.ndarray:
  """One object-like blob covering about `area_fraction` of the frame.

  Args:
    rng: random generator (shape, and the centre unless given).
    height, width: mask size.
    area_fraction: target area / (H*W), in (0, 0.6]; the rasterised area is within a few percent.
    center: (x, y) centre in pixels; by default drawn so that the blob stays mostly inside the frame.
  Returns:
    uint8 {0, 1} [H, W].
  """
  if not 0 < area_fraction <= 0.6:
    raise ValueError(f"area_fraction must be in (0, 0.6], got {area_fraction}")
  shape = _BlobShape.sample(rng)
  area = area_fraction * height * width
  if center is None:
    half = 0.75 * np.sqrt(area / np.pi)
    center = (rng.uniform(min(half, width / 2), max(width - half, width / 2)),
              rng.uniform(min(half, height / 2), max(height - half, height / 2)))
  return _fill_polygon(height, width, *shape.vertices(center[0], center[1], area))


def _reflect(value: np.ndarray, low: float, high: float) -> np.ndarray:
  """Folds values into [low, high] as a ball bouncing between two walls."""
  span = high - low
  if span <= 0:
    return np.full_like(value, (low + high) / 2)
  phase = np.mod(value - low, 2 * span)
  return low + np.where(phase > span, 2 * span - phase, phase)


def moving_blob_masks(rng: np.random.Generator, num_frames: int, height: int, width: int,
                      num_objects: int = 1,
                      area_range: tuple[float, float] = (0.03, 0.12)) -> np.ndarray:
  """Masks of blobs that move and deform smoothly over a clip (DAVIS-like object masks).

  Each object follows a bounded trajectory (drift plus a slow oscillation, reflected at the frame
  borders); its outline harmonics rotate, its area breathes by +-15% and it turns slowly, so
  consecutive masks overlap strongly.

  Args:
    rng: random generator.
    num_frames, height, width: output size.
    num_objects: number of blobs; their union is returned.
    area_range: per-object mean area fraction, drawn uniformly from this range.
  Returns:
    uint8 {0, 1} [T, H, W].
  """
  t = np.arange(num_frames, dtype=np.float64)
  masks = np.zeros((num_frames, height, width), np.uint8)
  for _ in range(num_objects):
    shape = _BlobShape.sample(rng)
    area = rng.uniform(*area_range) * height * width
    half = 0.8 * np.sqrt(area / np.pi)
    speed = rng.uniform(0.3, 1.5) * min(height, width) / 100  # pixels per frame
    heading = rng.uniform(0, 2 * np.pi)
    wobble = rng.uniform(0.02, 0.08, 2) * min(height, width)
    wobble_freq, wobble_phase = rng.uniform(0.1, 0.3, 2), rng.uniform(0, 2 * np.pi, 2)
    start = rng.uniform(0, 1, 2)
    xs = _reflect(half + start[0] * (width - 2 * half) + speed * np.cos(heading) * t
                  + wobble[0] * np.sin(wobble_freq[0] * t + wobble_phase[0]), half, width - half)
    ys = _reflect(half + start[1] * (height - 2 * half) + speed * np.sin(heading) * t
                  + wobble[1] * np.sin(wobble_freq[1] * t + wobble_phase[1]), half, height - half)
    phase_speed = rng.uniform(-0.08, 0.08, len(_HARMONICS))
    amp_freq, amp_phase = rng.uniform(0.05, 0.2, len(_HARMONICS)), rng.uniform(0, 2 * np.pi, len(_HARMONICS))
    spin = rng.uniform(-0.03, 0.03)
    breath_freq, breath_phase = rng.uniform(0.05, 0.2), rng.uniform(0, 2 * np.pi)
    for i in range(num_frames):
      frame_shape = dataclasses.replace(
          shape, phases=shape.phases + phase_speed * i,
          amplitudes=shape.amplitudes * (1 + 0.3 * np.sin(amp_freq * i + amp_phase)),
          angle=shape.angle + spin * i)
      frame_area = area * (1 + 0.15 * np.sin(breath_freq * i + breath_phase))
      masks[i] |= _fill_polygon(height, width, *frame_shape.vertices(xs[i], ys[i], frame_area))
  return masks


def _draw_stroke(mask: np.ndarray, rng: np.random.Generator, max_width: float) -> None:
  """Draws one brush stroke (polyline with round joints) in place."""
  height, width = mask.shape
  size = min(height, width)
  num_vertices = int(rng.integers(3, 10))
  stroke_width = max(2, int(round(rng.uniform(0.1, 1.0) * max_width)))
  x, y = rng.uniform(0, width), rng.uniform(0, height)
  angle = rng.uniform(0, 2 * np.pi)
  scale = 1 << _SHIFT
  for _ in range(num_vertices):
    angle += rng.uniform(-np.pi / 2, np.pi / 2)
    length = rng.uniform(0.05, 0.2) * size
    nx = float(np.clip(x + length * np.cos(angle), 0, width - 1))
    ny = float(np.clip(y + length * np.sin(angle), 0, height - 1))
    p0 = (int(round(x * scale)), int(round(y * scale)))
    p1 = (int(round(nx * scale)), int(round(ny * scale)))
    cv2.line(mask, p0, p1, 1, stroke_width, lineType=cv2.LINE_8, shift=_SHIFT)
    cv2.circle(mask, p1, (stroke_width // 2) * scale, 1, -1, lineType=cv2.LINE_8, shift=_SHIFT)
    x, y = nx, ny


def free_form_mask(rng: np.random.Generator, height: int, width: int,
                   hole_ratio_range: tuple[float, float] = (0.1, 0.2),
                   max_attempts: int = 200) -> np.ndarray:
  """Free-form brush-stroke hole mask whose hole ratio lies in `hole_ratio_range`.

  A target ratio is drawn uniformly in the range (at least 1% for a range starting at 0), strokes are
  added until the ratio reaches it, and a stroke that would overshoot the upper bound is replaced by a
  thinner one.

  Args:
    rng: random generator.
    height, width: mask size.
    hole_ratio_range: [low, high) bounds of the hole ratio, e.g. one of `HOLE_RATIO_BINS`.
    max_attempts: strokes tried before giving up.
  Returns:
    uint8 {0, 1} [H, W], 1 = hole.
  Raises:
    RuntimeError: if no stroke sequence lands in the range within `max_attempts` strokes.
  """
  low, high = hole_ratio_range
  if not 0 <= low < high <= 1 or high - max(low, 0.01) < 0.01:
    raise ValueError(f"hole_ratio_range must be a range of at least 1% within (0.01, 1], got {hole_ratio_range}")
  target = rng.uniform(max(low, 0.01), high - 0.005)
  max_width = 0.12 * min(height, width)
  mask = np.zeros((height, width), np.uint8)
  width_scale = 1.0
  for _ in range(max_attempts):
    candidate = mask.copy()
    _draw_stroke(candidate, rng, max_width * width_scale)
    ratio = hole_ratio(candidate)
    if ratio >= high:
      width_scale *= 0.7
      continue
    mask = candidate
    if ratio >= target and ratio > low:
      return mask
  raise RuntimeError(f"free_form_mask: no mask with hole ratio in {hole_ratio_range} "
                     f"after {max_attempts} strokes")
