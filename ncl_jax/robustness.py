"""Evaluates a trained NCL run on every test set, clean and under the robustness sweep; writes a table and a plot.

  python -m ncl_jax.robustness --workdir=RUN_DIR [--out=DIR] [--ops=jpeg,blur,noise] [--sets=casia1,columbia]

For each test set of the run's config (`data.test_sets`) the checkpoint (latest) is evaluated clean and with
each level of `common.data.perturbations.ROBUSTNESS_LEVELS` (JPEG quality 100..50, Gaussian blur kernel 3..23,
Gaussian noise sigma 3..23 on the 0-255 scale) applied to the test images after resizing. Written to DIR
(default RUN_DIR/robustness): robustness.csv and robustness.md (set, op, level, pixel F1 / permuted F1 /
best F1 / IoU / AUC) and robustness.png (pixel F1 against the level, one panel per op, one line per set;
matplotlib if installed, else drawn with PIL).
"""
from __future__ import annotations

import os

from absl import app, flags, logging

from common import tables
from common.data import perturbations
from common.train import checkpoint as ckpt_lib
from common.train import loop

COLUMNS = ("pixel_f1", "pixel_f1_permuted", "pixel_best_f1", "pixel_iou", "pixel_auc")
DEFAULT_OPS = ("jpeg", "blur", "noise")


def perturbation_config(op: str, level: float) -> dict:
  """A ForensicAugment config applying `op` at `level` to every image."""
  return {op: {"p": 1.0, perturbations._OP_SPECS[op].param: level}}


def sweep(workdir: str, sets=(), ops=DEFAULT_OPS, levels=None) -> list[dict]:
  """Rows {set, op, level, metrics...}: op 'clean' (level '') first, then every level of every op."""
  with ckpt_lib.Run(workdir) as run_dir:
    config = run_dir.config()
  levels = levels or perturbations.ROBUSTNESS_LEVELS
  rows = []
  for name in sets or tuple(config.data.test_sets):
    for op, level in [("clean", "")] + [(op, level) for op in ops for level in levels[op]]:
      config.data.perturbation = perturbation_config(op, level) if op != "clean" else {}
      metrics = loop.evaluate_checkpoint(config, workdir, split=name)
      logging.info("%s %s %s: %s", name, op, level, metrics)
      rows.append({"set": name, "op": op, "level": level, **{c: metrics[c] for c in COLUMNS}})
  return rows


def write_table(rows: list[dict], out: str) -> tuple[str, str]:
  """Writes OUT/robustness.csv and OUT/robustness.md; returns (CSV path, markdown path)."""
  md, csv_path = tables.write(rows, ("set", "op", "level") + COLUMNS, os.path.join(out, "robustness"))
  return csv_path, md


def _series(rows: list[dict], metric: str):
  """{op: {set: ([levels], [values])}} of the perturbed rows."""
  out = {}
  for r in rows:
    if r["op"] == "clean":
      continue
    levels, values = out.setdefault(r["op"], {}).setdefault(r["set"], ([], []))
    levels.append(float(r["level"]))
    values.append(r[metric])
  return out


def write_plot(rows: list[dict], path: str, metric: str = "pixel_f1") -> str:
  """Pixel F1 against the level, one panel per op: matplotlib when installed, else PIL."""
  series = _series(rows, metric)
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    return _pil_plot(series, path, metric)
  fig, axes = plt.subplots(1, len(series), figsize=(4 * len(series), 3.2), squeeze=False)
  for ax, (op, by_set) in zip(axes[0], series.items()):
    for name, (levels, values) in by_set.items():
      ax.plot(levels, values, marker="o", label=name)
    ax.set(title=op, xlabel="level", ylabel=metric, ylim=(0, 1))
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def _pil_plot(series, path: str, metric: str) -> str:
  from PIL import Image, ImageDraw
  colors = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
  pw, ph, m = 320, 240, 36
  image = Image.new("RGB", (pw * max(len(series), 1), ph), "white")
  draw = ImageDraw.Draw(image)
  for i, (op, by_set) in enumerate(series.items()):
    x0 = i * pw
    draw.rectangle([x0 + m, 10, x0 + pw - 10, ph - m], outline="black")
    draw.text((x0 + m, ph - m + 8), f"{op} level", fill="black")
    draw.text((x0 + 2, 10), f"{metric} 1", fill="black")
    all_levels = [l for levels, _ in by_set.values() for l in levels]
    lo, hi = min(all_levels), max(all_levels)
    for k, (name, (levels, values)) in enumerate(by_set.items()):
      pts = [(x0 + m + (l - lo) / ((hi - lo) or 1) * (pw - m - 10), ph - m - v * (ph - m - 10))
             for l, v in zip(levels, values)]
      draw.line(pts, fill=colors[k % len(colors)], width=2)
      draw.text((x0 + m + 4, 14 + 12 * k), name, fill=colors[k % len(colors)])
  image.save(path)
  return path


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  out = f.out or os.path.join(f.workdir, "robustness")
  rows = sweep(f.workdir, tuple(s for s in f.sets.split(",") if s), tuple(o for o in f.ops.split(",") if o))
  _, md = write_table(rows, out)
  write_plot(rows, os.path.join(out, "robustness.png"))
  with open(md, encoding="utf-8") as table:
    print(table.read())


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "Trained run directory.", required=True)
  flags.DEFINE_string("out", "", "Output directory (default WORKDIR/robustness).")
  flags.DEFINE_string("ops", ",".join(DEFAULT_OPS), "Perturbations to sweep.")
  flags.DEFINE_string("sets", "", "Test sets (default: the config's data.test_sets).")
  from common.train import tool
  tool.run_tool(main, lambda: os.path.join(flags.FLAGS.workdir, "logs") if flags.FLAGS.workdir else None)
