"""common.metrics against scikit-learn: per-image pixel metrics, image metrics, clu merging, sharding."""
import functools
import warnings

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from clu import metrics as clu_metrics
from sklearn import metrics as skm

from common import metrics

SHAPE = (8, 12, 10)  # images per batch, H, W
SEEDS = (0, 1, 2)


def make_images(seed, with_pixel_valid=True):
  """Scores, masks and pixel validity [8, 12, 10] covering the edge cases row by row.

  Without `with_pixel_valid` every pixel is valid (an all-ones array, so that every call shares one
  compiled shape signature).
  """
  rng = np.random.default_rng(seed)
  scores = rng.random(SHAPE).astype(np.float32)
  gt = (rng.random(SHAPE) < rng.uniform(0.1, 0.6, size=(SHAPE[0], 1, 1))).astype(np.uint8)
  gt[0] = 0                                                  # authentic image
  gt[1] = 1                                                  # fully forged image
  scores[2] = 0.0                                            # all-zero prediction
  scores[3] = 1.0                                            # all-one prediction
  scores[4] = rng.integers(0, 5, SHAPE[1:]) / 4.0            # tied scores, 0.5 included
  scores[5] = rng.integers(0, 2, SHAPE[1:])                  # binary scores
  gt[6], scores[6] = 0, 0.0                                  # all-zero mask and prediction
  scores[7] = np.clip(scores[7] + 0.4 * gt[7], 0, 1)         # informative scores
  pixel_valid = np.ones(SHAPE, np.uint8)
  if with_pixel_valid:
    pixel_valid = (rng.random(SHAPE) < 0.8).astype(np.uint8)
    pixel_valid[0:2] = 1
  return scores, gt, pixel_valid


def valid_pixels(scores, gt, pixel_valid, i):
  keep = pixel_valid[i].astype(bool)
  return scores[i][keep].astype(np.float64), gt[i][keep].astype(int)


def sk_thresholded(name, y, s, mode):
  fn = {"f1": functools.partial(skm.f1_score, zero_division=0),
        "iou": functools.partial(skm.jaccard_score, zero_division=0),
        "precision": functools.partial(skm.precision_score, zero_division=0),
        "recall": functools.partial(skm.recall_score, zero_division=0),
        "accuracy": skm.accuracy_score}[name]
  origin = fn(y, (s > 0.5).astype(int))
  reverse = fn(y, (~(s > 0.5)).astype(int))
  return {"origin": origin, "reverse": reverse, "double": max(origin, reverse)}[mode]


def sk_best_f1(y, s):
  if y.sum() == 0:
    return 0.0
  precision, recall, _ = skm.precision_recall_curve(y, s)
  with np.errstate(invalid="ignore", divide="ignore"):
    f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
  return f1.max()


def sk_auc(y, s):
  if y.min() == y.max():
    return 0.0, False
  return skm.roc_auc_score(y, s), True


PURE_THRESHOLDED = {"f1": metrics.pixel_f1, "iou": metrics.pixel_iou,
                    "precision": metrics.pixel_precision, "recall": metrics.pixel_recall,
                    "accuracy": metrics.pixel_accuracy}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mode", metrics.MODES)
def test_thresholded_pixel_metrics_match_sklearn(seed, mode):
  scores, gt, pixel_valid = make_images(seed, with_pixel_valid=seed != 0)
  for name, fn in PURE_THRESHOLDED.items():
    ours = np.asarray(fn(scores, gt, mode=mode, pixel_valid=pixel_valid))
    assert np.all(np.isfinite(ours))
    expected = [sk_thresholded(name, *valid_pixels(scores, gt, pixel_valid, i)[::-1], mode)
                for i in range(SHAPE[0])]
    np.testing.assert_allclose(ours, expected, atol=2e-6, err_msg=f"{name} {mode}")


