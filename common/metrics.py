"""Forensics evaluation metrics: pure `jax.numpy` functions and `clu.metrics` classes.

Conventions (IMDL-BenCo `evaluation/*.py`, MSCCNet `utils/metric.py`, ViLocal `train_stage2/metric.py`):

* Inputs. `scores`: probabilities in [0, 1], shape [B, ...] (e.g. [B, H, W] or [B, N]); every image (or
  frame) is one row and all its trailing axes are flattened. `gt_mask`: same shape, a pixel is forged
  iff `gt_mask > 0.5` (so {0, 1} and {0, 255} masks both work). `pixel_valid` (optional, same shape):
  pixels where it is 0 are ignored everywhere (IMDL-BenCo's `shape_mask` in padding mode). `valid`
  (optional, [B]): samples where it is 0 (padding of the last eval batch, duplicated frames) contribute
  nothing to any clu metric. For per-frame video metrics pass frames as rows: [B*T, H, W].
* Binarisation: a pixel (or image) is predicted forged iff `score > threshold` (default 0.5), as
  `(predict > threshold)` in IMDL-BenCo, `sigmoid > 0.5` in ViLocal and the 2-class argmax of MSCCNet.
* Confusion counts per image over valid pixels: tp = #(pred & gt), fp = #(pred & ~gt),
  fn = #(~pred & gt), tn = #(~pred & ~gt).
* Thresholded per-image metrics, eps = 1e-8 (IMDL-BenCo and ViLocal):
    precision = tp / (tp + fp + eps),  recall = tp / (tp + fn + eps),
    F1 = 2 * precision * recall / (precision + recall + eps),
    IoU = tp / (tp + fp + fn + eps),
    accuracy = (tp + tn) / (tp + fp + fn + tn), and 0 for an image without valid pixels.
  Whenever tp = 0 (in particular an all-zero mask, or an all-zero prediction) precision, recall, F1
  and IoU are exactly 0. With tp > 0 they equal the exact ratios up to float32 rounding (the eps only
  shifts F1 by about 1e-8 / (precision + recall)), i.e. scikit-learn with `zero_division=0`.
* Modes (IMDL-BenCo): `origin` uses the binarised prediction; `reverse` inverts the *binarised*
  prediction (tp, fp, fn, tn) -> (fn, tn, tp, fp), so reverse accuracy = 1 - accuracy; `double` is
  the element-wise max of origin and reverse (the "permuted F1" of TruFor / CAT-Net). For the
  threshold-free metrics `reverse` scores with 1 - score: reverse AUC = 1 - AUC (exact with averaged
  ties), reverse best-F1 ranks pixels by ascending score.
* Best-threshold F1 per image: the max of F1 over every threshold, i.e. over the predictions
  {score >= u} for each distinct valid score u, plus the empty prediction (F1 = 0). This is exact (no
  grid) and equals max(2PR / (P + R)) over scikit-learn's `precision_recall_curve`. It is 0 for an
  image without forged pixels.
* Pixel AUC per image: the ROC AUC of the valid pixels' scores against the mask, with tied scores
  counted one half (Mann-Whitney U with average ranks):
    AUC = sum over forged pixels i of (#{authentic j: s_j < s_i} + 0.5 #{authentic j: s_j = s_i})
          / (n_forged * n_authentic),
  which equals `sklearn.metrics.roc_auc_score` (trapezoid over grouped thresholds) exactly, ties and
  binary scores included (the counts are exact; the float32 mean of the forged pixels' shares differs
  from float64 by about 1e-7 on a 512x512 image; `ImageAUC.compute` evaluates it in float64). AUC is undefined for an image with no forged or no authentic valid pixel;
  there the functions return `auc = 0` (IMDL-BenCo returns 0 for authentic images) and
  `defined = False`, so averages can skip it.
* Image level: accuracy = mean over valid samples of [(score > threshold) == label], 0 if there is
  no valid sample; AUC as above over the vector of image scores (defined iff both labels occur).
* Class-averaged pixel metrics (MSCCNet): one confusion matrix accumulated over every valid pixel of
  every valid image (authentic images included), then per class
    F1_forged = 2tp / (2tp + fp + fn),  F1_authentic = 2tn / (2tn + fp + fn),
    IoU_forged = tp / (tp + fp + fn),   IoU_authentic = tn / (tn + fp + fn),
  with 0/0 := 0 (scikit-learn `zero_division=0`; MSCCNet would give NaN), and the mean over the two
  classes: `f1_score(..., average="macro", labels=[0, 1])` and `jaccard_score(average="macro")`.
  MSCCNet counts duplicated real frames once: mark duplicates `valid = 0` or list them once.
* ViLocal mask-ratio bins: small if r < 0.05, medium if 0.05 <= r < 0.25, large if r >= 0.25. ViLocal
  bins a whole video by the mean white-pixel ratio of its masks: pass that as `mask_ratio` ([B]);
  without it the frame's own forged-pixel share is used.

clu metrics. Model-output keywords shared by every class here (a `Collection` passes all of them to
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

The public per-image and image-level functions run `jax.jit`-compiled code (`mode` static), so an
eager call compiles once per shape and mode, and a call inside a jitted step inlines.

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
import functools
from typing import ClassVar, NamedTuple, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
from clu import metrics as clu_metrics
from jax.experimental import multihost_utils

EPS = 1e-8
MODES = ("origin", "reverse", "double")
RATIO_BINS = ("small", "medium", "large")
SMALL_RATIO_LIMIT = 0.05   # small: r < 0.05
LARGE_RATIO_LIMIT = 0.25   # medium: 0.05 <= r < 0.25, large: r >= 0.25
_LIMB_BITS = 30            # low limb of the wide counters holds the count mod 2**30


class ConfusionCounts(NamedTuple):
  """Pixel confusion counts; each field has the same shape ([B] per image, [] summed)."""
  tp: jax.Array
  fp: jax.Array
  fn: jax.Array
  tn: jax.Array

  def inverted(self) -> "ConfusionCounts":
    """Counts of the inverted binary prediction: (tp, fp, fn, tn) -> (fn, tn, tp, fp)."""
    return ConfusionCounts(tp=self.fn, fp=self.tn, fn=self.tp, tn=self.fp)

  def total(self) -> "ConfusionCounts":
    """Sums over the leading (image) axis (int32: fewer than 2**31 pixels; see ClassAveraged*)."""
    return ConfusionCounts(*(jnp.sum(count, axis=0) for count in self))


class AucResult(NamedTuple):
  """ROC AUC and whether it is defined (both classes present); `auc` is 0 where undefined."""
  auc: jax.Array
  defined: jax.Array


def _check_mode(mode: str):
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _pixels(scores, gt_mask, pixel_valid=None):
  """Flattens [B, ...] inputs to rows: scores float32 [B, N], forged bool [B, N], valid bool [B, N]."""
  scores, gt_mask = jnp.asarray(scores), jnp.asarray(gt_mask)
  if scores.ndim < 2 or scores.shape != gt_mask.shape:
    raise ValueError(f"scores and gt_mask must share a shape [B, ...] with ndim >= 2, got "
                     f"{scores.shape} and {gt_mask.shape}")
  batch = scores.shape[0]
  rows = scores.reshape(batch, -1).astype(jnp.float32)
  forged = gt_mask.reshape(batch, -1) > 0.5
  if pixel_valid is None:
    return rows, forged, jnp.ones_like(forged)
  pixel_valid = jnp.asarray(pixel_valid)
  if pixel_valid.shape != scores.shape:
    raise ValueError(f"pixel_valid must have shape {scores.shape}, got {pixel_valid.shape}")
  return rows, forged, pixel_valid.reshape(batch, -1).astype(bool)


def _safe_div(numerator, denominator):
  """numerator / denominator, and 0 where the denominator is 0."""
  numerator = jnp.asarray(numerator, jnp.float32)
  denominator = jnp.asarray(denominator, jnp.float32)
  return jnp.where(denominator > 0, numerator / jnp.where(denominator > 0, denominator, 1.0), 0.0)


# ---------------------------------------------------------------------------------------------------
# Metrics from confusion counts.


def precision_from_counts(counts: ConfusionCounts) -> jax.Array:
  """tp / (tp + fp + 1e-8): 0 when nothing is predicted forged."""
  tp = jnp.asarray(counts.tp, jnp.float32)
  return tp / (tp + counts.fp + EPS)


def recall_from_counts(counts: ConfusionCounts) -> jax.Array:
  """tp / (tp + fn + 1e-8): 0 when nothing is forged."""
  tp = jnp.asarray(counts.tp, jnp.float32)
  return tp / (tp + counts.fn + EPS)


def f1_from_counts(counts: ConfusionCounts) -> jax.Array:
  """2PR / (P + R + 1e-8) with P, R as above (IMDL-BenCo / ViLocal): 0 whenever tp = 0."""
  precision, recall = precision_from_counts(counts), recall_from_counts(counts)
  return 2.0 * precision * recall / (precision + recall + EPS)


def iou_from_counts(counts: ConfusionCounts) -> jax.Array:
  """tp / (tp + fp + fn + 1e-8): 0 whenever tp = 0."""
  tp = jnp.asarray(counts.tp, jnp.float32)
  return tp / (tp + counts.fp + counts.fn + EPS)


def accuracy_from_counts(counts: ConfusionCounts) -> jax.Array:
  """(tp + tn) / (tp + fp + fn + tn), and 0 when all counts are 0."""
  return _safe_div(counts.tp + counts.tn, counts.tp + counts.fp + counts.fn + counts.tn)


def class_averaged_f1(counts: ConfusionCounts) -> jax.Array:
  """MSCCNet macro F1: mean of 2tp/(2tp+fp+fn) and 2tn/(2tn+fp+fn), each 0 on 0/0.

  Counts of any size (Python ints, int64 totals) are converted to float32 before any arithmetic.
  """
  tp, fp, fn, tn = (jnp.asarray(c, jnp.float32) for c in counts)
  return 0.5 * (_safe_div(2 * tp, 2 * tp + fp + fn) + _safe_div(2 * tn, 2 * tn + fp + fn))


def class_averaged_iou(counts: ConfusionCounts) -> jax.Array:
  """MSCCNet mIoU: mean of tp/(tp+fp+fn) and tn/(tn+fp+fn), each 0 on 0/0."""
  tp, fp, fn, tn = (jnp.asarray(c, jnp.float32) for c in counts)
  return 0.5 * (_safe_div(tp, tp + fp + fn) + _safe_div(tn, tn + fp + fn))


# ---------------------------------------------------------------------------------------------------
# Per-image pixel metrics (rows = images).


def _counts_rows(rows, forged, valid, threshold) -> ConfusionCounts:
  predicted = rows > threshold

  def count(selection):
    return jnp.sum(selection & valid, axis=1, dtype=jnp.int32)

  return ConfusionCounts(tp=count(predicted & forged), fp=count(predicted & ~forged),
                         fn=count(~predicted & forged), tn=count(~predicted & ~forged))


def _thresholded_rows(metric_fn, rows, forged, valid, threshold, mode):
  _check_mode(mode)
  counts = _counts_rows(rows, forged, valid, threshold)
  if mode == "origin":
    return metric_fn(counts)
  if mode == "reverse":
    return metric_fn(counts.inverted())
  return jnp.maximum(metric_fn(counts), metric_fn(counts.inverted()))


def _auc_rows(rows, forged, valid) -> AucResult:
  """Mann-Whitney AUC of each row with ties counted one half (see the module docstring)."""
  positive, negative = forged & valid, ~forged & valid
  n_pos = jnp.sum(positive, axis=1, dtype=jnp.int32)
  n_neg = jnp.sum(negative, axis=1, dtype=jnp.int32)
  negatives_sorted = jnp.sort(jnp.where(negative, rows, jnp.inf), axis=1)
  left = jax.vmap(functools.partial(jnp.searchsorted, side="left"))
  right = jax.vmap(functools.partial(jnp.searchsorted, side="right"))
  n_neg_column = n_neg[:, None]
  below = jnp.minimum(left(negatives_sorted, rows), n_neg_column)
  up_to = jnp.minimum(right(negatives_sorted, rows), n_neg_column)
  # Each forged pixel's share of authentic pixels it beats, in [0, 1]; AUC is their mean.
  wins = (below + up_to).astype(jnp.float32) / (2.0 * jnp.maximum(n_neg_column, 1))
  defined = (n_pos > 0) & (n_neg > 0)
  auc = jnp.sum(jnp.where(positive, wins, 0.0), axis=1) / jnp.maximum(n_pos, 1)
  return AucResult(auc=jnp.where(defined, auc, 0.0), defined=defined)


def _auc_rows_mode(rows, forged, valid, mode) -> AucResult:
  _check_mode(mode)
  result = _auc_rows(rows, forged, valid)
  reverse = jnp.where(result.defined, 1.0 - result.auc, 0.0)
  if mode == "origin":
    return result
  if mode == "reverse":
    return AucResult(auc=reverse, defined=result.defined)
  return AucResult(auc=jnp.maximum(result.auc, reverse), defined=result.defined)


def _best_f1_rows_ranked(ranking, forged, valid):
  """Max F1 over predictions {ranking >= u}, u every distinct valid ranking value, and {}."""
  key = jnp.where(valid, -ranking, jnp.inf)  # ascending key = descending ranking, invalid last
  key_sorted, positive_sorted, valid_sorted = jax.lax.sort(
      (key, (forged & valid).astype(jnp.int32), valid.astype(jnp.int32)), dimension=1, num_keys=1)
  tp = jnp.cumsum(positive_sorted, axis=1, dtype=jnp.int32)
  predicted = jnp.cumsum(valid_sorted, axis=1, dtype=jnp.int32)
  n_pos = tp[:, -1:]
  n_valid = predicted[:, -1:]
  fn = n_pos - tp
  counts = ConfusionCounts(tp=tp, fp=predicted - tp, fn=fn, tn=n_valid - predicted - fn)
  # A threshold can only cut between different values: take the last element of each tie group.
  group_end = jnp.concatenate(
      [key_sorted[:, 1:] != key_sorted[:, :-1], jnp.ones_like(key_sorted[:, :1], bool)], axis=1)
  candidate = group_end & valid_sorted.astype(bool)
  return jnp.max(jnp.where(candidate, f1_from_counts(counts), 0.0), axis=1)


def _best_f1_rows(rows, forged, valid, mode):
  _check_mode(mode)
  if mode == "origin":
    return _best_f1_rows_ranked(rows, forged, valid)
  if mode == "reverse":
    return _best_f1_rows_ranked(-rows, forged, valid)
  return jnp.maximum(_best_f1_rows_ranked(rows, forged, valid),
                     _best_f1_rows_ranked(-rows, forged, valid))


@jax.jit
def confusion_counts(scores, gt_mask, threshold=0.5, pixel_valid=None) -> ConfusionCounts:
  """Per-image int32 counts [B] of (scores > threshold) against gt_mask > 0.5 over valid pixels."""
  rows, forged, valid = _pixels(scores, gt_mask, pixel_valid)
  return _counts_rows(rows, forged, valid, threshold)


_FROM_COUNTS = {"precision": precision_from_counts, "recall": recall_from_counts,
                "f1": f1_from_counts, "iou": iou_from_counts, "accuracy": accuracy_from_counts}


@functools.partial(jax.jit, static_argnames="mode")
def _thresholded_jit(scores, gt_mask, threshold, mode, pixel_valid):
  rows, forged, valid = _pixels(scores, gt_mask, pixel_valid)
  return {name: _thresholded_rows(fn, rows, forged, valid, threshold, mode)
          for name, fn in _FROM_COUNTS.items()}


def thresholded_pixel_metrics(scores, gt_mask, threshold=0.5, mode="origin",
                              pixel_valid=None) -> dict[str, jax.Array]:
  """Per-image precision, recall, F1, IoU and accuracy, each [B], at `threshold` in `mode`."""
  _check_mode(mode)
  return _thresholded_jit(scores, gt_mask, threshold, mode, pixel_valid)


def pixel_f1(scores, gt_mask, threshold=0.5, mode="origin", pixel_valid=None) -> jax.Array:
  """Per-image F1 [B] at `threshold` (eps 1e-8; 0 when tp = 0) in mode origin/reverse/double."""
  return thresholded_pixel_metrics(scores, gt_mask, threshold, mode, pixel_valid)["f1"]


def pixel_iou(scores, gt_mask, threshold=0.5, mode="origin", pixel_valid=None) -> jax.Array:
  """Per-image IoU [B] = tp / (tp + fp + fn + 1e-8) at `threshold`; 0 when tp = 0."""
  return thresholded_pixel_metrics(scores, gt_mask, threshold, mode, pixel_valid)["iou"]


def pixel_precision(scores, gt_mask, threshold=0.5, mode="origin", pixel_valid=None) -> jax.Array:
  """Per-image precision [B] = tp / (tp + fp + 1e-8) at `threshold`; 0 when tp = 0."""
  return thresholded_pixel_metrics(scores, gt_mask, threshold, mode, pixel_valid)["precision"]


def pixel_recall(scores, gt_mask, threshold=0.5, mode="origin", pixel_valid=None) -> jax.Array:
  """Per-image recall [B] = tp / (tp + fn + 1e-8) at `threshold`; 0 when tp = 0."""
  return thresholded_pixel_metrics(scores, gt_mask, threshold, mode, pixel_valid)["recall"]


def pixel_accuracy(scores, gt_mask, threshold=0.5, mode="origin", pixel_valid=None) -> jax.Array:
  """Per-image accuracy [B] = (tp + tn) / #valid (0 without valid pixels); reverse = 1 - origin."""
  return thresholded_pixel_metrics(scores, gt_mask, threshold, mode, pixel_valid)["accuracy"]


