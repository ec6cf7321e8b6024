"""Evaluates a run's checkpoint clean and under each level of each perturbation; writes one table and one plot.

  python -m common.train.robustness --workdir=RUN [--ops=jpeg,blur,noise,resize,h264] [--levels=OP=L1,L2 ...]
      [--eval_sets=a,b | --splits=test,val] [--metric=NAME] [--step=N] [--out=DIR] [--set=KEY=VALUE ...]

Any method (ViLocal, NCL, MSCCNet, Delocate, ...): RUN is a run directory as `common.train.evaluate` takes it (a
two-stage method's stage, e.g. RUN/stage2; a multi-stage root is an error naming its stages), read with the same
stored config and `--set` overrides, on the same sets: each of the config's `eval_sets` (or those `--eval_sets`
names), else each of `--splits` (default: its `eval_split`). Per set the checkpoint is restored and compiled
once and evaluated clean, then at each level of each op of `--ops` (default: all of `common.data.perturbations.ROBUSTNESS_LEVELS`: JPEG quality 100..50, blur
kernel 3..23, noise sigma 3..23, resize scale 0.78..0.25, H.264 CRF 18..38; `--levels=jpeg=90,50` replaces an op's
levels). The perturbation is the engine's evaluation perturbation (`Task.eval_perturbation`, i.e.
`config.data.perturbation = {op: {p: 1, <level name>: level}}`), applied after the task's own evaluation
transforms to the record's image or clip frames; noise draws from the evaluation pipeline's fixed seed, so every
number is reproducible. 'h264' needs imageio-ffmpeg. A progress line with an ETA follows each evaluation.

Written to DIR (default RUN/robustness): robustness.md and .csv (set, op, level, then every metric the method's
evaluation returns, in its order; op 'clean' with an empty level first per set), robustness.png (`--metric`
against the level: one panel per op, one line per set, the set's clean score dashed; default metric: the run's
`best_metric`, else the first pixel F1 column, else the first F1 or AUC column) and robustness.json ({workdir,
step, metric, sets, ops, levels, rows, overrides, code}). The run directory's checkpoints are only read.
"""
from __future__ import annotations

import json
import os
import time
from typing import Callable, Mapping, Sequence

import ml_collections

from common import plots, progress, tables
from common.data import perturbations
from common.train import evaluate, loop, provenance

DEFAULT_OPS = tuple(perturbations.ROBUSTNESS_LEVELS)
KEYS = ("set", "op", "level")


def parse_levels(items: Sequence[str]) -> dict[str, tuple[float, ...]]:
  """['jpeg=90,50', 'resize=0.5'] -> {'jpeg': (90, 50), 'resize': (0.5,)} (integers stay integers)."""
  out = {}
  for item in items:
    op, sep, values = item.partition("=")
    if not sep or not values:
      raise ValueError(f"--levels {item!r}: expected OP=LEVEL[,LEVEL...], e.g. jpeg=90,50")
    try:
      out[op] = tuple(float(v) if any(c in v for c in ".eE") else int(v) for v in values.split(","))
    except ValueError:
      raise ValueError(f"--levels {item!r}: levels must be numbers") from None
  return out


def conditions(ops: Sequence[str], levels: Mapping[str, Sequence[float]] | None = None
               ) -> list[tuple[str, object, dict]]:
  """[(op, level, perturbation config)]: ('clean', '', {}) first, then every level of every op, in order. An
  unknown op, or h264 without imageio-ffmpeg, is a ValueError before anything is evaluated."""
  levels = {**perturbations.ROBUSTNESS_LEVELS, **(levels or {})}
  unknown = [op for op in ops if op not in perturbations.PERTURBATIONS]
  if unknown:
    raise ValueError(f"--ops: unknown perturbations {unknown}; known: {sorted(perturbations.PERTURBATIONS)}")
  if "h264" in ops:
    try:
      perturbations.ffmpeg_exe()
    except ImportError as e:
      raise ValueError(f"--ops=h264: {e}") from e
  out = [("clean", "", {})]
  for op in ops:
    for level in levels[op]:
      out.append((op, level, perturbations.at_level(op, level)))
      perturbations.ForensicAugment(out[-1][2])  # a bad level (an even blur kernel) fails now
  return out