def test_documented_values_on_degenerate_masks():
  # Rows: (mask, prediction) all-zero/all-one in the four combinations, twice; the second four
  # rows have no valid pixel at all.
  gt = np.zeros(SHAPE, np.uint8)
  scores = np.zeros(SHAPE, np.float32)
  gt[[1, 3, 5, 7]] = 1
  scores[[2, 3, 6, 7]] = 1
  pixel_valid = np.ones(SHAPE, np.uint8)
  pixel_valid[4:] = 0
  both_one = np.array([0, 0, 0, 1, 0, 0, 0, 0], np.float32)
  for fn in (metrics.pixel_f1, metrics.pixel_iou, metrics.pixel_precision, metrics.pixel_recall):
    np.testing.assert_allclose(fn(scores, gt, pixel_valid=pixel_valid), both_one, atol=1e-6)
  np.testing.assert_allclose(metrics.pixel_accuracy(scores, gt, pixel_valid=pixel_valid),
                             [1, 0, 0, 1, 0, 0, 0, 0])
  auc = metrics.pixel_auc(scores, gt, pixel_valid=pixel_valid)
  assert np.all(np.asarray(auc.auc) == 0.0) and not np.any(auc.defined)
  np.testing.assert_allclose(metrics.pixel_best_f1(scores, gt, pixel_valid=pixel_valid),
                             [0, 1, 0, 1, 0, 0, 0, 0], atol=1e-6)
  np.testing.assert_allclose(metrics.mask_ratio(gt, pixel_valid=pixel_valid),
                             [0, 1, 0, 1, 0, 0, 0, 0])
  counts = metrics.confusion_counts(scores, gt, pixel_valid=pixel_valid)
  assert np.all(np.asarray(counts.tp)[4:] == 0) and np.all(np.asarray(counts.tn)[4:] == 0)


@pytest.mark.parametrize("seed", SEEDS)
def test_best_f1_and_auc_match_sklearn(seed):
  scores, gt, pixel_valid = make_images(seed)
  best = {mode: np.asarray(metrics.pixel_best_f1(scores, gt, mode=mode, pixel_valid=pixel_valid))
          for mode in metrics.MODES}
  auc = {mode: metrics.pixel_auc(scores, gt, mode=mode, pixel_valid=pixel_valid)
         for mode in metrics.MODES}
  for i in range(SHAPE[0]):
    s, y = valid_pixels(scores, gt, pixel_valid, i)
    best_origin, best_reverse = sk_best_f1(y, s), sk_best_f1(y, 1.0 - s)
    np.testing.assert_allclose(best["origin"][i], best_origin, atol=2e-6)
    np.testing.assert_allclose(best["reverse"][i], best_reverse, atol=2e-6)
    np.testing.assert_allclose(best["double"][i], max(best_origin, best_reverse), atol=2e-6)
    # The best threshold is at least as good as 0.5.
    assert best["origin"][i] >= sk_thresholded("f1", y, s, "origin") - 1e-6
    expected, defined = sk_auc(y, s)
    reverse = sk_auc(y, 1.0 - s)[0]
    for mode, value in (("origin", expected), ("reverse", reverse),
                        ("double", max(expected, reverse))):
      assert bool(auc[mode].defined[i]) == defined
      np.testing.assert_allclose(auc[mode].auc[i], value, atol=1e-6, err_msg=f"row {i} {mode}")


@pytest.mark.parametrize("seed", SEEDS)
def test_image_metrics_match_sklearn(seed):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, 200)
  for scores in (rng.random(200).astype(np.float32),                     # continuous
                 (rng.integers(0, 6, 200) / 5.0).astype(np.float32),     # tied, 0.0 ... 1.0
                 rng.integers(0, 2, 200).astype(np.float32)):            # binary
    valid = rng.random(200) < 0.7
    np.testing.assert_allclose(
        metrics.image_accuracy(scores, labels, valid=valid),
        skm.accuracy_score(labels[valid], scores[valid] > 0.5), atol=1e-7)
    expected = skm.roc_auc_score(labels[valid], scores[valid])
    result = metrics.image_auc(scores, labels, valid=valid)
    assert bool(result.defined)
    np.testing.assert_allclose(result.auc, expected, atol=1e-6)
    halves = [metrics.ImageAUC.from_model_output(pred_label=scores[part], label=labels[part],
                                                 valid=valid[part])
              for part in (slice(0, 100), slice(100, 200))]
    np.testing.assert_allclose(halves[0].merge(halves[1]).compute(), expected, rtol=1e-12)
  one_class = metrics.image_auc(np.array([0.1, 0.7]), np.array([1, 1]))
  assert float(one_class.auc) == 0.0 and not bool(one_class.defined)
  assert float(metrics.image_accuracy([0.3], [1], valid=[False])) == 0.0


