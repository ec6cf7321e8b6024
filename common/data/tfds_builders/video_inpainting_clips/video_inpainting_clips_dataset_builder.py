"""TFDS builder: clips of a video inpainting set in the DAVIS / YouTube-VOS layout (ViLocal-style units).

Examples: `frames` Video [T, H, W, 3] (PNG frames, lossless), `mask` uint8 {0,1} [H, W] (or [T, H, W] for
configs with target='all'; zlib tensor), `label` real/fake, `id`. Written in the reader's order
(`disable_shuffling`): example i of a split equals `VideoInpaintingReader(root, split, **reader_kwargs)[i]`.
"""
from __future__ import annotations

import os

import tensorflow_datasets as tfds

from common.data.readers import DataError, VideoInpaintingReader
from common.data.tfds_builders._base import ReaderConfig, generate_examples, label_mask_id_features

SPLITS = ("train", "val", "test")


class Builder(tfds.core.GeneratorBasedBuilder):
  """Video inpainting localisation clips; `manual_dir` is the dataset root."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Put the dataset in the DAVIS / YouTube-VOS layout under `manual_dir`:
    JPEGImages/<video>/<frame>.jpg            pristine frames
    Annotations/<video>/<frame>.png           object masks (0/255 gray or palette PNG)
    Inpainted/<method>/<video>/<frame>.png    inpainted frames, one folder per inpainting method
    ImageSets/{train,val,test}.txt            video names, one per line
  (sub-folder names are reader arguments: pass a config with reader_kwargs, e.g. frames_dir='JPEGImages/480p').
  DAVIS: https://davischallenge.org ; inpainted versions come from running the inpainting methods (VI, OP, CP,
  E2FGVI, FuseFormer, STTN, ...) on the object masks.
  """
  BUILDER_CONFIGS = [
      ReaderConfig(name="clip5_middle", description="5 consecutive inpainted frames, mask of the middle one "
                                                    "(ViLocal)", reader_kwargs={"clip_length": 5}),
      ReaderConfig(name="clip5_middle_with_pristine", description="as clip5_middle, plus pristine clips (label 0)",
                   reader_kwargs={"clip_length": 5, "include_pristine": True}),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    all_masks = self.builder_config.reader_kwargs.get("target", "middle") == "all"
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "frames": tfds.features.Video(shape=(None, None, None, 3), encoding_format="png"),
            **label_mask_id_features((None, None, None) if all_masks else (None, None)),
        }),
        disable_shuffling=True,
        homepage="https://github.com/multimediaFor/ViLocal",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = os.fspath(dl_manager.manual_dir)
    pattern = self.builder_config.reader_kwargs.get("split_file", os.path.join("ImageSets", "{split}.txt"))
    splits = {s: self._generate_examples(root, s) for s in SPLITS
              if os.path.exists(os.path.join(root, pattern.format(split=s)))}
    if not splits:
      raise DataError(os.path.join(root, pattern), f"no split file for any of {SPLITS}")
    return splits

  def _generate_examples(self, root: str, split: str):
    reader = VideoInpaintingReader(root, split, **self.builder_config.reader_kwargs)
    yield from generate_examples(reader, "frames")
