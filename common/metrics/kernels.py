"""Forensics metric kernels: pure `jax.numpy` (and one host numpy) functions, no state.

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
  from float64 by about 1e-7 on a 512x512 image; `host_auc`, behind `ImageAUC.compute`, evaluates
  it in float64). AUC is undefined for an image with no forged or no authentic valid pixel; there
  the functions return `auc = 0` (IMDL-BenCo returns 0 for authentic images) and `defined = False`,
  so averages can skip it.
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

The public per-image and image-level functions run `jax.jit`-compiled code (`mode` static), so an
eager call compiles once per shape and mode, and a call inside a jitted step inlines. The row-level
helpers (`pixel_rows`, `counts_rows`, `thresholded_rows`, `auc_rows_mode`, `best_f1_rows`,
`image_vectors`, `host_auc`) are the building blocks of `common.metrics.collections`.
"""
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

EPS = 1e-8
MODES = ("origin", "reverse", "double")
RATIO_BINS = ("small", "medium", "large")
SMALL_RATIO_LIMIT = 0.05   # small: r < 0.05
LARGE_RATIO_LIMIT = 0.25   # medium: 0.05 <= r < 0.25, large: r >= 0.25


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


def check_mode(mode: str):
  """Raises ValueError unless `mode` is one of MODES."""
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def pixel_rows(scores, gt_mask, pixel_valid=None):
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


def safe_div(numerator, denominator):
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
  return safe_div(counts.tp + counts.tn, counts.tp + counts.fp + counts.fn + counts.tn)


def class_averaged_f1(counts: ConfusionCounts) -> jax.Array:
  """MSCCNet macro F1: mean of 2tp/(2tp+fp+fn) and 2tn/(2tn+fp+fn), each 0 on 0/0.

  Counts of any size (Python ints, int64 totals) are converted to float32 before any arithmetic.
  """
  tp, fp, fn, tn = (jnp.asarray(c, jnp.float32) for c in counts)
  return 0.5 * (safe_div(2 * tp, 2 * tp + fp + fn) + safe_div(2 * tn, 2 * tn + fp + fn))


def class_averaged_iou(counts: ConfusionCounts) -> jax.Array:
  """MSCCNet mIoU: mean of tp/(tp+fp+fn) and tn/(tn+fp+fn), each 0 on 0/0."""
  tp, fp, fn, tn = (jnp.asarray(c, jnp.float32) for c in counts)
  return 0.5 * (safe_div(tp, tp + fp + fn) + safe_div(tn, tn + fp + fn))


# ---------------------------------------------------------------------------------------------------
# Per-image pixel metrics (rows = images).


def counts_rows(rows, forged, valid, threshold) -> ConfusionCounts:
  """Per-row int32 counts [B] of (rows > threshold) vs forged over valid; rows/forged/valid [B, N]."""
  predicted = rows > threshold

  def count(selection):
    return jnp.sum(selection & valid, axis=1, dtype=jnp.int32)

  return ConfusionCounts(tp=count(predicted & forged), fp=count(predicted & ~forged),
                         fn=count(~predicted & forged), tn=count(~predicted & ~forged))


def thresholded_rows(metric_fn, rows, forged, valid, threshold, mode):
  """`metric_fn(ConfusionCounts) -> [B]` of the rows [B, N] binarised at `threshold`, in `mode`."""
  check_mode(mode)
  counts = counts_rows(rows, forged, valid, threshold)
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


def auc_rows_mode(rows, forged, valid, mode) -> AucResult:
  """Per-row AUC [B] of rows [B, N] in `mode` (reverse = 1 - AUC where defined)."""
  check_mode(mode)
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


def best_f1_rows(rows, forged, valid, mode):
  """Per-row best-threshold F1 [B] of rows [B, N] in `mode` (reverse ranks by ascending score)."""
  check_mode(mode)
  if mode == "origin":
    return _best_f1_rows_ranked(rows, forged, valid)
  if mode == "reverse":
    return _best_f1_rows_ranked(-rows, forged, valid)
  return jnp.maximum(_best_f1_rows_ranked(rows, forged, valid),
                     _best_f1_rows_ranked(-rows, forged, valid))


