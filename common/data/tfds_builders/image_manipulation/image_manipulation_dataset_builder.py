"""TFDS builder: image manipulation sets in the Tp/Gt(/Au) folder layout or IMDL-BenCo JSON pair lists.

Examples: `image` PNG [H, W, 3] (lossless), `mask` uint8 {0,1} [H, W] (zlib tensor), `label` real/fake, `id`
(the image path). Written in the reader's order (`disable_shuffling`).

Splits from `manual_dir`: a Tp/ folder directly inside it is one split named by the config's `single_split`
('test' by default: most of these sets are test sets); each sub-folder holding a Tp/ folder is a split named after
the sub-folder; each `<name>.json` pair list is a split named <name> (non-word characters become '_').
"""
from __future__ import annotations

import dataclasses
import os
import re

import tensorflow_datasets as tfds

from common.data.readers import DataError, ImageManipulationReader
from common.data.tfds_builders._base import ReaderConfig, generate_examples, label_mask_id_features


@dataclasses.dataclass(eq=False)
class ImageManipulationConfig(ReaderConfig):
  """`single_split`: split name of a Tp/Gt folder that sits directly in `manual_dir`."""
  single_split: str = "test"


def split_sources(root: str, tp_dir: str = "Tp", single_split: str = "test") -> dict[str, dict]:
  """split name -> reader arguments (`root=` a Tp/Gt folder or `json_path=` a pair list)."""
  sources = {}
  if os.path.isdir(os.path.join(root, tp_dir)):
    sources[single_split] = {"root": root}
  for entry in sorted(os.listdir(root)):
    path = os.path.join(root, entry)
    name = re.sub(r"\W", "_", os.path.splitext(entry)[0])
    if os.path.isdir(os.path.join(path, tp_dir)):
      sources[name] = {"root": path}
    elif entry.endswith(".json") and os.path.isfile(path):
      sources[name] = {"json_path": path}
  if not sources:
    raise DataError(root, f"no {tp_dir}/ folder, no sub-folder with one and no .json pair list")
  return sources


class Builder(tfds.core.GeneratorBasedBuilder):
  """Image manipulation localisation sets; `manual_dir` holds the Tp/Gt folders or JSON pair lists."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download the set (CASIA v1/v2, Columbia, Coverage, NIST16, IMD2020, ...; IMDL-BenCo's data hub lists the
  sources: https://scu-zjz.github.io/IMDLBenCo-doc/) and arrange it under `manual_dir` as
    Tp/<name>.<ext> + Gt/<name><suffix>.png [+ Au/<name>.<ext>]      (one split, see `single_split`), or
    <split>/Tp/... + <split>/Gt/... [+ <split>/Au/...]                (one split per sub-folder), or
    <split>.json = [[image_path, mask_path or "Negative"], ...]        (IMDL-BenCo pair lists; relative paths
                                                                       are taken against the JSON's folder).
  CASIA names its masks <name>_gt.png: use the `casia` config (gt_suffix '_gt').
  """
  BUILDER_CONFIGS = [
      ImageManipulationConfig(name="default", description="masks paired by file stem"),
      ImageManipulationConfig(name="casia", description="masks named <stem>_gt", reader_kwargs={"gt_suffix": "_gt"}),
      ImageManipulationConfig(name="sorted_pairs", description="masks paired by sorted position (IMDL-BenCo's "
                                                               "ManiDataset)", reader_kwargs={"pairing": "sorted"}),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
            **label_mask_id_features((None, None)),
        }),
        disable_shuffling=True,
        homepage="https://github.com/scu-zjz/IMDLBenCo",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    kwargs = self.builder_config.reader_kwargs
    sources = split_sources(os.fspath(dl_manager.manual_dir), kwargs.get("tp_dir", "Tp"),
                            self.builder_config.single_split)
    return {name: self._generate_examples(source) for name, source in sources.items()}

  def _generate_examples(self, source: dict):
    reader = ImageManipulationReader(**source, **self.builder_config.reader_kwargs)
    yield from generate_examples(reader, "image")
