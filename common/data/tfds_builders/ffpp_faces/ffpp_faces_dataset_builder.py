"""TFDS builder: FaceForensics++ face crops with pixel masks (MSCCNet-style frames).

Examples: `image` PNG [h, h, 3] (lossless), `mask` uint8 {0,1} [h, h] (zlib tensor), `label` real/fake, `id`
(`<video path>#frame<k>`). Written in the reader's order (`disable_shuffling`): example i of a split equals
`FaceForensicsReader(root, split, **reader_kwargs)[i]`.
"""
from __future__ import annotations

import os

import tensorflow_datasets as tfds

from common.data.readers import DataError, FaceForensicsReader
from common.data.tfds_builders._base import ReaderConfig, generate_examples, label_mask_id_features

SPLITS = ("train", "val", "test")


class Builder(tfds.core.GeneratorBasedBuilder):
  """FaceForensics++ faces; `manual_dir` is the dataset root as the official download script writes it."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Request access and download FaceForensics++ with the official script (https://github.com/ondyari/FaceForensics),
  for the compression you want (raw, c23 or c40) and the masks, into `manual_dir`:
    original_sequences/youtube/<compression>/videos/<id>.mp4
    manipulated_sequences/<Method>/<compression>/videos/<target>_<source>.mp4
    manipulated_sequences/<Method>/masks/videos/<target>_<source>.mp4
  and copy the official split files dataset/splits/{train,val,test}.json of that repository to
  `manual_dir`/splits/. Faces are located with scikit-image's LBP cascade (tracked and cached) unless the config's
  reader_kwargs give `face_boxes=common.data.faces.detection.PrecomputedFaceBoxes(json)`.
  """
  BUILDER_CONFIGS = [
      ReaderConfig(name="c23_msccnet", description="c23, 20 frames per fake video, all masks from MSCCNet's SSIM "
                                                   "annotation, one real crop per fake crop",
                   reader_kwargs={"compression": "c23", "mask_source": "ssim"}),
      ReaderConfig(name="c23_official_masks", description="c23, 20 frames per fake video, official mask videos "
                                                          "where they exist (SSIM annotation for FaceShifter)",
                   reader_kwargs={"compression": "c23", "mask_source": "auto"}),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
            **label_mask_id_features((None, None)),
        }),
        disable_shuffling=True,
        homepage="https://github.com/ondyari/FaceForensics",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = os.fspath(dl_manager.manual_dir)
    pattern = self.builder_config.reader_kwargs.get("split_file", os.path.join("splits", "{split}.json"))
    kwargs = {k: v for k, v in self.builder_config.reader_kwargs.items() if k != "split_file"}
    splits = {s: self._generate_examples(root, s, pattern.format(split=s), kwargs) for s in SPLITS
              if os.path.exists(os.path.join(root, pattern.format(split=s)))}
    if not splits:
      raise DataError(os.path.join(root, pattern), f"no split file for any of {SPLITS}")
    return splits

  def _generate_examples(self, root: str, split: str, split_file: str, kwargs: dict):
    reader = FaceForensicsReader(root, split, split_file=split_file, **kwargs)
    yield from generate_examples(reader, "image")
