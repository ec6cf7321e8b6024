"""MSCCNet through the engine on the 4-device mesh: the smoke config trains from the tiny demo corpus, evaluates
with both protocols and writes its checkpoint; the losses and the official evaluation details."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.data import demo
from common.train import checkpoint
from common.train import config as config_lib
from configs import msccnet as msccnet_configs
from msccnet_jax import task as task_lib
from tests.test_engine import losses

METRICS = ("image_acc", "image_auc", "pixel_f1_class_avg", "pixel_iou_class_avg", "pixel_f1", "pixel_iou",
           "pixel_auc")


@pytest.fixture(scope="module")
def tiny_faces(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("demo") / "corpus")
  demo.build(out, seed=0, scale="tiny")
  return os.path.join(out, "faces")


def smoke(root):
  c = msccnet_configs.get_config("smoke")
  c.data.root = root
  return c


@pytest.fixture(scope="module")
def smoke_run(tiny_faces, tmp_path_factory):
  """One row of the cross-manipulation sweep: trained on FaceSwap, evaluated on each manipulation's set."""
  from common.train import sweep
  workdir = str(tmp_path_factory.mktemp("msccnet"))
  rows = sweep.run_sweep("configs/sweeps/msccnet_cross_manipulation.py", smoke(tiny_faces), workdir,
                         only=("train_faceswap",), eval_sets=True, metrics=("image_auc", "pixel_f1"))
  return os.path.join(workdir, "train_faceswap"), dict(rows)["train_faceswap"], workdir


@pytest.mark.slow  # about a minute on 2 cores (two compilations of the whole network)
def test_smoke_run_trains_evaluates_checkpoints_and_fills_its_cross_manipulation_row(smoke_run):
  workdir, row, sweep_dir = smoke_run
  assert jax.device_count() == 4
  logged = losses(workdir)
  assert sorted(logged) == [1, 2] and all(np.isfinite(v) for v in logged.values())
  for term in ("loss_image", "loss_mask", "loss_map"):
    assert np.isfinite(losses(workdir, f"train/{term}")[2])
  for key in METRICS:
    value = losses(workdir, f"eval/{key}")[2]
    assert np.isfinite(value) and 0.0 <= value <= 1.0, (key, value)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True, async_save=False)
  assert ckpt.latest_step() == 2
  assert ckpt.restore_config(2).total_steps == 2 and list(ckpt.restore_config(2).data.methods) == ["FaceSwap"]
  ckpt.close()
  # The row: the run on each manipulation's test set (its fakes with the real frames); FaceSwap's is in-domain.
  assert sorted(row) == ["faceswap/image_auc", "faceswap/pixel_f1", "neuraltextures/image_auc",
                         "neuraltextures/pixel_f1"]
  assert all(0.0 <= v <= 1.0 for v in row.values()), row
  assert row["faceswap/image_auc"] == pytest.approx(losses(workdir, "eval/image_auc")[2], abs=1e-6)  # the same set
  table = open(os.path.join(sweep_dir, "sweep.md"), encoding="utf-8").read()
  assert "| train_faceswap |" in table and "neuraltextures/image_auc" in table


