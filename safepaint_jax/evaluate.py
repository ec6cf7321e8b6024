"""Inpainting quality of a SafePaint run against its own untrained generator, per hole-ratio bin.

  python -m safepaint_jax.evaluate --workdir=RUN_DIR [--step=N] [--out=RUN_DIR/quality.md]
      [--lpips_backbone_weights=alexnet.pth --lpips_net=alex] [--fid_weights=pt_inception-2015-12-05-6726825d.pth]

Evaluates the run's checkpoint (default: latest) and a fresh initialisation of the same config (the run's seed)
on its evaluation split with the task's metrics (PSNR / SSIM / L1 of the final composite, stage-1 PSNR, each
per hole-ratio bin), and writes a markdown table (trained vs untrained) next to a JSON copy.

Perceptual metrics (`common.perceptual_quality`), when weight files are named in `config.quality` (or by the flags
above, which override the run's stored config): LPIPS of the final composite against the original, per image,
averaged overall and per hole-ratio bin (`quality.lpips_backbone_weights`: a torchvision `alexnet` / `vgg16`
state_dict as `.pth` or `.npz`, `quality.lpips_net`: 'alex' or 'vgg', `quality.lpips_heads_weights`: default the
installed `lpips` package's v0.1 heads), and FID between the composites and the originals of the whole split
(`quality.fid_weights`: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` or an `.npz`; `quality.fid_method`:
'sqrtm' as pytorch-fid, or 'svd', the same value from the data in milliseconds); the table states the
number of images FID rests on (few hundred images give a strongly biased FID: compare values at equal counts only).
Without those files the columns are left out and one log line says how to enable them. Nothing is downloaded.
The perceptual pass runs in one process (it gathers every composite on the host).
"""
from __future__ import annotations

import json
import logging
import math
import os

import jax
import numpy as np

from common import perceptual_quality as pq
from common.data import masks as mask_lib
from common.train import checkpoint as ckpt_lib
from common.train import loop
from common.train import mesh as mesh_lib
from common.train.task import TrainState
from safepaint_jax.task import bin_name, to_float

QUALITY_DEFAULTS = dict(lpips_net="alex", lpips_backbone_weights="", lpips_heads_weights="", fid_weights="",
                        fid_batch_size=8, fid_method="sqrtm")


def quality_settings(config, **overrides) -> dict:
  """`config.quality` (absent in configs stored before it existed: the defaults) with non-empty `overrides`."""
  q = dict(QUALITY_DEFAULTS)
  stored = config.get("quality", None)
  if stored is not None:
    q.update({k: stored[k] for k in stored})
  q.update({k: v for k, v in overrides.items() if v not in ("", None)})
  return q


class PerceptualModels:
  """The LPIPS and FID networks named by quality settings (either may be None when its weights are not named)."""

  def __init__(self, quality: dict):
    self.quality = quality
    self.lpips = None
    self.inception = None
    if quality["lpips_backbone_weights"]:
      self.lpips = pq.LPIPSDistance(pq.load_lpips(quality["lpips_net"], quality["lpips_backbone_weights"],
                                                  quality["lpips_heads_weights"]))
    if quality["fid_weights"]:
      self.inception = pq.InceptionFeatures(pq.load_inception(quality["fid_weights"]),
                                            batch_size=int(quality["fid_batch_size"]))
    missing = [("LPIPS", "config.quality.lpips_backbone_weights (torchvision alexnet/vgg16 .pth or .npz; "
                "quality.lpips_net='alex'|'vgg')")] if self.lpips is None else []
    if self.inception is None:
      missing.append(("FID", "config.quality.fid_weights (pytorch-fid's pt_inception-2015-12-05-6726825d.pth or .npz)"))
    if missing:
      logging.info("%s left out of the quality table: to enable, set %s (README, SafePaint section)",
                   " and ".join(m for m, _ in missing), " and ".join(how for _, how in missing))

  @property
  def enabled(self) -> bool:
    return self.lpips is not None or self.inception is not None


def perceptual_metrics(task, state, batch_sh, split: str, models: PerceptualModels) -> dict[str, float]:
  """LPIPS (overall and per hole-ratio bin: `lpips`, `lpips_hole_<bin>`) and FID (`fid`, on `fid_images` images)
  of the final composites of `split` against the originals. NaN for an empty bin."""
  if jax.process_count() > 1:
    raise ValueError("the LPIPS / FID pass runs in one process (it gathers every composite on the host)")
  inpaint = jax.jit(lambda state, batch: task.inpaint(task.models(state), *to_float(batch))[0],
                    in_shardings=(None, batch_sh))
  lpips_values, ratios, real_feats, fake_feats = [], [], [], []
  for host_batch in task.input_pipeline(split):
    batch = mesh_lib.global_batch(host_batch, batch_sh)
    final = np.asarray(inpaint(state, batch))
    valid = np.asarray(host_batch["valid"]).astype(bool)
    images = host_batch["image"][valid]
    final = final[valid]
    if not valid.any():
      continue
    ratios.append(np.asarray(host_batch["mask"], np.float32)[valid].mean((1, 2)))
    if models.lpips is not None:
      lpips_values.append(models.lpips(final, images))
    if models.inception is not None:  # originals and composites in one pass (fewer padded chunks)
      feats = models.inception(np.concatenate([images.astype(np.float32) / 255, final]))
      real_feats.append(feats[:len(images)])
      fake_feats.append(feats[len(images):])
  out = {}
  if models.lpips is not None:
    values, ratio = np.concatenate(lpips_values), np.concatenate(ratios)
    out["lpips"] = float(values.mean())
    for low, high in mask_lib.HOLE_RATIO_BINS:
      sel = (ratio >= low) & (ratio < high)
      out[f"lpips_hole_{bin_name(low, high)}"] = float(values[sel].mean()) if sel.any() else math.nan
  if models.inception is not None:
    real, fake = np.concatenate(real_feats), np.concatenate(fake_feats)
    out["fid"] = pq.fid_from_activations(real, fake, models.quality["fid_method"])
    out["fid_images"] = float(len(real))
  return out


