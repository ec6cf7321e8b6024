"""Prepare a dataset once into random-access ArrayRecord shards that every method trains and evaluates from.

  python -m common.data.prepare --family=faceforensics --root=FFPP --out=PREPARED [--splits=train,val,test]
      [--methods=...] [--compression=c23] [--frames_per_video=20] [--crop_scale=1.3] [--mask_source=auto]
      [--face_boxes=boxes.json] [--runner=local|beam] [--workers=N] [--examples_per_shard=1000]

Families (`families.py`): video_inpainting (frames with masks), faceforensics (face crops with masks),
image_manipulation (images with masks), inpainting_images (SafePaint's resized images). Every source file is
decoded once, through the folder readers (their checks and errors), and written as TFDS-serialised examples
(PNG images, zlib masks: bit-exact) into `<out>/<dataset>-<split>.array_record-NNNNN-of-MMMMM`, with TFDS
metadata (`tfds.builder_from_directory(out)` reads it) and, per split, `index-<split>.json`: the unit keys in
record order and the family's index, so that readers list records without opening a source file
(`common.data.prepared`). `manifest.json` records counts per split and method, skipped files with reasons, the
sources' sizes and modification times, the options, the code and library versions, and the wall time.

Runners: 'local' (in process, or `workers` spawned processes) or 'beam' (Apache Beam, `pip install -e
.[prepare]`: the DirectRunner on one machine, or Dataflow / Flink / Spark through `beam_options` for a lab's full
set; the output folder must then be storage every worker reaches). Shards are the unit of work and of resumption:
a rerun with the same options skips finished shards; other options or changed sources are refused.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
import pickle
import shutil
import threading
import time
from typing import Optional, Sequence

from absl import logging

from common.data.prepare import families
from common.data.prepare.shards import LABEL_NAMES, ShardTask, features, filename_template, write_shard
from common.data.readers import DataError
from common.train import workdir_lock

PLAN_DIR = ".plan"


def source_summary(root: str) -> dict:
  """Files, bytes, newest modification time and a digest of (path, size, mtime) of everything under `root`."""
  digest, files, size, newest = hashlib.sha256(), 0, 0, 0.0
  for folder, dirs, names in os.walk(root):
    dirs.sort()
    for name in sorted(names):
      path = os.path.join(folder, name)
      stat = os.stat(path)
      digest.update(f"{os.path.relpath(path, root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
      files, size, newest = files + 1, size + stat.st_size, max(newest, stat.st_mtime)
  return {"root": os.path.abspath(root), "files": files, "bytes": size,
          "newest_mtime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(newest)), "digest": digest.hexdigest()}


_NOT_OURS = {workdir_lock.LOCK_NAME, "logs"}  # in --out but not the preparation's: the lock, the tool's error logs


def _check_resumable(out: str, request: dict, overwrite: bool) -> None:
  """Starts `out` afresh, or checks that its unfinished preparation had the same request (refused otherwise)."""
  path = os.path.join(out, "request.json")
  if os.path.exists(path) and overwrite:
    for name in set(os.listdir(out)) - _NOT_OURS:
      target = os.path.join(out, name)
      shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)
  if not os.path.exists(path):
    os.makedirs(os.path.join(out, PLAN_DIR), exist_ok=True)
    with open(path, "w") as f:
      json.dump(request, f, indent=1)
    return
  with open(path) as f:
    stored = json.load(f)
  diffs = [f"{k}: {stored.get(k)!r} -> {request.get(k)!r}" for k in sorted(set(stored) | set(request))
           if stored.get(k) != request.get(k)]
  if diffs:
    raise ValueError(f"--out {out} holds a preparation with other inputs ({'; '.join(diffs)}): use another --out, "
                     "or --overwrite to start again")


def _plan(fam: families.Family, root: str, split: str, options: dict, out: str, examples_per_shard: int):
  """The split's shard tasks (planning once: the plan is pickled under `out` and reused on resumption)."""
  plan_file = os.path.join(out, PLAN_DIR, f"{split}.pkl")
  if os.path.exists(plan_file):
    with open(plan_file, "rb") as f:
      plan = pickle.load(f)
  else:
    logging.info("indexing split %s of %s", split, root)
    plan = fam.plan(root, split, options)
    tmp = f"{plan_file}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
      pickle.dump(plan, f)
    os.replace(tmp, plan_file)
  chunks, current = [], []
  for group in plan.groups:
    current.append(group)
    if sum(len(g.keys) for g in current) >= examples_per_shard:
      chunks.append(current)
      current = []
  if current or not chunks:
    chunks.append(current)
  tasks = [ShardTask(out, fam.name, fam.dataset_name, split, i, len(chunks), plan_file, chunk, options["on_error"])
           for i, chunk in enumerate(chunks)]
  return plan, tasks


