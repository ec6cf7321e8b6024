"""NCL-IML as an engine task: DeepLabV3+ with pivot branches, trained with segmentation, patch-contrastive and
pivot-consistent losses (ncl_jax/losses.py), evaluated with the image-manipulation pixel metrics.

Loss at step s (weights in `config.ncl`):
  seg_weight * CE(logits, mask)                                           full resolution, 2 classes
  + dice_weight * dice(softmax tampered probability, mask)                0 in the paper config
  + branch_seg_weight * mean_b CE(branch_logits_b, mask at H/4, nearest)
  + contrastive_weight * mean_b InfoNCE(patches, labels with contour role of branch b at phase(s))
  + pivot_weight * pivot_consistency(branch_logits)
Inputs: uint8 RGB -> /255 -> ImageNet mean/std (the notebook's preprocessing). Evaluation: tampered probability
= softmax(logits)[..., 1] (the notebook's argmax is the 0.5 threshold); per-image pixel F1 at 0.5 (origin and
permuted), best-threshold F1, IoU and AUC over the tampered images (IMDL-BenCo / Protocol-MVSS).
"""

import functools
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from clu import metrics as clu_metrics

from common import inference, metrics
from common.data import demo, prepared, transforms
from common.data.readers import ImageManipulationReader
from common.losses import segmentation
from common.train.task import Task
from ncl_jax import losses
from ncl_jax import model as model_lib

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


@flax.struct.dataclass
class EvalMetrics(clu_metrics.Collection):
  """Per-image means over the tampered images of a test set."""
  pixel_f1: metrics.PixelF1
  pixel_f1_permuted: metrics.PixelF1.configure(mode="double")
  pixel_best_f1: metrics.PixelBestF1
  pixel_iou: metrics.PixelIoU
  pixel_auc: metrics.PixelAUC


