"""ViLocal through the engine: both stages on the 4-device mesh from the tiny demo corpus, stage 2 starting from
stage 1's encoder (frozen), the official evaluation metrics, the stage-2 quirk flag, export."""
import os

import jax
import numpy as np
import pytest

from common.data import demo
from common.train import export, loop
from configs import vilocal as vilocal_configs
from tests.test_engine import assert_stage_two_kept_frozen_and_trained, losses


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("demo") / "corpus")
  demo.build(out, seed=0, scale="tiny")
  return os.path.join(out, "video_inpainting")


def smoke(root, **overrides):
  c = vilocal_configs.get_config("smoke")
  c.data.root = root
  for k, v in overrides.items():
    c[k] = v
  return c


@pytest.fixture(scope="module")
def two_stage_run(tiny_corpus, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("vilocal"))
  metrics = loop.run(smoke(tiny_corpus), workdir)
  return workdir, metrics


def test_both_stages_train_on_the_mesh_and_log_the_official_metrics(two_stage_run):
  workdir, metrics = two_stage_run
  assert jax.device_count() == 4
  assert sorted(losses(os.path.join(workdir, "stage1"))) == [1, 2]
  assert sorted(losses(os.path.join(workdir, "stage2"))) == [1, 2]
  for key in ("pixel_f1", "pixel_iou", "pixel_auc", "pixel_f1_small"):
    assert key in metrics
  assert 0.0 <= metrics["pixel_f1"] <= 1.0 and np.isfinite(metrics["pixel_auc"])
  logged = losses(os.path.join(workdir, "stage2"), "eval/pixel_f1")
  assert logged[2] == pytest.approx(metrics["pixel_f1"])


def test_evaluation_sets_per_inpainter_and_mask_ratio_bin(two_stage_run, tmp_path):
  """The protocol's sets (configs/vilocal.py): per inpainter, and per inpainter and mean-mask-ratio bin. The tiny
  corpus's test split is one medium video with 2 clips per inpainter, so the training run's evaluation (both
  inpainters) is the mean of the two inpainters' and the medium set is its inpainter's whole set."""
  from common.train import evaluate
  workdir, metrics = two_stage_run
  sets = evaluate.evaluate_run(os.path.join(workdir, "stage2"), str(tmp_path),
                               eval_sets=["telea", "ns", "ns_medium"])["sets"]
  for key in ("pixel_f1", "pixel_iou"):
    assert (sets["telea"][key] + sets["ns"][key]) / 2 == pytest.approx(metrics[key], abs=1e-6), key
  assert sets["ns_medium"] == pytest.approx(sets["ns"], abs=1e-6, nan_ok=True)  # NaN: the empty small, large bins
  assert "| ns_medium |" in (tmp_path / "evaluation.md").read_text()


def test_stage_two_starts_from_stage_one_and_keeps_the_encoder_frozen(two_stage_run):
  workdir, _ = two_stage_run
  # the decoder is trained in stage 2 only
  assert_stage_two_kept_frozen_and_trained(workdir, frozen="model/encoder/", trained="model/decoder/")


def test_official_stage_two_quirk_updates_frozen_encoder_statistics(tiny_corpus, two_stage_run, tmp_path):
  """With the quirk on, the frozen encoder runs in train mode: its BatchNorm statistics move in stage 2."""
  workdir, _ = two_stage_run
  c = smoke(tiny_corpus, stage2_encoder_train_mode=True, run_stages="stage2")
  c.stages.stage2.init_from = dict(workdir=os.path.join(workdir, "stage1"), include="model/encoder/")
  del c.stages.stage2["init_from_stage"]
  loop.run(c, str(tmp_path))
  from common.train import checkpoint
  def batch_stats(d):
    ck = checkpoint.Checkpointer(os.path.join(d, "checkpoints"), read_only=True, async_save=False)
    raw = checkpoint.flat_keys(ck.restore_raw(ck.latest_step())["rest"])
    ck.close()
    return {k: v for k, v in raw.items() if k.startswith("model/encoder/norm1/mean")}
  quirk, default = batch_stats(str(tmp_path / "stage2")), batch_stats(os.path.join(workdir, "stage2"))
  stage1 = batch_stats(os.path.join(workdir, "stage1"))
  assert quirk and all(np.array_equal(default[k], stage1[k]) for k in stage1)
  assert any(not np.allclose(quirk[k], stage1[k]) for k in stage1)


def test_export_of_the_trained_run_needs_no_training_data(two_stage_run, tmp_path):
  workdir, _ = two_stage_run
  manifest = export.export(os.path.join(workdir, "stage2"), str(tmp_path / "export"), platforms=("cpu",))
  assert manifest["inputs"]["frames"]["shape"] == [3, "h", "w", 3] and manifest["input"]["size"] == [32, 48]
  assert manifest["config"]["epochs"] == 0 and manifest["config"]["total_steps"] == 2
  fn = export.load(str(tmp_path / "export"))
  probs = fn({"frames": np.random.default_rng(0).integers(0, 256, (2, 3, 32, 48, 3), np.uint8)})["probs"]
  assert probs.shape == (2, 32, 48) and np.all((np.asarray(probs) >= 0) & (np.asarray(probs) <= 1))
