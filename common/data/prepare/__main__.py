"""python -m common.data.prepare --family=F --root=DATASET --out=PREPARED [options]: see `common.data.prepare`."""
from __future__ import annotations

import json
import os

from absl import flags

from common.data import prepare
from common.data.prepare import families
from common.train import tool

_FAMILY = flags.DEFINE_enum("family", None, sorted(families.FAMILIES), "dataset family")
_ROOT = flags.DEFINE_string("root", None, "the dataset in its folder layout")
_OUT = flags.DEFINE_string("out", None, "output folder (new, empty, or an unfinished preparation to resume)")
_SPLITS = flags.DEFINE_list("splits", [], "splits to prepare (default: every split found under --root)")
_RUNNER = flags.DEFINE_enum("runner", "local", ["local", "beam"], "in-process / process pool, or Apache Beam")
_WORKERS = flags.DEFINE_integer("workers", 0, "worker processes (0: in this process)")
_BEAM_RUNNER = flags.DEFINE_string("beam_runner", "DirectRunner", "Beam runner (DataflowRunner, FlinkRunner, ...)")
_BEAM_OPTIONS = flags.DEFINE_string("beam_options", "", "Beam pipeline options, e.g. '--project=P --region=R'")
_PER_SHARD = flags.DEFINE_integer("examples_per_shard", 1000, "records per shard (a source's records share one)")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "delete an earlier preparation in --out first")
# Family options (each applies to the families whose `options` name it; see families.py).
_METHODS = flags.DEFINE_list("methods", None, "manipulation / inpainting methods (default: all found)")
_COMPRESSION = flags.DEFINE_string("compression", None, "faceforensics: raw | c23 | c40 (default c23)")
_FRAMES = flags.DEFINE_integer("frames_per_video", None, "faceforensics: frames sampled per video (default 20)")
_CROP = flags.DEFINE_float("crop_scale", None, "faceforensics: face box enlargement (default 1.3)")
_MASKS = flags.DEFINE_enum("mask_source", None, ["auto", "official", "ssim"], "faceforensics: mask source")
_FACE_SIZE = flags.DEFINE_integer("face_size", None, "faceforensics: store crops resized to N x N, as the "
                                   "method's pipeline first does (Delocate: data.size 224; default 0: own size)")
_BOXES = flags.DEFINE_string("face_boxes", None, "faceforensics: precomputed face boxes JSON (relative to --root)")
_PRISTINE = flags.DEFINE_bool("include_pristine", None, "video_inpainting: store pristine videos (default true)")
_GT_SUFFIX = flags.DEFINE_string("gt_suffix", None, "image_manipulation: mask stem suffix, e.g. _gt for CASIA")
_SIZE = flags.DEFINE_integer("size", None, "inpainting_images: image side after resizing (default 256)")
_THRESHOLD = flags.DEFINE_integer("mask_threshold", None, "inpainting_images: resized mask > this is a hole (0)")
_ON_ERROR = flags.DEFINE_enum("on_error", None, ["raise", "skip"], "a bad source: stop, or skip it (in manifest)")


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments {argv[1:]}")
  for flag in (_FAMILY, _ROOT, _OUT):
    if not flag.value:
      raise ValueError(f"--{flag.name} is required")
  names = ("methods", "compression", "frames_per_video", "crop_scale", "mask_source", "face_boxes", "face_size",
           "include_pristine", "gt_suffix", "size", "mask_threshold", "on_error")
  given = {name: flags.FLAGS[name].value for name in names if flags.FLAGS[name].value is not None}
  if "methods" in given:
    given["methods"] = tuple(given["methods"])
  manifest = prepare.prepare(_FAMILY.value, _ROOT.value, _OUT.value, splits=_SPLITS.value, options=given,
                             examples_per_shard=_PER_SHARD.value, runner=_RUNNER.value, workers=_WORKERS.value,
                             beam_runner=_BEAM_RUNNER.value, beam_options=_BEAM_OPTIONS.value,
                             overwrite=_OVERWRITE.value)
  summary = {split: {k: v for k, v in entry.items() if k != "skipped"} | {"skipped": len(entry["skipped"])}
             for split, entry in manifest["splits"].items()}
  print(json.dumps({"out": os.path.abspath(_OUT.value), "wall_s": manifest["wall_s"], "splits": summary}))


if __name__ == "__main__":
  tool.run_tool(main, lambda: os.path.join(_OUT.value, "logs") if _OUT.value else None)
