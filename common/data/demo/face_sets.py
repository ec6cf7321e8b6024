"""Tiny copies of the cross-dataset face-video test sets (Celeb-DF v2, DFDC, DFD) in their published layouts, made
from the demo corpus's FF++-layout faces, so that the cross-dataset protocols run end to end without the real sets.

Each set holds the test split's videos (`faces/splits/test.json`): its real videos as the set's real ones and the
fakes of every demo manipulation as its fakes, named as the real set names its files (the layouts are in
`common.data.readers.face_videos`), plus `face_boxes.json` ({relative path without extension: boxes}; a fake takes
its target's boxes, as FF++ crops do). The videos are copies, so the crops equal the FF++ reader's crops of the
same frames. A demo set is not a cross-dataset test: its faces are the training corpus's person.

`ensure_face_set(layout)` builds one into `<demo corpus>/face_sets/<layout>` on first use (atomically) and
returns its root; a config's `data.root = ""` with `data.layout` one of these layouts means that copy.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

from common.data.demo.corpus import ensure_demo_corpus
from common.data.readers.faceforensics import read_split_pairs

LAYOUTS = ("celeb_df", "dfdc", "dfd")


def _videos(faces_root: str) -> tuple[list[str], list[tuple[str, str]]]:
  """(real ids, [(method, fake name)]) of the test split, sorted."""
  pairs = read_split_pairs(os.path.join(faces_root, "splits", "test.json"))
  reals = sorted({v for pair in pairs for v in pair})
  methods = sorted(os.listdir(os.path.join(faces_root, "manipulated_sequences")))
  fakes = [(m, f"{t}_{s}") for m in methods for a, b in pairs for t, s in ((a, b), (b, a))]
  return reals, fakes


def _names(layout: str, reals: list[str], fakes: list[tuple[str, str]]) -> dict[str, tuple[str, str, int]]:
  """{relative path in the layout: (FF++ relative path, target id, label)}."""
  real_src = {r: f"original_sequences/youtube/c23/videos/{r}.mp4" for r in reals}
  fake_src = {(m, f): f"manipulated_sequences/{m}/c23/videos/{f}.mp4" for m, f in fakes}
  out = {}
  for i, r in enumerate(reals):
    name = {"celeb_df": f"{'Celeb-real' if i % 2 else 'YouTube-real'}/id{i}_{i:04d}.mp4",
            "dfdc": f"real{i:04d}.mp4",
            "dfd": f"original_sequences/actors/c23/videos/{i:02d}__talking.mp4"}[layout]
    out[name] = (real_src[r], r, 0)
  for i, (m, f) in enumerate(fakes):
    name = {"celeb_df": f"Celeb-synthesis/id{i}_{m}_{i:04d}.mp4",
            "dfdc": f"fake{i:04d}.mp4",
            "dfd": f"manipulated_sequences/DeepFakeDetection/c23/videos/{i:02d}_{m}__talking.mp4"}[layout]
    out[name] = (fake_src[(m, f)], f.split("_")[0], 1)
  return out


def build_face_set(faces_root: str, layout: str, out: str) -> str:
  """Writes the `layout` copy of the FF++-layout corpus `faces_root` into `out` (which must not exist)."""
  if layout not in LAYOUTS:
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
  with open(os.path.join(faces_root, "face_boxes.json"), encoding="utf-8") as f:
    corpus_boxes = json.load(f)
  names = _names(layout, *_videos(faces_root))
  boxes = {}
  for rel, (source, target, _) in names.items():
    os.makedirs(os.path.dirname(os.path.join(out, rel)) or out, exist_ok=True)
    shutil.copyfile(os.path.join(faces_root, source), os.path.join(out, rel))
    boxes[os.path.splitext(rel)[0]] = corpus_boxes[target]
  with open(os.path.join(out, "face_boxes.json"), "w", encoding="utf-8") as f:
    json.dump(boxes, f)
  labelled = sorted((rel, label) for rel, (_, _, label) in names.items())
  if layout == "celeb_df":  # the official list: '<1 real | 0 fake> <folder>/<video>.mp4'
    with open(os.path.join(out, "List_of_testing_videos.txt"), "w", encoding="utf-8") as f:
      f.writelines(f"{1 - label} {rel}\n" for rel, label in labelled)
  elif layout == "dfdc":
    with open(os.path.join(out, "metadata.json"), "w", encoding="utf-8") as f:
      json.dump({rel: {"label": "FAKE" if label else "REAL", "split": "test"} for rel, label in labelled}, f)
  return out


def ensure_face_set(layout: str, corpus: str | None = None) -> str:
  """Root of the demo corpus's `layout` copy (`corpus`: default the cached full demo corpus), built on first use."""
  corpus = corpus or ensure_demo_corpus()
  path = os.path.join(corpus, "face_sets", layout)
  if not os.path.isdir(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{layout}.building-", dir=os.path.dirname(path))
    try:
      build_face_set(os.path.join(corpus, "faces"), layout, os.path.join(staging, layout))
      try:
        os.rename(os.path.join(staging, layout), path)
      except OSError:
        if not os.path.isdir(path):  # not a concurrent build that finished first
          raise
    finally:
      shutil.rmtree(staging, ignore_errors=True)
  return path
