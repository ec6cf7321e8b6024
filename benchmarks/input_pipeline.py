"""Input-pipeline throughput: examples/s of one method's training pipeline, from folders or prepared shards.

  python -m benchmarks.input_pipeline --method msccnet [--config paper] [--stage S] [--format folder|arrayrecord]
      [--workers N] [--read_threads T] [--prefetch P] [--batches K] [--repeats R] [--warmup W] [--batch_size B]
      [--data_root DIR] [--prepared_dir DIR] [--work_dir DIR] [--face_size N] [--set key=value ...] [--breakdown N]

Builds the method's task from `configs/<method>.py:<config>` (one stage of a two-stage config, default the first)
and times `Task.input_pipeline('train')`, the pipeline training reads: the task's source, its own transforms at
the config's input size, shuffle and batching, with `--workers` Grain worker processes and `--read_threads`.
Data: for msccnet and delocate, `--data_root` (an FF++ root) or, for `--config paper`, the FF++-shaped set of
`benchmarks.ffpp_shaped` (built once into the cache: `--ffpp_shaped_dir`); otherwise the config's own data (the
demo corpus for every demo and smoke config, and for the paper configs of vilocal and safepaint; ncl's paper
config is pointed at the demo corpus's image-manipulation sets; safepaint's perceptual and style losses are set to
0, which the task needs without converted VGG weights and the input does not depend on). `--format arrayrecord` reads the same data
prepared by `common.data.prepare` (`--prepared_dir`, or prepared here once into `--work_dir`, keyed by the
preparation's inputs), with the config's `data.format = 'arrayrecord'`.

Prints one JSON line: examples/s, the median over `--repeats` windows of `--batches` batches, and examples/s per
core. Before them: `--warmup` batches and one settling window (reported, not counted), so that no timed window
drains batches read ahead earlier; the read-ahead is `--prefetch` batches per process (default: one per read
thread, which keeps them busy). Per core = examples / CPU seconds spent in the window by this process and its
Grain workers (user + system, via psutil): the rate one fully busy core sustains, comparable across worker counts
and less sensitive to other load than wall time; `cores_busy` is those CPU seconds over the wall seconds.
`input` gives each batch array's shape: the paper input size. `--breakdown N` adds, from N records read one by
one in this process, the milliseconds per record (wall and CPU) of the source read (with its costliest
functions, cProfile) and of each transform: what limits the rate.
"""
from __future__ import annotations

import cProfile
import hashlib
import json
import os
import pstats
import statistics
import sys
import time
from typing import Sequence

from absl import app, flags, logging
import numpy as np

METHODS = ("vilocal", "msccnet", "delocate", "ncl", "safepaint")
FFPP_METHODS = ("msccnet", "delocate")

# The dataset family `common.data.prepare` stores for each method.
FAMILIES = {"vilocal": "video_inpainting", "msccnet": "faceforensics", "delocate": "faceforensics",
            "ncl": "image_manipulation", "safepaint": "inpainting_images"}


def define_flags() -> None:
  """The command line's flags (defined only when run: tests import this module beside other tools)."""
  flags.DEFINE_enum("method", None, list(METHODS), "the method whose training pipeline is timed")
  flags.DEFINE_enum("config", "paper", ["paper", "demo", "smoke"], "config variant of configs/<method>.py")
  flags.DEFINE_string("stage", None, "stage of a two-stage config (default: its first)")
  flags.DEFINE_enum("format", "folder", ["folder", "arrayrecord"], "folder readers or prepared shards")
  flags.DEFINE_integer("workers", 0, "Grain worker processes (0: decode in the main process)")
  flags.DEFINE_integer("read_threads", None, "Grain read threads (default: the config's)")
  flags.DEFINE_integer("batch_size", None, "examples per batch (default: the config's global batch)")
  flags.DEFINE_integer("batches", 10, "batches per timed window")
  flags.DEFINE_integer("repeats", 3, "timed windows (the median is reported)")
  flags.DEFINE_integer("warmup", -1, "untimed batches first; -1: 1 + the read-ahead of every process "
                       "((prefetch + 1) x max(1, workers)), so that no timed window drains a filled buffer")
  flags.DEFINE_integer("prefetch", -1, "data.prefetch, the read-ahead in batches per process; -1: read_threads "
                       "(enough to keep every read thread busy); 0: the config's (16)")
  flags.DEFINE_string("data_root", "", "dataset root: data.root (msccnet, delocate, vilocal), "
                      "data.sets.train (ncl paper)")
  flags.DEFINE_string("ffpp_shaped_dir", "", "the FF++-shaped set for msccnet and delocate paper "
                      "(default: <cache>/ffpp_shaped-v1, built on first use)")
  flags.DEFINE_string("prepared_dir", "", "a prepared set for --format arrayrecord (default: prepared here into "
                      "--work_dir)")
  flags.DEFINE_string("work_dir", "", "where prepared sets are kept (default: <cache>/input_bench)")
  flags.DEFINE_integer("face_size", 0, "faces prepared here for --format arrayrecord: stored resized to N x N "
                       "(prepare's --face_size; Delocate: its input size, 224)")
  flags.DEFINE_integer("prepare_workers", 0, "processes of the preparation (0: in process)")
  flags.DEFINE_multi_string("set", [], "config override key=value (value parsed as a Python literal)")
  flags.DEFINE_integer("breakdown", 0, "also time N records one by one: source read and each transform")
  flags.DEFINE_integer("top", 8, "functions listed in the breakdown's profile of the source read")


