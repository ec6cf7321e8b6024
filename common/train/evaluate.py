"""Evaluates a run's checkpoint and writes one table per evaluation split; it never trains.

  python -m common.train.evaluate --workdir=RUN [--step=N] [--splits=test,val] [--out=DIR] [--set=KEY=VALUE ...]

RUN is a run directory: for a two-stage method, the stage to evaluate (RUN/stage2). The config stored with the
checkpoint (default: the newest readable) is read back, marked finished (no epoch counting, no `init_from`: the
training set need not be present), and each `--set` override is applied, e.g. `--set data.root=/data/copy` or
`--set data.format=arrayrecord --set data.prepared_dir=/prepared/ffpp_c40`. The checkpoint is restored onto this
host's devices, whatever mesh trained it, and evaluated on each split (default: the config's `eval_split`) with
the method's own evaluation metrics.

Written to DIR (default RUN/evaluation): `<split>.md` and `<split>.csv`, one row (split, step, every metric),
and `evaluation.json` ({workdir, step, splits: {split: metrics}, overrides, code}). The run directory's
checkpoints are only read: no lock is taken, so a training run may be live in it.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

from common import tables
from common.train import checkpoint as ckpt_lib
from common.train import config as config_lib
from common.train import loop, provenance, weights


def evaluate_run(workdir: str, out: str = "", *, step: int | None = None, splits: Sequence[str] = (),
                 overrides: Sequence[str] = ()) -> dict:
  """Evaluates `workdir`'s checkpoint (see the module docstring); returns what `evaluation.json` holds."""
  with ckpt_lib.Run(workdir) as run_dir:
    stored = run_dir.config(step)
  config = config_lib.apply_overrides(weights.final_stage_config(stored), overrides)
  names = list(splits) or [config.eval_split]
  evaluated, metrics = loop.evaluate_checkpoint_splits(config, workdir, names, step)
  out = out or os.path.join(workdir, "evaluation")
  for name, values in metrics.items():
    tables.write([{"split": name, "step": evaluated, **values}], ("split", "step", *sorted(values)),
                 os.path.join(out, name))
  summary = {"workdir": os.path.abspath(workdir), "step": evaluated, "splits": metrics, "overrides": list(overrides),
             "code": provenance.code_version()}
  with open(os.path.join(out, "evaluation.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=1)
  return summary


def main(argv):
  from absl import flags
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments {argv[1:]}")
  f = flags.FLAGS
  if not f.workdir:
    raise ValueError("--workdir is required")
  summary = evaluate_run(f.workdir, f.out, step=f.step, splits=f.splits, overrides=f.set)
  for name in summary["splits"]:
    with open(os.path.join(f.out or os.path.join(f.workdir, "evaluation"), f"{name}.md"), encoding="utf-8") as table:
      print(table.read(), end="")


if __name__ == "__main__":
  from absl import flags

  from common.train import tool
  flags.DEFINE_string("workdir", "", "run directory (a two-stage run: the stage to evaluate, e.g. RUN/stage2)")
  flags.DEFINE_integer("step", None, "checkpoint step (default: the newest readable)")
  flags.DEFINE_list("splits", [], "evaluation splits (default: the config's eval_split)")
  flags.DEFINE_string("out", "", "output folder (default: WORKDIR/evaluation)")
  flags.DEFINE_multi_string("set", [], "config override KEY=VALUE (the value parsed as a Python literal)")
  tool.run_tool(main, lambda: os.path.join(flags.FLAGS.out or os.path.join(flags.FLAGS.workdir, "evaluation"), "logs")
                if flags.FLAGS.workdir else None)
