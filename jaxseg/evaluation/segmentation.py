"""Dataset-level segmentation evaluation with device-side confusion accumulation."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.evaluation.miou import confusion_matrix, segmentation_metrics
from jaxseg.train.sharding import local_rows

# predict_fn(variables, batch) -> int class ids [B, H, W] at the mask's resolution.
PredictFn = Callable[[Any, dict], jax.Array]

# int32 counts overflow past 2**31 pixels in one cell: move the running matrix
# to host (int64) every this many batches.
_FLUSH_EVERY = 256


def _zeros_replicated_like(x: jax.Array, shape) -> jax.Array:
  """int32 zeros replicated over `x`'s mesh: the sharding the step returns its confusion with,
  so the first batch and the later ones hit one compiled executable."""
  zeros = np.zeros(shape, np.int32)
  sharding = getattr(x, "sharding", None)
  if isinstance(sharding, jax.sharding.NamedSharding):
    return jax.device_put(
        zeros, jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
    )
  return jnp.asarray(zeros)


def confusion_step(predict_fn: PredictFn, *, num_classes: int, ignore_index: int = 255):
  """The jitted (confusion int32 [C, C], variables, batch) -> (confusion, pred [B, H, W]) update.

  Build it once and pass it to `evaluate_segmentation(step=...)` to evaluate many
  times (e.g. during training) without compiling again.
  """

  @jax.jit
  def step(confusion, variables, batch):
    pred = predict_fn(variables, batch)
    mask = jnp.where(batch["valid"][:, None, None], batch["mask"], ignore_index)
    return confusion + confusion_matrix(mask, pred, num_classes, ignore_index), pred

  return step


def evaluate_segmentation(
    predict_fn: PredictFn | None,
    variables: Any,
    batches: Iterable[dict],
    *,
    num_classes: int,
    ignore_index: int = 255,
    keep_examples: int = 0,
    step=None,
) -> tuple[dict, list[dict]]:
  """Runs `predict_fn` over global eval batches and scores it.

  Args:
    batches: global batches with 'mask' int [B, H, W] and bool 'valid' [B]
      (padding rows are excluded from the counts).
    keep_examples: number of (image, mask, prediction) examples to return as
      numpy, for pictures (this process's rows of the first batches).
    step: a prebuilt `confusion_step` (then `predict_fn` may be None).
  Returns:
    (metrics, examples): metrics from `segmentation_metrics` plus 'confusion'
    (int64 [C, C]); examples a list of dicts of numpy arrays.
  """
  if step is None:
    step = confusion_step(predict_fn, num_classes=num_classes, ignore_index=ignore_index)

  total = np.zeros((num_classes, num_classes), np.int64)
  running = None
  examples: list[dict] = []
  for i, batch in enumerate(batches):
    if running is None:
      running = _zeros_replicated_like(batch["mask"], (num_classes, num_classes))
    running, pred = step(running, variables, batch)
    if len(examples) < keep_examples:
      # This process's rows only: the global batch may span other hosts.
      host = {k: local_rows(batch[k]) for k in ("image", "mask", "valid")}
      host_pred = local_rows(pred)
      for j in range(host_pred.shape[0]):
        if host["valid"][j] and len(examples) < keep_examples:
          examples.append(dict(image=host["image"][j], mask=host["mask"][j], pred=host_pred[j]))
    if (i + 1) % _FLUSH_EVERY == 0:
      total += np.asarray(jax.device_get(running), np.int64)
      running = running * 0  # Same sharding as the step's output: no recompile.
  if running is not None:
    total += np.asarray(jax.device_get(running), np.int64)
  metrics = segmentation_metrics(total)
  metrics["confusion"] = total
  return metrics, examples


def dataset_scorer(
    predict_fn: PredictFn,
    source,
    transform,
    *,
    num_classes: int,
    ignore_index: int,
    batch_size: int,
    batch_sharding,
):
  """score(variables, keep_examples=0) -> ((metrics, examples), num_batches) over a whole split.

  Built once (e.g. per training run): its jitted confusion step compiles on the first call only, so
  evaluation during training (`train.eval_every`) never recompiles.

  Args:
    predict_fn: (variables, global batch) -> int class ids [B, H, W] at the mask's resolution.
    source: random-access eval source; transform: example -> fixed-size example ('image', 'mask').
    batch_sharding: the trainer's batch sharding (`TrainSetup.batch_sharding`).
  """
  from jaxseg.data import pipeline
  from jaxseg.train import sharding as shd

  data_shards = int(batch_sharding.mesh.shape["data"])
  if int(batch_size) % data_shards:
    from jaxseg.errors import ConfigError

    raise ConfigError(
        f"eval batch size {batch_size} does not split over the mesh's {data_shards}-way 'data' axis; "
        f"hint: set the method's evaluate batch size to a multiple of {data_shards}"
    )
  step = confusion_step(predict_fn, num_classes=num_classes, ignore_index=ignore_index)

  def score(variables, keep_examples: int = 0):
    local, num_batches = pipeline.eval_batches(
        source, transform, global_batch_size=int(batch_size), keys=("image", "mask")
    )
    batches = (shd.global_batch(b, batch_sharding) for b in local)
    result = evaluate_segmentation(
        None,
        variables,
        batches,
        num_classes=num_classes,
        ignore_index=ignore_index,
        keep_examples=keep_examples,
        step=step,
    )
    return result, num_batches

  score.step = step
  return score


def training_evaluator(make_scorer, variables_of):
  """`TrainTask.make_evaluator` from `make_scorer(ts) -> score`: mIoU, pixel and mean accuracy."""

  def make(ts):
    score = make_scorer(ts)

    def evaluate(state):
      (metrics, _), _ = score(variables_of(state))
      return {k: metrics[k] for k in ("miou", "pixel_accuracy", "mean_accuracy")}

    return evaluate

  return make