# --------------------------------------------------------------------------------------------------- config
def data_overrides(method: str, variant: str, data_root: str, ffpp_shaped_dir: str = "") -> dict:
  """config key -> value pointing `method`'s config at data on this machine (the config's own data: {})."""
  if method in FFPP_METHODS and (data_root or variant == "paper"):
    root = data_root or ensure_ffpp_shaped(ffpp_shaped_dir)
    set_info = os.path.join(root, "ffpp_shaped.json")
    out = {"data.root": root, "data.compression": "c23", "data.verify": "header"}
    if os.path.exists(set_info):  # the FF++-shaped set: its methods and its face boxes
      with open(set_info) as f:
        out.update({"data.methods": tuple(json.load(f)["methods"]), "data.face_boxes": "face_boxes.json"})
    if method == "delocate":
      out["data.cross_methods"] = ()
    return out
  if method == "vilocal" and data_root:
    return {"data.root": data_root}
  if method == "ncl" and variant == "paper":  # CASIA v2 etc. are not here: the demo's image-manipulation sets
    sets = {"train": data_root, "test": ""} if data_root else {"train": "", "test": ""}
    return {"data.sets": sets, "data.train_split": "train", "eval_split": "test"}
  if method == "safepaint":  # the task refuses these losses without converted VGG weights; the input ignores them
    return {"loss.perceptual": 0.0, "loss.style": 0.0}
  return {}


def ensure_ffpp_shaped(path: str = "") -> str:
  """The FF++-shaped set at `path` (default <cache>/ffpp_shaped-v1), built with the defaults when missing."""
  from benchmarks import ffpp_shaped
  from common.data import demo
  path = path or os.path.join(demo.default_cache_root(), "ffpp_shaped-v1")
  if not os.path.exists(os.path.join(path, "ffpp_shaped.json")):
    logging.info("building the FF++-shaped set into %s (minutes; once)", path)
    ffpp_shaped.build(path, force=os.path.exists(path))
  return path


def load_config(method: str, variant: str, stage: str | None, overrides: dict, sets: Sequence[str] = ()):
  """`configs/<method>.py:<variant>` (stage `stage`, default the first) with `overrides` (key -> value), then
  `sets` ('key=value', the value parsed as a Python literal), applied."""
  from benchmarks import method_config
  return method_config.load(method, variant, stage, [f"{k}={v!r}" for k, v in overrides.items()] + list(sets))


# ----------------------------------------------------------------------------------------------- prepared
def prepare_request(method: str, config, face_size: int = 0) -> tuple[str, str, dict, list[str]]:
  """(family, root, options, splits) that `common.data.prepare` needs for `config`'s training split."""
  from common.data import demo, prepared
  d, family = config.data, FAMILIES[method]
  splits = sorted(set(str(d.get("train_split", "train")).split("+")))
  corpus = lambda part: os.path.join(demo.ensure_demo_corpus(), part)
  if family == "faceforensics":
    options = {k: d[k] for k in prepared.FACE_OPTIONS}
    options["methods"] = tuple(d.methods)
    if face_size:
      options["face_size"] = face_size
    return family, d.root or corpus("faces"), options, splits
  if family == "video_inpainting":
    return family, d.root or corpus("video_inpainting"), {"methods": tuple(d.methods)}, splits
  if family == "image_manipulation":
    train = d.sets[d.train_split]
    if train:  # a JSON pair list or a Tp/Gt folder: the split is named after it in its parent folder
      raise ValueError("--format arrayrecord for ncl prepares the demo's sets only: pass --prepared_dir for others")
    return family, corpus("image_manipulation"), {}, splits
  if family == "inpainting_images":
    if d.train_images:
      raise ValueError("--format arrayrecord for safepaint prepares the demo's images only: pass --prepared_dir")
    return family, corpus("inpainting"), {"size": d.size, "mask_threshold": d.mask_threshold}, ["train"]
  raise ValueError(f"unknown family {family!r}")


