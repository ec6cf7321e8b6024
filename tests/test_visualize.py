"""Mask/overlay writing shared by the predict tools, and the export-or-workdir choice."""
import cv2
import numpy as np
import pytest

from common import visualize
from common.train import serving


def test_overlay_blends_only_inside_the_box_and_outlines_it():
  image = np.full((20, 30, 3), 100, np.uint8)
  probs = np.ones((20, 30), np.float32)
  plain = visualize.heatmap_overlay(image, probs)
  assert (plain != image).any(axis=-1).all()  # every pixel blended
  boxed = visualize.heatmap_overlay(image, probs, box=(5, 4, 15, 12))
  assert (boxed[:4] == image[:4]).all() and (boxed[:, 16:] == image[:, 16:]).all()
  assert (boxed[4, 5:15] == (0, 255, 0)).all()  # the outline's top edge
  assert (boxed[6:11, 6:14] == plain[6:11, 6:14]).all()


def test_mask_is_thresholded_probability_and_sizes_must_match(tmp_path):
  image = np.zeros((8, 10, 3), np.uint8)
  probs = np.tile(np.linspace(0, 1, 10, dtype=np.float32), (8, 1))
  visualize.write_mask_and_overlay(str(tmp_path / "m.png"), str(tmp_path / "o.png"), image, probs, threshold=0.5)
  mask = cv2.imread(str(tmp_path / "m.png"), cv2.IMREAD_UNCHANGED)
  np.testing.assert_array_equal(mask, np.where(probs > 0.5, 255, 0))
  assert cv2.imread(str(tmp_path / "o.png")).shape == (8, 10, 3)
  with pytest.raises(ValueError, match="does not match the image"):
    visualize.write_mask_and_overlay(str(tmp_path / "m.png"), str(tmp_path / "o.png"), image, probs[:, :5])


@pytest.mark.parametrize("export_dir, workdir", [("", ""), ("a", "b")])
def test_exactly_one_model_source(export_dir, workdir):
  with pytest.raises(ValueError, match="exactly one of --export and --workdir"):
    serving.load(export_dir, workdir)
