"""Evaluates a run's checkpoint and writes one table per evaluation set or split; it never trains.

  python -m common.train.evaluate --workdir=RUN [--step=N] [--eval_sets=a,b | --splits=test,val] [--out=DIR]
      [--set=KEY=VALUE ...]

RUN is a run directory: for a two-stage method, the stage to evaluate (RUN/stage2). The config stored with the
checkpoint (default: the newest readable) is read back, marked finished (no epoch counting, no `init_from`: the
training set need not be present), and each `--set` override is applied, e.g. `--set data.root=/data/copy` or
`--set data.format=arrayrecord --set data.prepared_dir=/prepared/ffpp_c40`. The checkpoint is restored onto this
host's devices, whatever mesh trained it, and evaluated with the method's own evaluation metrics on
  * each of the config's `eval_sets` (or those `--eval_sets` names): the config with that set's fields in place
    (`config.eval_set_config`), on the set's `eval_split`;
  * else on each of `--splits` (default: the config's `eval_split`) of the training data's reader.

Written to DIR (default RUN/evaluation): `<set or split>.md` and `.csv`, one row (set, step, every metric);
`evaluation.md` and `.csv`, one row per set; and `evaluation.json` ({workdir, step, sets: {name: metrics},
overrides, code}). The run directory's checkpoints are only read: no lock is taken, so a training run may be live
in it.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import ml_collections

from common import tables
from common.train import checkpoint as ckpt_lib
from common.train import config as config_lib
from common.train import loop, provenance, weights


def run_config(workdir: str, step: int | None = None, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The config a run's checkpoint is evaluated under: the one stored with it (step `step`, default the newest
  readable), as a finished final stage (`weights.final_stage_config`), with each `--set` override applied. A
  multi-stage root (stage folders with checkpoints, none of its own) is a FileNotFoundError naming the stages."""
  stages = sorted(d for d in (os.listdir(workdir) if os.path.isdir(workdir) else ())
                  if os.path.isdir(os.path.join(workdir, d, "checkpoints")))
  if stages and not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise FileNotFoundError(f"{workdir}: a multi-stage run; pass the stage to evaluate: "
                            + " or ".join(os.path.join(workdir, d) for d in stages))
  with ckpt_lib.Run(workdir) as run_dir:
    stored = run_dir.config(step)
  return config_lib.apply_overrides(weights.final_stage_config(stored), overrides)


def targets(config: ml_collections.ConfigDict, eval_sets: Sequence[str] = (), splits: Sequence[str] = (),
            default_splits: Sequence[str] = ()) -> list[tuple[ml_collections.ConfigDict, dict[str, str]]]:
  """What to evaluate, as [(config, {set name: split})], one checkpoint restore and compilation per entry: each of
  `eval_sets` (default, without `splits`: all of `config.eval_sets`) under its own config
  (`config.eval_set_config`), on its `eval_split`, sets whose configs differ in `eval_split` alone sharing an
  entry; else one entry, `config` on each of `splits` (default: `default_splits`, else `eval_split`)."""
  if eval_sets and splits:
    raise ValueError("give --eval_sets or --splits, not both")
  if eval_sets or (config.eval_sets and not splits):
    groups: dict[str, tuple[ml_collections.ConfigDict, dict[str, str]]] = {}
    for name in eval_sets or sorted(config.eval_sets):
      set_config = config_lib.eval_set_config(config, name)
      key = json.dumps({k: v for k, v in config_lib.flatten(set_config).items() if k != "eval_split"},
                       sort_keys=True, default=str)
      groups.setdefault(key, (set_config, {}))[1][name] = set_config.eval_split
    return list(groups.values())
  return [(config, {s: s for s in list(splits) or list(default_splits) or [config.eval_split]})]


def evaluate_run(workdir: str, out: str = "", *, step: int | None = None, eval_sets: Sequence[str] = (),
                 splits: Sequence[str] = (), overrides: Sequence[str] = ()) -> dict:
  """Evaluates `workdir`'s checkpoint (see the module docstring); returns what `evaluation.json` holds, plus
  `table` (the path of `evaluation.md`)."""
  if eval_sets and splits:
    raise ValueError("give --eval_sets or --splits, not both")
  config = run_config(workdir, step, overrides)
  results = {}
  for target_config, names in targets(config, eval_sets, splits):
    step, metrics = loop.evaluate_checkpoint_splits(target_config, workdir, list(names.values()), step)
    results.update({name: metrics[split] for name, split in names.items()})
  out = out or os.path.join(workdir, "evaluation")
  columns = sorted({k for m in results.values() for k in m})
  rows = [{"set": name, "step": step, **m} for name, m in results.items()]
  for row in rows:
    tables.write([row], ("set", "step", *sorted(results[row["set"]])), os.path.join(out, row["set"]))
  md, _ = tables.write(rows, ("set", "step", *columns), os.path.join(out, "evaluation"))
  summary = {"workdir": os.path.abspath(workdir), "step": step, "sets": results, "overrides": list(overrides),
             "code": provenance.code_version()}
  with open(os.path.join(out, "evaluation.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=1)
  return {**summary, "table": md}


def main(argv):
  from absl import flags
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments {argv[1:]}")
  f = flags.FLAGS
  if not f.workdir:
    raise ValueError("--workdir is required")
  summary = evaluate_run(f.workdir, f.out, step=f.step, eval_sets=f.eval_sets, splits=f.splits, overrides=f.set)
  with open(summary["table"], encoding="utf-8") as table:
    print(table.read(), end="")


if __name__ == "__main__":
  from absl import flags

  from common.train import tool
  flags.DEFINE_string("workdir", "", "run directory (a two-stage run: the stage to evaluate, e.g. RUN/stage2)")
  flags.DEFINE_integer("step", None, "checkpoint step (default: the newest readable)")
  flags.DEFINE_list("eval_sets", [], "evaluation sets of the config's eval_sets (default: all of them)")
  flags.DEFINE_list("splits", [], "splits of the training data's reader, when the config has no eval_sets "
                                  "(default: its eval_split)")
  flags.DEFINE_string("out", "", "output folder (default: WORKDIR/evaluation)")
  flags.DEFINE_multi_string("set", [], "config override KEY=VALUE (the value parsed as a Python literal)")
  tool.run_tool(main, lambda: os.path.join(flags.FLAGS.out or os.path.join(flags.FLAGS.workdir, "evaluation"), "logs")
                if flags.FLAGS.workdir else None)
