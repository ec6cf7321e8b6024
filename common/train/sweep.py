"""Runs a sweep of any method and writes one table.

  python -m common.train.sweep --sweep=configs/sweeps/NAME.py --base=configs/METHOD.py:VARIANT --workdir=DIR
      [--only=a,b] [--eval_sets [--metrics=image_auc,pixel_f1]] [--set=KEY=VALUE ...]

A sweep file's `get_sweep()` (or `get_sweep(config)`, given the base config) returns [(name, {dotted.key:
value}), ...]. Each entry is applied over the base config (with the `--set` overrides; a key the config lacks is
an error) and trained and evaluated in DIR/<name>: a finished run is only re-evaluated, so a rerun resumes the
sweep. With `--eval_sets` each run's final stage is then evaluated on every set of its config's `eval_sets`
(`common.train.evaluate`, tables in DIR/<name>/evaluation) and its row holds those metrics as `<set>/<metric>`
(only the `--metrics` named) instead of the training run's final evaluation: a train-on-one / test-on-each
matrix, such as MSCCNet's cross-manipulation table, is one sweep. DIR/sweep.md and DIR/sweep.csv get one row per
run and a column for every metric the rows hold; in the markdown each column's best value is bold (the
lowest for the metrics `LOWER_IS_BETTER` names: losses and errors, the highest for the others). DIR/sweep.png
beside them: one bar panel per metric column, one bar per run, each panel's best run highlighted.
"""
from __future__ import annotations

import importlib.util
import inspect
import os
import re
from typing import Sequence

from common import plots, tables
from common.train import config as config_lib
from common.train import evaluate, loop

LOWER_IS_BETTER = re.compile(r"(^|[_/])(loss|l1|l2|mse|mae|error|fid|lpips|eer)(_|$)")


def load_module(path: str):
  """The Python file `path` as a module (a sweep file, a config file)."""
  spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
  if spec is None or not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such Python file")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def base_config(spec: str):
  """'path.py:variant' -> that file's get_config(variant)."""
  path, _, arg = spec.partition(":")
  return load_module(path).get_config(arg)


def entry_config(config, overrides: dict):
  """A copy of `config` with a sweep entry's {dotted.key: value} set; a key the config lacks is a KeyError."""
  config = config.copy_and_resolve_references()
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise KeyError(f"sweep entry override {key!r}: the config has no field {leaf!r}")
    node[leaf] = value
  return config


def _best(metrics) -> dict[str, str]:
  return {k: "min" if LOWER_IS_BETTER.search(k) else "max" for k in metrics}


def write_table(rows: list[tuple[str, dict]], workdir: str) -> tuple[str, str]:
  """DIR/sweep.md and DIR/sweep.csv (see the module docstring); returns their paths."""
  metrics = sorted({k for _, m in rows for k in m})
  return tables.write([{"run": name, **m} for name, m in rows], ["run", *metrics], os.path.join(workdir, "sweep"),
                      _best(metrics))


def write_plot(rows: list[tuple[str, dict]], workdir: str) -> str:
  """DIR/sweep.png: one bar panel per metric column (a run without it: no bar), the best run's bar highlighted
  (lowest or highest, as in the table); returns its path."""
  metrics = sorted({k for _, m in rows for k in m})
  panels = {k: {name: m[k] for name, m in rows if k in m} for k in metrics}
  return plots.bar_panels(panels, os.path.join(workdir, "sweep.png"), best=_best(metrics),
                          title=os.path.basename(os.path.abspath(workdir)))


def entries(sweep_path: str, config) -> list[tuple[str, dict]]:
  """The sweep file's entries: `get_sweep()`, or `get_sweep(config)` when it takes the base config."""
  get_sweep = load_module(sweep_path).get_sweep
  return get_sweep(config) if inspect.signature(get_sweep).parameters else get_sweep()


def eval_set_metrics(config, run_dir: str, metrics: Sequence[str] = ()) -> dict[str, float]:
  """{'<set>/<metric>': value} of the final stage of the run in `run_dir` on each of `config.eval_sets` (only
  the `metrics` named, if any), its tables written to <final stage>/evaluation."""
  if not config.eval_sets:
    raise ValueError("--eval_sets: the base config has no eval_sets")
  final_dir = config_lib.stage_configs(config, run_dir)[-1][2]
  summary = evaluate.evaluate_run(final_dir)
  unknown = set(metrics) - {k for m in summary["sets"].values() for k in m}
  if unknown:
    raise ValueError(f"--metrics {sorted(unknown)}: the evaluation sets report "
                     f"{sorted({k for m in summary['sets'].values() for k in m})}")
  return {f"{name}/{k}": v for name, m in summary["sets"].items() for k, v in m.items() if not metrics or k in metrics}


def run_sweep(sweep_path: str, config, workdir: str, only: tuple[str, ...] = (), *, eval_sets: bool = False,
              metrics: Sequence[str] = ()) -> list[tuple[str, dict]]:
  """Trains and evaluates each entry (or those in `only`) in DIR/<name>; returns [(name, metrics)]: the final
  metrics, or with `eval_sets` those of every evaluation set (`eval_set_metrics`)."""
  sweep_entries = entries(sweep_path, config)
  unknown = set(only) - {name for name, _ in sweep_entries}
  if unknown:
    raise ValueError(f"--only names {sorted(unknown)} are not in {sweep_path}")
  rows = []
  for name, overrides in sweep_entries:
    if not only or name in only:
      run_config, run_dir = entry_config(config, overrides), os.path.join(workdir, name)
      final = loop.run(run_config, run_dir)
      rows.append((name, eval_set_metrics(run_config, run_dir, metrics) if eval_sets else final))
  write_table(rows, workdir)
  write_plot(rows, workdir)
  return rows


def main(argv):
  from absl import flags
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments {argv[1:]}")
  f = flags.FLAGS
  for name in ("sweep", "base", "workdir"):
    if not f[name].value:
      raise ValueError(f"--{name} is required")
  config = config_lib.apply_overrides(base_config(f.base), f.set)
  run_sweep(f.sweep, config, f.workdir, tuple(n for n in f.only if n), eval_sets=f.eval_sets,
            metrics=tuple(m for m in f.metrics if m))
  with open(os.path.join(f.workdir, "sweep.md"), encoding="utf-8") as table:
    print(table.read(), end="")


if __name__ == "__main__":
  from absl import flags

  from common.train import tool
  flags.DEFINE_string("sweep", "", "sweep file with get_sweep()")
  flags.DEFINE_string("base", "", "base config, path.py:variant")
  flags.DEFINE_string("workdir", "", "sweep directory (one run per entry, and the table)")
  flags.DEFINE_list("only", [], "entry names to run (default: all)")
  flags.DEFINE_bool("eval_sets", False, "rows hold each run's metrics on the config's eval_sets, '<set>/<metric>'")
  flags.DEFINE_list("metrics", [], "with --eval_sets, the metrics kept (default: all)")
  flags.DEFINE_multi_string("set", [], "base-config override KEY=VALUE (the value parsed as a Python literal)")
  tool.run_tool(main, lambda: os.path.join(flags.FLAGS.workdir, "logs") if flags.FLAGS.workdir else None)
