"""NCL tools on a smoke run from the tiny demo corpus: the ablation sweep file, evaluation sets, the robustness
table, predict from a run's checkpoint (masks and overlays at the input's size). (The sweep runner is common's:
tests/test_engine.py runs it on the toy task; the robustness tool's own tests are tests/test_robustness.py.)"""
import dataclasses
import os

import numpy as np
import pytest
from PIL import Image

from common.data import demo
from common.predict import run as predict_run
from common.train import loop, robustness, serving, sweep
from configs import ncl as ncl_configs

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


def test_protocol_mvss_sets_evaluate_in_one_compilation_from_json_lists_and_folders(trained, tmp_path):
  """The paper config's eval_sets (Protocol-MVSS's five test sets, each a `data.sets` split) on tiny stand-ins: an
  IMDL-BenCo JSON list and the same images as a Tp/Gt/Au folder give the same metrics, and sets that differ only
  in their split share one restore and compilation."""
  from common.train import evaluate
  workdir, root = trained
  names = list(ncl_configs.get_config("paper").eval_sets)
  assert names == ["casia1", "columbia", "coverage", "imd2020", "nist16"]
  data_sets = {"train": os.path.join(root, "train.json"),
               **{n: os.path.join(root, "test.json" if i % 2 else "test") for i, n in enumerate(names)}}
  eval_sets = {n: {"eval_split": n} for n in names}
  overrides = [f"data.sets={data_sets!r}", f"eval_sets={eval_sets!r}"]
  config = evaluate.run_config(workdir, overrides=overrides)
  assert len(evaluate.targets(config)) == 1
  sets = evaluate.evaluate_run(workdir, str(tmp_path), overrides=overrides)["sets"]
  assert sorted(sets) == sorted(names)
  for name in names[1:]:
    assert sets[name] == pytest.approx(sets["casia1"], abs=1e-6, nan_ok=True), name
  assert 0.0 <= sets["casia1"]["pixel_f1"] <= 1.0


def test_robustness_table_has_ncl_columns_and_the_engine_perturbs_its_images(trained, tmp_path):
  """A real method: NCL's own metric columns, JPEG 50 applied to its images by the engine."""
  workdir, _ = trained
  summary = robustness.robustness_run(workdir, ops=("jpeg",), levels={"jpeg": (50,)}, out=str(tmp_path),
                                      report=lambda line: None)
  assert [(r["op"], r["level"]) for r in summary["rows"]] == [("clean", ""), ("jpeg", 50)]
  assert summary["metric"] == "pixel_f1"  # NCL's best_metric
  md = open(summary["table"]).read()
  assert md.splitlines()[0] == ("| set | op | level | pixel_f1 | pixel_f1_permuted | pixel_best_f1 | pixel_iou "
                                "| pixel_auc |") and md.count("| test |") == 2
  assert summary["rows"][0]["pixel_auc"] != summary["rows"][1]["pixel_auc"]  # JPEG reached the images
  assert (tmp_path / "robustness.png").exists()


def test_predict_writes_masks_and_overlays_at_the_input_size(trained, tmp_path):
  """Resized to the trained size (the notebook's protocol) or, the network being fully convolutional, at each
  image's own size (`--resolution=whole`: reflect-padded up to a multiple of the output stride); masks come back at
  the input's size."""
  workdir, root = trained
  served = serving.load_workdir(workdir)
  assert served.input.size == (64, 64) and served.input.symbolic and served.input.multiple == 16
  assert served.inputs["image"]["shape"] == ["h", "w", 3]
  images = tmp_path / "images"
  images.mkdir()
  tp = os.path.join(root, "test", "Tp")
  source = np.asarray(Image.open(os.path.join(tp, sorted(os.listdir(tp))[0])))
  Image.fromarray(source[:100, :90]).save(images / "a.png")
  Image.fromarray(source).save(images / "b.jpg")
  rows = predict_run.predict_all(served, str(images), str(tmp_path / "out"))
  assert [os.path.basename(r["input"]) for r in rows] == ["a.png", "b.jpg"] and not any(r["error"] for r in rows)
  mask = np.asarray(Image.open(tmp_path / "out" / "a" / "masks" / "00000.png"))
  assert mask.shape == (100, 90) and set(np.unique(mask)) <= {0, 255}
  assert np.asarray(Image.open(tmp_path / "out" / "b" / "overlays" / "00000.png")).shape == source.shape
  seen = []

  def recording(inputs):
    seen.append(inputs["image"].shape)
    return served.fn(inputs)

  spy = dataclasses.replace(served, fn=recording)
  native = predict_run.predict_all(spy, str(images / "a.png"), str(tmp_path / "native"), resolution="whole")
  assert seen == [(1, 112, 96, 3)] and native[0]["frames"] == 1  # 100 x 90 padded to multiples of 16
  with pytest.raises(FileNotFoundError):
    predict_run.predict_all(served, str(tmp_path / "missing"), str(tmp_path / "out"))
