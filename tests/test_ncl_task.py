"""NCL through the engine: the smoke config trains on the 4-device mesh from the tiny demo corpus (every loss term
logged), evaluates with the image-manipulation metrics, and the loss sees the step (pivot roles switch)."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.data import demo
from common.train import loop
from common.train import config as config_lib
from configs import ncl as ncl_configs
from ncl_jax import losses as ncl_losses
from ncl_jax import model as model_lib
from tests.test_engine import losses


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("demo") / "corpus")
  demo.build(out, seed=0, scale="tiny")
  return os.path.join(out, "image_manipulation")


def smoke(corpus):
  c = ncl_configs.get_config("smoke")
  c.data.sets = {"train": os.path.join(corpus, "train.json"), "test": os.path.join(corpus, "test.json")}
  return c


@pytest.mark.slow  # a ResNet-50 train + eval compile: ~60 s alone on 2 cores, 116 s measured under contention
def test_smoke_trains_on_the_mesh_and_logs_every_term_and_metric(tiny_corpus, tmp_path):
  metrics = loop.run(smoke(tiny_corpus), str(tmp_path))
  assert jax.device_count() == 4
  assert sorted(losses(str(tmp_path))) == [1, 2]
  for term in ("seg_loss", "dice_loss", "branch_seg_loss", "contrastive_loss", "pivot_loss"):
    logged = losses(str(tmp_path), f"train/{term}")
    assert all(np.isfinite(v) for v in logged.values()), term
  assert losses(str(tmp_path), "train/contrastive_loss")[1] > 0  # the tiny masks give both labels
  for key in ("pixel_f1", "pixel_f1_permuted", "pixel_best_f1", "pixel_iou", "pixel_auc"):
    assert 0.0 <= metrics[key] <= 1.0, key
  assert metrics["pixel_f1_permuted"] >= metrics["pixel_f1"] - 1e-6
  assert metrics["pixel_best_f1"] >= metrics["pixel_f1"] - 1e-6
  assert losses(str(tmp_path), "eval/pixel_f1")[2] == pytest.approx(metrics["pixel_f1"])


def test_contrastive_term_depends_on_the_switch_phase_and_contour_mode(tiny_corpus):
  """Same outputs and mask: the two phases (swapped contour roles) and 'discard' give different terms."""
  task = config_lib.build_task(smoke(tiny_corpus))
  b, h, w = 2, 16, 16
  key = jax.random.key(0)
  emb = jax.random.normal(key, (2, b, h, w, 16))
  outputs = model_lib.Outputs(jnp.zeros((b, 64, 64, 2)), emb, jnp.zeros((2, b, h, w, 2)))
  mask = np.zeros((b, 64, 64), np.uint8)
  mask[:, 10:40, 5:30] = 1                       # tampered, authentic and contour patches
  terms = [task.loss_terms(outputs, jnp.asarray(mask), key, jnp.asarray(s))["contrastive_loss"] for s in (0, 1)]
  assert np.isfinite(terms).all() and terms[0] != terms[1]
  classes = ncl_losses.mask_patches(jnp.asarray(mask), (h, w), 2).reshape(-1)
  assert set(np.unique(np.asarray(classes)).tolist()) == {0, 1, 2}
  task.config.ncl.contour_mode = "discard"
  discarded = task.loss_terms(outputs, jnp.asarray(mask), key, jnp.asarray(0))["contrastive_loss"]
  assert np.isfinite(discarded) and discarded not in terms
