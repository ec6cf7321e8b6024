"""Runs a sweep of any method and writes one table.

  python -m common.train.sweep --sweep=configs/sweeps/NAME.py --base=configs/METHOD.py:VARIANT --workdir=DIR
      [--only=a,b] [--set=KEY=VALUE ...]

A sweep file's `get_sweep()` returns [(name, {dotted.key: value}), ...]. Each entry is applied over the base
config (with the `--set` overrides; a key the config lacks is an error) and trained and evaluated in DIR/<name>:
a finished run is only re-evaluated, so a rerun resumes the sweep. DIR/sweep.md and DIR/sweep.csv get one row per
run and a column for every final metric the runs return; in the markdown each column's best value is bold (the
lowest for the metrics `LOWER_IS_BETTER` names: losses and errors, the highest for the others).
"""
from __future__ import annotations

import importlib.util
import os
import re

from common import tables
from common.train import config as config_lib
from common.train import loop

LOWER_IS_BETTER = re.compile(r"(^|_)(loss|l1|l2|mse|mae|error|fid|lpips|eer)(_|$)")


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


def write_table(rows: list[tuple[str, dict]], workdir: str) -> tuple[str, str]:
  """DIR/sweep.md and DIR/sweep.csv (see the module docstring); returns their paths."""
  metrics = sorted({k for _, m in rows for k in m})
  best = {k: "min" if LOWER_IS_BETTER.search(k) else "max" for k in metrics}
  return tables.write([{"run": name, **m} for name, m in rows], ["run", *metrics], os.path.join(workdir, "sweep"),
                      best)


def run_sweep(sweep_path: str, config, workdir: str, only: tuple[str, ...] = ()) -> list[tuple[str, dict]]:
  """Trains and evaluates each entry (or those in `only`) in DIR/<name>; returns [(name, final metrics)]."""
  entries = load_module(sweep_path).get_sweep()
  unknown = set(only) - {name for name, _ in entries}
  if unknown:
    raise ValueError(f"--only names {sorted(unknown)} are not in {sweep_path}")
  rows = []
  for name, overrides in entries:
    if not only or name in only:
      rows.append((name, loop.run(entry_config(config, overrides), os.path.join(workdir, name))))
  write_table(rows, workdir)
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
  run_sweep(f.sweep, config, f.workdir, tuple(n for n in f.only if n))
  with open(os.path.join(f.workdir, "sweep.md"), encoding="utf-8") as table:
    print(table.read(), end="")


if __name__ == "__main__":
  from absl import flags

  from common.train import tool
  flags.DEFINE_string("sweep", "", "sweep file with get_sweep()")
  flags.DEFINE_string("base", "", "base config, path.py:variant")
  flags.DEFINE_string("workdir", "", "sweep directory (one run per entry, and the table)")
  flags.DEFINE_list("only", [], "entry names to run (default: all)")
  flags.DEFINE_multi_string("set", [], "base-config override KEY=VALUE (the value parsed as a Python literal)")
  tool.run_tool(main, lambda: os.path.join(flags.FLAGS.workdir, "logs") if flags.FLAGS.workdir else None)
