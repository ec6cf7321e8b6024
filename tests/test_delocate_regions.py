"""Delocate's ROI masking: the ROI tokens of an aligned face crop cover the facial parts that the demo's part
forgeries replace (eyes, mouth), landmark ROIs, and the static-count token masks of training and recovery."""
import jax
import numpy as np
import pytest

from common.data import transforms
from common.data.demo import faces as demo_faces
from common.data.faces import detection as face_detection
from delocate_jax import face_regions

SIZE, PATCH = 64, 8


def _part_crop_mask(part: str, seed: int = 0) -> np.ndarray:
  """uint8 [SIZE, SIZE]: pixels a demo part swap changes, in the 1.3x face crop resized as the reader's."""
  rng = np.random.default_rng(seed)
  frame = rng.integers(0, 256, (144, 176, 3), dtype=np.uint8)
  source = rng.integers(0, 256, (144, 176, 3), dtype=np.uint8)
  box = np.array([86.0, 68.0, 60.0])  # (cx, cy, side)
  fake = demo_faces.part_swap_frame(frame, box, source, box, part)
  changed = np.any(fake != frame, axis=-1).astype(np.uint8)
  cx, cy, side = box
  x0, y0, x1, y1 = face_detection.enlarge_box((cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), 1.3,
                                              *frame.shape[:2])
  return transforms.resize_mask(changed[y0:y1, x0:x1], SIZE, SIZE)


