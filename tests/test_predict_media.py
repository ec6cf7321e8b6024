"""The shared predictor's inputs and tiles, without a model: what a file, folder or glob names (frame folders for
clip models), lazy frame reading with errors naming the file, tile origins covering any size, and stitching."""
import os

import cv2
import numpy as np
import pytest

from common.data.readers.media import DataError
from common.predict import adapters, media


def _write(path, value=0, size=(6, 8)):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  cv2.imwrite(str(path), np.full((*size, 3), value, np.uint8))


def test_inputs_from_a_file_a_folder_a_glob_and_frame_folders(tmp_path):
  for name in ("b10.png", "b2.png", "a.jpg"):
    _write(tmp_path / "images" / name)
  (tmp_path / "images" / "notes.txt").write_text("not media")
  images = str(tmp_path / "images")
  assert [os.path.basename(p) for p in media.list_inputs(images)] == ["a.jpg", "b2.png", "b10.png"]
  assert media.list_inputs(os.path.join(images, "a.jpg")) == [os.path.join(images, "a.jpg")]
  assert [os.path.basename(p) for p in media.list_inputs(os.path.join(images, "b*.png"))] == ["b2.png", "b10.png"]
  # Clip models: a folder of frames is one input; a folder of such folders is one input per folder.
  assert media.list_inputs(images, frame_folders=True) == [images]
  for clip in ("clip10", "clip2"):
    _write(tmp_path / "clips" / clip / "0.png")
  assert [os.path.basename(p) for p in media.list_inputs(str(tmp_path / "clips"), frame_folders=True)] == \
      ["clip2", "clip10"]
  with pytest.raises(FileNotFoundError, match="no file matches it as a glob"):
    media.list_inputs(str(tmp_path / "nothing*.png"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="holds no images or videos"):
    media.list_inputs(str(tmp_path / "empty"))


def test_frames_are_read_lazily_and_a_bad_one_names_its_file(tmp_path):
  _write(tmp_path / "f" / "0.png", 10)
  (tmp_path / "f" / "1.png").write_bytes(b"not a png")
  opened = media.open_media(str(tmp_path / "f"))
  assert opened.count == 2 and opened.is_video and opened.fps == media.FOLDER_FPS
  assert next(opened.frames)[0, 0, 0] == 10
  with pytest.raises(DataError, match=r"1\.png"):
    next(opened.frames)
  _write(tmp_path / "g" / "0.png", size=(6, 8))
  _write(tmp_path / "g" / "1.png", size=(8, 6))
  with pytest.raises(DataError, match="the folder's first frame is"):
    list(media.open_media(str(tmp_path / "g")).frames)
  (tmp_path / "bad.mp4").write_bytes(b"not a video")
  with pytest.raises(DataError, match="bad.mp4: OpenCV cannot read"):
    media.open_media(str(tmp_path / "bad.mp4"))
  with pytest.raises(FileNotFoundError, match="missing.png"):
    media.open_media(str(tmp_path / "missing.png"))


@pytest.mark.parametrize("length, tile", [(48, 48), (30, 48), (96, 48), (100, 48), (241, 120), (1080, 120)])
def test_tiles_cover_every_pixel_with_at_least_half_a_tile_of_overlap(length, tile):
  origins = adapters.tile_origins(length, tile)
  assert origins[0] == 0 and origins == sorted(set(origins))
  covered = np.zeros(max(length, tile), bool)
  for o in origins:
    covered[o:o + tile] = True
  assert covered[:length].all() and origins[-1] + tile == max(length, tile)
  assert all(b - a <= tile / 2 for a, b in zip(origins, origins[1:]))


def test_cut_and_stitch_give_back_the_map_at_the_input_size():
  x = (np.arange(2 * 70 * 100 * 3) % 251).astype(np.uint8).reshape(2, 70, 100, 3)  # a clip: tiles over H, W
  tiles, origins, padded = adapters.cut_tiles(x, (48, 64))
  assert tiles.shape == (len(origins), 2, 48, 64, 3) and padded == (70, 100)
  for tile, (y, x0) in zip(tiles, origins):
    np.testing.assert_array_equal(tile, x[:, y:y + 48, x0:x0 + 64])
  value = x[1, ..., 0].astype(np.float32)
  stitched = adapters.stitch(tiles[:, 1, ..., 0].astype(np.float32), origins, padded, (70, 100))
  np.testing.assert_array_equal(stitched, value)  # overlapping tiles of the same values average to them
  small = np.ones((20, 30, 3), np.uint8)
  tiles, origins, padded = adapters.cut_tiles(small, (48, 64))  # smaller than a tile: reflect-padded
  assert tiles.shape == (1, 48, 64, 3) and origins == [(0, 0)] and padded == (48, 64)
