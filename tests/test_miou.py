"""mIoU from the device-side confusion matrix."""

import jax
import numpy as np
import pytest

from jaxseg.evaluation.miou import confusion_matrix, iou_table, segmentation_metrics


def _numpy_confusion(labels, preds, c, ignore):
  conf = np.zeros((c, c), np.int64)
  for label, p in zip(labels.ravel(), preds.ravel()):
    if label != ignore:
      conf[label, p] += 1
  return conf


def test_confusion_matches_numpy():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 4, (3, 17, 9))
  labels[0, :4] = 255
  preds = rng.integers(0, 4, (3, 17, 9))
  conf = jax.jit(confusion_matrix, static_argnums=(2, 3))(labels, preds, 4, 255)
  np.testing.assert_array_equal(np.asarray(conf), _numpy_confusion(labels, preds, 4, 255))


def test_metrics_values():
  conf = np.array([[3, 1, 0], [1, 2, 0], [0, 0, 0]])
  m = segmentation_metrics(conf)
  # class 0: tp 3, union 3+1+1 = 5; class 1: tp 2, union 2+1+1 = 4; class 2 absent -> NaN, skipped.
  assert m["iou"][0] == pytest.approx(0.6) and m["iou"][1] == pytest.approx(0.5)
  assert np.isnan(m["iou"][2])
  assert m["miou"] == pytest.approx(0.55)
  assert m["pixel_accuracy"] == pytest.approx(5 / 7)
  table = iou_table(m, ["bg", "a", "b"])
  assert "mIoU" in table and "55.00" in table and "n/a" in table


def test_perfect_prediction():
  labels = np.array([[0, 1], [2, 255]])
  m = segmentation_metrics(
      np.asarray(confusion_matrix(labels, np.where(labels == 255, 0, labels), 3))
  )
  assert m["miou"] == 1.0 and m["pixel_accuracy"] == 1.0


def test_dataset_scorer_names_an_eval_batch_that_does_not_split_over_the_mesh():
  from jaxseg.errors import ConfigError
  from jaxseg.evaluation.segmentation import dataset_scorer
  from jaxseg.train import sharding as shd

  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:2]), ("data",))
  kwargs = dict(num_classes=3, ignore_index=255, batch_sharding=shd.batch_sharding(mesh))
  with pytest.raises(ConfigError, match="eval batch size 3 .* 2-way 'data' axis"):
    dataset_scorer(lambda v, b: b["image"], [], None, batch_size=3, **kwargs)
  assert callable(dataset_scorer(lambda v, b: b["image"], [], None, batch_size=4, **kwargs))