def default_metric(config: ml_collections.ConfigDict, columns: Sequence[str]) -> str:
  """The run's `best_metric` (without 'eval/') if the evaluation returns it, else the first pixel F1 column
  ('pixel_f1' itself first), else the first F1, then AUC, column, else the first column."""
  best = str(config.get("best_metric") or "").removeprefix("eval/")
  if best in columns:
    return best
  for match in (lambda c: c == "pixel_f1", lambda c: c.startswith("pixel_f1"), lambda c: "f1" in c,
                lambda c: "auc" in c):
    for column in columns:
      if match(column):
        return column
  return columns[0]


def sweep(workdir: str, ops: Sequence[str] = DEFAULT_OPS, levels: Mapping[str, Sequence[float]] | None = None, *,
          step: int | None = None, eval_sets: Sequence[str] = (), splits: Sequence[str] = (),
          overrides: Sequence[str] = (), metric: str = "", report: Callable[[str], None] = progress.print_line
          ) -> dict:
  """Evaluates `workdir`'s checkpoint on every set, clean and under every condition (module docstring). Returns
  {step, metric, sets: {name: split}, columns (the metric columns), rows: [{set, op, level, metrics...}]};
  `report` gets one progress line (with an ETA) per evaluation."""
  if eval_sets and splits:
    raise ValueError("give --eval_sets or --splits, not both")
  points = conditions(ops, levels)
  config = evaluate.run_config(workdir, step, overrides)
  groups = evaluate.targets(config, eval_sets, splits)
  total = sum(len(names) for _, names in groups) * len(points)
  rows, sets, columns, times, started = [], {}, [], [], time.time()
  for target_config, names in groups:
    with loop.restored_evaluator(target_config, workdir, step) as (evaluate_split, step):
      for name, split in names.items():
        sets[name] = split
        for op, level, perturbation in points:
          t = time.time()
          metrics = evaluate_split(split, perturbation)
          times.append(time.time() - t)
          if not columns:
            columns = list(metrics)
            metric = metric or default_metric(config, columns)
            if metric not in columns:
              raise ValueError(f"--metric={metric!r}: the evaluation returns {columns}")
          rows.append({"set": name, "op": op, "level": level, **metrics})
          # The first evaluation of a set includes compiling: leave it out of the rate once others exist.
          rate = sum(times[1:]) / (len(times) - 1) if len(times) > 1 else times[0]
          elapsed, eta = progress.duration(time.time() - started), progress.duration(rate * (total - len(rows)))
          report(f"[{len(rows)}/{total}] {name} {op} {level}".rstrip()
                 + f": {metric} {metrics[metric]:.4f} ({times[-1]:.1f} s; elapsed {elapsed}, ETA {eta})")
  return {"step": step, "metric": metric, "sets": sets, "columns": columns, "rows": rows}


def write_table(rows: Sequence[dict], columns: Sequence[str], out: str) -> tuple[str, str]:
  """OUT/robustness.md and OUT/robustness.csv (levels as written: 0.78, not 0.7800); returns (markdown path, CSV
  path)."""
  rows = [{**r, "level": f"{r['level']:g}" if isinstance(r["level"], (int, float)) else r["level"]} for r in rows]
  return tables.write(rows, (*KEYS, *columns), os.path.join(out, "robustness"))