class _Progress:
  """Prints shards and records done, records/s and the ETA every `every` seconds while shards are written."""

  def __init__(self, tasks: list[ShardTask], every: float = 10.0):
    self.tasks, self.every = tasks, every
    self.start = time.time()
    self.done_before = {t.meta_path for t in tasks if os.path.exists(t.meta_path)}
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._loop, daemon=True)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.report()

  def _loop(self):
    while not self._stop.wait(self.every):
      self.report()

  def report(self):
    done = [t for t in self.tasks if os.path.exists(t.meta_path)]
    new_units = sum(t.units for t in done if t.meta_path not in self.done_before)
    todo = sum(t.units for t in self.tasks) - sum(t.units for t in done)
    elapsed = time.time() - self.start
    rate = new_units / elapsed if elapsed > 0 else 0.0
    eta = f"{todo / rate / 60:.1f} min" if rate > 0 and todo else ("done" if not todo else "?")
    print(f"prepare: {len(done)}/{len(self.tasks)} shards, {new_units} records written in {elapsed:.0f} s "
          f"({rate:.1f} records/s), ETA {eta}", flush=True)


def _run_jobs(jobs: list, workers: int, every: float = 10.0) -> None:
  """Runs a family's pre-planning `jobs` in `workers` processes (0: in this one), printing how many are done and
  the ETA every `every` seconds and at the end."""
  if not jobs:
    return
  start, last = time.time(), 0.0

  def report(done: int) -> None:
    elapsed = time.time() - start
    eta = "done" if done == len(jobs) else f"{(len(jobs) - done) * elapsed / done / 60:.1f} min" if done else "?"
    print(f"prepare: {jobs[0].WHAT}: {done}/{len(jobs)} in {elapsed:.0f} s, ETA {eta}", flush=True)

  if workers > 0:
    import concurrent.futures
    import multiprocessing
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    finished = (f.result() for f in concurrent.futures.as_completed([pool.submit(job) for job in jobs]))
  else:
    pool, finished = None, (job() for job in jobs)
  try:
    for done, _ in enumerate(finished, 1):
      if time.time() - last >= every or done == len(jobs):
        report(done)
        last = time.time()
  finally:
    if pool is not None:
      pool.shutdown(cancel_futures=True)


def _run(tasks: list[ShardTask], runner: str, workers: int, beam_runner: str, beam_options: str) -> None:
  pending = [t for t in tasks if not os.path.exists(t.meta_path)]
  if not pending:
    return
  if runner == "beam":
    import apache_beam as beam  # the `prepare` extra
    from apache_beam.options.pipeline_options import PipelineOptions
    args = beam_options.split()
    if beam_runner == "DirectRunner" and workers > 0:
      args += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    with beam.Pipeline(runner=beam_runner, options=PipelineOptions(args)) as pipeline:
      _ = (pipeline | "Shards" >> beam.Create(pending, reshuffle=False)
           | "WriteShard" >> beam.Map(lambda task: len(write_shard(task)["units"])))
  elif workers > 0:
    import concurrent.futures
    import multiprocessing
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
      for future in concurrent.futures.as_completed([pool.submit(write_shard, t) for t in pending]):
        future.result()
  else:
    for task in pending:
      write_shard(task)
  for task in pending:
    if not os.path.exists(task.meta_path):
      raise RuntimeError(f"the {runner} runner finished without writing shard {task.path}")


def _finalize(fam: families.Family, out: str, split: str, plan: families.SplitPlan, tasks: list[ShardTask]) -> dict:
  """Writes `index-<split>.json` and returns the split's TFDS SplitInfo and manifest entry."""
  from tensorflow_datasets.core import splits as splits_lib
  units, skipped, lengths = [], list(plan.skipped), []
  for task in tasks:
    with open(task.meta_path) as f:
      meta = json.load(f)
    units.extend(meta["units"])
    skipped.extend(tuple(s) for s in meta["skipped"])
    lengths.append(len(meta["units"]))
  index = {"keys": [u[0] for u in units], "labels": [u[1] for u in units],
           "extra": {k: [u[2][k] for u in units] for k in (units[0][2] if units else {})},
           "structure": plan.structure}
  with open(os.path.join(out, f"index-{split}.json"), "w") as f:
    json.dump(index, f)
  info = splits_lib.SplitInfo(name=split, shard_lengths=lengths, num_bytes=sum(os.path.getsize(t.path) for t in tasks),
                              filename_template=filename_template(out, fam.dataset_name, split))
  by_label = collections.Counter(LABEL_NAMES[u[1]] for u in units)
  entry = {"records": len(units), "shards": len(tasks), "by_label": dict(by_label),
           "skipped": [list(s) for s in dict.fromkeys(skipped)]}
  if fam.name == "faceforensics":
    entry["fake_crops_by_method"] = {m: len(p) for m, p in plan.structure["fakes"].items()}
  if fam.name == "video_inpainting":
    entry["videos_by_method"] = dict(collections.Counter(v["method"] or "pristine" for v in plan.structure["videos"]))
  return info, entry



