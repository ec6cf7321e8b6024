"""Delocate through the engine on the 4-device mesh: both stages from the tiny demo corpus (stage 2 restoring stage
1's MAE through init_from and freezing it while every localizer parameter trains), finite metrics in [0, 1], the
first-order meta-learning step (its export: tests/test_exports.py)."""
import os

import jax
import numpy as np
import pytest

from common.train import checkpoint, loop
from common.train import config as config_lib
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
      assert np.isfinite(metrics[name]) and 0.0 <= metrics[name] <= 1.0, (name, metrics[name])
  assert losses(os.path.join(workdir, "stage2"), "eval/video_auc")[2] == pytest.approx(metrics["video_auc"])
  for term in ("loss_cls", "loss_mask_bce", "loss_mask_dice"):
    assert np.isfinite(losses(os.path.join(workdir, "stage2"), f"train/{term}")[2])


@pytest.fixture(scope="module")
def initial_localizer(tiny_faces, two_stage_run):
  """The localizer parameters stage 2 starts from: its fresh init (init_from restores the MAE only), computed as
  the engine does (jitted `task.init` at the config's seed); the meta-learning run starts from the same."""
  workdir, _ = two_stage_run
  _, stage2, _ = config_lib.stage_configs(smoke(tiny_faces), workdir)[1]
  task = config_lib.build_task(stage2)
  params = checkpoint.flat_keys(jax.jit(task.init)(task.key(stage2.seed)).params)
  return {k: np.asarray(v) for k, v in params.items() if k.startswith("model/localizer/")}


def _assert_localizer_trained(initial, final):
  """Every localizer parameter moved away from its initial value (AdamW touches every one of them)."""
  assert initial and set(initial) <= set(final)
  unchanged = [k for k in initial if np.array_equal(final[k], initial[k])]
  assert not unchanged, unchanged[:5]
  assert all(np.all(np.isfinite(final[k])) for k in initial)


def test_stage_two_restores_the_stage_one_mae_keeps_it_frozen_and_trains_the_localizer(two_stage_run,
                                                                                        initial_localizer):
  workdir, _ = two_stage_run
  assert_stage_two_kept_frozen_and_trained(workdir, frozen="model/mae/", trained="model/localizer/")
  s1, s2 = saved_params(os.path.join(workdir, "stage1")), saved_params(os.path.join(workdir, "stage2"))
  _assert_localizer_trained(initial_localizer, s2)
  for k, v in initial_localizer.items():  # stage 1 froze the localizer at the same fresh init (same seed)
    np.testing.assert_array_equal(s1[k], v, err_msg=k)


def test_meta_learning_step_trains_the_localizer_only(tiny_faces, two_stage_run, initial_localizer, tmp_path):
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
  _assert_localizer_trained(initial_localizer, meta)


def test_evaluate_reads_the_cross_dataset_layouts_with_frame_and_video_metrics(tiny_faces, two_stage_run, tmp_path):
  """FF++ -> Celeb-DF v2 / DFDC / DFD (the paper's protocol) on tiny copies of the layouts holding the test split's
  videos: the DFDC copy's crops are FF++'s test crops of both manipulations, so its metrics equal the FF++ set's
  with both manipulations evaluated in-domain; the face sets have no pixel columns."""
  from common.data.demo import face_sets
  from common.train import evaluate
  workdir, _ = two_stage_run
  overrides = ["eval_sets.ffpp.data={'methods': ('FaceSwap', 'NeuralTextures'), 'cross_methods': ()}"]
  for name, layout in (("celeb_df_v2", "celeb_df"), ("dfdc", "dfdc"), ("dfd", "dfd")):
    root = face_sets.build_face_set(tiny_faces, layout, str(tmp_path / layout))
    overrides.append(f"eval_sets.{name}.data.root={root}")
  # DFD's copy reads like the other two (its layout: tests/test_face_videos.py); three sets keep the test short.
  summary = evaluate.evaluate_run(os.path.join(workdir, "stage2"), str(tmp_path / "out"), overrides=overrides,
                                  eval_sets=["ffpp", "celeb_df_v2", "dfdc"])
  sets = summary["sets"]
  assert sorted(sets) == ["celeb_df_v2", "dfdc", "ffpp"]
  for name in ("celeb_df_v2", "dfdc"):
    assert sorted(sets[name]) == ["image_acc", "image_auc", "video_acc", "video_auc"], name
    assert all(0.0 <= v <= 1.0 for v in sets[name].values()), sets[name]
  for key in ("image_auc", "image_acc", "video_auc", "video_acc"):
    assert sets["dfdc"][key] == pytest.approx(sets["ffpp"][key], abs=1e-6), key
  assert "pixel_f1" in sets["ffpp"]
  table = (tmp_path / "out" / "evaluation.md").read_text()
  assert all(f"| {name} |" in table for name in sets)
