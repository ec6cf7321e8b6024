"""Image manipulation sets (CASIA, Columbia, Coverage, NIST16, IMD2020, ...) in IMDL-BenCo's two formats.

Folder format:
  <root>/Tp/<name>.<ext>     tampered images (label 1)
  <root>/Gt/<name>.png       their ground-truth masks
  <root>/Au/<name>.<ext>     optional authentic images (label 0, all-zero mask)
Tampered images and masks are paired by file stem (`pairing='stem'`, with an optional mask-name suffix such as
CASIA's '_gt'; an image without a mask or a mask without an image is an error), or by position in the sorted
listings as IMDL-BenCo's ManiDataset does (`pairing='sorted'`; the listings must have equal length).

JSON format (IMDL-BenCo's JsonDataset): `[[image_path, mask_path_or_"Negative"], ...]`; "Negative" marks an
authentic image. Relative paths are resolved against the JSON file's folder.

Masks become binary by `media.read_mask`'s rule (0/255, 0/1, grey, 16-bit, palette, RGB, ...; IMDL-BenCo's own
rule, RGB mean > 127.5, gives the same masks on the benchmarks' grey 0/255 ground truths). A tampered image whose
mask decodes to all zeros is a DataError naming the mask (it would train as label 1 with no forged pixel and
make every pixel metric NaN).

Records: {'image': uint8 [H, W, 3], 'mask': uint8 {0,1} [H, W], 'label': int, 'id': str}.
The index checks existence and (with verify='header' or 'decode') image/mask sizes in `__init__`, so
`on_error='skip'` drops bad pairs before `__len__` is fixed; verify='decode' also decodes every file there (and
finds empty masks). Problems found later, when a record is read, raise DataError naming the file.
"""
from __future__ import annotations

import json
import os
from typing import NamedTuple, Optional

import numpy as np

from common.data.readers.media import (IMAGE_EXTENSIONS, DataError, ErrorPolicy, check_same_size, image_size,
                                       list_files, read_image, read_mask)

NEGATIVE = "Negative"


class _Pair(NamedTuple):
  image: str
  mask: Optional[str]  # None: authentic (all-zero mask)


