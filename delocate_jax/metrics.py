"""Delocate's evaluation metrics: frame- and video-level detection with pixel localization (stage 2), and the
recovery discrepancy of the masked autoencoder (stage 1).

Stage 2 (`detection_metrics`): `image_acc` / `image_auc` per frame, `video_acc` / `video_auc` with the frame
scores of a video aggregated by 'mean' or 'max', and `pixel_f1` / `pixel_iou` / `pixel_auc` over the manipulated
frames (`common.metrics`) where the set has pixel masks. `SplitMetrics` holds the in-domain and the
cross-manipulation collections of one evaluation.

Stage 1 (`RecoveryMetrics`): `recovery_ratio` = mean |x - x_hat| over the manipulated pixels of the fakes / the
same over the same pixels of their real crops, its two terms, and the reconstruction loss.
"""
import functools
from typing import ClassVar

import flax
import jax
import jax.numpy as jnp
import numpy as np
from clu import metrics as clu_metrics
from jax.experimental import multihost_utils

from common import metrics

AGGREGATIONS = ("mean", "max")

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
def detection_metrics(aggregation: str, pixel: bool = True) -> type[clu_metrics.Collection]:
  """Stage 2's collection: frame and video detection, and (`pixel`) localization; inputs `pred_label` [B],
  `label` [B], `video` [B] (int32 id), `pred_mask` / `gt_mask` [B, H, W], `valid` [B]."""
  if aggregation not in AGGREGATIONS:
    raise ValueError(f"video_aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
  configured = {cls.__name__: flax.struct.dataclass(type(cls.__name__, (cls,), {"aggregation": aggregation,
                                                                                 "__module__": __name__}))
                for cls in (VideoAUC, VideoAccuracy)}
  localization = dict(pixel_f1=metrics.PixelF1, pixel_iou=metrics.PixelIoU, pixel_auc=metrics.PixelAUC)
  return clu_metrics.Collection.create(
      image_acc=metrics.ImageAccuracy, image_auc=metrics.ImageAUC, video_acc=configured["VideoAccuracy"],
      video_auc=configured["VideoAUC"], **(localization if pixel else {}))


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