def test_confusion_counts_and_class_averaged_match_sklearn():
  scores, gt, pixel_valid = make_images(4)
  counts = metrics.confusion_counts(scores, gt, pixel_valid=pixel_valid)
  keep = pixel_valid.astype(bool)
  y, pred = gt[keep].astype(int), (scores[keep] > 0.5).astype(int)
  tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
  assert tuple(int(c) for c in counts.total()) == (tp, fp, fn, tn)
  np.testing.assert_allclose(
      metrics.class_averaged_f1(counts.total()),
      skm.f1_score(y, pred, average="macro", labels=[0, 1], zero_division=0), atol=1e-6)
  np.testing.assert_allclose(
      metrics.class_averaged_iou(counts.total()),
      skm.jaccard_score(y, pred, average="macro", labels=[0, 1], zero_division=0), atol=1e-6)
  # Only authentic pixels, all predicted authentic: forged-class 0/0 counts as 0 (sklearn too).
  only_real = metrics.ConfusionCounts(tp=0, fp=0, fn=0, tn=50)
  y0 = np.zeros(50, int)
  np.testing.assert_allclose(
      metrics.class_averaged_f1(only_real),
      skm.f1_score(y0, y0, average="macro", labels=[0, 1], zero_division=0))
  np.testing.assert_allclose(
      metrics.class_averaged_iou(only_real),
      skm.jaccard_score(y0, y0, average="macro", labels=[0, 1], zero_division=0))
  assert float(metrics.class_averaged_f1(metrics.ConfusionCounts(0, 0, 0, 0))) == 0.0


def test_accumulated_counts_are_exact_beyond_int32():
  per_batch = 2**31 - 1  # the largest count one batch can contribute
  update = metrics.ClassAveragedPixelF1(
      low=jnp.full((4,), per_batch & (2**30 - 1), jnp.int32),
      high=jnp.full((4,), per_batch >> 30, jnp.int32))
  total = metrics.ClassAveragedPixelF1.empty()
  for _ in range(7):
    total = jax.jit(lambda a, b: a.merge(b))(total, update)
  assert tuple(int(c) for c in total.totals()) == (7 * per_batch,) * 4
  np.testing.assert_allclose(total.counts().tp, 7 * per_batch, rtol=1e-7)
  np.testing.assert_allclose(total.compute(), 0.5, rtol=1e-6)


def test_ratio_bins():
  np.testing.assert_array_equal(
      metrics.mask_ratio_bin(np.array([0.0, 0.0499, 0.05, 0.2499, 0.25, 1.0])), [0, 0, 1, 1, 2, 2])
  gt = np.zeros((3, 10, 10), np.uint8)
  gt[1, :2] = 1
  gt[2, :5] = 1
  np.testing.assert_allclose(metrics.mask_ratio(gt), [0.0, 0.2, 0.5])


ALL_NAMES = list(metrics.METRICS_BY_NAME)
AllMetrics = metrics.make_collection(ALL_NAMES)  # tampered images only for the per-image means


@jax.jit
def all_metrics_update(outputs):
  return AllMetrics.single_from_model_output(**outputs)