def ensure_prepared(method: str, config, work_dir: str, workers: int, face_size: int = 0) -> tuple[str, dict | None]:
  """A prepared set for `config` under `work_dir` (named by a digest of the request), prepared when missing;
  returns its folder and, when prepared now, the preparation's summary (wall time, records/s)."""
  from common.data import prepare
  family, root, options, splits = prepare_request(method, config, face_size)
  request = json.dumps([family, os.path.abspath(root), options, splits, prepare.source_summary(root)["digest"]],
                       sort_keys=True, default=list)
  out = os.path.join(work_dir, f"{method}-{family}-{hashlib.sha1(request.encode()).hexdigest()[:12]}")
  if os.path.exists(os.path.join(out, "manifest.json")):
    return out, None
  manifest = prepare.prepare(family, root, out, splits=splits, options=options, workers=workers)
  records = sum(entry["records"] for entry in manifest["splits"].values())
  return out, {"wall_s": manifest["wall_s"], "records": records,
               "records_per_s": round(records / max(manifest["wall_s"], 1e-9), 2), "workers": workers}


# ------------------------------------------------------------------------------------------------- timing
def _cpu_seconds() -> float:
  """User + system CPU seconds of this process and its living descendants (Grain workers)."""
  import psutil
  total = 0.0
  me = psutil.Process()
  for proc in [me] + me.children(recursive=True):
    try:
      t = proc.cpu_times()
      total += t.user + t.system
    except psutil.NoSuchProcess:
      pass
  return total


def time_pipeline(task, batches: int, repeats: int, warmup: int) -> dict:
  """Times `repeats` windows of `batches` batches of `task.input_pipeline('train')`, after `warmup` batches and
  one settling window (reported, not counted: Grain workers may still hold batches read during the warm-up)."""
  start = time.perf_counter()
  iterator = iter(task.input_pipeline("train"))
  first = next(iterator)
  first_batch_s = time.perf_counter() - start
  for _ in range(max(warmup - 1, 0)):
    next(iterator)
  windows = []
  for _ in range(repeats + 1):
    cpu0, t0, examples = _cpu_seconds(), time.perf_counter(), 0
    for _ in range(batches):
      examples += len(next(iter(next(iterator).values())))  # the batch axis (SafePaint's batches have no label)
    seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    windows.append({"examples_per_s": round(examples / seconds, 2),
                    "examples_per_core_s": round(examples / max(cpu, 1e-9), 2),
                    "cores_busy": round(cpu / seconds, 2)})
  del iterator
  median = lambda key: statistics.median(w[key] for w in windows[1:])
  return {"input": {k: list(v.shape) for k, v in first.items()}, "first_batch_s": round(first_batch_s, 2),
          "examples_per_s": median("examples_per_s"), "examples_per_core_s": median("examples_per_core_s"),
          "cores_busy": median("cores_busy"), "settling_window": windows[0], "windows": windows[1:]}


def _apply(transform, record: dict, rng: np.random.Generator) -> dict:
  import grain
  if isinstance(transform, grain.transforms.RandomMap):
    return transform.random_map(record, rng)
  if isinstance(transform, grain.transforms.Map):
    return transform.map(record)
  return transform(record)


def breakdown(task, count: int, top: int) -> dict:
  """Milliseconds per record (wall, and CPU of this process) of `task.source('train')[i]` (profiled) and of each
  of its training transforms, over `count` records drawn at random (one by one, in this process)."""
  source, ops = task.source("train"), task.transforms("train")
  rng = np.random.default_rng(0)
  indices = rng.integers(0, len(source), count)
  profile = cProfile.Profile()
  wall, cpu = np.zeros(len(ops) + 1), np.zeros(len(ops) + 1)  # [read, transform 0, ...]

  def timed(k, fn, *args):
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args)
    wall[k] += time.perf_counter() - w
    cpu[k] += time.process_time() - c
    return out

  for i in indices:
    profile.enable()
    record = timed(0, source.__getitem__, int(i))
    profile.disable()
    for k, op in enumerate(ops):
      record = timed(k + 1, _apply, op, record, rng)
  stats = pstats.Stats(profile)
  total = sum(row[2] for row in stats.stats.values())  # tottime
  functions = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]
  per = lambda s: round(1000 * float(s) / count, 2)
  return {
      "records": count, "read_ms": per(wall[0]), "read_cpu_ms": per(cpu[0]),
      "read_profile": [{"function": f"{os.path.basename(path)}:{line}({name})", "ms": per(row[2]),
                        "share": round(row[2] / total, 3)} for (path, line, name), row in functions],
      "transforms_ms": {f"{k}:{type(op).__name__}": per(wall[k + 1]) for k, op in enumerate(ops)},
      "transforms_cpu_ms": {f"{k}:{type(op).__name__}": per(cpu[k + 1]) for k, op in enumerate(ops)},
      "total_ms": per(wall.sum()), "total_cpu_ms": per(cpu.sum()),
  }


