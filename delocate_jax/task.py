"""Delocate as an engine task: stage 1 recovers real faces (MAE), stage 2 localizes and detects from the recovery.

Stage 1 (`config.stage = 1`, real faces only): per face, ROI tokens (`face_regions`: picked ROIs, then random
patches up to `masking.mask_ratio`) are masked and the MAE predicts their pixels; loss = MSE on the masked
patches (`vit.masked_patch_mse`, `loss.norm_pix`). Its evaluation reads (fake, aligned real) crop pairs of the
evaluation split and recovers both whole faces region by region (`Delocate.recover`); it logs
`recovery_ratio` = mean |x - x_hat| over the manipulated pixels of the fakes / the same over the same pixels of
their real counterparts (> 1: recovery fails where the face was manipulated), the two terms, and `recon_loss`
(the training loss on the real crops, fixed masks).

Stage 2 (`config.stage = 2`): the frozen MAE (eval mode) recovers the face; the localizer reads concat(face,
recovery, |face - recovery|) and predicts the mask and a class logit. Loss = `cls_weight` BCE(class) +
`mask_bce_weight` BCE(mask) + `mask_dice_weight` Dice(mask); real faces have all-zero masks. With
`meta.enabled` each step is a first-order MLDG step: the batch is split into a meta-train and a meta-test domain
(the fakes of one training manipulation, drawn per step, plus half the real faces; with one manipulation its
fakes are split at random), theta' = theta - `meta.inner_lr` * grad L_train(theta), and the update uses
grad L_train(theta) + `meta.test_weight` * grad L_test(theta') (the second-order term dropped).

Evaluation of stage 2 (the split's real frames listed once): frame-level `image_acc` / `image_auc`,
video-level `video_acc` / `video_auc` (frame scores of a video aggregated by `video_aggregation`), per-frame
`pixel_f1` / `pixel_iou` / `pixel_auc` over the manipulated frames (`common.metrics`), on the fakes of
`data.methods` with the real faces; the same on the fakes of `data.cross_methods` with the real faces under
`cross_*` (cross-manipulation evaluation). A cross-dataset set (`data.layout` 'celeb_df' | 'dfdc' | 'dfd', e.g. as
one of `config.eval_sets`) has no pixel masks: its crops, real and fake, give the frame and video metrics only.
Data adapters are in `delocate_jax.data`, the metrics in `delocate_jax.metrics`.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from common import inference
from common.data import demo, prepared, transforms
from common.data.faces import detection as face_detection
from common.data.readers import FaceForensicsReader
from common.data.readers import face_videos
from common.losses import segmentation
from common.nn import vit
from common.train.task import Task, eval_view
from delocate_jax import data as data_lib
from delocate_jax import face_regions
from delocate_jax import metrics as metrics_lib
from delocate_jax import model as model_lib

# MAE's input normalisation: ImageNet mean / std on [0, 1] RGB.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def normalize(image: jax.Array, dtype=jnp.float32) -> jax.Array:
  """RGB 0-255 [..., 3] -> normalised `dtype`."""
  return ((image.astype(jnp.float32) / 255.0 - jnp.asarray(MEAN)) / jnp.asarray(STD)).astype(dtype)


def denormalize(x: jax.Array) -> jax.Array:
  """Normalised [..., 3] -> RGB in [0, 1] (float32, not clipped)."""
  return x.astype(jnp.float32) * jnp.asarray(STD) + jnp.asarray(MEAN)


# ---------------------------------------------------------------------------------------------------- task
class DelocateTask(Task):

  def build_models(self, rngs):
    return {"model": model_lib.Delocate.from_config(self.config, dtype=self.dtype, rngs=rngs)}

  @property
  def grid(self) -> tuple[int, int]:
    s, p = self.config.data.size, self.config.model.patch
    if s % p:
      raise ValueError(f"data.size={s} is not divisible by model.patch={p}")
    return s // p, s // p

  @property
  def num_masked(self) -> int:
    n = self.grid[0] * self.grid[1]
    return int(np.clip(round(self.config.masking.mask_ratio * n), 1, n - 1))

  # ------------------------------------------------------------------ data
  def _root(self) -> str:
    return self.config.data.root or os.path.join(demo.ensure_demo_corpus(), "faces")

  @property
  def face_set(self) -> bool:
    """True when `data.layout` names a cross-dataset test set (labelled videos without masks), not FF++."""
    return self.config.data.get("layout", "faceforensics") != "faceforensics"

  def methods(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(training manipulations, cross-evaluation manipulations)."""
    d = self.config.data
    cross = tuple(d.cross_methods)
    available = (prepared.face_methods(prepared.faces_dir(d, resizes_first=True)) if prepared.use_prepared(d) else
                 sorted(os.listdir(os.path.join(self._root(), "manipulated_sequences"))))
    train = tuple(d.methods) or tuple(m for m in available if m not in cross)
    if set(train) & set(cross):
      raise ValueError(f"data.methods {train} and data.cross_methods {cross} overlap")
    return train, cross

  @functools.cache  # one index per split: `input_pipeline` builds it (and raises DataError) when called
  def _reader(self, split: str, methods: tuple[str, ...], real_per_method: bool) -> FaceForensicsReader:
    d = self.config.data
    if prepared.use_prepared(d):
      return prepared.PreparedFaces(prepared.faces_dir(d, resizes_first=True), split, methods=methods,
                                    real_per_method=real_per_method)
    root = self._root()
    boxes = face_detection.PrecomputedFaceBoxes(os.path.join(root, d.face_boxes)) if d.face_boxes else None
    return FaceForensicsReader(root, split, methods=methods, compression=d.compression,
                               frames_per_video=d.frames_per_video, crop_scale=d.crop_scale, face_boxes=boxes,
                               mask_source=d.mask_source, real_per_method=real_per_method, verify=d.verify,
                               on_error=d.on_error)

  def source(self, split: str):
    """Training: stage 1 the real faces once each; stage 2 each fake crop (of `data.methods`) followed by its
    real crop. Evaluation (the trained and the cross manipulations): stage 1 (fake, aligned real) crop pairs
    (`PairedFaces`); stage 2 the crops with the real ones listed once, or a cross-dataset set's crops
    (`data.layout`: 'celeb_df' | 'dfdc' | 'dfd', `face_videos.reader_from_config`)."""
    if self.face_set:
      if split == "train" or self.config.stage == 1:
        raise ValueError(f"data.layout: the {self.config.data.layout} set has no pixel masks and no aligned real "
                         "crops; it is a stage-2 evaluation set (train on FF++, data.layout='faceforensics')")
      return self._face_set_reader()
    train, cross = self.methods()
    if split == "train":
      return self._reader(split, () if self.config.stage == 1 else train, self.config.stage == 2)
    if self.config.stage == 1:
      return data_lib.PairedFaces(self._reader(split, train + cross, True))
    return self._reader(split, train + cross, False)

  @functools.cache
  def _face_set_reader(self) -> face_videos.FaceVideoReader:
    return face_videos.reader_from_config(self.config.data)

  def steps_per_epoch(self) -> int:
    return max(len(self.source("train")) // self.config.global_batch_size, 1)

  def transforms(self, split: str) -> list:
    """`FaceKeys` (video hash, manipulation domain; not on stage 1's eval pairs), resize to `size`, ROI tokens.
    The flips are drawn on the device (`_flip`), so training and evaluation share these."""
    c, d = self.config, self.config.data
    paired = c.stage == 1 and split != "train"
    keys = data_lib.FaceKeys(None if self.face_set else sum(self.methods(), ()))
    return ([] if paired else [keys]) + [
        transforms.Resize(d.size, d.size),
        face_regions.RoiTokens(c.model.patch, d.crop_scale, c.masking.min_coverage)]

  # ------------------------------------------------------------------ pieces
  def _flip(self, rng, batch):
    """Random horizontal flips of image, mask and ROI grid together (on the device)."""
    flip = jax.random.bernoulli(rng, 0.5, (batch["image"].shape[0],))

    def apply(x, axis):
      return jnp.where(flip.reshape((-1,) + (1,) * (x.ndim - 1)), jnp.flip(x, axis), x)

    return {**batch, "image": apply(batch["image"], 2), "mask": apply(batch["mask"], 2), "roi": apply(batch["roi"], 3)}

  def _roi(self, roi: jax.Array) -> jax.Array:
    return roi.reshape(roi.shape[0], roi.shape[1], -1)

  def _recover(self, net, images, roi, rng):
    m = self.config.masking
    return net.recover(images, self._roi(roi), self.num_masked, m.residual_groups, rng)

  def _stage1_loss(self, net, images, roi, rng, per_sample=False):
    mask = face_regions.sample_token_mask(rng, self._roi(roi), self.num_masked, self.config.masking.roi_prob)
    pred = net.mae(images, mask, self.num_masked)
    return vit.masked_patch_mse(pred, images, mask, self.config.model.patch, self.config.loss.norm_pix, per_sample)

  def _localize(self, net, images, roi, rng, frozen_mae: bool):
    recovery = self._recover(eval_view(net) if frozen_mae else net, images, roi, rng)
    return net.localize(images, jax.lax.stop_gradient(recovery)), recovery

  # ------------------------------------------------------------------ steps
  def loss(self, models, batch, rng):
    c = self.config
    flip_key, key = jax.random.split(rng)
    batch = self._flip(flip_key, batch) if c.data.flip else batch
    net, images = models["model"], normalize(batch["image"], self.dtype)
    if c.stage == 1:
      return self._stage1_loss(net, images, batch["roi"], key), {}
    out, _ = self._localize(net, images, batch["roi"], key, frozen_mae=True)
    w = c.loss
    weight = batch.get("weight", jnp.ones(images.shape[:1], jnp.float32))
    pixel_weight = weight[:, None, None]
    mask_logits = out["mask_logits"].astype(jnp.float32)
    target = batch["mask"].astype(jnp.float32)
    terms = {
        "loss_cls": segmentation.masked_mean(segmentation.binary_cross_entropy_with_logits_elementwise(
            out["logit"], batch["label"].astype(jnp.float32)), weight),
        "loss_mask_bce": segmentation.binary_cross_entropy_with_logits(mask_logits, target, pixel_weight),
        "loss_mask_dice": segmentation.dice_loss(mask_logits, target, pixel_weight),
    }
    total = (w.cls_weight * terms["loss_cls"] + w.mask_bce_weight * terms["loss_mask_bce"]
             + w.mask_dice_weight * terms["loss_mask_dice"])
    return total, terms

  def _meta_split(self, rng, batch) -> tuple[jax.Array, jax.Array]:
    """(meta-train, meta-test) sample weights [B] (module docstring)."""
    domain = batch["domain"]
    held_key, coin_key = jax.random.split(rng)
    num_train = len(self.methods()[0])
    held = jax.random.randint(held_key, (), 1, num_train + 1)
    coin = jax.random.bernoulli(coin_key, 0.5, domain.shape)
    test = jnp.where(domain == 0, coin, (domain == held) if num_train > 1 else coin)
    return (~test).astype(jnp.float32), test.astype(jnp.float32)

  def train_step(self, state, batch):
    meta = self.config.meta
    if self.config.stage != 2 or not meta.enabled:
      return super().train_step(state, batch)
    split_key = jax.random.fold_in(jax.random.fold_in(self.key(self.config.seed), state.step), 1)
    w_train, w_test = self._meta_split(split_key, batch)
    loss_tr, m_tr, g_tr, rest = self.grads(state, self.loss, {**batch, "weight": w_train})
    params = dict(state.params)
    for name, g in g_tr.items():
      trainable, frozen = self.split_trainable(name, state.params[name])
      stepped = jax.tree.map(lambda p, d: p - meta.inner_lr * d, trainable, g)
      params[name] = nnx.merge_state(stepped, frozen)
    loss_te, m_te, g_te, rest = self.grads(state.replace(params=params, rest=rest), self.loss,
                                           {**batch, "weight": w_test})
    grads = jax.tree.map(lambda a, b: a + meta.test_weight * b, g_tr, g_te)
    state = self.apply_grads(state, grads, rest)
    metrics_out = dict(m_tr, loss=loss_tr + meta.test_weight * loss_te, loss_meta_train=loss_tr,
                       loss_meta_test=loss_te, grad_norm=optax.tree.norm(grads))
    return state.replace(step=state.step + 1), metrics_out

  def eval_step(self, state, batch):
    net = self.models(state)["model"]
    valid = batch["valid"]
    if self.config.stage == 1:
      frames = batch["frames"]
      b = frames.shape[0]
      images = normalize(frames.reshape(2 * b, *frames.shape[2:]), self.dtype)
      roi = jnp.repeat(batch["roi"], 2, axis=0)
      recovery = self._recover(net, images, roi, self.key(0))
      error = jnp.abs(denormalize(images) - denormalize(recovery)).mean(-1).reshape(b, 2, *frames.shape[2:4])
      real = images.reshape(b, 2, *images.shape[1:])[:, 1]
      recon = self._stage1_loss(net, real, batch["roi"], self.key(1), per_sample=True)
      return metrics_lib.RecoveryMetrics.single_from_model_output(
          fake_error=error[:, 0], real_error=error[:, 1], gt_mask=batch["mask"], valid=valid, recon_loss=recon,
          mask=valid)
    out, _ = self._localize(net, normalize(batch["image"], self.dtype), batch["roi"], self.key(0), False)
    kw = dict(pred_label=jax.nn.sigmoid(out["logit"].astype(jnp.float32)), label=batch["label"],
              pred_mask=jax.nn.sigmoid(out["mask_logits"].astype(jnp.float32)), gt_mask=batch["mask"],
              video=batch["video"])
    collection = metrics_lib.detection_metrics(self.config.video_aggregation, pixel=not self.face_set)
    if self.face_set:  # every crop of the set, real and fake; no pixel masks
      return metrics_lib.SplitMetrics(collection.single_from_model_output(valid=valid, **kw), None)
    train, cross = self.methods()
    main = collection.single_from_model_output(valid=valid & (batch["domain"] <= len(train)), **kw)
    unseen = None
    if cross:
      unseen = collection.single_from_model_output(
          valid=valid & ((batch["domain"] == 0) | (batch["domain"] > len(train))), **kw)
    return metrics_lib.SplitMetrics(main, unseen)

  def image_summaries(self, state, batch):
    if self.config.stage == 1:
      return {}
    images = normalize(batch["image"][:4], self.dtype)
    out, recovery = self._localize(self.models(state)["model"], images, batch["roi"][:4], self.key(0), False)
    probs = jax.nn.sigmoid(out["mask_logits"].astype(jnp.float32))
    heat = jnp.stack([probs, jnp.zeros_like(probs), 1.0 - probs], -1)
    face = denormalize(images)
    return {"overlay": 0.5 * face + 0.5 * heat, "recovery": jnp.clip(denormalize(recovery), 0.0, 1.0),
            "mask": batch["mask"][:4, ..., None].astype(jnp.float32)}

  # ------------------------------------------------------------------ export
  def geometry_roi(self) -> np.ndarray:
    """uint8 [R, gh, gw]: the ROI tokens of an aligned crop (what predict uses: no landmarks at inference)."""
    d = self.config.data
    return face_regions.roi_token_masks(face_regions.geometry_rois(d.crop_scale), d.size, d.size,
                                        self.config.model.patch, self.config.masking.min_coverage).astype(np.uint8)

  def predict(self, models, inputs):
    image = inputs["image"]
    roi = jnp.asarray(self.geometry_roi())[None]
    out, recovery = self._localize(models["model"], normalize(image, self.dtype), roi, self.key(0), False)
    return {"score": jax.nn.sigmoid(out["logit"].astype(jnp.float32)),
            "probs": jax.nn.sigmoid(out["mask_logits"].astype(jnp.float32)),
            "recovery": jnp.clip(denormalize(recovery), 0.0, 1.0) * 255.0}

  def export_spec(self):
    s = self.config.data.size
    shape = inference.InputSpec(
        kind="face", size=(s, s), face_crop_scale=self.config.data.crop_scale,
        fixed_reason="the ViT's patch grid, position embeddings and facial ROIs are those of the trained size")
    return inference.spec({"image": {"shape": [s, s, 3], "layout": "HWC"}}, shape,
                          {"score": "probability that the face is manipulated, [B]",
                           "probs": f"per-pixel manipulation probability, [B, {s}, {s}]",
                           "recovery": f"the recovered (real-looking) face, RGB 0-255, [B, {s}, {s}, 3]"})
