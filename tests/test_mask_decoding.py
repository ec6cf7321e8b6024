"""One decoding rule per input kind (common/data/readers/media.py), on real encodings written with Pillow and
OpenCV, and the embedded demo corpus decoding exactly as a plain 0/255 > 127 reference does."""
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from common.data import demo
from common.data.faces import detection as face_detection
from common.data.readers import DataError, FaceForensicsReader, ImageManipulationReader, VideoInpaintingReader, media
from common.predict import media as predict_media
from safepaint_jax import data as safepaint_data

# A 6x8 object (rows 1-3, columns 2-5) in a 6x8 frame.
OBJECT = np.zeros((6, 8), np.uint8)
OBJECT[1:4, 2:6] = 1


def _palette(**colours):
  """A DAVIS-like palette: index 0 black, 1, 2 and 8 DAVIS's (dark) object colours, the rest grey; `c<i>=(r, g, b)`
  overrides index i."""
  palette = np.full((256, 3), 200, np.uint8)
  palette[0], palette[1], palette[2], palette[8] = (0, 0, 0), (128, 0, 0), (0, 128, 0), (64, 0, 0)
  for key, colour in colours.items():
    palette[int(key[1:])] = colour
  return palette.reshape(-1).tolist()


def _save_palette(path, ids, palette=None, **save):
  image = Image.frombytes("P", ids.shape[::-1], np.ascontiguousarray(ids, np.uint8).tobytes())
  image.putpalette(palette or _palette())
  image.save(path, **save)


def _encodings(tmp):
  """{name: (path, expected {0,1} mask)}: each kind of the rule, written by Pillow or OpenCV."""
  out = {}

  def add(name, expected, write):
    path = os.path.join(tmp, name)
    write(path)
    out[name] = (path, expected)

  add("binary01_cv2.png", OBJECT, lambda p: cv2.imwrite(p, OBJECT))
  add("binary0255_cv2.png", OBJECT, lambda p: cv2.imwrite(p, OBJECT * 255))
  add("bilevel.png", OBJECT, lambda p: Image.fromarray(OBJECT.astype(bool)).save(p))
  grey = OBJECT * 255
  grey[0, :4], grey[4, :4] = (10, 60, 127, 128), (200, 1, 126, 129)  # anti-aliased edges around the threshold
  aliased = (grey > 127).astype(np.uint8)
  add("antialiased_grey.png", aliased, lambda p: cv2.imwrite(p, grey))
  faint16 = np.where(OBJECT, 65535, 200).astype(np.uint16)  # faint grey 200 / 65535 everywhere but the object
  faint16[5, 0] = 32767  # just below half scale (127 of 255 once scaled to 8 bits)
  add("faint_grey16_cv2.png", OBJECT, lambda p: cv2.imwrite(p, faint16))
  add("faint_grey16_cv2.tif", OBJECT, lambda p: cv2.imwrite(p, faint16))
  add("labels01_16bit.png", OBJECT, lambda p: cv2.imwrite(p, OBJECT.astype(np.uint16)))
  ids = OBJECT * 2
  ids[4, 6:] = (3, 7)  # label map: ids 2, 3, 7
  add("label_ids.png", (ids > 0).astype(np.uint8), lambda p: cv2.imwrite(p, ids))
  davis = OBJECT * 8
  davis[5, :2] = (1, 2)
  add("palette.png", (davis > 0).astype(np.uint8), lambda p: _save_palette(p, davis))
  add("palette_transparent_object.png", (davis > 0).astype(np.uint8),
      lambda p: _save_palette(p, davis, transparency=8))  # transparency is ignored
  grey_alpha = np.stack([OBJECT * 255, np.full_like(OBJECT, 255)], -1)  # opaque alpha
  add("grey_alpha_opaque.png", OBJECT, lambda p: Image.fromarray(grey_alpha).save(p))
  grey_alpha_varying = np.stack([OBJECT * 255, np.where(OBJECT, 0, 255).astype(np.uint8)], -1)
  add("grey_alpha_varying.png", OBJECT, lambda p: Image.fromarray(grey_alpha_varying).save(p))
  rgba = np.concatenate([np.repeat(OBJECT[..., None] * 255, 3, -1), np.full((6, 8, 1), 255, np.uint8)], -1)
  add("rgba_opaque.png", OBJECT, lambda p: Image.fromarray(rgba).save(p))
  colored = np.zeros((6, 8, 3), np.uint8)
  colored[OBJECT.astype(bool)] = (0, 200, 0)
  colored[1, 2], colored[5, 7] = (255, 0, 0), (100, 100, 100)  # any channel > 127 counts; (100, 100, 100) not
  add("rgb_any_channel_cv2.png", OBJECT, lambda p: cv2.imwrite(p, colored[..., ::-1]))
  blocks = np.kron(OBJECT, np.ones((16, 16), np.uint8))  # 8x8-aligned blocks: lossy JPEG stays near 0 / 255
  add("binary0255.jpg", blocks, lambda p: cv2.imwrite(p, blocks * 255, [cv2.IMWRITE_JPEG_QUALITY, 90]))
  add("empty.png", np.zeros_like(OBJECT), lambda p: cv2.imwrite(p, np.zeros_like(OBJECT)))
  return out


