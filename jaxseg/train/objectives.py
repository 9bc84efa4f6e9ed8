"""The glue every method's training objective shares: a Linen forward that carries the model state
(BatchNorm running statistics) through a step, and the segmentation objective (softmax CE with
`ignore_index` plus pixel accuracy) that supervised training and HN fine-tuning train with.

The losses themselves are pure functions on arrays (`jaxseg.losses`); this module only runs a
model and hands its outputs to them, so no method imports another method for it.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.losses.segmentation import softmax_cross_entropy_with_ignore, upsample_logits


def apply_model(
    model: nn.Module,
    params: Any,
    model_state: dict,
    inputs: Any,
    *,
    train: bool,
    rng: jax.Array | None = None,
) -> tuple[Any, dict]:
  """One forward of `model` inside a training step: (outputs, new model_state).

  In train mode the running statistics in `model_state['batch_stats']` are updated (PyTorch's
  `model.train()`), unless the model has them frozen (`model.frozen_bn`, as the official SEAM and
  AffinityNet train); eval mode and frozen statistics return `model_state` unchanged.

  Args:
    model: a Linen module whose `__call__` takes `(inputs, train=...)`.
    params, model_state: its 'params' and other collections (e.g. {'batch_stats': ...}).
    rng: the dropout key, or None for a model without dropout.
  """
  variables = {"params": params, **model_state}
  rngs = None if rng is None else {"dropout": rng}
  update_stats = train and "batch_stats" in model_state and not getattr(model, "frozen_bn", False)
  if not update_stats:
    return model.apply(variables, inputs, train=train, rngs=rngs), model_state
  out, updates = model.apply(variables, inputs, train=True, rngs=rngs, mutable=["batch_stats"])
  return out, {**model_state, **updates}


def pixel_accuracy(logits: jax.Array, labels: jax.Array, ignore_index: int) -> jax.Array:
  """Fraction of non-ignored pixels whose argmax class is the label.

  Args:
    logits: float [B, H, W, C]; labels: int [B, H, W] (`ignore_index` pixels are not counted).
  Returns:
    float32 scalar (0 when every pixel is ignored).
  """
  valid = labels != ignore_index
  hits = jnp.sum((jnp.argmax(logits, -1) == labels) & valid)
  return hits / jnp.maximum(jnp.sum(valid), 1)


def segmentation_objective(
    model: nn.Module,
    ignore_index: int,
    params,
    model_state,
    batch,
    rng,
    *,
    output: str | None = None,
):
  """`TrainTask.loss_fn` of a segmentation network trained on pixel labels.

  Args:
    model: maps images [B, H, W, 3] to logits [B, H, W, C], or (with `output`) to a dict holding them.
    batch: {'image': float [B, H, W, 3], 'mask': int [B, H, W]}.
    output: the key of the logits in the model's output dict (DeepLab-v2: 'main'); None = the output
      is the logits. Logits at a lower resolution than the mask (an output stride of 8) are upsampled
      to it bilinearly (align_corners=True, as DeepLab / ADVENT) before the loss.
  Returns:
    (per-pixel softmax CE over non-ignored pixels, ({'pixel_accuracy'}, new model_state)).
  """
  logits, model_state = apply_model(model, params, model_state, batch["image"], train=True, rng=rng)
  if output is not None:
    logits = logits[output]
  if tuple(logits.shape[1:3]) != tuple(batch["mask"].shape[1:3]):
    logits = upsample_logits(logits, tuple(batch["mask"].shape[1:3]))
  loss = softmax_cross_entropy_with_ignore(logits, batch["mask"], ignore_index)
  return loss, (
      {"pixel_accuracy": pixel_accuracy(logits, batch["mask"], ignore_index)},
      model_state,
  )
