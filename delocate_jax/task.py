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
`cross_*` (cross-manipulation evaluation).
"""

import functools
import os
from typing import ClassVar
import zlib

import flax
import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
from clu import metrics as clu_metrics
from flax import nnx
from jax.experimental import multihost_utils

from common import metrics
from common.data import demo, prepared, transforms
from common.data.faces import detection as face_detection
from common.data.readers import FaceForensicsReader
from common.data.readers.media import DataError
from common.losses import segmentation
from common.nn import vit
from common.train.task import Task, eval_view
from delocate_jax import face_regions
from delocate_jax import model as model_lib

# MAE's input normalisation: ImageNet mean / std on [0, 1] RGB.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
AGGREGATIONS = ("mean", "max")


def normalize(image: jax.Array, dtype=jnp.float32) -> jax.Array:
  """RGB 0-255 [..., 3] -> normalised `dtype`."""
  return ((image.astype(jnp.float32) / 255.0 - jnp.asarray(MEAN)) / jnp.asarray(STD)).astype(dtype)


def denormalize(x: jax.Array) -> jax.Array:
  """Normalised [..., 3] -> RGB in [0, 1] (float32, not clipped)."""
  return x.astype(jnp.float32) * jnp.asarray(STD) + jnp.asarray(MEAN)


# ---------------------------------------------------------------------------------------------------- data
class FaceKeys(grain.transforms.Map):
  """Adds `video` (int32 hash of the source video path) and `domain` (0 real, 1 + index in `methods`) from the
  reader's `id` ('<relative video path>#frame<i>')."""

  def __init__(self, methods):
    self.methods = tuple(methods)

  def map(self, record: dict) -> dict:
    path = record["id"].split("#")[0]
    parts = path.replace("\\", "/").split("/")
    domain = 0
    if parts[0] == "manipulated_sequences":
      if parts[1] not in self.methods:
        raise DataError(path, f"manipulation {parts[1]!r} is not one of {self.methods}")
      domain = 1 + self.methods.index(parts[1])
    return {**record, "video": np.int32(zlib.crc32(path.encode()) & 0x7FFFFFFF), "domain": np.int32(domain)}


class PairedFaces:
  """(fake, aligned real) crop pairs of a `FaceForensicsReader` built with `real_per_method=True` (which lists
  the real crop of the same frame and box right after each fake one): records {'frames': uint8 [2, h, h, 3]
  (fake, real), 'mask': the fake's mask, 'label': 1, 'id'}."""

  def __init__(self, reader: FaceForensicsReader):
    self.reader = reader

  def __len__(self) -> int:
    return len(self.reader) // 2

  def __getitem__(self, index: int) -> dict:
    fake, real = self.reader[2 * index], self.reader[2 * index + 1]
    if (fake["label"], real["label"]) != (1, 0) or fake["image"].shape != real["image"].shape:
      raise DataError(fake["id"], f"expected a fake crop followed by its real crop, got {real['id']}")
    return {"frames": np.stack([fake["image"], real["image"]]), "mask": fake["mask"], "label": 1, "id": fake["id"]}


# ------------------------------------------------------------------------------------------------- metrics
def _host(array) -> np.ndarray:
  if isinstance(array, jax.Array) and not array.is_fully_addressable:
    array = multihost_utils.process_allgather(array, tiled=True)
  return np.asarray(array)


