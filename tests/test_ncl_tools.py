"""NCL tools on smoke runs from the tiny demo corpus: the ablation sweep (two entries) writing one table, predict
from a run's checkpoint (masks and overlays at the input's size), the robustness table and plot."""
import csv
import os

import numpy as np
import pytest
from PIL import Image

from common.data import demo
from common.train import serving
from configs import ncl as ncl_configs
from ncl_jax import predict, robustness, sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow  # three smoke trainings / evaluations: compiles dominate (about 2-3 min on 2 cores)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  corpus = str(tmp_path_factory.mktemp("demo") / "corpus")
  demo.build(corpus, seed=0, scale="tiny")
  root = os.path.join(corpus, "image_manipulation")
  config = ncl_configs.get_config("smoke")
  config.data.sets = {"train": os.path.join(root, "train.json"), "test": os.path.join(root, "test.json")}
  workdir = str(tmp_path_factory.mktemp("sweep"))
  rows = sweep.run_sweep(os.path.join(REPO, "configs", "sweeps", "ncl_ablation.py"), config, workdir,
                         only=("full", "single_branch"))
  return workdir, rows, root


def test_sweep_lists_every_ablation_and_writes_one_table(swept):
  workdir, rows, _ = swept
  names = [name for name, _ in sweep.load_module(os.path.join(REPO, "configs", "sweeps", "ncl_ablation.py"))
           .get_sweep()]
  assert names == ["full", "no_contrastive", "contour_discarded", "contour_as_tampered", "single_branch",
                   "no_pivot_consistency"]
  assert [name for name, _ in rows] == ["full", "single_branch"]
  with open(os.path.join(workdir, "ablation.csv")) as f:
    table = list(csv.DictReader(f))
  assert [r["run"] for r in table] == ["full", "single_branch"]
  assert all(0.0 <= float(r["pixel_f1"]) <= 1.0 for r in table)
  assert open(os.path.join(workdir, "ablation.md")).read().count("\n") == 4
  with pytest.raises(ValueError, match="not in"):
    sweep.run_sweep(os.path.join(REPO, "configs", "sweeps", "ncl_ablation.py"), None, workdir, only=("nope",))
  with pytest.raises(KeyError, match="no field"):
    sweep.apply_overrides(ncl_configs.get_config("smoke"), {"ncl.no_such_weight": 1.0})


def test_predict_writes_masks_and_overlays_at_the_input_size(swept, tmp_path):
  workdir, _, root = swept
  served = serving.load_workdir(os.path.join(workdir, "full"))
  assert predict.input_size(served) == 64
  images = tmp_path / "images"
  images.mkdir()
  source = np.asarray(Image.open(os.path.join(root, "test", "Tp", sorted(os.listdir(os.path.join(root, "test", "Tp")))[0])))
  Image.fromarray(source[:100, :90]).save(images / "a.png")
  Image.fromarray(source).save(images / "b.jpg")
  masks = predict.predict_images(served, str(images), str(tmp_path / "out"))
  assert [os.path.basename(m) for m in masks] == ["a_mask.png", "b_mask.png"]
  mask = np.asarray(Image.open(masks[0]))
  assert mask.shape == (100, 90) and set(np.unique(mask)) <= {0, 255}
  assert np.asarray(Image.open(tmp_path / "out" / "b_overlay.png")).shape == source.shape
  with pytest.raises(FileNotFoundError):
    predict.predict_images(served, str(tmp_path / "missing"), str(tmp_path / "out"))


def test_robustness_writes_a_table_and_a_plot(swept, tmp_path):
  workdir, _, _ = swept
  rows = robustness.sweep(os.path.join(workdir, "full"), ops=("jpeg",), levels={"jpeg": (50,)})
  assert [(r["op"], r["level"]) for r in rows] == [("clean", ""), ("jpeg", 50)]
  csv_path, md_path = robustness.write_table(rows, str(tmp_path))
  assert open(md_path).read().count("| test |") == 2
  plot = robustness.write_plot(rows, str(tmp_path / "robustness.png"))
  assert Image.open(plot).size[0] > 100
  assert robustness._pil_plot(robustness._series(rows, "pixel_f1"), str(tmp_path / "pil.png"), "pixel_f1")
