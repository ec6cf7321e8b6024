"""`common.train.robustness` (any method's checkpoint clean and perturbed: one table, one plot), the engine's
evaluation perturbation (`config.data.perturbation` for every task) and the sweep's bar plot.

The table / plot / CLI mechanics run on the toy task with uint8 images, from a fresh init saved as step 0 of a run
(the tool only reads checkpoints, so nothing is trained). A real method end to end (NCL's columns, JPEG reaching its
images) is tests/test_ncl_tools.py, on that file's smoke run.
"""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from common import plots
from common.train import checkpoint as ckpt_lib
from common.train import config as config_lib
from common.train import loop, robustness, sweep, weights
from tests import toy_task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _ByteImages:
  """The toy records with uint8 [8, 8, 3] images on the 0-255 scale (what the perturbations take)."""

  def __init__(self, source):
    self.source = source

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    record = self.source[i]
    return {**record, "image": np.round(record["image"] * 255).astype(np.uint8)}


def _floats(batch):
  return {**batch, "image": batch["image"].astype(jnp.float32) / 255.0}


class ByteToyTask(toy_task.ToyTask):
  """The toy task reading uint8 images, scaled to [0, 1] on the device."""

  def source(self, split):
    return _ByteImages(super().source(split))

  def loss(self, models, batch, rng):
    return super().loss(models, _floats(batch), rng)

  def eval_step(self, state, batch):
    return super().eval_step(state, _floats(batch))

  def image_summaries(self, state, batch):
    return super().image_summaries(state, _floats(batch))


def toy_config():
  c = toy_task.get_config()
  c.task = "tests.test_robustness:ByteToyTask"
  c.mesh.data = 1
  return c


def _checkpoint(config, workdir):
  """A fresh init of `config`'s task saved as step 0 of a run: the tools only read checkpoints."""
  config = weights.final_stage_config(config)
  task = config_lib.build_task(config)
  checkpoints = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  try:
    checkpoints.save(0, jax.jit(task.init)(task.key(config.seed)), None, config, force=True)
  finally:
    checkpoints.close()
  return workdir


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
  return _checkpoint(toy_config(), str(tmp_path_factory.mktemp("toy") / "run"))


def test_toy_run_clean_and_perturbed_table_plot_and_json(toy_run, tmp_path):
  lines = []
  summary = robustness.robustness_run(toy_run, str(tmp_path), ops=("jpeg", "noise"),
                                      levels={"jpeg": (90, 30), "noise": (12,)}, report=lines.append)
  rows = summary["rows"]
  assert [(r["set"], r["op"], r["level"]) for r in rows] == [
      ("test", "clean", ""), ("test", "jpeg", 90), ("test", "jpeg", 30), ("test", "noise", 12)]
  assert summary["metric"] == "loss" and summary["step"] == 0 and summary["sets"] == {"test": "test"}
  clean = loop.evaluate_checkpoint(toy_config(), toy_run)
  assert rows[0]["loss"] == pytest.approx(clean["loss"], rel=1e-6)
  # The engine's perturbation, set in the config, is what the sweep applied; every condition changes the inputs.
  perturbed = toy_config()
  perturbed.data.perturbation = {"jpeg": {"p": 1.0, "quality": 30}}
  assert loop.evaluate_checkpoint(perturbed, toy_run)["loss"] == pytest.approx(rows[2]["loss"], rel=1e-6)
  assert len({r["loss"] for r in rows}) == 4
  assert len(lines) == 4 and lines[0].startswith("[1/4] test clean: loss ") and "ETA" in lines[-1]
  md = (tmp_path / "robustness.md").read_text().splitlines()
  assert md[0] == "| set | op | level | loss |" and md[4].startswith("| test | jpeg | 30 | ")
  assert (tmp_path / "robustness.csv").read_text().splitlines()[1].startswith("test,clean,,")
  assert Image.open(summary["plot"]).size[0] >= 800  # two panels
  with open(tmp_path / "robustness.json") as f:
    stored = json.load(f)
  assert stored["levels"] == {"jpeg": [90, 30], "noise": [12]} and len(stored["rows"]) == 4
  with pytest.raises(ValueError, match="unknown perturbations"):
    robustness.robustness_run(toy_run, str(tmp_path), ops=("sharpen",))
  with pytest.raises(ValueError, match="--metric='nope'"):
    robustness.sweep(toy_run, ops=(), metric="nope", report=lines.append)


def test_command_line_and_a_multi_stage_root(toy_run, tmp_path):
  run = lambda *args: subprocess.run([sys.executable, "-m", "common.train.robustness", *args], capture_output=True,
                                     text=True, cwd=REPO, timeout=300)
  before = sorted(os.listdir(toy_run))
  done = run(f"--workdir={toy_run}", f"--out={tmp_path / 'out'}", "--ops=resize", "--levels=resize=0.5")
  assert done.returncode == 0, done.stderr[-2000:]
  assert "| test | clean |  | " in done.stdout and "| test | resize | 0.5 | " in done.stdout
  assert "[2/2] test resize 0.5: loss " in done.stderr and (tmp_path / "out" / "robustness.png").exists()
  assert sorted(os.listdir(toy_run)) == before
  os.makedirs(tmp_path / "two_stage" / "stage2" / "checkpoints")
  with pytest.raises(FileNotFoundError, match=f"pass the stage to evaluate: {tmp_path / 'two_stage' / 'stage2'}$"):
    robustness.robustness_run(str(tmp_path / "two_stage"), ops=("jpeg",))


def test_level_parsing_and_default_metric():
  assert robustness.parse_levels(["jpeg=90,50", "resize=0.5"]) == {"jpeg": (90, 50), "resize": (0.5,)}
  with pytest.raises(ValueError, match="OP=LEVEL"):
    robustness.parse_levels(["jpeg"])
  with pytest.raises(ValueError, match="odd"):
    robustness.conditions(("blur",), {"blur": (4,)})
  config = toy_task.get_config()
  assert robustness.default_metric(config, ["image_acc", "pixel_f1_class_avg", "pixel_f1", "pixel_auc"]) == "pixel_f1"
  assert robustness.default_metric(config, ["image_acc", "video_auc"]) == "video_auc"
  config.best_metric = "eval/image_acc"
  assert robustness.default_metric(config, ["image_acc", "pixel_f1"]) == "image_acc"


def test_sweep_writes_one_bar_panel_per_metric_with_the_best_highlighted(tmp_path):
  rows = [("base", {"loss": 0.5, "pixel_f1": 0.6}), ("small_lr", {"loss": 0.4, "pixel_f1": 0.7}),
          ("no_aux", {"loss": 0.9})]
  path = sweep.write_plot(rows, str(tmp_path))
  assert path == str(tmp_path / "sweep.png")
  pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
  red = np.array([int(plots.HIGHLIGHT[i:i + 2], 16) for i in (1, 3, 5)])
  assert (np.abs(pixels.astype(int) - red).sum(1) < 10).sum() > 200  # the highlighted bars are drawn
