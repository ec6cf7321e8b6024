"""Forensics metrics as `clu.metrics.Metric` classes, and `make_collection`.

Values follow the conventions of `common.metrics.kernels` (thresholds, modes, AUC ties, ratio bins).

Model-output keywords shared by every class here (a `Collection` passes all of them to
every metric): `pred_mask` (pixel probabilities [B, ...]), `gt_mask` (binary [B, ...]),
`pixel_valid` ([B, ...], optional), `pred_label` (image forged-probability [B]), `label` (0 real,
1 fake, [B]), `valid` ([B], optional), `mask_ratio` ([B], optional). clu's own `mask` keyword is NOT
read, because this suite's records call the ground-truth mask `mask`: pass `valid=` explicitly.
Per-image means (`PixelF1`, `PixelIoU`, `PixelAccuracy`, `PixelAUC`, `PixelBestF1`) hold a float32
sum and an int32 count; `ClassAveragedPixelF1` / `ClassAveragedPixelIoU` hold exact counts up to 2**61
(two int32 limbs: a c40 FF++ test set has about 4.4e9 pixels, more than int32 holds); `ImageAccuracy`
holds int32 counts. All of these are created and merged inside or outside `jax.jit`, on globally
sharded arrays, and merging is associative (integers exactly, float sums up to rounding). `ImageAUC`
keeps every score like `clu.metrics.CollectingMetric`: `from_model_output` runs under `jax.jit`, but
`merge` copies to host numpy and must run outside `jit` (in the Python eval loop). A mean over zero
selected images (e.g. an empty ratio bin) computes to NaN, so it cannot be mistaken for a score.

Options are class attributes set with `configure`, which returns a configured subclass:

    @flax.struct.dataclass
    class EvalMetrics(clu_metrics.Collection):
      pixel_f1: metrics.PixelF1                        # threshold 0.5, origin, tampered images only
      pixel_f1_permuted: metrics.PixelF1.configure(mode="double")
      pixel_auc: metrics.PixelAUC
      image_auc: metrics.ImageAUC
      image_acc: metrics.ImageAccuracy

    @jax.jit
    def eval_step(state, batch):
      probs, score = predict(state, batch)
      return EvalMetrics.single_from_model_output(
          pred_mask=probs, gt_mask=batch["mask"], pred_label=score, label=batch["label"],
          valid=batch["valid"])

    totals = EvalMetrics.empty()
    for batch in batches:                              # merge on the host
      totals = totals.merge(eval_step(state, batch))
    results = totals.compute()

or `make_collection(["pixel_f1", "pixel_auc", "image_auc"], tampered_only=True)`.
"""
from typing import ClassVar, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
from clu import metrics as clu_metrics
from jax.experimental import multihost_utils

from common.metrics.kernels import (
    RATIO_BINS, ConfusionCounts, accuracy_from_counts, auc_rows_mode, best_f1_rows, check_mode,
    class_averaged_f1, class_averaged_iou, counts_rows, f1_from_counts, host_auc, image_vectors,
    iou_from_counts, mask_ratio_bin, pixel_rows, safe_div, thresholded_rows)

_LIMB_BITS = 30            # low limb of the wide counters holds the count mod 2**30


def _sample_valid(valid, batch_size):
  if valid is None:
    return jnp.ones((batch_size,), bool)
  valid = jnp.asarray(valid)
  if valid.shape != (batch_size,):
    raise ValueError(f"valid must have shape ({batch_size},), got {valid.shape}")
  return valid.astype(bool)


def _mean_or_nan(total, count):
  return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)


class _Configurable:
  """`configure(**options)` returns a subclass whose class attributes hold the options."""
  _options: ClassVar[tuple[str, ...]] = ()

  @classmethod
  def configure(cls, **options):
    unknown = sorted(set(options) - set(cls._options))
    if unknown:
      raise ValueError(f"{cls.__name__} has no option(s) {unknown}; options: {cls._options}")
    if "mode" in options:
      check_mode(options["mode"])
    if options.get("ratio_bin") not in (None, *RATIO_BINS):
      raise ValueError(f"ratio_bin must be None or one of {RATIO_BINS}, got "
                       f"{options['ratio_bin']!r}")
    settings = ", ".join(f"{k}={v!r}" for k, v in sorted(options.items()))
    return flax.struct.dataclass(type(cls.__name__, (cls,), {
        **options, "__module__": cls.__module__,
        "__doc__": f"{cls.__name__} with {settings}.\n\n{cls.__doc__}"}))


