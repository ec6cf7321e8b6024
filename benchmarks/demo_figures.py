"""Demo figures anyone can regenerate: a method's demo over several seeds, with the provenance that decides them.

  python -m benchmarks.demo_figures --method msccnet --out DIR [--seeds 866,1,2] [--variant demo]
                                    [--step_time_steps 10] [--corpus CORPUS_DIR] [--config.KEY=VALUE ...]

For each seed it runs the README's command as a subprocess, exactly as a user runs it:

  python -m <method>_jax.main --config=configs/<method>.py:<variant> --workdir=DIR/seed_<S> --config.seed=<S>
      [--config.KEY=VALUE ...]

and reads the eval lines of the run's `metrics.jsonl` (`{"step": 800, "eval/pixel_f1": ...}`; a multi-stage run's
`<stage>/metrics.jsonl`, its metrics prefixed `<stage>:`). It then writes `DIR/figures.json` and `DIR/figures.md`:
per seed the eval metrics at every eval step, the wall time of the command and its median logged train steps/s;
per metric the mean, standard deviation (n-1), min and max over the seeds. With them, what decides the numbers:

- the commit (`git rev-parse HEAD`) and whether the tree was dirty (the changed paths are listed);
- the library versions (jax, jaxlib, flax, optax, orbax, grain, numpy, OpenCV, scikit-image, scikit-video,
  imageio, ...) and Python;
- the corpus: the sha256 of its `manifest.json`, and of its file table alone (paths and per-file sha256: equal
  for byte-identical corpora whose manifests differ only in the recorded generator library versions), and
  whether it is byte-identical to a fresh build made now (`--no-verify_corpus` skips that build): a cache built
  by older generator code or another OpenCV is not what a user's first run builds;
- the machine: CPU model, the cores this process may use, the vector ISA (XLA's CPU code depends on it), and the
  environment variables that change XLA's numerics (`XLA_FLAGS`, ...);
- the train-step harness's time on this machine in the same invocation (`python -m benchmarks.train_step --method
  M --config <variant>`, median of `--step_time_steps` steps), so a user scales the wall times to their machine:
  wall time ~ (their step time / this step time) x this wall time.

Why seeds and not one run: on CPU a run is bit-reproducible only on the same CPU ISA, the same number of cores
and the same device count. XLA's CPU reductions are split by thread count and vectorised per ISA, and `rbg`
random bits depend on the sharding. The first step's loss then differs in the last bit, and a few AdamW steps
turn that into another trajectory: the spread over seeds is the spread a user sees. See benchmarks/RESULTS.md,
"Demo figures over seeds".

A seed whose `DIR/seed_<S>/run.json` exists (a finished run) is not run again, so an interrupted invocation can be
repeated; delete that folder to rerun the seed. An interrupted seed resumes from its last checkpoint (the README
command resumes), and its record says `resumed: true`: its wall time then covers only the resumed part. The
corpus is built (or found) before the first seed, so its build time is not in any run's wall time. `--corpus`
names the corpus whose manifest is recorded when the overrides point the method at another corpus than the cached
one (default: the corpus holding a `--config.data.root` override, else the cached demo corpus).
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.util
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time

from common.train import provenance

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("vilocal", "msccnet", "ncl", "safepaint", "delocate")
# Environment variables that change what XLA computes or on how many threads / devices.
NUMERIC_ENV = ("XLA_FLAGS", "JAX_PLATFORMS", "JAX_ENABLE_X64", "JAX_DEFAULT_MATMUL_PRECISION", "OMP_NUM_THREADS",
               "TF_CPP_MIN_LOG_LEVEL", "JAX_FORENSICS_CACHE", "JAX_COMPILATION_CACHE_DIR")
_ISA_FLAGS = re.compile(r"^(sse4_2|avx|avx2|fma|f16c|avx512\w*|amx\w*|avx_vnni)$")


# ----------------------------------------------------------------------------------------------- provenance

def cpu_info(cpuinfo: str = "/proc/cpuinfo") -> dict:
  """CPU model, logical CPUs of the machine and of this process, and the vector-ISA flags."""
  model, flags = platform.processor() or platform.machine(), []
  try:
    with open(cpuinfo, encoding="utf-8", errors="replace") as f:
      text = f.read()
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                  if line.startswith("model name")), model)
    flag_line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    flags = sorted(f for f in flag_line.split(":", 1)[-1].split() if _ISA_FLAGS.match(f))
  except OSError:
    pass
  usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return {"model": model, "machine": platform.machine(), "logical_cpus": os.cpu_count(), "usable_cpus": usable,
          "isa_flags": flags, "kernel": platform.release()}


def corpus_digest(corpus_dir: str) -> dict:
  """sha256 of `<corpus_dir>/manifest.json` and of its file table, with the manifest's version and scale."""
  path = os.path.join(corpus_dir, "manifest.json")
  with open(path, "rb") as f:
    raw = f.read()
  manifest = json.loads(raw)
  files = manifest.get("files", {})
  table = "".join(f"{name}\t{entry['sha256']}\n" for name, entry in sorted(files.items()))
  return {
      "path": os.path.abspath(corpus_dir),
      "manifest_sha256": hashlib.sha256(raw).hexdigest(),
      "files_sha256": hashlib.sha256(table.encode()).hexdigest(),
      "version": manifest.get("version"), "scale": manifest.get("scale"), "seed": manifest.get("seed"),
      "num_files": manifest.get("num_files"),
      "generator_libraries": manifest.get("generator_libraries", {}),
  }