@jax.jit
def confusion_counts(scores, gt_mask, threshold=0.5, pixel_valid=None) -> ConfusionCounts:
  """Per-image int32 counts [B] of (scores > threshold) against gt_mask > 0.5 over valid pixels."""
  rows, forged, valid = pixel_rows(scores, gt_mask, pixel_valid)
  return counts_rows(rows, forged, valid, threshold)


_FROM_COUNTS = {"precision": precision_from_counts, "recall": recall_from_counts,
                "f1": f1_from_counts, "iou": iou_from_counts, "accuracy": accuracy_from_counts}


@functools.partial(jax.jit, static_argnames="mode")
def _thresholded_jit(scores, gt_mask, threshold, mode, pixel_valid):
  rows, forged, valid = pixel_rows(scores, gt_mask, pixel_valid)
  return {name: thresholded_rows(fn, rows, forged, valid, threshold, mode)
          for name, fn in _FROM_COUNTS.items()}


def thresholded_pixel_metrics(scores, gt_mask, threshold=0.5, mode="origin",
                              pixel_valid=None) -> dict[str, jax.Array]:
  """Per-image precision, recall, F1, IoU and accuracy, each [B], at `threshold` in `mode`."""
  check_mode(mode)
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
  return best_f1_rows(*pixel_rows(scores, gt_mask, pixel_valid), mode)


def pixel_best_f1(scores, gt_mask, mode="origin", pixel_valid=None) -> jax.Array:
  """Per-image F1 [B] at the image's best threshold, exact over all distinct scores."""
  check_mode(mode)
  return _best_f1_jit(scores, gt_mask, mode, pixel_valid)


@functools.partial(jax.jit, static_argnames="mode")
def _auc_jit(scores, gt_mask, mode, pixel_valid):
  return auc_rows_mode(*pixel_rows(scores, gt_mask, pixel_valid), mode)


def pixel_auc(scores, gt_mask, mode="origin", pixel_valid=None) -> AucResult:
  """Per-image ROC AUC [B] (sklearn-exact, ties averaged); auc 0 and defined False w/o both classes."""
  check_mode(mode)
  return _auc_jit(scores, gt_mask, mode, pixel_valid)


@jax.jit
def mask_ratio(gt_mask, pixel_valid=None) -> jax.Array:
  """Share [B] of valid pixels that are forged; 0 for an image without valid pixels."""
  _, forged, valid = pixel_rows(gt_mask, gt_mask, pixel_valid)
  return safe_div(jnp.sum(forged & valid, axis=1), jnp.sum(valid, axis=1))


def mask_ratio_bin(ratio) -> jax.Array:
  """ViLocal bin index (int32): 0 small (r < 0.05), 1 medium (0.05 <= r < 0.25), 2 large."""
  ratio = jnp.asarray(ratio)
  return (ratio >= SMALL_RATIO_LIMIT).astype(jnp.int32) + (ratio >= LARGE_RATIO_LIMIT).astype(
      jnp.int32)


@jax.jit
def max_pixel_score(scores, pixel_valid=None) -> jax.Array:
  """Image score [B] of a localisation-only model: max valid pixel score (MVSS-Net), 0 if none."""
  rows, _, valid = pixel_rows(scores, scores, pixel_valid)
  return jnp.max(jnp.where(valid, rows, 0.0), axis=1)


# ---------------------------------------------------------------------------------------------------
# Image-level metrics.


def image_vectors(scores, labels, valid=None):
  """Flattens to scores float32 [N], labels bool [N] (> 0.5) and valid bool [N] (all if None)."""
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
  scores, labels, valid = image_vectors(scores, labels, valid)
  correct = jnp.sum(((scores > threshold) == labels) & valid, dtype=jnp.int32)
  return safe_div(correct, jnp.sum(valid, dtype=jnp.int32))


@jax.jit
def image_auc(scores, labels, valid=None) -> AucResult:
  """ROC AUC of image scores vs labels (sklearn-exact, ties averaged); 0 / False if one class."""
  scores, labels, valid = image_vectors(scores, labels, valid)
  result = _auc_rows(scores[None], labels[None], valid[None])
  return AucResult(auc=result.auc[0], defined=result.defined[0])


def host_auc(scores: np.ndarray, labels: np.ndarray) -> float:
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