ENCODINGS = ("binary01_cv2.png", "binary0255_cv2.png", "bilevel.png", "antialiased_grey.png", "faint_grey16_cv2.png",
             "faint_grey16_cv2.tif", "labels01_16bit.png", "label_ids.png", "palette.png",
             "palette_transparent_object.png", "grey_alpha_opaque.png", "grey_alpha_varying.png", "rgba_opaque.png",
             "rgb_any_channel_cv2.png", "binary0255.jpg", "empty.png")


@pytest.mark.parametrize("name", ENCODINGS)
def test_each_encoding_decodes_by_its_rule(tmp_path, name):
  encodings = _encodings(str(tmp_path))
  assert sorted(encodings) == sorted(ENCODINGS)
  path, expected = encodings[name]
  mask = media.read_mask(path)
  assert mask.dtype == np.uint8
  np.testing.assert_array_equal(mask, expected)
  assert media.image_size(path) == expected.shape


@pytest.mark.parametrize("values,write", [
    ([1], cv2.imwrite),     # all ones: a 0/1 map all foreground, or a nearly black 0/255 map?
    ([3, 5], cv2.imwrite),  # dark, no zero, nothing above half scale
    ([200], lambda p, a: cv2.imwrite(p, a.astype(np.uint16))),  # 16-bit, every pixel 200 / 65535
])
def test_undecidable_masks_name_the_file(tmp_path, values, write):
  path = str(tmp_path / "mask.png")
  write(path, np.resize(np.array(values, np.uint8), (6, 8)))
  with pytest.raises(DataError, match=r"mask\.png: ambiguous mask: its values lie in \d+\.\.\d+ of "
                                      r"(255|65535), no pixel is 0 or above half scale"):
    media.read_mask(path)


def test_palettes_whose_ids_disagree_with_their_colours_are_refused(tmp_path):
  # An optimised palette of a white-on-black mask that lists white first: index 0 is the object.
  _save_palette(str(tmp_path / "inverted.png"), 1 - OBJECT, palette=_palette(c0=(255, 255, 255), c1=(0, 0, 0)))
  with pytest.raises(DataError, match=r"inverted\.png: palette mask: index 0 in use is not black"):
    media.read_mask(str(tmp_path / "inverted.png"))
  _save_palette(str(tmp_path / "black_object.png"), OBJECT * 5, palette=_palette(c5=(0, 0, 0)))
  with pytest.raises(DataError, match=r"black_object\.png: palette mask: index 5 in use is black"):
    media.read_mask(str(tmp_path / "black_object.png"))


def test_tampered_image_with_a_01_mask_keeps_its_mask(tmp_path):
  """Formerly read by IMDL-BenCo's rule (RGB mean > 127.5): an all-zero mask with label 1."""
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (6, 8, 3), np.uint8)
  os.makedirs(tmp_path / "Tp")
  os.makedirs(tmp_path / "Gt")
  cv2.imwrite(str(tmp_path / "Tp" / "a.png"), image[..., ::-1])
  cv2.imwrite(str(tmp_path / "Gt" / "a.png"), OBJECT)
  record = ImageManipulationReader(str(tmp_path))[0]
  assert record["label"] == 1
  np.testing.assert_array_equal(record["mask"], OBJECT)
  np.testing.assert_array_equal(record["image"], image)


def test_sixteen_bit_grey_images_read_by_their_high_byte(tmp_path):
  grey = np.array([[0, 255, 256, 65535]], np.uint16)
  cv2.imwrite(str(tmp_path / "g16.png"), grey)
  np.testing.assert_array_equal(media.read_image(str(tmp_path / "g16.png")), np.repeat([[[0], [0], [1], [255]]], 3, -1))


# ------------------------------------------------------------------------------------------ EXIF orientation
def _exif(orientation):
  exif = Image.Exif()
  exif[0x0112] = orientation
  return exif


@pytest.fixture
def rotated_photo(tmp_path):
  """A landscape JPEG stored 12x20 with EXIF orientation 6 (shown turned 90 degrees clockwise: 20x12) and a
  0/255 mask drawn on the displayed photo (20x12, no EXIF), in the Tp/Gt layout."""
  rng = np.random.default_rng(1)
  stored = np.kron(rng.integers(0, 256, (3, 5, 3), np.uint8), np.ones((4, 4, 1), np.uint8))
  os.makedirs(tmp_path / "Tp")
  os.makedirs(tmp_path / "Gt")
  path = str(tmp_path / "Tp" / "photo.jpg")
  Image.fromarray(stored).save(path, quality=95, exif=_exif(6))
  with Image.open(path) as image:
    displayed = np.rot90(np.asarray(image.convert("RGB")), k=-1)
  drawn = np.zeros((20, 12), np.uint8)
  drawn[2:8, 3:9] = 255
  cv2.imwrite(str(tmp_path / "Gt" / "photo.png"), drawn)
  return str(tmp_path), path, displayed, (drawn > 0).astype(np.uint8)


