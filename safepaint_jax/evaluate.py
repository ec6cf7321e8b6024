"""Inpainting quality of a SafePaint run against its own untrained generator, per hole-ratio bin.

  python -m safepaint_jax.evaluate --workdir=RUN_DIR [--step=N] [--out=RUN_DIR/quality.md]

Evaluates the run's checkpoint (default: latest) and a fresh initialisation of the same config (the run's seed)
on its evaluation split with the task's metrics (PSNR / SSIM / L1 of the final composite, stage-1 PSNR, each
per hole-ratio bin), and writes a markdown table (trained vs untrained) next to a JSON copy.
"""
from __future__ import annotations

import json
import os

import jax

from common.data import masks as mask_lib
from common.train import checkpoint as ckpt_lib
from common.train import loop
from safepaint_jax.task import bin_name


def untrained_metrics(config) -> dict[str, float]:
  """Eval metrics of `config`'s task at its initialisation (seed `config.seed`)."""
  task, mesh, batch_sh, _, state_sh = loop.sharded_setup(config)
  with jax.set_mesh(mesh):
    state = jax.jit(task.init, out_shardings=state_sh)(task.key(config.seed))
    eval_step = jax.jit(task.eval_step, in_shardings=(state_sh, batch_sh))
    return loop.evaluate(task, eval_step, state, batch_sh, config.eval_split)


def compare(workdir: str, step: int | None = None) -> dict[str, dict[str, float]]:
  with ckpt_lib.Run(workdir) as run_dir:
    step = run_dir.latest_step() if step is None else step
    config = run_dir.config(step)
  return {f"trained (step {step})": loop.evaluate_checkpoint(config, workdir, step),
          "untrained": untrained_metrics(config)}


def table(results: dict[str, dict[str, float]]) -> str:
  rows = [("all", "")] + [(f"{lo:.0%}-{hi:.0%}", f"_hole_{bin_name(lo, hi)}") for lo, hi in mask_lib.HOLE_RATIO_BINS]
  names = list(results)
  head = "| holes | " + " | ".join(f"{n} PSNR / SSIM / L1" for n in names) + " |"
  lines = [head, "|---|" + "---|" * len(names)]
  for label, suffix in rows:
    cells = [" / ".join(f"{results[n][f'{m}{suffix}']:.{p}f}" for m, p in (("psnr", 2), ("ssim", 4), ("l1", 4)))
             for n in names]
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  stage1 = ", ".join(f"{n}: {results[n]['psnr_stage1']:.2f} dB" for n in names)
  return "\n".join(lines) + f"\n\nStage-1 composite PSNR: {stage1}\n"


def main(argv) -> None:
  from absl import flags
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  results = compare(f.workdir, None if f.step < 0 else f.step)
  out = f.out or os.path.join(f.workdir, "quality.md")
  text = table(results)
  with open(out, "w", encoding="utf-8") as fh:
    fh.write(text)
  with open(os.path.splitext(out)[0] + ".json", "w", encoding="utf-8") as fh:
    json.dump(results, fh, indent=1)
  print(text)


if __name__ == "__main__":
  from absl import flags

  flags.DEFINE_string("workdir", None, "SafePaint run directory.", required=True)
  flags.DEFINE_integer("step", -1, "Checkpoint step (-1: latest).")
  flags.DEFINE_string("out", "", "Markdown table path (default WORKDIR/quality.md).")
  from common.train import tool
  tool.run_tool(main, lambda: os.path.join(flags.FLAGS.workdir, "logs") if flags.FLAGS.workdir else None)
