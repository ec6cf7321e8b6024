"""Runs an ablation sweep and writes one table.

  python -m ncl_jax.sweep --sweep=configs/sweeps/ncl_ablation.py --base=configs/ncl.py:smoke --workdir=DIR
      [--only=full,single_branch] [--set=total_steps=100 ...]

Each entry of the sweep's `get_sweep()` (name, {dotted.key: value}) is applied over the base config and trained and
evaluated in DIR/<name> (a finished run is only re-evaluated, so a rerun resumes the sweep). The final eval
metrics go to DIR/ablation.md (markdown) and DIR/ablation.csv, one row per run.
"""
from __future__ import annotations

import importlib.util
import os

from absl import app, flags, logging

from common import tables
from common.train import config as config_lib
from common.train import loop

COLUMNS = ("pixel_f1", "pixel_f1_permuted", "pixel_best_f1", "pixel_iou", "pixel_auc")


def load_module(path: str):
  spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
  if spec is None:
    raise FileNotFoundError(f"cannot import {path}")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def base_config(spec: str):
  """`path.py:arg` -> that file's get_config(arg)."""
  path, _, arg = spec.partition(":")
  return load_module(path).get_config(arg)


def apply_overrides(config, overrides: dict):
  config = config.copy_and_resolve_references()
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise KeyError(f"override {key!r}: the config has no field {leaf!r}")
    node[leaf] = value
  return config


def write_table(rows: list[tuple[str, dict]], workdir: str) -> tuple[str, str]:
  """Writes DIR/ablation.md and DIR/ablation.csv; returns their paths."""
  return tables.write([{"run": name, **metrics} for name, metrics in rows], ("run",) + COLUMNS,
                      os.path.join(workdir, "ablation"))


def run_sweep(sweep_path: str, config, workdir: str, only: tuple[str, ...] = ()) -> list[tuple[str, dict]]:
  entries = load_module(sweep_path).get_sweep()
  unknown = set(only) - {name for name, _ in entries}
  if unknown:
    raise ValueError(f"--only names {sorted(unknown)} are not in {sweep_path}")
  rows = []
  for name, overrides in entries:
    if only and name not in only:
      continue
    logging.info("sweep run %s: %s", name, overrides)
    rows.append((name, loop.run(apply_overrides(config, overrides), os.path.join(workdir, name))))
  write_table(rows, workdir)
  return rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  config = config_lib.apply_overrides(base_config(f.base), f.set)
  run_sweep(f.sweep, config, f.workdir, tuple(n for n in f.only.split(",") if n))
  with open(os.path.join(f.workdir, "ablation.md"), encoding="utf-8") as table:
    print(table.read())


if __name__ == "__main__":
  flags.DEFINE_string("sweep", None, "Sweep file with get_sweep().", required=True)
  flags.DEFINE_string("base", None, "Base config, path.py:variant.", required=True)
  flags.DEFINE_string("workdir", None, "Sweep directory (one run per entry, and the table).", required=True)
  flags.DEFINE_string("only", "", "Comma-separated entry names to run (default: all).")
  flags.DEFINE_multi_string("set", [], "Base-config overrides key=python_literal, e.g. total_steps=100.")
  from common.train import tool
  tool.run_tool(main, lambda: os.path.join(flags.FLAGS.workdir, "logs") if flags.FLAGS.workdir else None)