def test_exif_orientation_is_applied_everywhere(rotated_photo, tmp_path):
  root, path, displayed, drawn = rotated_photo
  np.testing.assert_array_equal(media.read_image(path), displayed)
  assert media.image_size(path) == (20, 12)  # from the header alone
  record = ImageManipulationReader(root, verify="header")[0]  # formerly: "mask is 20x12 but its frame ... 12x20"
  np.testing.assert_array_equal(record["image"], displayed)
  np.testing.assert_array_equal(record["mask"], drawn)
  # The predictor reads the same pixels, from an image and from a frame folder.
  np.testing.assert_array_equal(next(predict_media.open_media(path).frames), displayed)
  np.testing.assert_array_equal(next(predict_media.open_media(os.path.join(root, "Tp")).frames), displayed)
  assert cv2.imread(path, cv2.IMREAD_COLOR).shape[:2] == (20, 12)  # as OpenCV shows it too
  # A mask stored with the same orientation as its photo is turned the same way, by every mask reader.
  oriented, upright = str(tmp_path / "oriented_mask.png"), str(tmp_path / "upright_mask.png")
  Image.fromarray(np.ascontiguousarray(np.rot90(drawn * 255, k=1))).save(oriented, exif=_exif(6))
  cv2.imwrite(upright, drawn * 255)
  assert media.image_size(oriented) == (20, 12)
  np.testing.assert_array_equal(media.read_mask(oriented), drawn)
  np.testing.assert_array_equal(safepaint_data.read_hole_mask(oriented, 16), safepaint_data.read_hole_mask(upright, 16))


# ------------------------------------------------------------------------------ the demo corpus, unchanged
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("demo") / "corpus")
  demo.build(out, seed=0, scale="tiny")
  return out


def _reference_mask(path):
  """The demo's masks are single-channel 0/255 PNGs: grey > 127."""
  return (cv2.imread(path, cv2.IMREAD_UNCHANGED) > 127).astype(np.uint8)


def _reference_image(path):
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB"))


def test_demo_corpus_decodes_as_the_plain_reference(corpus):
  root = os.path.join(corpus, "video_inpainting")
  clips = VideoInpaintingReader(root, "train", clip_length=3, target="all", include_pristine=True)
  for index in range(len(clips)):
    record = clips[index]
    name, span = record["id"].rsplit("/", 1)
    folder = os.path.join(root, name)
    frames = sorted(os.listdir(folder))
    first = frames.index(span.split("..")[0])
    paths = [os.path.join(folder, f) for f in frames[first:first + 3]]
    np.testing.assert_array_equal(record["frames"], np.stack([_reference_image(p) for p in paths]))
    masks = [_reference_mask(os.path.join(root, "Annotations", name.split("/")[-1], os.path.splitext(f)[0] + ".png"))
             for f in frames[first:first + 3]] if record["label"] else [np.zeros(record["frames"].shape[1:3])] * 3
    np.testing.assert_array_equal(record["mask"], np.stack(masks), err_msg=record["id"])
  for split in ("train", "test"):
    folder = os.path.join(corpus, "image_manipulation", split)
    images = ImageManipulationReader(folder)
    for index in range(len(images)):
      record = images[index]
      np.testing.assert_array_equal(record["image"], _reference_image(os.path.join(folder, record["id"])))
      gt = os.path.join(folder, "Gt", os.path.basename(record["id"]))
      expected = _reference_mask(gt) if record["label"] else np.zeros(record["image"].shape[:2], np.uint8)
      np.testing.assert_array_equal(record["mask"], expected, err_msg=record["id"])
  faces = os.path.join(corpus, "faces")
  boxes = face_detection.PrecomputedFaceBoxes(os.path.join(faces, "face_boxes.json"))
  crops = FaceForensicsReader(faces, "train", methods=("FaceSwap", "NeuralTextures"), frames_per_video=3,
                              face_boxes=boxes, cache_dir=os.path.join(corpus, "cache"))
  for index, item in enumerate(crops._items):
    record = crops[index]
    x0, y0, x1, y1 = item.box
    capture = cv2.VideoCapture(item.mask_video or item.video)
    for _ in range(item.frame + 1):
      ok, frame = capture.read()
    capture.release()
    expected = ((frame.astype(np.float32).mean(-1) > 127)[y0:y1, x0:x1] if item.label
                else np.zeros((y1 - y0, x1 - x0), bool)).astype(np.uint8)
    np.testing.assert_array_equal(record["mask"], expected, err_msg=record["id"])
  for split in ("train", "test"):
    folder = os.path.join(corpus, "inpainting", split)
    for threshold in (0, 127):
      source = safepaint_data.ImageSource(os.path.join(folder, "images"), 64, os.path.join(folder, "masks"), threshold)
      for index in range(len(source)):
        record = source[index]
        with Image.open(source.masks[index % len(source.masks)]) as mask:
          expected = np.asarray(mask.convert("L").resize((64, 64), Image.BILINEAR)) > threshold
        np.testing.assert_array_equal(record["mask"], expected.astype(np.uint8))
        np.testing.assert_array_equal(record["image"],
                                      safepaint_data.square_resize(_reference_image(source.images[index]), 64))
