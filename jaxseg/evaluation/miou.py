"""Segmentation metrics from an accumulated confusion matrix.

`confusion_matrix` runs on device inside a jitted eval step; when the batch is
a global (multi-host) array, the matrix it returns already counts every
host's pixels. `segmentation_metrics` turns the summed matrix into mIoU,
per-class IoU and pixel accuracy on the host.
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import jax.numpy as jnp
import numpy as np


def confusion_matrix(
    labels: jnp.ndarray, predictions: jnp.ndarray, num_classes: int, ignore_index: int = 255
) -> jnp.ndarray:
  """Counts (label, prediction) pairs.

  Args:
    labels: int [...] ground-truth class ids; `ignore_index` pixels are skipped.
    predictions: int [...] predicted class ids, same shape.
    num_classes: C.
  Returns:
    int32 [C, C]: entry [i, j] = number of pixels of class i predicted as j.
    Labels outside [0, C) other than `ignore_index` are skipped too; data
    loading rejects them before they get here.
  """
  chex.assert_equal_shape([labels, predictions])
  labels = labels.astype(jnp.int32).reshape(-1)
  predictions = predictions.astype(jnp.int32).reshape(-1)
  valid = (labels >= 0) & (labels < num_classes) & (labels != ignore_index)
  valid &= (predictions >= 0) & (predictions < num_classes)
  # Invalid pixels go to an extra bin that is dropped.
  index = jnp.where(valid, labels * num_classes + predictions, num_classes * num_classes)
  counts = jnp.bincount(index, length=num_classes * num_classes + 1)
  return counts[:-1].reshape(num_classes, num_classes).astype(jnp.int32)


def segmentation_metrics(confusion: np.ndarray) -> dict:
  """mIoU, per-class IoU, pixel accuracy and mean class accuracy.

  Classes that appear neither in the labels nor in the predictions have an
  undefined IoU (NaN) and are left out of the mean, as the VOC devkit does.

  Args:
    confusion: [C, C] summed confusion matrix (rows = labels).
  Returns:
    dict(miou=float, iou=float64 [C], pixel_accuracy=float, mean_accuracy=float).
  """
  conf = np.asarray(confusion, dtype=np.float64)
  if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
    raise ValueError(f"confusion matrix must be square, got shape {conf.shape}")
  tp = np.diag(conf)
  gt = conf.sum(axis=1)
  pred = conf.sum(axis=0)
  union = gt + pred - tp
  with np.errstate(invalid="ignore", divide="ignore"):
    iou = np.where(union > 0, tp / union, np.nan)
    class_acc = np.where(gt > 0, tp / gt, np.nan)
  total = conf.sum()
  return dict(
      miou=float(np.nanmean(iou)) if np.any(union > 0) else float("nan"),
      iou=iou,
      pixel_accuracy=float(tp.sum() / total) if total else float("nan"),
      mean_accuracy=float(np.nanmean(class_acc)) if np.any(gt > 0) else float("nan"),
  )


def iou_table(metrics: dict, class_names: Sequence[str] | None = None) -> str:
  """Plain-text per-class IoU table (percent), ending with mIoU and pixel accuracy."""
  iou = metrics["iou"]
  names = list(class_names) if class_names is not None else [str(i) for i in range(len(iou))]
  width = max(len(n) for n in names + ["pixel accuracy"])
  lines = [f"{'class':<{width}}  IoU(%)"]
  for name, value in zip(names, iou):
    lines.append(f"{name:<{width}}  {'n/a' if np.isnan(value) else f'{100 * value:6.2f}'}")
  lines.append(f"{'mIoU':<{width}}  {100 * metrics['miou']:6.2f}")
  lines.append(f"{'pixel accuracy':<{width}}  {100 * metrics['pixel_accuracy']:6.2f}")
  return "\n".join(lines)