@functools.partial(jax.jit, static_argnames="mode")
def _best_f1_jit(scores, gt_mask, mode, pixel_valid):
  return _best_f1_rows(*_pixels(scores, gt_mask, pixel_valid), mode)


def pixel_best_f1(scores, gt_mask, mode="origin", pixel_valid=None) -> jax.Array:
  """Per-image F1 [B] at the image's best threshold, exact over all distinct scores."""
  _check_mode(mode)
  return _best_f1_jit(scores, gt_mask, mode, pixel_valid)


@functools.partial(jax.jit, static_argnames="mode")
def _auc_jit(scores, gt_mask, mode, pixel_valid):
  return _auc_rows_mode(*_pixels(scores, gt_mask, pixel_valid), mode)


def pixel_auc(scores, gt_mask, mode="origin", pixel_valid=None) -> AucResult:
  """Per-image ROC AUC [B] (sklearn-exact, ties averaged); auc 0 and defined False w/o both classes."""
  _check_mode(mode)
  return _auc_jit(scores, gt_mask, mode, pixel_valid)


@jax.jit
def mask_ratio(gt_mask, pixel_valid=None) -> jax.Array:
  """Share [B] of valid pixels that are forged; 0 for an image without valid pixels."""
  _, forged, valid = _pixels(gt_mask, gt_mask, pixel_valid)
  return _safe_div(jnp.sum(forged & valid, axis=1), jnp.sum(valid, axis=1))


