"""A small supervised task for engine tests: per-pixel segmentation of synthetic images (conv + BN + dropout).

(No `from __future__ import annotations`: clu metric collections read their field annotations at runtime.)
"""
import os
import time

import flax
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from clu import metrics as clu_metrics
from flax import nnx

from common import inference
from common.data.readers.media import DataError
from common.train.config import base_config
from common.train.task import Task


class ToySource:
  """`n` records: image float32 [8,8,3] and mask uint8 [8,8] (pixel is forged where channel sum > 1.5).

  Faults for the engine's tests: record `nan_record` holds a NaN pixel; reading record `bad_record` raises
  DataError naming `bad_file` while that file exists; a non-empty `folder` must exist (checked when the source
  is opened, as the real readers check their folders).
  """

  def __init__(self, n: int, seed: int, nan_record: int = -1, bad_record: int = -1, bad_file: str = "",
               folder: str = ""):
    if folder and not os.path.isdir(folder):
      raise DataError(folder, "missing image folder")
    self.n, self.seed, self.nan_record, self.bad_record, self.bad_file = n, seed, nan_record, bad_record, bad_file

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    if i == self.bad_record and os.path.exists(self.bad_file):
      raise DataError(self.bad_file, "cannot decode image (test fault)")
    rng = np.random.default_rng([self.seed, i])
    image = rng.random((8, 8, 3), dtype=np.float32)
    if i == self.nan_record:
      image[0, 0, 0] = np.nan
    return {"image": image, "mask": (image.sum(-1) > 1.5).astype(np.uint8)}

  def __repr__(self):
    return f"ToySource(n={self.n}, seed={self.seed})"


class Slow(grain.transforms.Map):
  """Sleeps per record: lets process-kill tests catch a run mid-way."""

  def __init__(self, seconds: float):
    self.seconds = seconds

  def map(self, record):
    time.sleep(self.seconds)
    return record


class ToyNet(nnx.Module):
  """[B,8,8,3] -> logits [B,8,8] (or a [B] score with `out=1, pool=True`)."""

  def __init__(self, width: int, dropout: float, use_bn: bool, rngs: nnx.Rngs, in_ch: int = 3, pool: bool = False,
               dtype=jnp.float32):
    # No bias before BatchNorm: its gradient is pure rounding noise, which Adam would amplify.
    self.conv1 = nnx.Conv(in_ch, width, (3, 3), use_bias=not use_bn, dtype=dtype, rngs=rngs)
    self.bn1 = nnx.BatchNorm(width, momentum=0.9, dtype=dtype, rngs=rngs) if use_bn else None
    self.drop = nnx.Dropout(dropout, rngs=rngs)
    self.conv2 = nnx.Conv(width, 1, (1, 1), dtype=dtype, rngs=rngs)
    self.pool = pool

  def __call__(self, x):
    h = self.conv1(x)
    h = self.bn1(h) if self.bn1 is not None else h
    y = self.conv2(self.drop(nnx.relu(h)))[..., 0]
    return y.mean((1, 2)) if self.pool else y


@flax.struct.dataclass
class EvalMetrics(clu_metrics.Collection):
  loss: clu_metrics.Average.from_output("loss")


