"""A small supervised task for engine tests: per-pixel segmentation of synthetic images (conv + BN + dropout).

(No `from __future__ import annotations`: clu metric collections read their field annotations at runtime.)
"""
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from clu import metrics as clu_metrics
from flax import nnx

from common.data import pipeline
from common.train.config import base_config
from common.train.task import Task


class ToySource:
  """`n` records: image float32 [8,8,3] and mask uint8 [8,8] (pixel is forged where channel sum > 1.5)."""

  def __init__(self, n: int, seed: int):
    self.n, self.seed = n, seed

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    rng = np.random.default_rng([self.seed, i])
    image = rng.random((8, 8, 3), dtype=np.float32)
    return {"image": image, "mask": (image.sum(-1) > 1.5).astype(np.uint8)}

  def __repr__(self):
    return f"ToySource(n={self.n}, seed={self.seed})"


class ToyNet(nnx.Module):
  """[B,8,8,3] -> logits [B,8,8]."""

  def __init__(self, width: int, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(3, width, (3, 3), rngs=rngs)
    self.bn1 = nnx.BatchNorm(width, momentum=0.9, rngs=rngs)
    self.drop = nnx.Dropout(0.1, rngs=rngs)
    self.conv2 = nnx.Conv(width, 1, (1, 1), rngs=rngs)

  def __call__(self, x):
    return self.conv2(self.drop(nnx.relu(self.bn1(self.conv1(x)))))[..., 0]


@flax.struct.dataclass
class EvalMetrics(clu_metrics.Collection):
  loss: clu_metrics.Average.from_output("loss")


class ToyTask(Task):

  def build_models(self, rngs):
    return {"model": ToyNet(self.config.width, rngs)}

  def loss(self, models, batch):
    logits = models["model"](batch["image"])
    loss = optax.sigmoid_binary_cross_entropy(logits, batch["mask"].astype(jnp.float32)).mean()
    return loss, {"pixel_acc": ((logits > 0) == (batch["mask"] > 0)).mean()}

  def eval_step(self, state, batch):
    logits = self.models(state)["model"](batch["image"])
    per_image = optax.sigmoid_binary_cross_entropy(logits, batch["mask"].astype(jnp.float32)).mean((1, 2))
    return EvalMetrics.single_from_model_output(loss=per_image, mask=batch["valid"])

  def input_pipeline(self, split, *, process_index=0, process_count=1):
    c = self.config
    if split == "train":
      return pipeline.train_dataset(ToySource(c.train_size, seed=1), seed=c.seed,
                                    batch_size=c.global_batch_size // process_count,
                                    process_index=process_index, process_count=process_count)
    return pipeline.eval_batches(ToySource(c.eval_size, seed=2), batch_size=c.global_batch_size // process_count,
                                 process_index=process_index, process_count=process_count)

  def predict(self, models, inputs):
    return {"probs": jax.nn.sigmoid(models["model"](inputs["image"]))}

  def export_spec(self):
    return {"inputs": {"image": {"shape": [8, 8, 3], "dtype": "float32"}}, "normalisation": "none: [0, 1] floats",
            "outputs": {"probs": "per-pixel forgery probability [B, 8, 8]"}}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  c = base_config()
  c.task = "tests.toy_task:ToyTask"
  c.width = 8
  c.train_size = 64
  c.eval_size = 20
  c.global_batch_size = 8
  c.total_steps = 20
  c.log_every = 1
  c.eval_every = 10
  c.checkpoint_every = 5
  c.optimizer.lr = 3e-2
  return c