def mask_ratio_bin(ratio) -> jax.Array:
  """ViLocal bin index (int32): 0 small (r < 0.05), 1 medium (0.05 <= r < 0.25), 2 large."""
  ratio = jnp.asarray(ratio)
  return (ratio >= SMALL_RATIO_LIMIT).astype(jnp.int32) + (ratio >= LARGE_RATIO_LIMIT).astype(
      jnp.int32)


@jax.jit
def max_pixel_score(scores, pixel_valid=None) -> jax.Array:
  """Image score [B] of a localisation-only model: max valid pixel score (MVSS-Net), 0 if none."""
  rows, _, valid = _pixels(scores, scores, pixel_valid)
  return jnp.max(jnp.where(valid, rows, 0.0), axis=1)


# ---------------------------------------------------------------------------------------------------
# Image-level metrics.


def _image_vectors(scores, labels, valid=None):
  scores, labels = jnp.ravel(jnp.asarray(scores)), jnp.ravel(jnp.asarray(labels))
  if scores.shape != labels.shape:
    raise ValueError(f"scores and labels must have the same size, got {scores.shape} and "
                     f"{labels.shape}")
  valid = jnp.ones(scores.shape, bool) if valid is None else jnp.ravel(jnp.asarray(valid))
  if valid.shape != scores.shape:
    raise ValueError(f"valid must have {scores.size} entries, got {valid.shape}")
  return scores.astype(jnp.float32), labels > 0.5, valid.astype(bool)