def run(method: str, variant: str = "paper", *, stage: str | None = None, data_format: str = "folder",
        workers: int = 0, read_threads: int | None = None, batch_size: int | None = None, batches: int = 10,
        repeats: int = 3, warmup: int = -1, prefetch: int = -1, data_root: str = "", ffpp_shaped_dir: str = "",
        prepared_dir: str = "", work_dir: str = "", prepare_workers: int = 0, face_size: int = 0,
        sets: tuple[str, ...] = (), breakdown_records: int = 0, top: int = 8) -> dict:
  """The benchmark (see the module docstring); returns the JSON line's fields."""
  from common.data import demo
  from common.train import config as config_lib
  if batches < 1 or repeats < 1:
    raise ValueError(f"--batches and --repeats must be >= 1, got {batches} and {repeats}")
  overrides = data_overrides(method, variant, data_root, ffpp_shaped_dir)
  overrides["data.worker_count"] = workers
  if read_threads is not None:
    overrides["data.read_threads"] = read_threads
  if batch_size:
    overrides["global_batch_size"] = batch_size
  config = load_config(method, variant, stage, overrides, list(sets))
  d = config.data
  if prefetch != 0:
    d.prefetch = d.read_threads if prefetch < 0 else prefetch
  if warmup < 0:
    warmup = 1 + ((d.prefetch or 16) + 1) * max(1, workers)  # + each worker's output buffer
  line = {"method": method, "config": variant, "stage": stage, "format": data_format, "workers": workers,
          "read_threads": d.read_threads, "prefetch": d.prefetch, "batch_size": config.global_batch_size,
          "warmup": warmup, "batches": batches}
  if data_format == "arrayrecord":
    # Imported here, once: the prepared sources import it lazily from several read threads at once, a race that
    # can deadlock in etils' lazy imports (a Grain worker process may still hit it: --read_threads 1 avoids it).
    import tensorflow_datasets  # noqa: F401
    preparation = None
    if not prepared_dir:
      work_dir = work_dir or os.path.join(demo.default_cache_root(), "input_bench")
      prepared_dir, preparation = ensure_prepared(method, config, work_dir, prepare_workers, face_size)
    config.data.format, config.data.prepared_dir = "arrayrecord", prepared_dir
    line.update(prepared_dir=prepared_dir, **({"prepare": preparation} if preparation else {}))
  else:
    line["data_root"] = config.data.get("root", "") or "(the config's)"
  t0 = time.perf_counter()
  task = config_lib.build_task(config)
  line.update(records=len(task.source("train")), setup_s=round(time.perf_counter() - t0, 2))
  load_before = os.getloadavg()[0]
  line.update(time_pipeline(task, batches, repeats, warmup))
  line.update(cpu_count=os.cpu_count(), load_average=[round(load_before, 2), round(os.getloadavg()[0], 2)])
  if breakdown_records:
    line["breakdown"] = breakdown(task, breakdown_records, top)
  return line


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if f.method is None:
    raise app.UsageError("--method is required")
  from common.data.readers import DataError
  try:
    line = run(f.method, f.config, stage=f.stage, data_format=f.format, workers=f.workers,
               read_threads=f.read_threads, batch_size=f.batch_size, batches=f.batches, repeats=f.repeats,
               warmup=f.warmup, prefetch=f.prefetch, data_root=f.data_root, ffpp_shaped_dir=f.ffpp_shaped_dir,
               prepared_dir=f.prepared_dir, work_dir=f.work_dir, prepare_workers=f.prepare_workers,
               face_size=f.face_size,
               sets=tuple(f.set), breakdown_records=f.breakdown, top=f.top)
  except (ValueError, DataError, FileNotFoundError, RuntimeError) as e:  # bad flags or data, a failed build
    sys.exit(f"error: {e}")
  print(json.dumps(line), flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
