"""Forensics evaluation metrics (IMDL-BenCo, MSCCNet and ViLocal conventions, checked against scikit-learn).

  kernels      pure `jax.numpy` functions: confusion counts [B], per-image pixel F1 / IoU / accuracy /
               best-threshold F1 / AUC [B] of scores and masks [B, ...], image accuracy / AUC of [N]
               vectors, mask-ratio bins, and the float64 host AUC; the conventions are in its docstring.
  collections  `clu.metrics.Metric` classes over model outputs (`pred_mask`, `gt_mask`, `pred_label`,
               `label`, `valid`, ...), mergeable across batches and devices, and `make_collection`.

Both are re-exported here: `from common import metrics; metrics.PixelF1`, `metrics.pixel_auc(...)`.
"""
from common.metrics.collections import (
    METRICS_BY_NAME, ClassAveragedPixelF1, ClassAveragedPixelIoU, ImageAccuracy, ImageAUC,
    PixelAccuracy, PixelAUC, PixelBestF1, PixelF1, PixelIoU, make_collection)
from common.metrics.kernels import (
    EPS, LARGE_RATIO_LIMIT, MODES, RATIO_BINS, SMALL_RATIO_LIMIT, AucResult, ConfusionCounts,
    accuracy_from_counts, class_averaged_f1, class_averaged_iou, confusion_counts, f1_from_counts,
    image_accuracy, image_auc, iou_from_counts, mask_ratio, mask_ratio_bin, max_pixel_score,
    pixel_accuracy, pixel_auc, pixel_best_f1, pixel_f1, pixel_iou, pixel_precision, pixel_recall,
    precision_from_counts, recall_from_counts, thresholded_pixel_metrics)

__all__ = [
    # kernels
    "EPS", "MODES", "RATIO_BINS", "SMALL_RATIO_LIMIT", "LARGE_RATIO_LIMIT", "ConfusionCounts",
    "AucResult", "precision_from_counts", "recall_from_counts", "f1_from_counts", "iou_from_counts",
    "accuracy_from_counts", "class_averaged_f1", "class_averaged_iou", "confusion_counts",
    "thresholded_pixel_metrics", "pixel_f1", "pixel_iou", "pixel_precision", "pixel_recall",
    "pixel_accuracy", "pixel_best_f1", "pixel_auc", "mask_ratio", "mask_ratio_bin",
    "max_pixel_score", "image_accuracy", "image_auc",
    # collections
    "PixelF1", "PixelIoU", "PixelAccuracy", "PixelBestF1", "PixelAUC", "ClassAveragedPixelF1",
    "ClassAveragedPixelIoU", "ImageAccuracy", "ImageAUC", "METRICS_BY_NAME", "make_collection",
]