@jax.jit
def image_accuracy(scores, labels, threshold=0.5, valid=None) -> jax.Array:
  """Share of valid samples with (score > threshold) == label; 0 if no sample is valid."""
  scores, labels, valid = _image_vectors(scores, labels, valid)
  correct = jnp.sum(((scores > threshold) == labels) & valid, dtype=jnp.int32)
  return _safe_div(correct, jnp.sum(valid, dtype=jnp.int32))


@jax.jit
def image_auc(scores, labels, valid=None) -> AucResult:
  """ROC AUC of image scores vs labels (sklearn-exact, ties averaged); 0 / False if one class."""
  scores, labels, valid = _image_vectors(scores, labels, valid)
  result = _auc_rows(scores[None], labels[None], valid[None])
  return AucResult(auc=result.auc[0], defined=result.defined[0])


# ---------------------------------------------------------------------------------------------------
# clu metrics.


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
      _check_mode(options["mode"])
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
    rows, forged, pixels_valid = _pixels(pred_mask, gt_mask, pixel_valid)
    values, defined = cls._per_image(rows, forged, pixels_valid)
    selected = _sample_valid(valid, rows.shape[0]) & defined
    if cls.tampered_only:
      selected &= jnp.any(forged & pixels_valid, axis=1)
    if cls.ratio_bin is not None:
      if mask_ratio is None:
        ratio = _safe_div(jnp.sum(forged & pixels_valid, axis=1), jnp.sum(pixels_valid, axis=1))
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
    values = _thresholded_rows(cls._from_counts, rows, forged, valid, cls.threshold, cls.mode)
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
    values = _best_f1_rows(rows, forged, valid, cls.mode)
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
    result = _auc_rows_mode(rows, forged, valid, cls.mode)
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
    rows, forged, pixels_valid = _pixels(pred_mask, gt_mask, pixel_valid)
    if rows.size >= 2**31:
      raise ValueError(f"a batch of {rows.size} pixels overflows int32 counts; use smaller batches")
    counts = _counts_rows(rows, forged, pixels_valid, cls.threshold)
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
    scores, labels, _ = _image_vectors(pred_label, label)
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