def normalize(images: jax.Array, dtype=jnp.float32) -> jax.Array:
  """uint8 [..., 3] RGB -> ImageNet-normalised `dtype`."""
  return ((images.astype(jnp.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).astype(dtype)


def tampered_probability(logits: jax.Array) -> jax.Array:
  """[..., 2] logits -> [...] softmax probability of the tampered class."""
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[..., 1]


class NCLTask(Task):

  def build_models(self, rngs):
    return {"model": model_lib.NCLNet.from_config(self.config, dtype=self.dtype, rngs=rngs)}

  # ------------------------------------------------------------------ data
  def source(self, split: str) -> ImageManipulationReader:
    """The reader of `data.sets[split]` ('train': of `data.train_split`)."""
    return self._reader(self.config.data.train_split if split == "train" else split)

  @functools.cache  # one index per split: `input_pipeline` builds it (and raises DataError) when called
  def _reader(self, split: str) -> ImageManipulationReader:
    """The reader of `data.sets[split]` (a JSON pair list or a Tp/Gt folder; "" = the demo corpus)."""
    d = self.config.data
    if prepared.use_prepared(d):
      return prepared.PreparedRecords(prepared.dataset_dir(d, "image_manipulation"), split)
    if split not in d.sets:
      raise ValueError(f"split {split!r} is not in config.data.sets {sorted(d.sets)}")
    path = d.sets[split]
    if not path:
      if split not in ("train", "test"):
        raise ValueError(f"config.data.sets.{split} is empty: set it to the IMDL-BenCo JSON or Tp/Gt folder of "
                         f"{split}")
      path = os.path.join(demo.ensure_demo_corpus(), "image_manipulation", f"{split}.json")
    source = dict(json_path=path) if path.endswith(".json") else dict(root=path)
    return ImageManipulationReader(**source, verify=d.verify, on_error=d.on_error)

  def steps_per_epoch(self) -> int:
    return max(len(self.source("train")) // self.config.global_batch_size, 1)

  def transforms(self, split: str) -> list:
    """Training: resize, random crop, flip (as configured). Evaluation: resize (the engine then applies
    `data.perturbation`, `Task.eval_perturbation`)."""
    d = self.config.data
    ops = [transforms.Resize(d.size, d.size)] if d.size else []
    if split != "train":
      return ops
    ops += [transforms.RandomCrop(d.crop, d.crop)] if d.crop else []
    return ops + ([transforms.RandomHorizontalFlip()] if d.flip else [])

  # ------------------------------------------------------------------ losses
  def loss_terms(self, outputs: model_lib.Outputs, mask: jax.Array, rng: jax.Array,
                 step: jax.Array) -> dict[str, jax.Array]:
    """Every loss term (unweighted) of `outputs` against the {0,1} `mask` [B, H, W] at training `step`."""
    n = self.config.ncl
    num_branches, _, h, w, _ = outputs.branch_logits.shape
    grid_mask = jax.image.resize(mask.astype(jnp.float32), (mask.shape[0], h, w), "nearest")
    branch_seg = jnp.mean(jnp.stack([
        segmentation.softmax_cross_entropy(outputs.branch_logits[b], grid_mask.astype(jnp.int32), ignore_index=None)
        for b in range(num_branches)]))
    classes = losses.mask_patches(mask, (h, w), n.patch_size).reshape(-1)
    roles = losses.contour_roles(num_branches, n.contour_mode, losses.switch_phase(step, n.switch_every))
    keys = jax.random.split(rng, num_branches)
    contrast = jnp.mean(jnp.stack([
        losses.patch_infonce(losses.pool_patches(outputs.embeddings[b], n.patch_size).reshape(classes.shape[0], -1),
                             losses.contrast_labels(classes, roles[b]), keys[b],
                             max_per_class=n.max_per_class, temperature=n.temperature)
        for b in range(num_branches)]))
    tampered_logit = outputs.logits[..., 1] - outputs.logits[..., 0]  # sigmoid of it = softmax tampered probability
    return {"seg_loss": segmentation.softmax_cross_entropy(outputs.logits, mask.astype(jnp.int32), ignore_index=None),
            "dice_loss": segmentation.dice_loss(tampered_logit, mask.astype(jnp.float32)),
            "branch_seg_loss": branch_seg, "contrastive_loss": contrast,
            "pivot_loss": losses.pivot_consistency(outputs.branch_logits)}

  def loss_at(self, models, batch, rng, step):
    n = self.config.ncl
    outputs = models["model"].forward(normalize(batch["image"], self.dtype))
    terms = self.loss_terms(outputs, batch["mask"], rng, step)
    w = self.config.loss
    total = (w.seg_weight * terms["seg_loss"] + w.dice_weight * terms["dice_loss"]
             + w.branch_seg_weight * terms["branch_seg_loss"]
             + w.contrastive_weight * terms["contrastive_loss"] + w.pivot_weight * terms["pivot_loss"])
    pixel_acc = jnp.mean((tampered_probability(outputs.logits) > 0.5) == (batch["mask"] > 0))
    return total, dict(terms, pixel_acc=pixel_acc)

  def train_step(self, state, batch):
    """The default step, with the loss told the step (the pivot roles switch with it)."""
    loss_fn = functools.partial(self.loss_at, step=state.step)
    loss, metrics_, grads, rest = self.grads(state, loss_fn, batch)
    state = self.apply_grads(state, grads, rest)
    return state.replace(step=state.step + 1), dict(metrics_, loss=loss, grad_norm=optax.tree.norm(grads))

  # ------------------------------------------------------------------ eval
  def probabilities(self, models, images: jax.Array) -> jax.Array:
    """uint8 [B, H, W, 3] -> tampered probabilities [B, H, W]."""
    return tampered_probability(models["model"](normalize(images, self.dtype)))

  def eval_step(self, state, batch):
    probs = self.probabilities(self.models(state), batch["image"])
    return EvalMetrics.single_from_model_output(pred_mask=probs, gt_mask=batch["mask"], valid=batch["valid"])

  def image_summaries(self, state, batch):
    probs = self.probabilities(self.models(state), batch["image"][:2])
    image = batch["image"][:2].astype(jnp.float32) / 255.0
    heat = jnp.stack([probs, jnp.zeros_like(probs), 1.0 - probs], -1)
    return {"overlay": 0.5 * image + 0.5 * heat, "mask": batch["mask"][:2, ..., None].astype(jnp.float32)}

  # ------------------------------------------------------------------ export
  def predict(self, models, inputs):
    return {"probs": tampered_probability(models["model"](normalize(inputs["image"], self.dtype)))}

  def export_spec(self):
    size = self.config.data.export_size or self.config.data.size
    shape = inference.InputSpec(kind="image", size=(size, size), symbolic=True,
                                multiple=self.config.model.output_stride)
    return inference.spec({"image": {"shape": [*inference.spatial(shape), 3], "layout": "HWC"}}, shape,
                          {"probs": "tampered probability per pixel, [B, H, W]"})