def verify_corpus(corpus_dir: str) -> dict:
  """Builds the corpus afresh (same seed and scale, this code, these libraries) into a temporary folder and
  compares its file table with `corpus_dir`'s: a cache built by other generator code or other library versions
  (the demo corpus's bytes depend on OpenCV's version) shows up as differing files."""
  import tempfile  # pylint: disable=g-import-not-at-top
  from common.data import demo  # pylint: disable=g-import-not-at-top
  cached = demo.load_manifest(corpus_dir)
  if cached.get("scale") not in demo.SCALES:
    return {"checked": False, "reason": f"scale {cached.get('scale')!r} is not a demo scale"}
  start = time.perf_counter()
  with tempfile.TemporaryDirectory(prefix="demo_figures_corpus_") as tmp:
    fresh = demo.build(os.path.join(tmp, "corpus"), seed=int(cached.get("seed", demo.DEFAULT_SEED)),
                       scale=cached["scale"])
  old, new = cached.get("files", {}), fresh["files"]
  differing = sorted(name for name in set(old) | set(new) if old.get(name) != new.get(name))
  return {"checked": True, "identical": not differing, "differing_files": len(differing),
          "examples": differing[:5], "fresh_version": fresh["version"], "build_s": time.perf_counter() - start}


def find_corpus(passthrough: list[str], explicit: str | None) -> str:
  """The corpus whose manifest is recorded: `explicit`, else the one holding a `--config.data.root` override,
  else the cached demo corpus (built now if absent, so no run's wall time includes the build)."""
  if explicit:
    return explicit
  for arg in passthrough:
    key, _, value = arg.partition("=")
    if key == "--config.data.root" and value:
      folder = os.path.abspath(value)
      while True:
        if os.path.isfile(os.path.join(folder, "manifest.json")):
          return folder
        parent = os.path.dirname(folder)
        if parent == folder:
          raise FileNotFoundError(f"no manifest.json in {value} or above it: pass --corpus")
        folder = parent
  from common.data import demo  # pylint: disable=g-import-not-at-top
  return demo.ensure_demo_corpus()


def _load_average() -> list[float] | None:
  """1/5/15-minute load averages: above the core count, other processes shared the CPU and inflated the times."""
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return None


# ----------------------------------------------------------------------------------------------- the runs