@flax.struct.dataclass
class _PerImageMean(_Configurable, clu_metrics.Metric):
  """Mean over the selected images of a per-image value: sum (float32) and count (int32).

  Selected: valid sample, defined value, forged pixels present if `tampered_only`, and in the ViLocal
  bin `ratio_bin` if set (bin of `mask_ratio` when given, else of the frame's own mask ratio).
  """
  total: jax.Array
  count: jax.Array

  tampered_only: ClassVar[bool] = True
  ratio_bin: ClassVar[str | None] = None

  @classmethod
  def _per_image(cls, rows, forged, valid) -> tuple[jax.Array, jax.Array]:
    """Values [B] and whether each is defined [B]."""
    raise NotImplementedError

  @classmethod
  def empty(cls):
    return cls(total=jnp.zeros((), jnp.float32), count=jnp.zeros((), jnp.int32))

  @classmethod
  def from_model_output(cls, *, pred_mask, gt_mask, valid=None, pixel_valid=None, mask_ratio=None,
                        **_):
    rows, forged, pixels_valid = pixel_rows(pred_mask, gt_mask, pixel_valid)
    values, defined = cls._per_image(rows, forged, pixels_valid)
    selected = _sample_valid(valid, rows.shape[0]) & defined
    if cls.tampered_only:
      selected &= jnp.any(forged & pixels_valid, axis=1)
    if cls.ratio_bin is not None:
      if mask_ratio is None:
        ratio = safe_div(jnp.sum(forged & pixels_valid, axis=1), jnp.sum(pixels_valid, axis=1))
      else:
        ratio = jnp.asarray(mask_ratio)
        if ratio.shape != (rows.shape[0],):
          raise ValueError(f"mask_ratio must have shape ({rows.shape[0]},), got {ratio.shape}")
      selected &= mask_ratio_bin(ratio) == RATIO_BINS.index(cls.ratio_bin)
    return cls(total=jnp.sum(jnp.where(selected, values, 0.0), dtype=jnp.float32),
               count=jnp.sum(selected, dtype=jnp.int32))

  def merge(self, other):
    return type(self)(total=self.total + other.total, count=self.count + other.count)

  def compute(self):
    return _mean_or_nan(self.total, self.count)


@flax.struct.dataclass
class _ThresholdedMean(_PerImageMean):
  threshold: ClassVar[float] = 0.5
  mode: ClassVar[str] = "origin"
  _options: ClassVar[tuple[str, ...]] = ("threshold", "mode", "tampered_only", "ratio_bin")
  _from_counts: ClassVar = None

  @classmethod
  def _per_image(cls, rows, forged, valid):
    values = thresholded_rows(cls._from_counts, rows, forged, valid, cls.threshold, cls.mode)
    return values, jnp.ones(values.shape, bool)


@flax.struct.dataclass
class PixelF1(_ThresholdedMean):
  """Mean per-image pixel F1 at `threshold` (default 0.5, mode origin, tampered images only)."""
  _from_counts = staticmethod(f1_from_counts)


@flax.struct.dataclass
class PixelIoU(_ThresholdedMean):
  """Mean per-image pixel IoU at `threshold` (default 0.5, mode origin, tampered images only)."""
  _from_counts = staticmethod(iou_from_counts)


@flax.struct.dataclass
class PixelAccuracy(_ThresholdedMean):
  """Mean per-image pixel accuracy at `threshold` (default 0.5, origin, tampered images only)."""
  _from_counts = staticmethod(accuracy_from_counts)