# ViLocal's test protocol (the collection vilocal_jax.task builds): per-frame F1 / IoU over all frames,
# per mask-ratio bin, and AUC over frames with both classes.
_ALL_FRAMES = {"tampered_only": False}
VideoFrameCollection = clu_metrics.Collection.create(
    f1=metrics.PixelF1.configure(**_ALL_FRAMES), iou=metrics.PixelIoU.configure(**_ALL_FRAMES),
    auc=metrics.PixelAUC.configure(**_ALL_FRAMES),
    **{f"{name}_{bin_}": cls.configure(**_ALL_FRAMES, ratio_bin=bin_)
       for name, cls in (("f1", metrics.PixelF1), ("iou", metrics.PixelIoU))
       for bin_ in metrics.RATIO_BINS})


@jax.jit
def video_metrics_update(outputs):
  return VideoFrameCollection.single_from_model_output(**outputs)


def reference_results(scores, gt, pixel_valid, labels, image_scores):
  """Whole-set values from scikit-learn, tampered images only for the per-image means."""
  per_image = {"pixel_f1": [], "pixel_iou": [], "pixel_accuracy": [], "pixel_best_f1": [],
               "pixel_auc": []}
  ys, preds = [], []
  for i in range(len(scores)):
    keep = pixel_valid[i].astype(bool)
    s, y = scores[i][keep].astype(np.float64), gt[i][keep].astype(int)
    ys.append(y)
    preds.append((s > 0.5).astype(int))
    if y.sum() == 0:
      continue
    per_image["pixel_f1"].append(sk_thresholded("f1", y, s, "origin"))
    per_image["pixel_iou"].append(sk_thresholded("iou", y, s, "origin"))
    per_image["pixel_accuracy"].append(sk_thresholded("accuracy", y, s, "origin"))
    per_image["pixel_best_f1"].append(sk_best_f1(y, s))
    auc, defined = sk_auc(y, s)
    if defined:
      per_image["pixel_auc"].append(auc)
  results = {k: np.mean(v) for k, v in per_image.items()}
  y, pred = np.concatenate(ys), np.concatenate(preds)
  results["class_averaged_pixel_f1"] = skm.f1_score(y, pred, average="macro", labels=[0, 1],
                                                    zero_division=0)
  results["class_averaged_pixel_iou"] = skm.jaccard_score(y, pred, average="macro",
                                                          labels=[0, 1], zero_division=0)
  results["image_accuracy"] = skm.accuracy_score(labels, image_scores > 0.5)
  results["image_auc"] = skm.roc_auc_score(labels, image_scores)
  return results


def vilocal_reference(scores, gt, ratio=None):
  """ViLocal test.py: per-frame F1/IoU at 0.5 over all frames, per ratio bin, AUC where defined."""
  num = len(scores)
  frame_ratio = gt.reshape(num, -1).mean(axis=1) if ratio is None else ratio
  bins = np.digitize(frame_ratio, [0.05, 0.25])
  f1 = np.array([sk_thresholded("f1", gt[i].ravel(), scores[i].ravel(), "origin")
                 for i in range(num)])
  iou = np.array([sk_thresholded("iou", gt[i].ravel(), scores[i].ravel(), "origin")
                  for i in range(num)])
  aucs = [sk_auc(gt[i].ravel(), scores[i].ravel()) for i in range(num)]
  results = {"f1": f1.mean(), "iou": iou.mean(), "auc": np.mean([a for a, ok in aucs if ok])}
  for index, name in enumerate(metrics.RATIO_BINS):
    in_bin = bins == index
    results[f"f1_{name}"] = f1[in_bin].mean() if in_bin.any() else np.nan
    results[f"iou_{name}"] = iou[in_bin].mean() if in_bin.any() else np.nan
  return results


def assert_results_close(actual, expected, atol=2e-6):
  assert set(actual) == set(expected)
  for name, value in expected.items():
    np.testing.assert_allclose(actual[name], value, atol=atol, err_msg=name)


