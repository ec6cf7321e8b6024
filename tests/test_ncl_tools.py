"""NCL tools on a smoke run from the tiny demo corpus: the ablation sweep file, predict from a run's checkpoint
(masks and overlays at the input's size), the robustness table and plot. (The sweep runner is common's:
tests/test_engine.py runs it on the toy task.)"""
import os

import numpy as np
import pytest
from PIL import Image

from common.data import demo
from common.train import loop, serving, sweep
from configs import ncl as ncl_configs
from ncl_jax import predict, robustness

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow  # a smoke training and evaluations: compiles dominate (about 1-2 min on 2 cores)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  corpus = str(tmp_path_factory.mktemp("demo") / "corpus")
  demo.build(corpus, seed=0, scale="tiny")
  root = os.path.join(corpus, "image_manipulation")
  config = ncl_configs.get_config("smoke")
  config.data.sets = {"train": os.path.join(root, "train.json"), "test": os.path.join(root, "test.json")}
  workdir = str(tmp_path_factory.mktemp("run"))
  loop.run(config, workdir)
  return workdir, root


def test_ablation_sweep_lists_every_ablation_and_each_applies_to_the_config():
  entries = sweep.load_module(os.path.join(REPO, "configs", "sweeps", "ncl_ablation.py")).get_sweep()
  assert [name for name, _ in entries] == ["full", "no_contrastive", "contour_discarded", "contour_as_tampered",
                                           "single_branch", "no_pivot_consistency"]
  for _, overrides in entries:
    sweep.entry_config(ncl_configs.get_config("smoke"), overrides)
  with pytest.raises(KeyError, match="no field"):
    sweep.entry_config(ncl_configs.get_config("smoke"), {"ncl.no_such_weight": 1.0})


def test_predict_writes_masks_and_overlays_at_the_input_size(trained, tmp_path):
  workdir, root = trained
  served = serving.load_workdir(workdir)
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


def test_robustness_writes_a_table_and_a_plot(trained, tmp_path):
  workdir, _ = trained
  rows = robustness.sweep(workdir, ops=("jpeg",), levels={"jpeg": (50,)})
  assert [(r["op"], r["level"]) for r in rows] == [("clean", ""), ("jpeg", 50)]
  csv_path, md_path = robustness.write_table(rows, str(tmp_path))
  assert open(md_path).read().count("| test |") == 2
  plot = robustness.write_plot(rows, str(tmp_path / "robustness.png"))
  assert Image.open(plot).size[0] > 100
  assert robustness._pil_plot(robustness._series(rows, "pixel_f1"), str(tmp_path / "pil.png"), "pixel_f1")