@flax.struct.dataclass
class PixelBestF1(_PerImageMean):
  """Mean per-image best-threshold pixel F1 (default mode origin, tampered images only)."""
  mode: ClassVar[str] = "origin"
  _options: ClassVar[tuple[str, ...]] = ("mode", "tampered_only", "ratio_bin")

  @classmethod
  def _per_image(cls, rows, forged, valid):
    values = best_f1_rows(rows, forged, valid, cls.mode)
    return values, jnp.ones(values.shape, bool)


@flax.struct.dataclass
class PixelAUC(_PerImageMean):
  """Mean per-image pixel AUC (default origin, tampered images only, images with AUC defined).

  With `defined_only=False` images whose AUC is undefined count as 0 (IMDL-BenCo's value for
  authentic images when `tampered_only=False`).
  """
  mode: ClassVar[str] = "origin"
  defined_only: ClassVar[bool] = True
  _options: ClassVar[tuple[str, ...]] = ("mode", "tampered_only", "ratio_bin", "defined_only")

  @classmethod
  def _per_image(cls, rows, forged, valid):
    result = auc_rows_mode(rows, forged, valid, cls.mode)
    defined = result.defined if cls.defined_only else jnp.ones(result.defined.shape, bool)
    return result.auc, defined


@flax.struct.dataclass
class _AccumulatedConfusion(_Configurable, clu_metrics.Metric):
  """Pixel confusion counts (tp, fp, fn, tn) over all valid pixels of all valid images.

  Exact up to 2**61 per count: `low` [4] holds count mod 2**30 and `high` [4] count // 2**30 (int32).
  One batch must have fewer than 2**31 pixels (checked statically).
  """
  low: jax.Array
  high: jax.Array

  threshold: ClassVar[float] = 0.5
  _options: ClassVar[tuple[str, ...]] = ("threshold",)

  @classmethod
  def empty(cls):
    return cls(low=jnp.zeros((4,), jnp.int32), high=jnp.zeros((4,), jnp.int32))

  @classmethod
  def from_model_output(cls, *, pred_mask, gt_mask, valid=None, pixel_valid=None, **_):
    rows, forged, pixels_valid = pixel_rows(pred_mask, gt_mask, pixel_valid)
    if rows.size >= 2**31:
      raise ValueError(f"a batch of {rows.size} pixels overflows int32 counts; use smaller batches")
    counts = counts_rows(rows, forged, pixels_valid, cls.threshold)
    selected = _sample_valid(valid, rows.shape[0])
    totals = jnp.stack([jnp.sum(jnp.where(selected, c, 0), dtype=jnp.int32) for c in counts])
    return cls(low=totals & (2**_LIMB_BITS - 1), high=totals >> _LIMB_BITS)

  def merge(self, other):
    low = self.low + other.low
    return type(self)(low=low & (2**_LIMB_BITS - 1),
                      high=self.high + other.high + (low >> _LIMB_BITS))

  def totals(self) -> ConfusionCounts:
    """Exact accumulated counts as numpy int64 (on host)."""
    low, high = np.asarray(self.low, np.int64), np.asarray(self.high, np.int64)
    return ConfusionCounts(*(high * 2**_LIMB_BITS + low))

  def counts(self) -> ConfusionCounts:
    """Accumulated counts as float32 (relative rounding below 1e-7)."""
    total = self.high.astype(jnp.float32) * float(2**_LIMB_BITS) + self.low.astype(jnp.float32)
    return ConfusionCounts(*total)


@flax.struct.dataclass
class ClassAveragedPixelF1(_AccumulatedConfusion):
  """MSCCNet pixel F1: mean over {authentic, forged} of F1 from dataset-accumulated counts."""

  def compute(self):
    return class_averaged_f1(self.counts())


@flax.struct.dataclass
class ClassAveragedPixelIoU(_AccumulatedConfusion):
  """MSCCNet pixel mIoU: mean over {authentic, forged} of IoU from dataset-accumulated counts."""

  def compute(self):
    return class_averaged_iou(self.counts())