class ImageManipulationReader:
  """Grain random-access source of manipulated and authentic images (see the module docstring).

  Args:
    root: folder with Tp/ and Gt/ (and optionally Au/); exclusive with `json_path`.
    json_path: an IMDL-BenCo pair list; exclusive with `root`.
    pairing: 'stem' or 'sorted' (folder format only).
    gt_suffix: mask stem = image stem + gt_suffix (stem pairing), e.g. '_gt' for CASIA.
    include_authentic: read <root>/Au when present.
    tp_dir, gt_dir, au_dir: sub-folder names.
    verify: 'header' (compare sizes from file headers), 'decode' (decode every file) or 'none'.
    on_error: 'raise' on the first bad pair, or 'skip' bad pairs and record them in `skipped`.
  """

  def __init__(self, root: Optional[str] = None, *, json_path: Optional[str] = None, pairing: str = "stem",
               gt_suffix: str = "", include_authentic: bool = True, tp_dir: str = "Tp", gt_dir: str = "Gt",
               au_dir: str = "Au", verify: str = "header", on_error: str = "raise"):
    if (root is None) == (json_path is None):
      raise ValueError("give exactly one of root (Tp/Gt folders) and json_path (IMDL-BenCo pair list)")
    if pairing not in ("stem", "sorted"):
      raise ValueError(f"pairing must be 'stem' or 'sorted', got {pairing!r}")
    if verify not in ("none", "header", "decode"):
      raise ValueError(f"verify must be 'none', 'header' or 'decode', got {verify!r}")
    self.root = os.fspath(root) if root is not None else None
    self.json_path = os.fspath(json_path) if json_path is not None else None
    self.pairing = pairing
    self.gt_suffix = gt_suffix
    self.verify = verify
    self._policy = ErrorPolicy(on_error)
    if self.root is not None:
      candidates = self._folder_pairs(tp_dir, gt_dir, au_dir if include_authentic else None)
    else:
      candidates = self._json_pairs()
    self._pairs: list[_Pair] = []
    for pair in candidates:
      try:
        self._check(pair)
      except DataError as e:
        self._policy.handle(e)
        continue
      self._pairs.append(pair)
    if not self._pairs:
      raise DataError(self.root or self.json_path, "no usable image" +
                      (f" ({len(self.skipped)} skipped)" if self.skipped else ""))
    self._policy.report(self)

  @property
  def skipped(self) -> list[tuple[str, str]]:
    """(path, problem) of every pair dropped with on_error='skip'."""
    return self._policy.skipped

  # ----------------------------------------------------------------------------------------------- index
  def _folder_pairs(self, tp_dir: str, gt_dir: str, au_dir: Optional[str]) -> list[_Pair]:
    tp_folder, gt_folder = os.path.join(self.root, tp_dir), os.path.join(self.root, gt_dir)
    images = list_files(tp_folder, IMAGE_EXTENSIONS, what="tampered-image")
    masks = list_files(gt_folder, IMAGE_EXTENSIONS, what="mask")
    pairs = []
    if self.pairing == "sorted":
      if len(images) != len(masks):
        raise DataError(self.root, f"{tp_dir}/ has {len(images)} images but {gt_dir}/ has {len(masks)} masks; "
                                   "sorted pairing needs equal counts")
      pairs = [_Pair(os.path.join(tp_folder, i), os.path.join(gt_folder, m)) for i, m in zip(images, masks)]
    else:
      by_stem: dict[str, str] = {}
      for m in masks:
        stem = os.path.splitext(m)[0]
        if stem in by_stem:
          raise DataError(os.path.join(gt_folder, m), f"two masks share the stem {stem!r} (also {by_stem[stem]})")
        by_stem[stem] = m
      used = set()
      for image in images:
        stem = os.path.splitext(image)[0] + self.gt_suffix
        if stem not in by_stem:
          self._policy.handle(DataError(os.path.join(gt_folder, stem + ".png"),
                                        f"missing mask of {os.path.join(tp_folder, image)}"))
          continue
        used.add(stem)
        pairs.append(_Pair(os.path.join(tp_folder, image), os.path.join(gt_folder, by_stem[stem])))
      for stem in sorted(by_stem.keys() - used):
        self._policy.handle(DataError(os.path.join(gt_folder, by_stem[stem]),
                                      f"mask has no tampered image in {tp_folder} (gt_suffix={self.gt_suffix!r})"))
    if au_dir is not None and os.path.exists(os.path.join(self.root, au_dir)):
      au_folder = os.path.join(self.root, au_dir)
      pairs.extend(_Pair(os.path.join(au_folder, a), None)
                   for a in list_files(au_folder, IMAGE_EXTENSIONS, what="authentic-image"))
    return pairs

  def _json_pairs(self) -> list[_Pair]:
    try:
      with open(self.json_path) as f:
        entries = json.load(f)
    except FileNotFoundError:
      raise DataError(self.json_path, "pair list not found") from None
    except (OSError, json.JSONDecodeError) as e:
      raise DataError(self.json_path, f"cannot read pair list ({e})") from None
    if not isinstance(entries, list) or not all(
        isinstance(e, (list, tuple)) and len(e) == 2 and all(isinstance(v, str) for v in e) for e in entries):
      raise DataError(self.json_path, 'pair list must be a JSON list of [image_path, mask_path or "Negative"]')
    if not entries:
      raise DataError(self.json_path, "pair list is empty")
    base = os.path.dirname(os.path.abspath(self.json_path))
    resolve = lambda p: os.path.normpath(os.path.join(base, p))
    return [_Pair(resolve(image), None if mask == NEGATIVE else resolve(mask)) for image, mask in entries]

  def _check(self, pair: _Pair) -> None:
    if not os.path.isfile(pair.image):
      raise DataError(pair.image, "image file not found")
    if pair.mask is not None and not os.path.isfile(pair.mask):
      raise DataError(pair.mask, f"missing mask of {pair.image}")
    if self.verify == "none":
      return
    if self.verify == "decode":
      image_hw = read_image(pair.image).shape[:2]
      mask_hw = self._mask(pair).shape if pair.mask is not None else image_hw
    else:
      image_hw = image_size(pair.image)
      mask_hw = image_size(pair.mask) if pair.mask is not None else image_hw
    check_same_size(pair.image, pair.mask, image_hw, mask_hw)

  # ------------------------------------------------------------------------------------------ records
  def __len__(self) -> int:
    return len(self._pairs)

  def __repr__(self) -> str:
    source = f"root={self.root!r}" if self.root is not None else f"json_path={self.json_path!r}"
    return (f"ImageManipulationReader({source}, pairing={self.pairing!r}, gt_suffix={self.gt_suffix!r}, "
            f"records={len(self)})")

  def __getitem__(self, index: int) -> dict:
    pair = self._pairs[index]
    image = read_image(pair.image)
    if pair.mask is None:
      mask = np.zeros(image.shape[:2], np.uint8)
    else:
      mask = self._mask(pair)
      check_same_size(pair.image, pair.mask, image.shape[:2], mask.shape)
    base = self.root if self.root is not None else os.path.dirname(os.path.abspath(self.json_path))
    return {"image": image, "mask": mask, "label": int(pair.mask is not None), "id": os.path.relpath(pair.image, base)}

  @staticmethod
  def _mask(pair: _Pair) -> np.ndarray:
    mask = read_mask(pair.mask)
    if not mask.any():
      raise DataError(pair.mask, f"the mask of the tampered image {pair.image} (label 1) is empty (all zero)")
    return mask