def _tokens_of(pixel_mask: np.ndarray) -> np.ndarray:
  return pixel_mask.reshape(SIZE // PATCH, PATCH, SIZE // PATCH, PATCH).any((1, 3))


@pytest.mark.parametrize("part, rois", [("eyes", ("left_eye", "right_eye")), ("mouth", ("mouth",))])
def test_geometry_rois_cover_the_replaced_facial_part(part, rois):
  changed = _part_crop_mask(part)
  assert changed.mean() > 0.01
  tokens = face_regions.roi_token_masks(face_regions.geometry_rois(1.3), SIZE, SIZE, PATCH)
  named = dict(zip(face_regions.ROI_NAMES, tokens))
  hit = np.any([named[n] for n in rois], axis=0)
  part_tokens = _tokens_of(changed > 0)
  # Every token the forgery touches is in the part's ROIs; the part's ROIs are not much larger than the part.
  assert np.all(hit[part_tokens]), (part, hit.astype(int), part_tokens.astype(int))
  assert hit.sum() <= 2.5 * part_tokens.sum()
  other = [n for n in ("left_eye", "right_eye", "mouth") if n not in rois]
  assert not np.any(np.any([named[n] for n in other], axis=0) & part_tokens)


def test_geometry_rois_lie_where_faces_have_them():
  rois = dict(zip(face_regions.ROI_NAMES, face_regions.geometry_rois(1.3)))
  assert rois["left_eye"][0] < 0.5 < rois["right_eye"][0]
  assert rois["left_eye"][1] < rois["nose"][1] < rois["mouth"][1]
  assert rois["left_cheek"][0] < rois["nose"][0] < rois["right_cheek"][0]
  # A looser crop shrinks the face towards the centre.
  wide = dict(zip(face_regions.ROI_NAMES, face_regions.geometry_rois(2.0)))
  assert abs(wide["mouth"][1] - 0.5) < abs(rois["mouth"][1] - 0.5)


def _ibug_points() -> np.ndarray:
  """A synthetic iBUG-68 face in normalised crop coordinates (only the part groups matter)."""
  pts = np.zeros((68, 2))
  pts[0:17] = np.stack([np.linspace(0.15, 0.85, 17), 0.5 + 0.3 * np.sin(np.linspace(0, np.pi, 17))], 1)
  ring = lambda cx, cy, ax, ay, k: np.stack([cx + ax * np.cos(t := np.linspace(0, 2 * np.pi, k, endpoint=False)),
                                             cy + ay * np.sin(t)], 1)
  pts[17:27] = np.stack([np.linspace(0.25, 0.75, 10), np.full(10, 0.3)], 1)
  pts[27:36] = np.stack([np.full(9, 0.5), np.linspace(0.38, 0.6, 9)], 1)
  pts[36:42] = ring(0.35, 0.4, 0.06, 0.025, 6)
  pts[42:48] = ring(0.65, 0.4, 0.06, 0.025, 6)
  pts[48:68] = ring(0.5, 0.72, 0.12, 0.05, 20)
  return pts


def test_landmark_rois_follow_the_landmarks():
  pts = _ibug_points()
  rois = dict(zip(face_regions.ROI_NAMES, face_regions.landmark_rois(pts)))
  np.testing.assert_allclose(rois["left_eye"][:2], [0.35, 0.4], atol=1e-6)
  np.testing.assert_allclose(rois["mouth"][:2], [0.5, 0.72], atol=1e-6)
  assert rois["mouth"][2] == pytest.approx(0.12 * 1.5)
  five = np.array([[0.35, 0.4], [0.65, 0.4], [0.5, 0.55], [0.4, 0.72], [0.6, 0.72]])
  rois5 = dict(zip(face_regions.ROI_NAMES, face_regions.landmark_rois(five)))
  np.testing.assert_allclose(rois5["mouth"][:2], [0.5, 0.72])
  assert rois5["left_cheek"][0] < 0.5 < rois5["right_cheek"][0]
  with pytest.raises(ValueError, match=r"\[68, 2\]"):
    face_regions.landmark_rois(np.zeros((10, 2)))


def test_roi_tokens_transform_prefers_landmarks():
  image = np.zeros((SIZE, SIZE, 3), np.uint8)
  op = face_regions.RoiTokens(PATCH)
  plain = op.map({"image": image})["roi"]
  assert plain.shape == (6, SIZE // PATCH, SIZE // PATCH) and plain.dtype == np.uint8
  shifted = _ibug_points() + [0.0, 0.15]  # a face lower in the crop than the template's
  moved = op.map({"image": image, "landmarks": shifted})["roi"]
  mouth = face_regions.ROI_NAMES.index("mouth")
  rows = lambda m: np.nonzero(m.any(1))[0].mean()
  assert rows(moved[mouth]) > rows(plain[mouth])


def _batch_roi(b: int = 8) -> np.ndarray:
  tokens = face_regions.roi_token_masks(face_regions.geometry_rois(1.3), SIZE, SIZE, PATCH)
  return np.broadcast_to(tokens.reshape(1, len(tokens), -1), (b, len(tokens), tokens[0].size)).astype(np.uint8)


def test_training_masks_cover_picked_rois_then_random_patches():
  roi = _batch_roi(64)
  n, num_masked = roi.shape[-1], 48
  mask = np.asarray(face_regions.sample_token_mask(jax.random.key(0), roi, num_masked, roi_prob=0.5))
  assert mask.shape == (64, n) and np.all(mask.sum(1) == num_masked)
  # Each sample masks every token of at least one whole ROI, and ROIs are picked independently.
  whole = np.all(~roi.astype(bool) | mask[:, None], axis=2)  # [B, R]: ROI fully masked
  assert np.all(whole.any(1))
  assert 0.2 < whole.mean() < 0.95
  # With few masked tokens the ROI tokens come first: masked tokens lie in ROIs far above chance.
  few = np.asarray(face_regions.sample_token_mask(jax.random.key(1), roi, 6, roi_prob=1.0))
  in_any = roi.astype(bool).any(1)
  assert np.all(in_any[few])


def test_recovery_passes_partition_the_tokens_and_mask_their_targets():
  roi = _batch_roi(4)
  n, num_masked = roi.shape[-1], 48
  masks, targets = (np.asarray(a) for a in face_regions.recovery_passes(jax.random.key(0), roi, num_masked, 2))
  assert masks.shape == targets.shape == (6 + 2, 4, n)
  np.testing.assert_array_equal(targets.sum(0), 1)  # every token is the target of exactly one pass
  assert np.all(masks.sum(2) == num_masked)
  assert np.all(masks[targets])  # targets are masked in their pass
  preds = np.random.default_rng(0).random((8, 4, n, 5)).astype(np.float32)
  out = np.asarray(face_regions.assemble_recovery(preds, masks, targets))
  expected = np.einsum("pbn,pbnd->bnd", targets.astype(np.float32), preds)
  np.testing.assert_allclose(out, expected, atol=1e-4)