@flax.struct.dataclass
class ImageAccuracy(_Configurable, clu_metrics.Metric):
  """Image accuracy: share of valid samples with (pred_label > threshold) == label (default 0.5)."""
  correct: jax.Array
  count: jax.Array

  threshold: ClassVar[float] = 0.5
  _options: ClassVar[tuple[str, ...]] = ("threshold",)

  @classmethod
  def empty(cls):
    return cls(correct=jnp.zeros((), jnp.int32), count=jnp.zeros((), jnp.int32))

  @classmethod
  def from_model_output(cls, *, pred_label, label, valid=None, **_):
    scores, labels, _ = image_vectors(pred_label, label)
    selected = _sample_valid(valid, scores.shape[0])
    correct = ((scores > cls.threshold) == labels) & selected
    return cls(correct=jnp.sum(correct, dtype=jnp.int32), count=jnp.sum(selected, dtype=jnp.int32))

  def merge(self, other):
    return type(self)(correct=self.correct + other.correct, count=self.count + other.count)

  def compute(self):
    return _mean_or_nan(self.correct, self.count)


def _to_host(array) -> np.ndarray:
  if isinstance(array, jax.core.Tracer):
    raise RuntimeError("ImageAUC.merge collects scores on the host: merge outside jax.jit")
  if isinstance(array, jax.Array) and not array.is_fully_addressable:
    array = multihost_utils.process_allgather(array, tiled=True)
  return np.asarray(array)


@flax.struct.dataclass
class ImageAUC(clu_metrics.Metric):
  """Image ROC AUC over the whole set (sklearn-exact, ties averaged); NaN if a class is missing.

  Collects `pred_label`, `label` and `valid` per batch (tuples of [B] arrays). `from_model_output`
  works under `jax.jit`; `merge` moves the arrays to host numpy (all-gathered across processes) and
  must run outside `jit`; `compute` drops invalid samples and evaluates the AUC in float64 numpy
  (no compilation per dataset size).
  """
  scores: tuple
  labels: tuple
  valid: tuple

  @classmethod
  def empty(cls):
    return cls(scores=(), labels=(), valid=())

  @classmethod
  def from_model_output(cls, *, pred_label, label, valid=None, **_):
    scores, labels, _ = image_vectors(pred_label, label)
    return cls(scores=(scores,), labels=(labels,), valid=(_sample_valid(valid, scores.shape[0]),))

  def merge(self, other):
    def joined(mine, theirs):
      return tuple(_to_host(array) for array in mine + theirs)

    return type(self)(scores=joined(self.scores, other.scores),
                      labels=joined(self.labels, other.labels),
                      valid=joined(self.valid, other.valid))

  def compute(self):
    if not self.scores:
      return float("nan")
    scores, labels, valid = (np.concatenate([_to_host(array) for array in arrays])
                             for arrays in (self.scores, self.labels, self.valid))
    return host_auc(scores[valid], labels[valid])


METRICS_BY_NAME = {
    "pixel_f1": PixelF1,
    "pixel_iou": PixelIoU,
    "pixel_accuracy": PixelAccuracy,
    "pixel_best_f1": PixelBestF1,
    "pixel_auc": PixelAUC,
    "class_averaged_pixel_f1": ClassAveragedPixelF1,
    "class_averaged_pixel_iou": ClassAveragedPixelIoU,
    "image_accuracy": ImageAccuracy,
    "image_auc": ImageAUC,
}


def make_collection(names: Sequence[str], **options) -> type[clu_metrics.Collection]:
  """A `clu.metrics.Collection` class with one field per name in `METRICS_BY_NAME`.

  Each option (threshold, mode, tampered_only, ratio_bin, defined_only) is applied to every listed
  metric that has it; an option that none of them has raises ValueError.
  """
  unknown = [name for name in names if name not in METRICS_BY_NAME]
  if unknown:
    raise ValueError(f"unknown metric names {unknown}; known: {sorted(METRICS_BY_NAME)}")
  fields, used = {}, set()
  for name in names:
    metric = METRICS_BY_NAME[name]
    accepted = {k: v for k, v in options.items() if k in getattr(metric, "_options", ())}
    used |= set(accepted)
    fields[name] = metric.configure(**accepted) if accepted else metric
  unused = sorted(set(options) - used)
  if unused:
    raise ValueError(f"option(s) {unused} apply to none of {list(names)}")
  return clu_metrics.Collection.create(**fields)