class ToyTask(Task):

  def build_models(self, rngs):
    c = self.config
    return {"model": ToyNet(c.width, c.dropout, c.use_bn, rngs, dtype=self.dtype)}

  def loss(self, models, batch, rng):
    logits = models["model"](batch["image"]).astype(jnp.float32)
    loss = optax.sigmoid_binary_cross_entropy(logits, batch["mask"].astype(jnp.float32)).mean()
    return loss, {"pixel_acc": ((logits > 0) == (batch["mask"] > 0)).mean()}

  def eval_step(self, state, batch):
    logits = self.models(state)["model"](batch["image"])
    per_image = optax.sigmoid_binary_cross_entropy(logits, batch["mask"].astype(jnp.float32)).mean((1, 2))
    return EvalMetrics.single_from_model_output(loss=per_image, mask=batch["valid"])

  def source(self, split):
    c = self.config
    if split == "train":
      return ToySource(c.train_size, seed=1, nan_record=c.faults.nan_record, bad_record=c.faults.bad_train_record,
                       bad_file=c.faults.bad_file)
    return ToySource(c.eval_size, seed=2, bad_record=c.faults.bad_eval_record, bad_file=c.faults.bad_file,
                     folder=c.faults.eval_folder)

  def transforms(self, split):
    return [Slow(self.config.step_delay)] if split == "train" and self.config.step_delay else []

  def image_summaries(self, state, batch):
    return {"heatmap": jax.nn.sigmoid(self.models(state)["model"](batch["image"][:2]))[..., None]}

  def predict(self, models, inputs):
    return {"probs": jax.nn.sigmoid(models["model"](inputs["image"].astype(jnp.float32) / 255.0))}

  def export_spec(self):
    shape = inference.InputSpec(kind="image", size=(8, 8), symbolic=True)  # convolutions only
    return inference.spec({"image": {"shape": ["h", "w", 3], "layout": "HWC"}}, shape,
                          {"probs": "per-pixel forgery probability [B, H, W]"})


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The toy run; `arg='two_stage'`: stage1 trains everything, stage2 starts from it with conv1 frozen."""
  c = base_config()
  c.task = "tests.toy_task:ToyTask"
  c.width = 8
  c.dropout = 0.1
  c.use_bn = True
  c.step_delay = 0.0  # seconds per training record
  c.train_size = 64
  c.eval_size = 20
  c.global_batch_size = 8
  c.total_steps = 20
  c.log_every = 1
  c.eval_every = 10
  c.checkpoint_every = 5
  c.optimizer.lr = 3e-2
  c.faults = ml_collections.ConfigDict(dict(nan_record=-1, bad_train_record=-1, bad_eval_record=-1, bad_file="",
                                            eval_folder=""))
  if arg == "two_stage":
    c.run_stages = "stage1,stage2"
    c.stages = ml_collections.ConfigDict({
        "stage1": {},
        "stage2": {"init_from_stage": "stage1", "freeze": ["model/conv1"], "init_from": {"include": "params/|rest/"},
                   "optimizer": {"lr": 1e-2}}})
  return c


class ToyGanTask(ToyTask):
  """Two models, two optimizers, one step: a discriminator update then a generator update (non-saturating)."""

  def build_models(self, rngs):
    c = self.config
    return {"generator": ToyNet(c.width, 0.0, False, rngs),
            "discriminator": ToyNet(c.width, 0.0, c.use_bn, rngs, in_ch=4, pool=True)}

  def _fake(self, models, batch):
    return jnp.concatenate([batch["image"], jax.nn.sigmoid(models["generator"](batch["image"]))[..., None]], -1)

  def train_step(self, state, batch):
    real = jnp.concatenate([batch["image"], batch["mask"][..., None].astype(jnp.float32)], -1)

    def d_loss(models, batch, rng):
      fake = jax.lax.stop_gradient(self._fake(models, batch))
      scores = models["discriminator"](jnp.concatenate([real, fake]))
      n = real.shape[0]
      loss = (optax.sigmoid_binary_cross_entropy(scores[:n], jnp.ones(n)).mean()
              + optax.sigmoid_binary_cross_entropy(scores[n:], jnp.zeros(n)).mean())
      return loss, {}

    def g_loss(models, batch, rng):
      score = models["discriminator"](self._fake(models, batch))
      return optax.sigmoid_binary_cross_entropy(score, jnp.ones_like(score)).mean(), {}

    d, _, d_grads, rest = self.grads(state, d_loss, batch, wrt=("discriminator",))
    state = self.apply_grads(state, d_grads, rest)
    g, _, g_grads, rest = self.grads(state, g_loss, batch, wrt=("generator",))
    state = self.apply_grads(state, g_grads, rest)
    return state.replace(step=state.step + 1), {"loss": g + d, "d_loss": d, "g_loss": g}

  def image_summaries(self, state, batch):
    return {"inpainted": jax.nn.sigmoid(self.models(state)["generator"](batch["image"][:2]))[..., None]}

  def eval_step(self, state, batch):
    probs = jax.nn.sigmoid(self.models(state)["generator"](batch["image"]))
    l1 = jnp.abs(probs - batch["mask"]).mean((1, 2))
    return EvalMetrics.single_from_model_output(loss=l1, mask=batch["valid"])