@flax.struct.dataclass
class _VideoScores(clu_metrics.Metric):
  """Collects (video, frame score, label, valid) per batch; merge on the host (like `metrics.ImageAUC`)."""
  videos: tuple
  scores: tuple
  labels: tuple
  valid: tuple

  aggregation: ClassVar[str] = "mean"

  @classmethod
  def empty(cls):
    return cls(videos=(), scores=(), labels=(), valid=())

  @classmethod
  def from_model_output(cls, *, video, pred_label, label, valid=None, **_):
    valid = jnp.ones(pred_label.shape, bool) if valid is None else valid.astype(bool)
    return cls(videos=(video,), scores=(pred_label.astype(jnp.float32),), labels=(label,), valid=(valid,))

  def merge(self, other):
    return type(self)(**{k: tuple(_host(a) for a in getattr(self, k) + getattr(other, k))
                         for k in ("videos", "scores", "labels", "valid")})

  def per_video(self) -> tuple[np.ndarray, np.ndarray]:
    """(aggregated score, label) per video of the valid frames."""
    if not self.scores:
      return np.zeros(0), np.zeros(0)
    videos, scores, labels, valid = (np.concatenate([_host(a) for a in getattr(self, k)])
                                     for k in ("videos", "scores", "labels", "valid"))
    videos, scores, labels = videos[valid], scores[valid], labels[valid]
    ids = np.unique(videos)
    reduce = np.mean if self.aggregation == "mean" else np.max
    return (np.array([reduce(scores[videos == v]) for v in ids]),
            np.array([labels[videos == v].max() for v in ids]))


@flax.struct.dataclass
class VideoAUC(_VideoScores):
  """ROC AUC of the per-video scores (NaN without both classes)."""

  def compute(self):
    scores, labels = self.per_video()
    return metrics.ImageAUC(scores=(scores,), labels=(labels,), valid=(np.ones(len(scores), bool),)).compute()


@flax.struct.dataclass
class VideoAccuracy(_VideoScores):
  """Share of videos with (aggregated score > 0.5) == label."""

  def compute(self):
    scores, labels = self.per_video()
    return float(np.mean((scores > 0.5) == labels)) if len(scores) else float("nan")