def test_eval_lists_real_frames_once_and_train_pairs_them(tiny_faces):
  task = config_lib.build_task(smoke(tiny_faces))
  train, test = task.source("train"), task.source("test")
  train_labels = [item.label for item in train._items]
  assert train_labels == [1, 0] * (len(train) // 2)            # the official fake/real pairing
  real_ids = [(item.video, item.frame) for item in test._items if item.label == 0]
  assert real_ids and len(real_ids) == len(set(real_ids))    # official de-duplication
  batch = next(iter(task.input_pipeline("test")))
  assert batch["image"].shape == (4, 64, 64, 3) and batch["image"].dtype == np.uint8
  assert set(np.unique(batch["mask"])) <= {0, 1} and "valid" in batch


def _torch_bilinear_upsample(x, size):
  """numpy F.interpolate(mode='bilinear', align_corners=False) of channels-last [B, h, w, C] to `size` (enlarging):
  source coordinate (i + 0.5) * in / out - 0.5, clamped at 0, neighbours clamped to the last row / column."""
  def weights(n_in, n_out):
    src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w = np.zeros((n_out, n_in))
    np.add.at(w, (np.arange(n_out), i0), 1.0 - (src - i0))
    np.add.at(w, (np.arange(n_out), i1), src - i0)
    return w
  wy, wx = weights(x.shape[1], size[0]), weights(x.shape[2], size[1])
  return np.einsum("Yh,Xw,bhwc->bYXc", wy, wx, np.asarray(x, np.float64))


def _cross_entropy(logits, labels):
  """numpy F.cross_entropy (mean) of channels-last logits [..., K] and integer labels [...], float64."""
  logits = np.asarray(logits, np.float64)
  top = logits.max(-1, keepdims=True)
  log_z = np.log(np.exp(logits - top).sum(-1)) + top[..., 0]
  return float(np.mean(log_z - np.take_along_axis(logits, labels[..., None].astype(int), -1)[..., 0]))


def test_losses_are_the_three_official_cross_entropies(tiny_faces):
  """Image CE + mask CE + coarse-map CE (the config's weights), the stride-8 maps upsampled to the input size,
  against numpy (PyTorch's half-pixel bilinear upsampling and cross-entropy). The network is replaced by fixed
  logits of spread 2: a fresh network's maps are nearly flat (class-logit spread ~1e-4), so its loss could not
  tell one upsampling from another."""
  c = smoke(tiny_faces)
  task = config_lib.build_task(c)
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8),
           "mask": (rng.random((2, 64, 64)) > 0.7).astype(np.uint8), "label": np.array([1, 0])}
  out = {"image_logits": rng.normal(0, 2, (2, 2)), "mask_logits": rng.normal(0, 2, (2, 8, 8, 2)),
         "coarse_map": rng.normal(0, 2, (2, 8, 8, 2))}
  seen = []

  def net(x):
    seen.append(x.shape)
    return {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}

  total, terms = jax.jit(lambda batch: task.loss({"model": net}, batch, None))(batch)
  assert seen == [(2, 64, 64, 3)]
  expected = {
      "loss_image": _cross_entropy(out["image_logits"], batch["label"]),
      "loss_mask": _cross_entropy(_torch_bilinear_upsample(out["mask_logits"], (64, 64)), batch["mask"]),
      "loss_map": _cross_entropy(_torch_bilinear_upsample(out["coarse_map"], (64, 64)), batch["mask"]),
  }
  assert sorted(terms) == sorted(expected)
  for name, value in expected.items():
    np.testing.assert_allclose(float(terms[name]), value, rtol=1e-5, err_msg=name)
  w = c.loss
  np.testing.assert_allclose(float(total), w.image_weight * expected["loss_image"] + w.mask_weight
                             * expected["loss_mask"] + w.map_weight * expected["loss_map"], rtol=1e-5)
  nearest = _cross_entropy(np.repeat(np.repeat(out["mask_logits"], 8, 1), 8, 2), batch["mask"])
  assert abs(nearest - expected["loss_mask"]) > 1e-2  # the check can tell the upsampling apart


def test_the_network_gives_stride_8_maps_that_the_loss_upsamples(tiny_faces):
  task = config_lib.build_task(smoke(tiny_faces))
  image = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
  out = jax.eval_shape(lambda s: task.models(s)["model"](task_lib.normalize(image)),
                       jax.eval_shape(task.init, task.key(0)))
  assert out["image_logits"].shape == (2, 2)
  assert out["mask_logits"].shape == out["coarse_map"].shape == (2, 8, 8, 2)


def test_normalisation_is_the_official_one():
  pixel = jnp.array([[123.675, 116.28, 103.53], [255.0, 0.0, 58.395 + 103.53]])
  np.testing.assert_allclose(task_lib.normalize(pixel), [[0, 0, 0], [(255 - 123.675) / 58.395,
                                                                      -116.28 / 57.12, 58.395 / 57.375]],
                             rtol=1e-6)
