"""Delocate through the engine on the 4-device mesh: both stages from the tiny demo corpus (stage 2 restoring stage
1's MAE through init_from and freezing it), the first-order meta-learning step, export."""
import os

import jax
import numpy as np
import pytest

from common.train import export, loop
from tests.test_delocate_task import smoke, tiny_faces  # noqa: F401 (module fixture)
from tests.test_engine import assert_stage_two_kept_frozen_and_trained, losses, saved_params

STAGE2_METRICS = ("image_acc", "image_auc", "video_acc", "video_auc", "pixel_f1", "pixel_iou", "pixel_auc")


@pytest.fixture(scope="module")
def two_stage_run(tiny_faces, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("delocate"))
  return workdir, loop.run(smoke(tiny_faces), workdir)


def test_both_stages_train_on_the_mesh_and_log_detection_and_localization(two_stage_run):
  workdir, metrics = two_stage_run
  assert jax.device_count() == 4
  for stage in ("stage1", "stage2"):
    logged = losses(os.path.join(workdir, stage))
    assert sorted(logged) == [1, 2] and all(np.isfinite(v) for v in logged.values())
  ratio = losses(os.path.join(workdir, "stage1"), "eval/recovery_ratio")[2]
  assert np.isfinite(ratio) and ratio > 0
  for key in STAGE2_METRICS:
    for name in (key, f"cross_{key}"):
      assert np.isnan(metrics[name]) or 0.0 <= metrics[name] <= 1.0, (name, metrics[name])
  assert np.isfinite(metrics["video_auc"]) and np.isfinite(metrics["cross_video_auc"])
  assert losses(os.path.join(workdir, "stage2"), "eval/video_auc")[2] == pytest.approx(metrics["video_auc"])
  for term in ("loss_cls", "loss_mask_bce", "loss_mask_dice"):
    assert np.isfinite(losses(os.path.join(workdir, "stage2"), f"train/{term}")[2])


def test_stage_two_restores_the_stage_one_mae_and_keeps_it_frozen(two_stage_run):
  workdir, _ = two_stage_run
  assert_stage_two_kept_frozen_and_trained(workdir, frozen="model/mae/", trained="model/localizer/")


def test_meta_learning_step_trains_the_localizer_only(tiny_faces, two_stage_run, tmp_path):
  workdir, _ = two_stage_run
  c = smoke(tiny_faces, run_stages="stage2")
  c.meta.enabled = True
  c.stages.stage2.init_from = dict(workdir=os.path.join(workdir, "stage1"), include="model/mae/")
  del c.stages.stage2["init_from_stage"]
  loop.run(c, str(tmp_path))
  for key in ("train/loss", "train/loss_meta_train", "train/loss_meta_test"):
    assert np.isfinite(losses(str(tmp_path / "stage2"), key)[2]), key
  s1, meta = saved_params(os.path.join(workdir, "stage1")), saved_params(str(tmp_path / "stage2"))
  assert all(np.array_equal(meta[k], s1[k]) for k in s1 if k.startswith("model/mae/"))


def test_export_of_the_trained_run_gives_scores_masks_and_recoveries(two_stage_run, tmp_path):
  workdir, _ = two_stage_run
  manifest = export.export(os.path.join(workdir, "stage2"), str(tmp_path / "export"), platforms=("cpu",))
  assert manifest["inputs"]["image"]["shape"] == [32, 32, 3]
  fn = export.load(str(tmp_path / "export"))
  out = fn({"image": np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)})
  assert np.asarray(out["score"]).shape == (2,) and np.asarray(out["probs"]).shape == (2, 32, 32)
  assert np.asarray(out["recovery"]).shape == (2, 32, 32, 3)