def _state(config, workdir: str | None, step: int | None):
  """(task, batch sharding, state, mesh, step): `workdir`'s checkpoint `step` (None: the latest), or `config`'s
  initialisation (step None) when `workdir` is None."""
  task, mesh, batch_sh, abstract, state_sh = loop.sharded_setup(config)
  with jax.set_mesh(mesh):
    if workdir is None:
      return task, batch_sh, jax.jit(task.init, out_shardings=state_sh)(task.key(config.seed)), mesh, None
    with ckpt_lib.Run(workdir) as run_dir:
      abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sh)
      restored, _, step = run_dir.restore(abstract, step)
    return task, batch_sh, TrainState(**restored), mesh, step


def metrics(config, workdir: str | None = None, step: int | None = None,
            models: PerceptualModels | None = None) -> dict[str, float]:
  """The task's eval metrics (and the perceptual ones when `models` has any) of `workdir`'s checkpoint `step`, or
  of `config`'s initialisation (seed `config.seed`) when `workdir` is None."""
  task, batch_sh, state, mesh, _ = _state(config, workdir, step)
  with jax.set_mesh(mesh):
    state_sh = jax.tree.map(lambda a: a.sharding, state)
    eval_step = jax.jit(task.eval_step, in_shardings=(state_sh, batch_sh))
    out = loop.evaluate(task, eval_step, state, batch_sh, config.eval_split)
    if models is not None and models.enabled:
      out.update(perceptual_metrics(task, state, batch_sh, config.eval_split, models))
  return out


def untrained_metrics(config, models: PerceptualModels | None = None) -> dict[str, float]:
  """Eval metrics of `config`'s task at its initialisation (seed `config.seed`)."""
  return metrics(config, None, None, models)


def compare(workdir: str, step: int | None = None, **quality) -> dict[str, dict[str, float]]:
  """{'trained (step N)': metrics, 'untrained': metrics}; `quality` overrides the stored `config.quality` fields."""
  with ckpt_lib.Run(workdir) as run_dir:
    step = run_dir.latest_step() if step is None else step
    config = run_dir.config(step)
  models = PerceptualModels(quality_settings(config, **quality))
  return {f"trained (step {step})": metrics(config, workdir, step, models),
          "untrained": untrained_metrics(config, models)}


def table(results: dict[str, dict[str, float]]) -> str:
  rows = [("all", "")] + [(f"{lo:.0%}-{hi:.0%}", f"_hole_{bin_name(lo, hi)}") for lo, hi in mask_lib.HOLE_RATIO_BINS]
  names = list(results)
  first = results[names[0]]
  columns = [("psnr", 2, "PSNR"), ("ssim", 4, "SSIM"), ("l1", 4, "L1")]
  if "lpips" in first:
    columns.append(("lpips", 4, "LPIPS"))
  title = " / ".join(c[2] for c in columns)
  head = "| holes | " + " | ".join(f"{n} {title}" for n in names) + " |"
  lines = [head, "|---|" + "---|" * len(names)]
  for label, suffix in rows:
    cells = [" / ".join(f"{results[n][f'{m}{suffix}']:.{p}f}" for m, p, _ in columns) for n in names]
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  stage1 = ", ".join(f"{n}: {results[n]['psnr_stage1']:.2f} dB" for n in names)
  text = "\n".join(lines) + f"\n\nStage-1 composite PSNR: {stage1}\n"
  if "fid" in first:
    fid = ", ".join(f"{n}: {results[n]['fid']:.2f}" for n in names)
    count = int(first["fid_images"])
    text += (f"\nFID (whole split, composites vs originals, {count} images each; pytorch-fid's Inception pool3): "
             f"{fid}" + (" -- fewer than 2048 images: rank-deficient covariances, FID strongly biased upwards; "
                         "compare only at equal image counts" if count < 2048 else "") + "\n")
  return text


def main(argv) -> None:
  from absl import flags
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  results = compare(f.workdir, None if f.step < 0 else f.step, lpips_net=f.lpips_net,
                    lpips_backbone_weights=f.lpips_backbone_weights, lpips_heads_weights=f.lpips_heads_weights,
                    fid_weights=f.fid_weights)
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
  flags.DEFINE_string("lpips_net", "", "LPIPS backbone: 'alex' or 'vgg' (default: config.quality.lpips_net).")
  flags.DEFINE_string("lpips_backbone_weights", "", "torchvision alexnet / vgg16 state_dict (.pth or .npz); "
                      "default: config.quality.lpips_backbone_weights ('' = no LPIPS).")
  flags.DEFINE_string("lpips_heads_weights", "", "LPIPS v0.1 linear heads (default: the lpips package's).")
  flags.DEFINE_string("fid_weights", "", "pytorch-fid's pt_inception-2015-12-05-6726825d.pth or .npz; "
                      "default: config.quality.fid_weights ('' = no FID).")
  from common.train import tool
  tool.run_tool(main, lambda: os.path.join(flags.FLAGS.workdir, "logs") if flags.FLAGS.workdir else None)