def load_config(method: str, variant: str):
  path = os.path.join(REPO_ROOT, "configs", f"{method}.py")
  spec = importlib.util.spec_from_file_location(f"configs_{method}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def default_seeds(config_seed: int) -> list[int]:
  """The config's own seed (what the README command runs), then 1 and 2 (then 0, 3, ... where taken)."""
  seeds = [int(config_seed)]
  for s in (1, 2, 0, 3, 4):
    if len(seeds) == 3:
      break
    if s not in seeds:
      seeds.append(s)
  return seeds


def train_command(method: str, variant: str, workdir: str, seed: int, passthrough: list[str]) -> list[str]:
  return [sys.executable, "-m", f"{method}_jax.main", f"--config=configs/{method}.py:{variant}",
          f"--workdir={workdir}", f"--config.seed={seed}", *passthrough]


def read_metrics(workdir: str) -> tuple[dict[int, dict[str, float]], list[float]]:
  """({step: {metric: value}} of the eval lines, [logged steps/s]) from `workdir`'s metrics.jsonl, or from each
  stage's `<stage>/metrics.jsonl` (metrics prefixed '<stage>:') when the workdir holds none itself."""
  sources = []
  if os.path.isfile(os.path.join(workdir, "metrics.jsonl")):
    sources.append(("", os.path.join(workdir, "metrics.jsonl")))
  else:
    for name in sorted(os.listdir(workdir)):
      path = os.path.join(workdir, name, "metrics.jsonl")
      if os.path.isfile(path):
        sources.append((f"{name}:", path))
  if not sources:
    raise FileNotFoundError(f"{workdir}: no metrics.jsonl (nor <stage>/metrics.jsonl)")
  evals: dict[int, dict[str, float]] = {}
  rates: list[float] = []
  for prefix, path in sources:
    with open(path, encoding="utf-8") as f:
      for line in f:
        if not line.strip():
          continue
        record = json.loads(line)
        step = int(record.pop("step"))
        if "steps_per_sec" in record and not prefix:
          rates.append(float(record["steps_per_sec"]))
        for key, value in record.items():
          if key.startswith("eval/"):
            evals.setdefault(step, {})[prefix + key[len("eval/"):]] = float(value)
  return dict(sorted(evals.items())), rates


def run_seed(method: str, variant: str, out: str, seed: int, passthrough: list[str]) -> dict:
  """Runs (or reuses the finished run of) one seed; returns its record."""
  workdir = os.path.join(out, f"seed_{seed}")
  record_path = os.path.join(workdir, "run.json")
  if os.path.isfile(record_path):
    with open(record_path, encoding="utf-8") as f:
      record = json.load(f)
    print(f"seed {seed}: reusing the finished run in {workdir}", flush=True)
  else:
    command = train_command(method, variant, workdir, seed, passthrough)
    resumed = os.path.isdir(workdir) and any(name != "log.txt" for name in os.listdir(workdir))
    os.makedirs(workdir, exist_ok=True)
    log_path = os.path.join(workdir, "log.txt")
    print(f"seed {seed}: {shlex.join(command)}  (log: {log_path})", flush=True)
    start = time.perf_counter()
    with open(log_path, "a" if resumed else "w", encoding="utf-8") as log:
      rc = subprocess.run(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    wall = time.perf_counter() - start
    if rc:
      raise RuntimeError(f"seed {seed}: the run failed (exit {rc}); see {log_path}")
    record = {"seed": seed, "command": shlex.join(command), "wall_s": wall, "resumed": resumed,
              "load_average_end": _load_average(),
              "finished_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    with open(record_path, "w", encoding="utf-8") as f:
      json.dump(record, f, indent=1)
    print(f"seed {seed}: {wall:.0f} s", flush=True)
  evals, rates = read_metrics(workdir)
  if not evals:
    raise RuntimeError(f"seed {seed}: {workdir} logged no eval metrics")  # e.g. eval_every > total_steps
  final_step = max(evals)
  return {**record, "workdir": workdir, "eval": {str(step): m for step, m in evals.items()},
          "final_step": final_step, "final": evals[final_step],
          "train_steps_per_s_median": statistics.median(rates) if rates else None}


def harness_step_time(method: str, variant: str, steps: int, passthrough: list[str]) -> dict:
  """`python -m benchmarks.train_step --method M --config VARIANT` on this machine: its JSON record.

  `--config.KEY=VALUE` overrides travel as the harness's `--set KEY=VALUE`.
  """
  command = [sys.executable, "-m", "benchmarks.train_step", f"--method={method}", f"--config={variant}",
             f"--steps={steps}", f"--warmup={min(2, steps)}"]
  for arg in passthrough:
    key, sep, value = arg.partition("=")
    if key.startswith("--config.") and sep and key != "--config.seed":
      command += ["--set", f"{key[len('--config.'):]}={value}"]
  print(f"step time: {shlex.join(command)}", flush=True)
  done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
  lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
  printable = shlex.join(["python", *command[1:]])
  if done.returncode or not lines:  # e.g. an override the harness's single-stage config lacks: runs go on
    error = (done.stderr.strip().splitlines() or ["no output"])[-1]
    print(f"step time: the harness failed (exit {done.returncode}): {error}", flush=True)
    return {"command": printable, "error": error}
  record = json.loads(lines[-1])
  keep = ("step_s_median", "step_s_p90", "compile_s", "backend", "device_kind", "device_count", "global_batch",
          "input_shapes", "flops_per_step", "dtype")
  return {"command": printable, **{k: record.get(k) for k in keep}}


# ----------------------------------------------------------------------------------------------- summary

def summarize(values: list[float]) -> dict:
  finite = [v for v in values if v is not None and math.isfinite(v)]
  if not finite:
    return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
  return {"n": len(finite), "mean": statistics.fmean(finite),
          "std": statistics.stdev(finite) if len(finite) > 1 else 0.0, "min": min(finite), "max": max(finite)}


def summary_by_step(runs: list[dict]) -> dict[str, dict[str, dict]]:
  """{step: {metric: summary}} over the runs, for the steps and metrics every run logged."""
  steps = set.intersection(*(set(r["eval"]) for r in runs))
  out = {}
  for step in sorted(steps, key=int):
    metrics = set.intersection(*(set(r["eval"][step]) for r in runs))
    out[step] = {m: summarize([r["eval"][step][m] for r in runs]) for m in sorted(metrics)}
  return out


def _fmt(value, digits=3):
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return "-"
  return f"{value:.{digits}f}"


def _fresh_build_note(check: dict | None) -> str:
  if not check or not check.get("checked"):
    return "; not compared with a fresh build"
  if check["identical"]:
    return "; byte-identical to a fresh build made by this invocation"
  return (f"; DIFFERS from a fresh build made by this invocation in {check['differing_files']} files "
          f"(e.g. {', '.join(check['examples'][:3])}): a stale cache or other library versions")


def markdown(figures: dict) -> str:
  runs, prov = figures["runs"], figures["provenance"]
  final_step = str(max(int(r["final_step"]) for r in runs))
  lines = [f"# {figures['method']} `{figures['variant']}`: {len(runs)} seeds", "",
           f"Command: `{figures['command']}`", "",
           f"Measured {figures['finished_utc']} on {prov['cpu']['model']} ({prov['cpu']['usable_cpus']} usable of "
           f"{prov['cpu']['logical_cpus']} logical CPUs; ISA {' '.join(prov['cpu']['isa_flags']) or '?'}).", ""]
  seeds = [str(r["seed"]) for r in runs]
  final = figures["summary"].get(final_step, {})
  lines += [f"Held-out eval at step {final_step} (mean and sample std over the seeds, min-max):", "",
            "| metric | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | std | min-max |",
            "|---|" + "---|" * (len(seeds) + 3)]
  for metric, s in final.items():
    per_seed = " | ".join(_fmt(r["eval"][final_step].get(metric)) for r in runs)
    lines.append(f"| {metric} | {per_seed} | {_fmt(s['mean'])} | {_fmt(s['std'])} | "
                 f"{_fmt(s['min'])}-{_fmt(s['max'])} |")
  walls = summarize([r["wall_s"] for r in runs])
  rates = [r["train_steps_per_s_median"] for r in runs if r["train_steps_per_s_median"]]
  resumed = [str(r["seed"]) for r in runs if r.get("resumed")]
  lines += ["", f"Wall time per run (the whole command: compile, train, eval, checkpoints): "
                f"{' / '.join('%.0f s' % r['wall_s'] for r in runs)} (mean {walls['mean']:.0f} s); "
                f"median logged train steps/s {' / '.join('%.2f' % x for x in rates) or '-'}."
                + (f" Seed{'s' if len(resumed) > 1 else ''} {', '.join(resumed)} resumed an interrupted run: "
                   "the wall time covers only the resumed part." if resumed else "")]
  if len(figures["summary"]) > 1:
    lines += ["", "By eval step (mean, min-max):", "",
              "| step | " + " | ".join(final) + " |", "|---|" + "---|" * len(final)]
    for step, metrics in figures["summary"].items():
      lines.append(f"| {step} | " + " | ".join(
          f"{_fmt(metrics[m]['mean'])} ({_fmt(metrics[m]['min'])}-{_fmt(metrics[m]['max'])})" if m in metrics
          else "-" for m in final) + " |")
  harness = figures.get("step_time")
  if harness and harness.get("error"):
    lines += ["", f"Train-step harness `{harness['command']}` failed: {harness['error']}"]
  elif harness:
    lines += ["", f"Train-step harness on this machine, same invocation: `{harness['command']}`: median "
                  f"{harness['step_s_median']:.3f} s per step ({harness['device_count']} {harness['backend']} "
                  f"device(s)). Scale the wall times by your machine's harness time over this one."]
  git, corpus = prov["git"], prov["corpus"]
  dirty = f"changed: {', '.join(git['dirty_paths'][:20])}" if git.get("dirty_paths") else "clean"
  lines += ["", "Provenance:", "",
            f"- commit `{git['commit']}` ({dirty})",
            f"- corpus `{corpus['path']}` ({corpus['version']}, scale {corpus['scale']}, {corpus['num_files']} "
            f"files): manifest.json sha256 `{corpus['manifest_sha256']}`, file table sha256 "
            f"`{corpus['files_sha256']}`; built with {json.dumps(corpus['generator_libraries'], sort_keys=True)}"
            + _fresh_build_note(corpus.get("fresh_build")),
            "- libraries: " + ", ".join(f"{k} {v}" for k, v in prov["libraries"].items()),
            "- environment: " + (", ".join(f"{k}={v}" for k, v in prov["environment"].items()) or "none of "
                                 + ", ".join(NUMERIC_ENV) + " set"),
            f"- kernel {prov['cpu']['kernel']}, {prov['cpu']['machine']}; load average (1/5/15 min) "
            f"{prov.get('load_average_start')} at the start, {figures.get('load_average_end')} at the end "
            f"(above {prov['cpu']['usable_cpus']}: other processes shared the CPU and the times are inflated)"]
  return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                   epilog="Other --config.KEY=VALUE arguments go to every run (and, as --set, to "
                                          "the step-time harness).")
  parser.add_argument("--method", required=True, choices=METHODS)
  parser.add_argument("--out", required=True, help="output folder: seed_<S>/ workdirs, figures.json, figures.md")
  parser.add_argument("--variant", default="demo", help="config variant (default: demo)")
  parser.add_argument("--seeds", default="", help="comma-separated seeds (default: the config's seed, 1, 2)")
  parser.add_argument("--step_time_steps", type=int, default=10,
                      help="timed steps of the train-step harness (0: skip the harness)")
  parser.add_argument("--corpus", default=None, help="corpus folder whose manifest.json is recorded")
  parser.add_argument("--verify_corpus", action=argparse.BooleanOptionalAction, default=True,
                      help="build the corpus afresh in a temporary folder and record whether the used one is "
                           "byte-identical (default: on)")
  args, passthrough = parser.parse_known_args(argv)
  bad = [a for a in passthrough if not a.startswith("--config.")]
  if bad:
    parser.error(f"unrecognised arguments {bad} (only --config.KEY=VALUE overrides pass through)")
  if any(a.startswith("--config.seed=") for a in passthrough):
    parser.error("use --seeds, not --config.seed")
  config = load_config(args.method, args.variant)
  seeds = [int(s) for s in args.seeds.split(",") if s.strip()] or default_seeds(config.seed)
  out = os.path.abspath(args.out)
  os.makedirs(out, exist_ok=True)
  command = shlex.join(["python", "-m", "benchmarks.demo_figures", f"--method={args.method}",
                        f"--variant={args.variant}", f"--seeds={','.join(map(str, seeds))}",
                        f"--out={args.out}", *passthrough])

  corpus_dir = find_corpus(passthrough, args.corpus)
  corpus = corpus_digest(corpus_dir)
  if args.verify_corpus:
    corpus["fresh_build"] = verify_corpus(corpus_dir)
  recorded = {
      "git": provenance.code_version(), "libraries": provenance.library_versions(), "cpu": cpu_info(),
      "corpus": corpus,
      "environment": {k: os.environ[k] for k in NUMERIC_ENV if k in os.environ},
      "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "load_average_start": _load_average(),
  }
  step_time = (harness_step_time(args.method, args.variant, args.step_time_steps, passthrough)
               if args.step_time_steps > 0 else None)
  runs = [run_seed(args.method, args.variant, out, seed, passthrough) for seed in seeds]
  figures = {
      "method": args.method, "variant": args.variant, "seeds": seeds, "command": command,
      "overrides": passthrough,
      "finished_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "load_average_end": _load_average(), "provenance": recorded, "step_time": step_time, "runs": runs,
      "summary": summary_by_step(runs),
  }
  with open(os.path.join(out, "figures.json"), "w", encoding="utf-8") as f:
    json.dump(figures, f, indent=1)
  with open(os.path.join(out, "figures.md"), "w", encoding="utf-8") as f:
    f.write(markdown(figures))
  print(f"wrote {os.path.join(out, 'figures.json')} and figures.md", flush=True)
  return figures


if __name__ == "__main__":
  try:
    main(sys.argv[1:])
  except (RuntimeError, FileNotFoundError) as e:  # a failed seed (its log named), a missing corpus
    sys.exit(f"error: {e}")
