"""Facial regions of interest (ROIs) of face crops, and MAE token masks built from them (Delocate's recovering).

ROIs are ellipses (cx, cy, ax, ay) in coordinates normalised to the crop ([0, 1] along x and y), in the order
`ROI_NAMES`: image-left eye, image-right eye, nose, mouth, image-left cheek, image-right cheek. Two sources:

* landmarks, when a record has them (`landmarks` float [68, 2] iBUG-68 or [5, 2] five-point, normalised crop
  coordinates): each part's ellipse is fitted to its points (`landmark_rois`);
* else the geometry of an aligned face crop (`geometry_rois`): the crop is a square of `crop_scale` times a
  face-detector box centred on it (the FF++ convention, 1.3), and the parts sit at fixed places of the box:
  `FACE_BOX_TEMPLATE`, placed where the demo corpus's facial-part forgeries sit relative to its LBP-cascade
  boxes (eyes at (+-0.2, -0.1) box sides from the centre, the mouth at (0, 0.3)), slightly enlarged.

A token (patch) belongs to an ROI when more than `min_coverage` of its pixels lie inside the ellipse (0: any
overlap, "mask every patch an ROI overlaps"). Token masks for training (`sample_token_mask`): each ROI is picked
with probability `roi_prob` (at least one per sample), all tokens of the picked ROIs are masked first, then
random other tokens up to exactly `num_masked` (a static count, so shapes stay static under `jit`; if the
picked ROIs hold more tokens than that, a random subset of them). For a full recovery of a face
(`recovery_passes`): one pass per ROI (its tokens the pass's targets) and `residual_groups` passes whose
targets are a random partition of the tokens outside every ROI, each pass topped up to `num_masked` masked
tokens at random, so every region is in-painted from its context as in training.
"""
from __future__ import annotations

import grain
import jax
import jax.numpy as jnp
import numpy as np

ROI_NAMES = ("left_eye", "right_eye", "nose", "mouth", "left_cheek", "right_cheek")

# (cx, cy, ax, ay) in face-box sides, relative to the box centre (x right, y down).
FACE_BOX_TEMPLATE = np.array([
    (-0.20, -0.10, 0.16, 0.11),   # left eye (image left)
    (0.20, -0.10, 0.16, 0.11),    # right eye
    (0.00, 0.08, 0.10, 0.15),     # nose
    (0.00, 0.30, 0.24, 0.16),     # mouth
    (-0.25, 0.15, 0.10, 0.13),    # left cheek
    (0.25, 0.15, 0.10, 0.13),     # right cheek
], np.float64)

# iBUG-68 indices (image-left first): eyes 36-41 / 42-47, nose 27-35, mouth 48-67, jaw 0-16.
_IBUG = {"left_eye": range(36, 42), "right_eye": range(42, 48), "nose": range(27, 36), "mouth": range(48, 68)}


def geometry_rois(crop_scale: float = 1.3) -> np.ndarray:
  """float [R, 4] ROI ellipses of a square crop `crop_scale` times a face box centred on the box."""
  if crop_scale <= 0:
    raise ValueError(f"crop_scale must be > 0, got {crop_scale}")
  t = FACE_BOX_TEMPLATE / crop_scale
  return np.concatenate([0.5 + t[:, :2], t[:, 2:]], axis=1)


def _ellipse_of(points: np.ndarray, margin: float, floor: float) -> np.ndarray:
  centre = points.mean(0)
  half = np.maximum((points.max(0) - points.min(0)) / 2 * margin, floor)
  return np.concatenate([centre, half])


def landmark_rois(landmarks: np.ndarray) -> np.ndarray:
  """float [R, 4] ROI ellipses from landmarks [68, 2] (iBUG) or [5, 2] (eyes, nose tip, mouth corners; image-left
  first), in normalised crop coordinates. Each part's box grows by 1.5 (eyes 1.8); cheeks sit below the eyes,
  level with the nose-mouth midpoint."""
  pts = np.asarray(landmarks, np.float64)
  if pts.shape == (68, 2):
    eye_l, eye_r = (_ellipse_of(pts[list(_IBUG[k])], 1.8, 0.02) for k in ("left_eye", "right_eye"))
    nose, mouth = (_ellipse_of(pts[list(_IBUG[k])], 1.5, 0.02) for k in ("nose", "mouth"))
  elif pts.shape == (5, 2):
    d = np.linalg.norm(pts[1] - pts[0])
    eye_l = np.array([*pts[0], 0.25 * d, 0.17 * d])
    eye_r = np.array([*pts[1], 0.25 * d, 0.17 * d])
    nose = np.array([pts[2, 0], (pts[2, 1] + (pts[0, 1] + pts[1, 1]) / 2) / 2, 0.2 * d, 0.3 * d])
    corners = pts[3:5]
    mouth = np.array([*corners.mean(0), 0.75 * np.linalg.norm(corners[1] - corners[0]) + 0.05 * d, 0.3 * d])
  else:
    raise ValueError(f"landmarks must be [68, 2] (iBUG) or [5, 2], got shape {pts.shape}")
  d = abs(eye_r[0] - eye_l[0])
  cheek_y = (nose[1] + mouth[1]) / 2
  cheeks = [np.array([x, cheek_y, 0.22 * d, 0.28 * d]) for x in (eye_l[0], eye_r[0])]
  return np.stack([eye_l, eye_r, nose, mouth, *cheeks])


