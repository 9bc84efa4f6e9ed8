"""CAM targets: the scalar per image whose gradient / score a CAM explains.

A target maps the model output of a whole batch to one score per image:

    target(logits) -> scores [B]

where `logits` is what `apply_fn(variables, images)` returns: classification
logits [B, K] or segmentation logits [B, h, w, K] (NHWC, classes last).

Exactly one target per image: every target knows its batch size
(`num_targets`) and `check_targets` raises a ValueError when it differs from
the number of images. pytorch-grad-cam zips targets with outputs and silently
drops images without a target (their CAMs come out as zeros); here that is an
error.

All targets are pytrees (flax.struct dataclasses) so they can be passed
through `jax.jit`; user functions are static fields.
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np


def _take_class(values: jax.Array, class_ids: jax.Array) -> jax.Array:
  """values [B, K], class_ids [B] -> values[b, class_ids[b]] [B].

  Out-of-range ids give NaN (never a silently clamped class).
  """
  return jnp.take_along_axis(
      values, class_ids[:, None].astype(jnp.int32), axis=1, mode="fill", fill_value=jnp.nan
  )[:, 0]


def _check_class_ids(class_ids: Any, num_classes: int | None = None) -> None:
  if np.ndim(class_ids) != 1:
    raise ValueError(
        f"class_ids must have shape [B] (one class per image), got shape " f"{np.shape(class_ids)}."
    )
  if num_classes is not None and not isinstance(class_ids, jax.core.Tracer):
    ids = np.asarray(class_ids)
    if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
      raise ValueError(f"class_ids {ids.tolist()} out of range for {num_classes} classes.")


def _check_classification_logits(logits: jax.Array, name: str) -> None:
  if logits.ndim != 2:
    raise ValueError(
        f"{name} needs classification logits [B, K], got shape "
        f"{logits.shape}; for segmentation logits [B, h, w, K] use "
        "SegmentationTarget or TargetFn."
    )


@flax.struct.dataclass
class ClassLogit:
  """Score = pre-softmax logit of one class per image (the usual CAM target).

  class_ids: [B] int, or None for the arg-max class of each image.
  """

  class_ids: jax.Array | None = None

  @property
  def num_targets(self) -> int | None:
    return None if self.class_ids is None else int(np.shape(self.class_ids)[0])

  def resolve_class_ids(self, logits: jax.Array) -> jax.Array:
    """[B] class ids: the given ones, or the arg-max of `logits` [B, K]."""
    _check_classification_logits(logits, type(self).__name__)
    if self.class_ids is None:
      return jnp.argmax(logits, axis=-1)
    _check_class_ids(self.class_ids, logits.shape[-1])
    return jnp.asarray(self.class_ids)

  def __call__(self, logits: jax.Array) -> jax.Array:
    return _take_class(logits, self.resolve_class_ids(logits))


@flax.struct.dataclass
class ClassSoftmax:
  """Score = softmax probability of one class per image. class_ids: [B] int."""

  class_ids: jax.Array | None = None

  num_targets = ClassLogit.num_targets
  resolve_class_ids = ClassLogit.resolve_class_ids

  def __call__(self, logits: jax.Array) -> jax.Array:
    ids = self.resolve_class_ids(logits)
    return _take_class(jax.nn.softmax(logits, axis=-1), ids)


@flax.struct.dataclass
class SegmentationTarget:
  """Score = sum over pixels of class logits inside a mask (per image).

  class_ids: [B] int; masks: [B, h, w] float/bool, the same spatial size as
  the segmentation logits [B, h, w, K].
  """

  class_ids: jax.Array
  masks: jax.Array

  @property
  def num_targets(self) -> int:
    return int(np.shape(self.class_ids)[0])

  def __call__(self, logits: jax.Array) -> jax.Array:
    if logits.ndim != 4:
      raise ValueError(
          "SegmentationTarget needs segmentation logits [B, h, w, K], got " f"shape {logits.shape}."
      )
    _check_class_ids(self.class_ids, logits.shape[-1])
    if tuple(np.shape(self.masks)) != logits.shape[:3]:
      raise ValueError(
          f"SegmentationTarget masks have shape {np.shape(self.masks)}, "
          f"expected {logits.shape[:3]} (the logits' [B, h, w])."
      )
    ids = jnp.asarray(self.class_ids).astype(jnp.int32)
    class_maps = jnp.take_along_axis(
        logits, ids[:, None, None, None], axis=-1, mode="fill", fill_value=jnp.nan
    )[
        ..., 0
    ]  # [B, h, w]
    return jnp.sum(class_maps * jnp.asarray(self.masks, logits.dtype), axis=(1, 2))

  def flip_lr(self) -> "SegmentationTarget":
    """The target for horizontally flipped images (flips the masks)."""
    return self.replace(masks=jnp.flip(jnp.asarray(self.masks), axis=2))


@flax.struct.dataclass
class TargetFn:
  """Any user function fn(logits of the batch) -> scores [B].

  batch_size: optional, checked against the number of images when given.
  """

  fn: Callable[[Any], jax.Array] = flax.struct.field(pytree_node=False)
  batch_size: int | None = flax.struct.field(pytree_node=False, default=None)

  @property
  def num_targets(self) -> int | None:
    return self.batch_size

  def __call__(self, logits: Any) -> jax.Array:
    return self.fn(logits)


@flax.struct.dataclass
class PerImageTargets:
  """One callable per image, pytorch-grad-cam style: fns[i](logits[i]) -> ()."""

  fns: tuple[Callable[[Any], jax.Array], ...] = flax.struct.field(pytree_node=False)

  @property
  def num_targets(self) -> int:
    return len(self.fns)

  def __call__(self, logits: Any) -> jax.Array:
    scores = [
        jnp.reshape(fn(jax.tree.map(lambda x, i=i: x[i], logits)), ())
        for i, fn in enumerate(self.fns)
    ]
    return jnp.stack(scores)


Target = ClassLogit | ClassSoftmax | SegmentationTarget | TargetFn | PerImageTargets
TargetLike = Target | Sequence[int] | Sequence[Callable] | jax.Array | np.ndarray | None


def make_target(targets: TargetLike, batch_size: int) -> Target:
  """Turns user targets into a Target for a batch of `batch_size` images.

  Accepts: None (arg-max class per image), an int array / sequence [B] of
  class ids (class logits), a sequence of B per-image callables, a plain
  callable on the whole batch (wrapped as TargetFn), or a Target.
  Raises ValueError unless there is exactly one target per image.
  """
  if targets is None:
    target = ClassLogit(None)
  elif isinstance(
      targets, (ClassLogit, ClassSoftmax, SegmentationTarget, TargetFn, PerImageTargets)
  ):
    target = targets
  elif isinstance(targets, (list, tuple)) and targets and all(callable(t) for t in targets):
    target = PerImageTargets(tuple(targets))
  elif callable(targets) and not isinstance(targets, (np.ndarray, jax.Array)):
    target = TargetFn(targets)
  else:
    ids = targets if isinstance(targets, jax.Array) else np.asarray(targets)
    if ids.ndim != 1 or not (jnp.issubdtype(ids.dtype, jnp.integer)):
      raise ValueError(
          "targets must be class ids [B] (integers), a Target, a callable or "
          f"a list of B callables; got {type(targets).__name__} with shape "
          f"{np.shape(ids)} and dtype {ids.dtype}."
      )
    target = ClassLogit(ids)
  n = target.num_targets
  if n is not None and n != batch_size:
    raise ValueError(
        f"got {n} targets for {batch_size} images: exactly one target per "
        "image is required (pytorch-grad-cam would silently zero the CAMs "
        "of the images without one)."
    )
  return target


def score(target: Target, logits: Any, batch_size: int) -> jax.Array:
  """target(logits) as [B] float scores, shape-checked."""
  scores = jnp.asarray(target(logits))
  if scores.shape != (batch_size,):
    raise ValueError(
        f"target {type(target).__name__} returned scores of shape "
        f"{scores.shape}; it must return one scalar per image, shape "
        f"({batch_size},)."
    )
  return scores


def class_ids_of(target: Target, logits: Any) -> jax.Array:
  """The per-image class ids of a class target ([B] int), for CAM."""
  if isinstance(target, (ClassLogit, ClassSoftmax)):
    return target.resolve_class_ids(logits)
  if isinstance(target, SegmentationTarget):
    return jnp.asarray(target.class_ids)
  raise ValueError(
      f"method 'cam' needs class targets (class ids, ClassLogit, ClassSoftmax "
      f"or SegmentationTarget), got {type(target).__name__}."
  )


def flip_target_lr(target: Target) -> Target:
  """The target to use on horizontally flipped images.

  Class targets do not change; segmentation masks are flipped. User functions
  see the flipped model output unchanged.
  """
  if isinstance(target, SegmentationTarget):
    return target.flip_lr()
  return target