def dataset(num_images):
  parts = [make_images(seed) for seed in range(10, 10 + -(-num_images // SHAPE[0]))]
  scores, gt, pixel_valid = (np.concatenate(p)[:num_images] for p in zip(*parts))
  rng = np.random.default_rng(5)
  labels = (gt.reshape(num_images, -1).max(axis=1) > 0).astype(np.int32)
  labels[rng.random(num_images) < 0.2] ^= 1
  image_scores = (rng.integers(0, 8, num_images) / 7.0).astype(np.float32)  # with ties
  return scores, gt, pixel_valid, labels, image_scores


def padded_batches(arrays, batch_size):
  """Static-size batches; the last one is padded with garbage marked valid = False."""
  num = len(arrays[0])
  for start in range(0, num, batch_size):
    stop = min(start + batch_size, num)
    batch = []
    for array in arrays:
      chunk = array[start:stop]
      garbage = np.ones((batch_size - len(chunk),) + array.shape[1:], array.dtype)
      batch.append(np.concatenate([chunk, garbage]))
    yield (*batch, np.arange(batch_size) < stop - start)


def model_outputs(scores, gt, pixel_valid, labels, image_scores, valid=None):
  return dict(pred_mask=scores, gt_mask=gt, pixel_valid=pixel_valid, label=labels,
              pred_label=image_scores, valid=valid)


def test_collection_merged_over_padded_batches_equals_whole_set_and_sklearn():
  data = dataset(14)
  merged = AllMetrics.empty()
  for *batch, valid in padded_batches(data, SHAPE[0]):
    merged = merged.merge(all_metrics_update(model_outputs(*batch, valid=valid)))
  merged = merged.compute()
  whole = all_metrics_update(model_outputs(*data, valid=np.ones(14, bool))).compute()
  assert_results_close(merged, whole, atol=1e-6)
  assert_results_close(merged, reference_results(*data))


def test_collection_on_sharded_inputs_equals_single_device():
  assert jax.device_count() >= 4
  mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  sharding = jax.sharding.NamedSharding(mesh, jax.P("data"))
  data = dataset(14)
  batches = list(padded_batches(data, SHAPE[0]))

  def run(place):
    totals = AllMetrics.empty()
    for *batch, valid in batches:
      update = all_metrics_update(jax.tree.map(place, model_outputs(*batch, valid=valid)))
      assert len(update.image_auc.scores[0].sharding.device_set) == len(
          getattr(place(valid), "devices", lambda: [0])())
      totals = totals.merge(update)
    return totals.compute()

  sharded = run(lambda x: jax.device_put(x, sharding))
  single = run(lambda x: x)
  assert_results_close(sharded, single, atol=1e-6)
  assert_results_close(sharded, reference_results(*data))


def test_padded_samples_are_ignored_by_every_metric():
  data = dataset(8)
  valid = np.array([1, 1, 0, 1, 0, 1, 1, 0], bool)
  kept = [array[valid] for array in data]
  masked = all_metrics_update(model_outputs(*data, valid=valid)).compute()
  assert_results_close(masked, reference_results(*kept))
  everything = all_metrics_update(model_outputs(*data, valid=np.ones(8, bool))).compute()
  assert any(abs(masked[k] - everything[k]) > 1e-3 for k in ALL_NAMES)  # padding would matter
  frames = video_metrics_update(dict(pred_mask=data[0], gt_mask=data[1], valid=valid)).compute()
  assert_results_close(frames, vilocal_reference(kept[0], kept[1]))


def test_video_frame_metrics_follow_vilocal_protocol():
  scores, gt = dataset(8)[:2]
  video_ratio = np.array([0.01, 0.1, 0.4, 0.3, 0.01, 0.2, 0.6, 0.04])
  valid = np.ones(8, bool)
  result = video_metrics_update(dict(pred_mask=scores, gt_mask=gt, valid=valid)).compute()
  assert_results_close(result, vilocal_reference(scores, gt))
  result = video_metrics_update(
      dict(pred_mask=scores, gt_mask=gt, valid=valid, mask_ratio=video_ratio))
  assert_results_close(result.compute(), vilocal_reference(scores, gt, video_ratio))


def test_tampered_only_and_defined_only_selection():
  scores, gt, pixel_valid = make_images(8, with_pixel_valid=False)
  f1 = np.asarray(metrics.pixel_f1(scores, gt, pixel_valid=pixel_valid))
  auc = metrics.pixel_auc(scores, gt, pixel_valid=pixel_valid)
  tampered = gt.reshape(SHAPE[0], -1).any(axis=1)
  assert not tampered.all() and not np.asarray(auc.defined).all()
  collection = clu_metrics.Collection.create(
      f1=metrics.PixelF1,
      f1_all=metrics.PixelF1.configure(tampered_only=False),
      auc=metrics.PixelAUC,
      auc_benco=metrics.PixelAUC.configure(tampered_only=False, defined_only=False))
  result = jax.jit(lambda s, g, v: collection.single_from_model_output(
      pred_mask=s, gt_mask=g, pixel_valid=v))(scores, gt, pixel_valid).compute()
  np.testing.assert_allclose(result["f1"], f1[tampered].mean(), atol=1e-7)
  np.testing.assert_allclose(result["f1_all"], f1.mean(), atol=1e-7)
  np.testing.assert_allclose(result["auc"], np.mean(np.asarray(auc.auc)[np.asarray(auc.defined)]),
                             atol=1e-7)
  np.testing.assert_allclose(result["auc_benco"], np.mean(auc.auc), atol=1e-7)  # undefined -> 0


def test_empty_selections_and_errors():
  assert np.isnan(metrics.PixelF1.empty().compute())
  assert np.isnan(metrics.ImageAUC.empty().compute())
  one_class = metrics.ImageAUC.from_model_output(pred_label=np.array([0.2, 0.9]),
                                                 label=np.array([1, 1]))
  assert np.isnan(metrics.ImageAUC.empty().merge(one_class).compute())
  with pytest.raises(ValueError, match="no option"):
    metrics.PixelAUC.configure(threshold=0.3)
  with pytest.raises(ValueError, match="mode"):
    metrics.PixelF1.configure(mode="permuted")
  with pytest.raises(ValueError, match="apply to none"):
    metrics.make_collection(["image_auc"], tampered_only=True)
  with pytest.raises(ValueError, match="unknown metric"):
    metrics.make_collection(["pixel_f2"])
  with pytest.raises(ValueError, match="valid"):
    metrics.PixelF1.from_model_output(pred_mask=np.zeros((2, 3, 3)), gt_mask=np.zeros((2, 3, 3)),
                                      valid=np.ones(3))
  with pytest.raises(ValueError, match="share a shape"):
    metrics.pixel_f1(np.zeros((2, 3, 3)), np.zeros((2, 3, 4)))
  update = metrics.ImageAUC.from_model_output(pred_label=np.array([0.2]), label=np.array([1]))
  with pytest.raises(RuntimeError, match="outside jax.jit"):
    jax.jit(lambda a: a.merge(a))(update)


def test_hand_written_collection_composes_with_clu_metrics():
  @flax.struct.dataclass
  class EvalMetrics(clu_metrics.Collection):
    pixel_f1: metrics.PixelF1
    pixel_f1_permuted: metrics.PixelF1.configure(mode="double")
    loss: clu_metrics.Average.from_output("loss")

  scores, gt, _ = make_images(9)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    result = EvalMetrics.single_from_model_output(
        pred_mask=scores, gt_mask=gt, loss=jnp.float32(2.0)).compute()
  tampered = gt.reshape(SHAPE[0], -1).any(axis=1)
  for name, mode in (("pixel_f1", "origin"), ("pixel_f1_permuted", "double")):
    per_image = [sk_thresholded("f1", gt[i].ravel(), scores[i].ravel(), mode)
                 for i in np.flatnonzero(tampered)]
    np.testing.assert_allclose(result[name], np.mean(per_image), atol=1e-6, err_msg=name)
  assert float(result["loss"]) == 2.0
  assert metrics.PixelF1.configure(mode="double").mode == "double"
  assert metrics.PixelF1.mode == "origin"
