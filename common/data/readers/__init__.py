"""Readers of the real dataset layouts, each a Grain random-access source of record dicts.

Records are dicts of numpy arrays: `frames` uint8 [T, H, W, 3] (video clips) or `image` uint8 [H, W, 3],
`mask` uint8 {0, 1} [T, H, W] / [H, W], `label` int (0 real, 1 fake) and `id` (the source file(s), for error
messages). Files decode by one rule per input kind (`media`'s docstring). Bad files raise `DataError` naming the
file and the problem; `on_error='skip'` drops them when the index is built (`verify` says how much is checked
then: 'none', 'header' or 'decode'), lists them in `reader.skipped` and logs their count; a problem found only
when a record is read raises. A manipulated example (label 1) whose mask is all zero is bad data: an image, a
video clip whose every mask frame is empty (an object may leave some frames of a clip), an FF++ fake video whose
every sampled frame's mask is empty (a fake frame the manipulation left alone may have none).
"""
from common.data.readers.faceforensics import FaceForensicsReader
from common.data.readers.image_manipulation import ImageManipulationReader
from common.data.readers.media import DataError
from common.data.readers.video_inpainting import VideoInpaintingReader

__all__ = ["DataError", "FaceForensicsReader", "ImageManipulationReader", "VideoInpaintingReader"]