def prepare(family: str, root: str, out: str, *, splits: Optional[Sequence[str]] = None,
            options: Optional[dict] = None, examples_per_shard: int = 1000, runner: str = "local", workers: int = 0,
            beam_runner: str = "DirectRunner", beam_options: str = "", overwrite: bool = False) -> dict:
  """Prepares `root` (a `family` dataset) into `out`; returns the manifest (also written to manifest.json).

  Args:
    family: 'video_inpainting' | 'faceforensics' | 'image_manipulation' | 'inpainting_images'.
    root: the dataset in its folder layout (as the family's folder reader reads it).
    out: output folder (new or empty, or an unfinished preparation of the same request, which is resumed).
    splits: splits to prepare; default: every split found under `root`.
    options: family options (`families.FAMILIES[family].options` lists them with their defaults).
    examples_per_shard: units per shard (whole sources: a video's units share a shard).
    runner: 'local' or 'beam'; workers: processes (local) or DirectRunner workers (beam); 0 = in process.
    beam_runner, beam_options: Beam runner name and pipeline options ('--project=... --region=...').
    overwrite: delete an earlier preparation in `out` first.
  A live preparation holds `out/run.lock` (`common.train.workdir_lock`): a second one on the same `out` is refused.
  """
  from common.train import provenance
  start = time.time()
  fam = families.family(family)
  root, out = os.fspath(root), os.fspath(out)
  if not os.path.isdir(root):
    raise DataError(root, "--root: dataset folder not found")
  if runner not in ("local", "beam"):
    raise ValueError(f"--runner must be 'local' or 'beam', got {runner!r}")
  if examples_per_shard < 1:
    raise ValueError(f"--examples_per_shard must be >= 1, got {examples_per_shard}")
  options = families.resolve_options(fam, dict(options or {}))
  splits = list(splits or fam.discover_splits(root, options))
  sources = source_summary(root)
  request = {"family": fam.name, "root": os.path.abspath(root), "splits": splits, "options": options,
             "examples_per_shard": examples_per_shard, "sources_digest": sources["digest"]}
  if (os.path.isdir(out) and not os.path.exists(os.path.join(out, "request.json"))
      and set(os.listdir(out)) - _NOT_OURS):
    raise ValueError(f"--out {out}: the folder is not empty and holds no preparation (use an empty folder)")
  os.makedirs(out, exist_ok=True)
  with workdir_lock.WorkdirLock(out):  # one preparation per --out: a second one would delete the first's temp files
    _check_resumable(out, json.loads(json.dumps(request)), overwrite)
    for leftover in os.listdir(out):
      if ".tmp-" in leftover:
        os.remove(os.path.join(out, leftover))
    jobs = [job for split in splits if not os.path.exists(os.path.join(out, PLAN_DIR, f"{split}.pkl"))
            for job in fam.jobs(root, split, options)]
    _run_jobs(list(dict.fromkeys(jobs)), workers)
    planned = {split: _plan(fam, root, split, options, out, examples_per_shard) for split in splits}
    tasks = [t for _, split_tasks in planned.values() for t in split_tasks]
    print(f"prepare: {fam.name} {splits}: {sum(t.units for t in tasks)} records in {len(tasks)} shards "
          f"({sum(os.path.exists(t.meta_path) for t in tasks)} already written) -> {out}", flush=True)
    with _Progress(tasks):
      _run(tasks, runner, workers, beam_runner, beam_options)
    infos, entries = [], {}
    for split, (plan, split_tasks) in planned.items():
      info, entries[split] = _finalize(fam, out, split, plan, split_tasks)
      infos.append(info)
    import tensorflow_datasets as tfds
    tfds.folder_dataset.write_metadata(data_dir=out, features=features(), split_infos=infos,
                                       filename_template=filename_template(out, fam.dataset_name), check_data=False)
    manifest = {"family": fam.name, "dataset": fam.dataset_name, "options": options, "splits": entries,
                "examples_per_shard": examples_per_shard, "sources": sources, "code": provenance.code_version(),
                "libraries": provenance.library_versions(), "runner": runner, "workers": workers,
                "wall_s": round(time.time() - start, 1)}
    with open(os.path.join(out, "manifest.json"), "w") as f:
      json.dump(manifest, f, indent=1)
    return manifest