@functools.cache
def detection_metrics(aggregation: str) -> type[clu_metrics.Collection]:
  if aggregation not in AGGREGATIONS:
    raise ValueError(f"video_aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
  configured = {cls.__name__: flax.struct.dataclass(type(cls.__name__, (cls,), {"aggregation": aggregation,
                                                                                 "__module__": __name__}))
                for cls in (VideoAUC, VideoAccuracy)}
  return clu_metrics.Collection.create(
      image_acc=metrics.ImageAccuracy, image_auc=metrics.ImageAUC, video_acc=configured["VideoAccuracy"],
      video_auc=configured["VideoAUC"], pixel_f1=metrics.PixelF1, pixel_iou=metrics.PixelIoU,
      pixel_auc=metrics.PixelAUC)


@flax.struct.dataclass
class SplitMetrics:
  """In-domain and (optional) cross-manipulation collections, merged and computed together."""
  main: clu_metrics.Collection
  cross: clu_metrics.Collection | None

  def merge(self, other):
    return SplitMetrics(self.main.merge(other.main), None if self.cross is None else self.cross.merge(other.cross))

  def compute(self):
    out = dict(self.main.compute())
    if self.cross is not None:
      out.update({f"cross_{k}": v for k, v in self.cross.compute().items()})
    return out


@flax.struct.dataclass
class RecoveryRatio(clu_metrics.Metric):
  """Mean recovery error over the manipulated pixels of fakes / over the same pixels of their real crops."""
  fake: jax.Array
  real: jax.Array

  @classmethod
  def empty(cls):
    return cls(fake=jnp.zeros((), jnp.float32), real=jnp.zeros((), jnp.float32))

  @classmethod
  def from_model_output(cls, *, fake_error, real_error, gt_mask, valid, **_):
    m = (gt_mask > 0) & valid[:, None, None]
    return cls(fake=jnp.sum(jnp.where(m, fake_error, 0.0)), real=jnp.sum(jnp.where(m, real_error, 0.0)))

  def merge(self, other):
    return type(self)(fake=self.fake + other.fake, real=self.real + other.real)

  def compute(self):
    return self.fake / self.real


@flax.struct.dataclass
class _RegionError(clu_metrics.Metric):
  total: jax.Array
  count: jax.Array
  key: ClassVar[str] = "fake_error"

  @classmethod
  def empty(cls):
    return cls(total=jnp.zeros((), jnp.float32), count=jnp.zeros((), jnp.int32))

  @classmethod
  def from_model_output(cls, *, gt_mask, valid, **outputs):
    m = (gt_mask > 0) & valid[:, None, None]
    return cls(total=jnp.sum(jnp.where(m, outputs[cls.key], 0.0)), count=jnp.sum(m))

  def merge(self, other):
    return type(self)(total=self.total + other.total, count=self.count + other.count)

  def compute(self):
    return self.total / self.count


@flax.struct.dataclass
class FakeRegionError(_RegionError):
  key = "fake_error"


@flax.struct.dataclass
class RealRegionError(_RegionError):
  key = "real_error"


@flax.struct.dataclass
class RecoveryMetrics(clu_metrics.Collection):
  recovery_ratio: RecoveryRatio
  recovery_error_fake_region: FakeRegionError
  recovery_error_real_region: RealRegionError
  recon_loss: clu_metrics.Average.from_output("recon_loss")


# ---------------------------------------------------------------------------------------------------- task
class DelocateTask(Task):

  def build_models(self, rngs):
    m = self.config.model
    return {"model": model_lib.Delocate(mae=dict(patch=m.patch, **m.mae.to_dict()),
                                        localizer=dict(patch=m.patch, **m.localizer.to_dict()),
                                        dtype=self.dtype, rngs=rngs)}

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
    (`PairedFaces`); stage 2 the crops with the real ones listed once."""
    train, cross = self.methods()
    if split == "train":
      return self._reader(split, () if self.config.stage == 1 else train, self.config.stage == 2)
    if self.config.stage == 1:
      return PairedFaces(self._reader(split, train + cross, True))
    return self._reader(split, train + cross, False)

  def steps_per_epoch(self) -> int:
    return max(len(self.source("train")) // self.config.global_batch_size, 1)

  def transforms(self, split: str) -> list:
    """`FaceKeys` (video hash, manipulation domain; not on stage 1's eval pairs), resize to `size`, ROI tokens.
    The flips are drawn on the device (`_flip`), so training and evaluation share these."""
    c, d = self.config, self.config.data
    paired = c.stage == 1 and split != "train"
    return ([] if paired else [FaceKeys(sum(self.methods(), ()))]) + [
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
      return RecoveryMetrics.single_from_model_output(fake_error=error[:, 0], real_error=error[:, 1],
                                                      gt_mask=batch["mask"], valid=valid, recon_loss=recon,
                                                      mask=valid)
    out, _ = self._localize(net, normalize(batch["image"], self.dtype), batch["roi"], self.key(0), False)
    kw = dict(pred_label=jax.nn.sigmoid(out["logit"].astype(jnp.float32)), label=batch["label"],
              pred_mask=jax.nn.sigmoid(out["mask_logits"].astype(jnp.float32)), gt_mask=batch["mask"],
              video=batch["video"])
    num_train = len(self.methods()[0])
    collection = detection_metrics(self.config.video_aggregation)
    main = collection.single_from_model_output(valid=valid & (batch["domain"] <= num_train), **kw)
    cross = None
    if self.methods()[1]:
      cross = collection.single_from_model_output(
          valid=valid & ((batch["domain"] == 0) | (batch["domain"] > num_train)), **kw)
    return SplitMetrics(main, cross)

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
    return {"inputs": {"image": {"shape": [s, s, 3], "dtype": "float32"}},
            "normalisation": (f"RGB face crop ({self.config.data.crop_scale}x the face box, square) resized to "
                              f"{s}x{s} (bilinear), values 0-255 (the model scales to [0, 1] and normalises by "
                              f"mean {MEAN}, std {STD})"),
            "outputs": {"score": "probability that the face is manipulated, [B]",
                        "probs": f"per-pixel manipulation probability, [B, {s}, {s}]",
                        "recovery": f"the recovered (real-looking) face, RGB 0-255, [B, {s}, {s}, 3]"}}
