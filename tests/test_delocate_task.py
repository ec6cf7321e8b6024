"""Delocate's task pieces: which frames each stage and split reads (real faces only for stage 1, fakes paired with their
aligned real crops for its evaluation, real frames once in stage 2's evaluation, manipulation domains), the recovery
error ratio and the video-level metrics. The engine runs of both stages are in test_delocate_run.py."""
import os

import jax.numpy as jnp
import numpy as np
import pytest

from common.data import demo
from common.train import config as config_lib
from configs import delocate as delocate_configs
from delocate_jax import data as data_lib
from delocate_jax import metrics as metrics_lib


@pytest.fixture(scope="module")
def tiny_faces(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("demo") / "corpus")
  demo.build(out, seed=0, scale="tiny")
  return os.path.join(out, "faces")


def smoke(root, **overrides):
  c = delocate_configs.get_config("smoke")
  c.data.root = root
  for k, v in overrides.items():
    c[k] = v
  return c


def test_eval_reads_real_frames_once_and_stage_one_pairs_fakes_with_their_real_crops(tiny_faces):
  task2 = config_lib.build_task(smoke(tiny_faces, stage=2))
  source = task2.source("test")
  ids = [source[i]["id"] for i in range(len(source))]
  assert len(ids) == len(set(ids))
  keys = data_lib.FaceKeys(sum(task2.methods(), ()))
  domains = {keys.map(source[i])["domain"] for i in range(len(source))}
  assert domains == {0, 1, 2}  # real, FaceSwap (trained), NeuralTextures (cross)
  task1 = config_lib.build_task(smoke(tiny_faces, stage=1))
  assert all(task1.source("train")[i]["label"] == 0 for i in range(len(task1.source("train"))))
  pair = task1.source("test")[0]
  fake, real = pair["frames"].astype(np.float32)
  mask = pair["mask"] > 0
  assert mask.any() and pair["label"] == 1
  diff = np.abs(fake - real).mean(-1)
  assert diff[mask].mean() > 2 * diff[~mask].mean()  # aligned: the crops differ where the mask says


def test_recovery_ratio_compares_errors_on_the_same_pixels():
  mask = np.zeros((2, 4, 4), np.uint8)
  mask[:, :2] = 1
  fake = np.where(mask > 0, 0.3, 0.9).astype(np.float32)
  real = np.full((2, 4, 4), 0.1, np.float32)
  valid = jnp.array([True, False])
  m = metrics_lib.RecoveryRatio.from_model_output(fake_error=fake, real_error=real, gt_mask=mask, valid=valid)
  assert float(m.compute()) == pytest.approx(3.0)
  swapped = metrics_lib.RecoveryRatio.from_model_output(fake_error=real, real_error=fake, gt_mask=mask, valid=valid)
  assert float(swapped.compute()) == pytest.approx(1 / 3)


def test_video_metrics_aggregate_frame_scores_per_video():
  collection = metrics_lib.detection_metrics("mean")
  video = jnp.array([7, 7, 9, 9, 5, 5])
  label = jnp.array([1, 1, 0, 0, 1, 1])
  score = jnp.array([0.9, 0.3, 0.2, 0.8, 0.1, 0.2])  # video means 0.6, 0.5, 0.15
  probs = jnp.zeros((6, 4, 4))
  out = collection.single_from_model_output(pred_label=score, label=label, pred_mask=probs, gt_mask=probs,
                                           video=video, valid=jnp.ones(6, bool))
  out = out.merge(collection.empty()).compute()
  assert out["video_auc"] == pytest.approx(0.5)  # 0.6 > 0.5 > 0.15: one of two fake videos above the real one
  assert out["video_acc"] == pytest.approx(2 / 3)
  maxed = metrics_lib.detection_metrics("max")
  out = maxed.single_from_model_output(pred_label=score, label=label, pred_mask=probs, gt_mask=probs, video=video,
                                       valid=jnp.ones(6, bool))
  assert out.merge(maxed.empty()).compute()["video_auc"] == pytest.approx(0.5)  # maxima 0.9, 0.8 (real), 0.2
  with pytest.raises(ValueError, match="video_aggregation"):
    metrics_lib.detection_metrics("median")
