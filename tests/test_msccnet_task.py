"""MSCCNet through the engine on the 4-device mesh: the smoke config trains from the tiny demo corpus, evaluates
with both protocols and writes its checkpoint; the losses and the official evaluation details."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.data import demo
from common.losses import segmentation
from common.train import checkpoint, loop
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
  workdir = str(tmp_path_factory.mktemp("msccnet"))
  return workdir, loop.run(smoke(tiny_faces), workdir)


@pytest.mark.slow  # about a minute on 2 cores (two compilations of the whole network)
def test_smoke_run_trains_evaluates_and_checkpoints(smoke_run):
  workdir, metrics = smoke_run
  assert jax.device_count() == 4
  logged = losses(workdir)
  assert sorted(logged) == [1, 2] and all(np.isfinite(v) for v in logged.values())
  for term in ("loss_image", "loss_mask", "loss_map"):
    assert np.isfinite(losses(workdir, f"train/{term}")[2])
  assert set(METRICS) <= set(metrics)
  for key in METRICS:
    assert np.isnan(metrics[key]) or 0.0 <= metrics[key] <= 1.0, (key, metrics[key])
  assert np.isfinite(metrics["image_auc"]) and np.isfinite(metrics["pixel_f1_class_avg"])
  assert losses(workdir, "eval/image_auc")[2] == pytest.approx(metrics["image_auc"])
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True, async_save=False)
  assert ckpt.latest_step() == 2
  assert ckpt.restore_config(2).total_steps == 2
  ckpt.close()


def test_eval_lists_real_frames_once_and_train_pairs_them(tiny_faces):
  task = loop.build_task(smoke(tiny_faces))
  train, test = task._reader("train"), task._reader("test")
  train_labels = [item.label for item in train._items]
  assert train_labels == [1, 0] * (len(train) // 2)            # the official fake/real pairing
  real_ids = [(item.video, item.frame) for item in test._items if item.label == 0]
  assert real_ids and len(real_ids) == len(set(real_ids))    # official de-duplication
  batch = next(iter(task.input_pipeline("test")))
  assert batch["image"].shape == (4, 64, 64, 3) and batch["image"].dtype == np.uint8
  assert set(np.unique(batch["mask"])) <= {0, 1} and "valid" in batch


def test_losses_are_the_three_official_cross_entropies(tiny_faces):
  """Image CE + mask CE + coarse-map CE (weights 1), the maps upsampled to the input size."""
  c = smoke(tiny_faces)
  task = loop.build_task(c)
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8),
           "mask": (rng.random((2, 64, 64)) > 0.7).astype(np.uint8), "label": np.array([1, 0])}

  @jax.jit
  def run(state, batch):
    models = task.models(state)  # eval mode: deterministic, so the loss can be recomputed
    return task.loss(models, batch, None), models["model"](task_lib.normalize(batch["image"]))

  (total, terms), out = run(jax.jit(task.init)(task.key(0)), batch)
  mask_logits = jax.image.resize(out["mask_logits"], (2, 64, 64, 2), "bilinear")
  log_probs = jax.nn.log_softmax(mask_logits, -1)
  expected_mask = -jnp.take_along_axis(log_probs, batch["mask"][..., None].astype(int), -1).mean()
  np.testing.assert_allclose(terms["loss_mask"], expected_mask, rtol=1e-5)
  np.testing.assert_allclose(terms["loss_image"], segmentation.softmax_cross_entropy(
      out["image_logits"], batch["label"]), rtol=1e-6)
  np.testing.assert_allclose(total, sum(terms.values()), rtol=1e-6)
  assert not np.isclose(terms["loss_map"], terms["loss_mask"])


def test_normalisation_is_the_official_one():
  pixel = jnp.array([[123.675, 116.28, 103.53], [255.0, 0.0, 58.395 + 103.53]])
  np.testing.assert_allclose(task_lib.normalize(pixel), [[0, 0, 0], [(255 - 123.675) / 58.395,
                                                                      -116.28 / 57.12, 58.395 / 57.375]],
                             rtol=1e-6)