def roi_pixel_masks(rois: np.ndarray, height: int, width: int) -> np.ndarray:
  """bool [R, height, width]: pixel centres inside each ellipse."""
  ys = (np.arange(height) + 0.5) / height
  xs = (np.arange(width) + 0.5) / width
  cx, cy, ax, ay = (np.asarray(rois, np.float64)[:, k, None, None] for k in range(4))
  return ((xs[None, None] - cx) / ax) ** 2 + ((ys[None, :, None] - cy) / ay) ** 2 <= 1.0


def roi_token_masks(rois: np.ndarray, height: int, width: int, patch: int, min_coverage: float = 0.0) -> np.ndarray:
  """bool [R, height / patch, width / patch]: tokens with more than `min_coverage` of their pixels in the ROI."""
  if height % patch or width % patch:
    raise ValueError(f"crop {height}x{width} is not divisible into {patch}x{patch} patches")
  pixels = roi_pixel_masks(rois, height, width)
  cover = pixels.reshape(len(pixels), height // patch, patch, width // patch, patch).mean((2, 4))
  return cover > min_coverage


class RoiTokens(grain.transforms.Map):
  """Adds `roi` uint8 [R, H/p, W/p] to a record with an `image` [H, W, 3] (or `frames` [T, H, W, 3]): from its
  `landmarks` if present (normalised crop coordinates), else from the crop geometry. Apply after resizing,
  before any flip (the task flips `roi` with the image)."""

  def __init__(self, patch: int, crop_scale: float = 1.3, min_coverage: float = 0.0):
    self.patch, self.min_coverage = patch, min_coverage
    self.template = geometry_rois(crop_scale)
    self._cache: dict[tuple[int, int], np.ndarray] = {}

  def map(self, record: dict) -> dict:
    h, w = (record["image"] if "image" in record else record["frames"]).shape[-3:-1]
    if "landmarks" in record:
      roi = roi_token_masks(landmark_rois(record["landmarks"]), h, w, self.patch, self.min_coverage)
    else:
      if (h, w) not in self._cache:
        self._cache[(h, w)] = roi_token_masks(self.template, h, w, self.patch, self.min_coverage)
      roi = self._cache[(h, w)]
    return {**record, "roi": roi.astype(np.uint8)}


def _first_ranked(score: jax.Array, count: int) -> jax.Array:
  """bool [..., N]: the `count` highest scores of each row."""
  ranks = jnp.argsort(jnp.argsort(-score, axis=-1), axis=-1)
  return ranks < count


def sample_token_mask(rng: jax.Array, roi: jax.Array, num_masked: int, roi_prob: float = 0.5) -> jax.Array:
  """Training mask, bool [B, N] with exactly `num_masked` True per row (module docstring).

  rng: key; roi: [B, R, N] (nonzero = token in ROI); roi_prob: chance of each ROI being picked.
  """
  b, r, n = roi.shape
  if not 0 < num_masked <= n:
    raise ValueError(f"num_masked must be in (0, {n}], got {num_masked}")
  pick_key, force_key, noise_key = jax.random.split(rng, 3)
  picked = jax.random.bernoulli(pick_key, roi_prob, (b, r))
  forced = jax.nn.one_hot(jax.random.randint(force_key, (b,), 0, r), r, dtype=bool)
  picked = jnp.where(picked.any(1, keepdims=True), picked, forced)
  in_roi = jnp.any(picked[..., None] & (roi > 0), axis=1)
  return _first_ranked(in_roi * 2.0 + jax.random.uniform(noise_key, (b, n)), num_masked)


def recovery_passes(rng: jax.Array, roi: jax.Array, num_masked: int,
                    residual_groups: int = 2) -> tuple[jax.Array, jax.Array]:
  """Masks and targets of the passes that recover a whole face: bool [P, B, N] each, P = R + residual_groups.

  Targets partition the tokens (an ROI's tokens go to its first pass; tokens in no ROI to a random residual
  group); each pass masks its targets first, then random tokens up to `num_masked` (a target left visible
  when a group outnumbers `num_masked` is recovered from the other passes, see `assemble_recovery`).
  """
  b, r, n = roi.shape
  in_roi = roi > 0
  earlier = jnp.cumsum(in_roi, axis=1) - in_roi  # ROI memberships before this one
  roi_targets = in_roi & (earlier == 0)
  group_key, noise_key = jax.random.split(rng)
  group = jax.random.randint(group_key, (b, n), 0, residual_groups)
  outside = ~in_roi.any(1)
  residual = (group[:, None] == jnp.arange(residual_groups)[None, :, None]) & outside[:, None]
  targets = jnp.moveaxis(jnp.concatenate([roi_targets, residual], axis=1), 1, 0)  # [P, B, N]
  noise = jax.random.uniform(noise_key, targets.shape)
  masks = _first_ranked(targets * 2.0 + noise, num_masked)
  return masks, targets


def assemble_recovery(preds: jax.Array, masks: jax.Array, targets: jax.Array, eps: float = 1e-6) -> jax.Array:
  """Per-token recovery from the passes' predictions preds [P, B, N, D]: each token from the pass that targets
  it where it was masked there, else the mean over the passes that masked it. Returns [B, N, D]."""
  weights = (masks & targets) + eps * masks
  weights = weights / jnp.maximum(weights.sum(0, keepdims=True), 1e-12)
  return jnp.einsum("pbn,pbnd->bnd", weights.astype(preds.dtype), preds)
