"""ViLocal as an engine task: stage 1 contrastive training of the encoder, stage 2 focal-loss training of the decoder.

Stage 1 (`config.stage = 1`): the encoder's embeddings `[B, H/4, W/4, C]` against the target frame's mask
nearest-resized to that grid, with the official pixel InfoNCE (pristine anchors, mean-cosine positive, up to
3000 + 3000 sampled pixels, tau 0.1). Stage 2 (`config.stage = 2`): sigmoid focal loss (alpha 0.5, gamma 2) on
the full-resolution logits; the encoder comes from stage 1 (`init_from`) and is frozen (`freeze`). With an empty
`freeze` stage 2 trains the whole model; `loss.stage2_contrastive_weight > 0` then adds that weight times the
stage-1 InfoNCE on the same forward pass's embeddings (the one-joint-stage ablation, configs/vilocal.py).
`config.stage2_encoder_train_mode` reproduces the official quirk (the frozen encoder left in train mode:
BatchNorm statistics keep updating and dropout stays active); the default follows the paper's intent (frozen
encoder in eval mode). Evaluation follows the official protocol: per-frame F1 and IoU at 0.5 averaged (also by
mask-ratio bin) and pixel AUC.
"""
import functools
import os

import flax
import jax
import jax.numpy as jnp
from clu import metrics as clu_metrics
from flax import nnx

from common import inference, metrics
from common.data import demo, prepared, transforms
from common.data.readers import VideoInpaintingReader
from common.losses import segmentation
from common.train.task import Task
from vilocal_jax import losses, model as model_lib


@flax.struct.dataclass
class LocalizationMetrics(clu_metrics.Collection):
  """ViLocal's test protocol under the suite's metric names (frames without forgery count, F1 = IoU = 0)."""
  pixel_f1: metrics.PixelF1.configure(tampered_only=False)
  pixel_iou: metrics.PixelIoU.configure(tampered_only=False)
  pixel_f1_small: metrics.PixelF1.configure(tampered_only=False, ratio_bin="small")
  pixel_f1_medium: metrics.PixelF1.configure(tampered_only=False, ratio_bin="medium")
  pixel_f1_large: metrics.PixelF1.configure(tampered_only=False, ratio_bin="large")
  pixel_iou_small: metrics.PixelIoU.configure(tampered_only=False, ratio_bin="small")
  pixel_iou_medium: metrics.PixelIoU.configure(tampered_only=False, ratio_bin="medium")
  pixel_iou_large: metrics.PixelIoU.configure(tampered_only=False, ratio_bin="large")
  pixel_auc: metrics.PixelAUC.configure(tampered_only=False)


@flax.struct.dataclass
class ContrastiveMetrics(clu_metrics.Collection):
  contrastive_loss: clu_metrics.Average.from_output("contrastive_loss")