def write_plot(rows: Sequence[dict], path: str, metric: str, title: str = "") -> str:
  """`metric` against the level, one panel per op, one line per set, each set's clean score dashed."""
  panels, clean = {}, {}
  for r in rows:
    if r["op"] == "clean":
      clean[r["set"]] = r[metric]
      continue
    levels, values = panels.setdefault(r["op"], {}).setdefault(r["set"], ([], []))
    levels.append(float(r["level"]))
    values.append(r[metric])
  if not panels:  # clean only: one panel with a point per set
    panels = {"clean": {name: ([0.0], [value]) for name, value in clean.items()}}
  xlabel = {op: perturbations.level_name(op) for op in panels if op in perturbations.PERTURBATIONS}
  return plots.line_panels(panels, path, ylabel=metric, xlabel=xlabel, references=clean, title=title)


def robustness_run(workdir: str, out: str = "", *, ops: Sequence[str] = DEFAULT_OPS,
                   levels: Mapping[str, Sequence[float]] | None = None, step: int | None = None,
                   eval_sets: Sequence[str] = (), splits: Sequence[str] = (), overrides: Sequence[str] = (),
                   metric: str = "", report: Callable[[str], None] = progress.print_line) -> dict:
  """`sweep`, then the table, the plot and robustness.json in OUT (default RUN/robustness); returns the summary
  (what robustness.json holds, plus `table` and `plot`: the markdown and PNG paths)."""
  result = sweep(workdir, ops, levels, step=step, eval_sets=eval_sets, splits=splits, overrides=overrides,
                 metric=metric, report=report)
  out = out or os.path.join(workdir, "robustness")
  md, _ = write_table(result["rows"], result["columns"], out)
  plot = write_plot(result["rows"], os.path.join(out, "robustness.png"), result["metric"],
                    title=f"{os.path.abspath(workdir)} (step {result['step']})")
  all_levels = {**perturbations.ROBUSTNESS_LEVELS, **(levels or {})}
  summary = {"workdir": os.path.abspath(workdir), "step": result["step"], "metric": result["metric"],
             "sets": result["sets"], "ops": list(ops), "levels": {op: list(all_levels[op]) for op in ops},
             "rows": result["rows"], "overrides": list(overrides), "code": provenance.code_version()}
  with open(os.path.join(out, "robustness.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=1)
  return {**summary, "table": md, "plot": plot}


def main(argv):
  from absl import flags
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments {argv[1:]}")
  f = flags.FLAGS
  if not f.workdir:
    raise ValueError("--workdir is required")
  summary = robustness_run(f.workdir, f.out, ops=tuple(o for o in f.ops if o), levels=parse_levels(f.levels),
                           step=f.step, eval_sets=f.eval_sets, splits=f.splits, overrides=f.set, metric=f.metric)
  with open(summary["table"], encoding="utf-8") as table:
    print(table.read(), end="")
  print(f"plot: {summary['plot']}")


if __name__ == "__main__":
  from absl import flags

  from common.train import tool
  flags.DEFINE_string("workdir", "", "run directory (a two-stage run: the stage to evaluate, e.g. RUN/stage2)")
  flags.DEFINE_list("ops", list(DEFAULT_OPS), "perturbations to sweep (of common.data.perturbations.PERTURBATIONS)")
  flags.DEFINE_multi_string("levels", [], "OP=LEVEL[,LEVEL...]: that op's levels instead of ROBUSTNESS_LEVELS'")
  flags.DEFINE_integer("step", None, "checkpoint step (default: the newest readable)")
  flags.DEFINE_list("eval_sets", [], "evaluation sets of the config's eval_sets (default: all of them)")
  flags.DEFINE_list("splits", [], "splits of the training data's reader, when the config has no eval_sets "
                                  "(default: eval_split)")
  flags.DEFINE_string("metric", "", "metric plotted (default: the run's best_metric, else the first pixel F1 "
                                    "column, else the first F1 / AUC column)")
  flags.DEFINE_string("out", "", "output folder (default: WORKDIR/robustness)")
  flags.DEFINE_multi_string("set", [], "config override KEY=VALUE (the value parsed as a Python literal)")
  tool.run_tool(main, lambda: os.path.join(flags.FLAGS.out or os.path.join(flags.FLAGS.workdir, "robustness"),
                                           "logs") if flags.FLAGS.workdir else None)
