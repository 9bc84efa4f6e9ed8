"""Pixel-wise losses for dense prediction (pure functions on NHWC arrays)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def softmax_cross_entropy_with_ignore(
    logits: jax.Array, labels: jax.Array, ignore_index: int = 255, weights: jax.Array | None = None
) -> jax.Array:
  """Mean softmax cross-entropy over non-ignored pixels (PyTorch `CrossEntropyLoss(ignore_index)`).

  Args:
    logits: float [B, H, W, C] (any float dtype; computed in float32).
    labels: int [B, H, W] class ids in [0, C) or `ignore_index`.
    weights: optional float [B, H, W] per-pixel weights (multiplied into the
      numerator and denominator, like a weighted mean).
  Returns:
    float32 scalar; 0 when every pixel is ignored.
  """
  chex.assert_rank(logits, 4)
  chex.assert_rank(labels, 3)
  chex.assert_equal_shape_prefix([logits, labels], 3)
  logits = logits.astype(jnp.float32)
  valid = labels != ignore_index
  safe = jnp.where(valid, labels, 0).astype(jnp.int32)
  logz = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]
  per_pixel = logz - picked
  w = valid.astype(jnp.float32)
  if weights is not None:
    chex.assert_equal_shape([weights, labels])
    w = w * weights.astype(jnp.float32)
  return jnp.sum(per_pixel * w) / jnp.maximum(jnp.sum(w), 1e-8)