def _host_auc(scores: np.ndarray, labels: np.ndarray) -> float:
  """The AUC of the module docstring in float64 numpy; NaN without both classes."""
  labels = labels.astype(bool)
  n_pos, n_neg = int(labels.sum()), int((~labels).sum())
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  values, value_index = np.unique(scores, return_inverse=True)
  negatives_at = np.bincount(value_index[~labels], minlength=len(values))
  negatives_below = np.cumsum(negatives_at) - negatives_at
  positive_index = value_index[labels]
  wins = negatives_below[positive_index].sum() + 0.5 * negatives_at[positive_index].sum()
  return float(wins / (n_pos * n_neg))


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
    scores, labels, _ = _image_vectors(pred_label, label)
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
    return _host_auc(scores[valid], labels[valid])


@flax.struct.dataclass
class VideoFrameMetrics(clu_metrics.Collection):
  """ViLocal test protocol: per-frame F1 / IoU at 0.5 averaged over all valid frames, the same per
  mask-ratio bin (pass the video's mean mask ratio as `mask_ratio` to bin by video as ViLocal does),
  and the mean per-frame pixel AUC over frames with both classes. Frames without forged pixels count
  (F1 = IoU = 0), as in ViLocal's `test.py`. Inputs: `pred_mask`, `gt_mask` [frames, H, W].
  """
  f1: PixelF1.configure(tampered_only=False)
  iou: PixelIoU.configure(tampered_only=False)
  f1_small: PixelF1.configure(tampered_only=False, ratio_bin="small")
  iou_small: PixelIoU.configure(tampered_only=False, ratio_bin="small")
  f1_medium: PixelF1.configure(tampered_only=False, ratio_bin="medium")
  iou_medium: PixelIoU.configure(tampered_only=False, ratio_bin="medium")
  f1_large: PixelF1.configure(tampered_only=False, ratio_bin="large")
  iou_large: PixelIoU.configure(tampered_only=False, ratio_bin="large")
  auc: PixelAUC.configure(tampered_only=False)


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