class ViLocalTask(Task):

  def __init__(self, config):
    if config.stage == 2 and config.loss.get("stage2_contrastive_weight", 0.0) and config.freeze:
      raise ValueError("loss.stage2_contrastive_weight > 0 (the joint stage) needs a trainable encoder: set "
                       f"freeze=() (freeze is {list(config.freeze)})")
    super().__init__(config)

  def build_models(self, rngs):
    return {"model": model_lib.ViLocal.from_config(self.config, dtype=self.dtype, rngs=rngs)}

  # ------------------------------------------------------------------ data
  def source(self, split: str) -> VideoInpaintingReader:
    """The clips of `split` ('train': of `data.train_split`, at `clip_stride`; others at `eval_clip_stride`)."""
    train = split == "train"
    return self._reader(self.config.data.train_split if train else split, train)

  @functools.cache  # one index per split: `input_pipeline` builds it (and raises DataError) when called
  def _reader(self, split: str, train: bool) -> VideoInpaintingReader:
    d = self.config.data
    clips = dict(methods=tuple(d.methods) or None, clip_length=d.clip_length,
                 clip_stride=d.clip_stride if train else d.eval_clip_stride, on_error=d.on_error)
    ratio_bin = d.get("mask_ratio_bin") or None
    if prepared.use_prepared(d):
      if ratio_bin:
        raise ValueError("data.mask_ratio_bin: selects videos from their mask folders; set data.format='folder'")
      return prepared.PreparedClips(prepared.dataset_dir(d, "video_inpainting"), split, **clips)
    root = d.root or os.path.join(demo.ensure_demo_corpus(), "video_inpainting")
    return VideoInpaintingReader(root, split, verify=d.verify, ratio_bin=ratio_bin, **clips)

  def steps_per_epoch(self) -> int:
    return max(len(self.source("train")) // self.config.global_batch_size, 1)

  def transforms(self, split: str) -> list:
    """Resize to `height` x `width`; training then crops (`train_crop`) and flips (`flip`). Both stages
    read the same clips."""
    d = self.config.data
    ops = [transforms.Resize(d.height, d.width)]
    if split != "train":
      return ops
    ops += [transforms.RandomCrop(*d.train_crop)] if d.train_crop else []
    return ops + ([transforms.RandomHorizontalFlip()] if d.flip else [])

  # ------------------------------------------------------------------ model pieces
  def _frames(self, frames):
    """uint8 [B, T, H, W, 3] -> compute dtype in [0, 1] (the official ToTensor scaling, no normalisation)."""
    return frames.astype(self.dtype) / 255.0

  def _grid_mask(self, mask, grid_hw):
    """Nearest resize of {0,1} masks [B, H, W] to the embedding grid (the official stage-1 label size)."""
    return jax.image.resize(mask.astype(jnp.float32), (mask.shape[0], *grid_hw), "nearest")

  def _stage2_logits(self, net: model_lib.ViLocal, frames):
    if self.config.stage2_encoder_train_mode:  # the official quirk: dropout active, BN statistics updating
      embedding = net.embed(frames)
    else:
      embedding = nnx.view(net.encoder, deterministic=True, use_running_average=True)(frames)
    return net.decode(jax.lax.stop_gradient(embedding), frames.shape[2:4])

  # ------------------------------------------------------------------ steps
  def loss(self, models, batch, rng):
    c = self.config
    net, frames = models["model"], self._frames(batch["frames"])
    if c.stage == 1:
      embedding = net.embed(frames).astype(jnp.float32)
      mask = self._grid_mask(batch["mask"], embedding.shape[1:3])
      loss = losses.vilocal_pixel_infonce(embedding, mask, rng, num_samples=c.loss.num_samples,
                                          temperature=c.loss.temperature)
      return loss, {}
    target = batch["mask"].astype(jnp.float32)
    if c.freeze:
      logits = self._stage2_logits(net, frames)
    else:  # the whole model trains (the no-contrastive-stage and joint ablations)
      embedding = net.embed(frames)
      logits = net.decode(embedding, frames.shape[2:4])
    loss = segmentation.sigmoid_focal_loss(logits, target, alpha=c.loss.alpha, gamma=c.loss.gamma)
    aux = {"pixel_acc": ((logits > 0) == (target > 0.5)).mean()}
    weight = c.loss.get("stage2_contrastive_weight", 0.0)
    if weight:  # one joint stage: focal + weight x the stage-1 pixel InfoNCE on the same forward's embeddings
      embedding = embedding.astype(jnp.float32)
      contrastive_loss = losses.vilocal_pixel_infonce(
          embedding, self._grid_mask(batch["mask"], embedding.shape[1:3]), rng, num_samples=c.loss.num_samples,
          temperature=c.loss.temperature)
      aux.update(focal_loss=loss, contrastive_loss=contrastive_loss)
      loss = loss + weight * contrastive_loss
    return loss, aux

  def eval_step(self, state, batch):
    net = self.models(state)["model"]
    frames = self._frames(batch["frames"])
    if self.config.stage == 1:
      embedding = net.embed(frames).astype(jnp.float32)
      mask = self._grid_mask(batch["mask"], embedding.shape[1:3])
      loss_fn = functools.partial(losses.vilocal_pixel_infonce, num_samples=self.config.loss.num_samples,
                                  temperature=self.config.loss.temperature)
      per_clip = jax.vmap(lambda e, m: loss_fn(e[None], m[None], self.key(0)))(embedding, mask)
      return ContrastiveMetrics.single_from_model_output(contrastive_loss=per_clip, mask=batch["valid"])
    probs = jax.nn.sigmoid(net(frames))
    return LocalizationMetrics.single_from_model_output(pred_mask=probs, gt_mask=batch["mask"],
                                                        valid=batch["valid"])

  def image_summaries(self, state, batch):
    if self.config.stage == 1:
      return {}
    probs = jax.nn.sigmoid(self.models(state)["model"](self._frames(batch["frames"][:2])))
    middle = batch["frames"][:2, batch["frames"].shape[1] // 2].astype(jnp.float32) / 255.0
    heat = jnp.stack([probs, jnp.zeros_like(probs), 1.0 - probs], -1)
    return {"overlay": 0.5 * middle + 0.5 * heat, "mask": batch["mask"][:2, ..., None].astype(jnp.float32)}

  # ------------------------------------------------------------------ export
  def predict(self, models, inputs):
    frames = inputs["frames"].astype(jnp.float32) / 255.0
    return {"probs": jax.nn.sigmoid(models["model"](frames.astype(self.dtype)))}

  def export_spec(self):
    d = self.config.data
    # Any H, W that are multiples of 8 (the trained 120 x 216 and the paper's 240 x 432 are). Predict cuts other
    # sizes into overlapping tiles of the trained size: never resampled (the 3D SRM residual the model reads does
    # not survive resampling), with the spatial context the model was trained on, in bounded memory.
    shape = inference.InputSpec(kind="clip", size=(d.height, d.width), clip_length=d.clip_length, native="tiles",
                                symbolic=True, multiple=8)
    return inference.spec({"frames": {"shape": [d.clip_length, *inference.spatial(shape), 3], "layout": "THWC"}},
                          shape, {"probs": "forgery probability of the middle frame of the clip, [B, H, W]"})
