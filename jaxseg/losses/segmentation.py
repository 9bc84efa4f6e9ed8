"""Pixel-wise cross-entropy losses for dense prediction (pure functions on NHWC arrays).

  softmax_cross_entropy_with_ignore   PyTorch `CrossEntropyLoss(ignore_index=255)` (supervised, hn)
  upsampled_cross_entropy             ADVENT's `loss_calc(interp(pred), label)` (uda): official
                                      `advent/utils/func.py: loss_calc` -> `advent/utils/loss.py:
                                      cross_entropy_2d` on logits upsampled bilinearly with
                                      align_corners=True to the label size
  entropy_weighted_cross_entropy      self-training CE on pseudo labels (uda)

`entropy_weighted_cross_entropy` is a jaxseg extension: each pixel's CE is weighted by its
prediction's confidence (1 - normalised entropy) ** power. Power 0 is ESL's recipe (plain hard-label
CE, `loss_calc` on the pseudo labels) and gives exactly `upsampled_cross_entropy`.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jaxseg.losses.entropy import normalized_entropy
from jaxseg.models.resize import resize_bilinear

IGNORE_INDEX = 255


def softmax_cross_entropy_with_ignore(
    logits: jax.Array,
    labels: jax.Array,
    ignore_index: int = IGNORE_INDEX,
    weights: jax.Array | None = None,
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


def upsample_logits(
    logits: jax.Array, size: tuple[int, int], *, align_corners: bool = True
) -> jax.Array:
  """ADVENT's `interp` / `interp_target` (`nn.Upsample(mode='bilinear', align_corners=True)`).

  Args:
    logits: float [B, h, w, C].
    size: (H, W) output size.
  Returns:
    float32 [B, H, W, C]; the input itself (cast) when it already has that size.
  """
  chex.assert_rank(logits, 4)
  if tuple(logits.shape[1:3]) == tuple(size):
    return logits.astype(jnp.float32)
  return resize_bilinear(logits, size, align_corners=align_corners)


def upsampled_cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    *,
    ignore_index: int = IGNORE_INDEX,
    align_corners: bool = True,
) -> jax.Array:
  """ADVENT's `loss_calc(interp(pred), label)`: CE of bilinearly upsampled logits, mean over valid pixels.

  Args:
    logits: float [B, h, w, C] segmenter logits at any resolution (DeepLab-v2: 1/8 of the input).
    labels: int [B, H, W] class ids in [0, C) or `ignore_index`; the logits are upsampled to (H, W).
    ignore_index: label excluded from the loss (and from the mean's denominator).
    align_corners: the upsampling convention; True as in ADVENT / ESL.
  Returns:
    float32 scalar; 0 when every pixel is ignored (ADVENT returns a zero tensor too).
  """
  chex.assert_rank(labels, 3)
  upsampled = upsample_logits(logits, labels.shape[1:], align_corners=align_corners)
  return softmax_cross_entropy_with_ignore(upsampled, labels, ignore_index=ignore_index)


def entropy_confidence_weights(logits: jax.Array, power: float) -> jax.Array:
  """Per-pixel weights (1 - E) ** power, E = the prediction's normalised entropy (ESL's, in [0, 1]).

  Args:
    logits: float [B, H, W, C].
    power: >= 0. 0 gives all ones; larger values down-weight uncertain pixels more (a pixel with the
      uniform prediction gets 0, a one-hot one gets 1).
  Returns:
    float32 [B, H, W], gradient-stopped: the weights choose which pixels to learn from, they are not
    themselves a target (otherwise the loss could shrink by making the prediction less confident).
  """
  if power < 0:
    raise ValueError(f"entropy weighting power must be >= 0, got {power}")
  entropy = normalized_entropy(jax.nn.softmax(logits.astype(jnp.float32), axis=-1))
  confidence = jnp.clip(1.0 - entropy, 0.0, 1.0)  # rounding can push E a hair above 1
  return jax.lax.stop_gradient(confidence**power)


def entropy_weighted_cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    *,
    power: float = 0.0,
    ignore_index: int = IGNORE_INDEX,
    align_corners: bool = True,
) -> jax.Array:
  """Pseudo-label CE with pixel weights from the prediction's confidence; power 0 = ESL's plain CE.

  loss = sum_p w_p CE_p / sum_p w_p over pixels p whose label is not `ignore_index`, with
  w_p = (1 - E_p) ** power (`entropy_confidence_weights`) and E_p the normalised entropy of the softmax of
  the upsampled logits at p. Normalising by the weight sum keeps the loss on the CE's scale, so the
  recipe's loss weights carry over whatever the power.

  Args:
    logits: float [B, h, w, C] segmenter logits; upsampled to the label size as in `upsampled_cross_entropy`.
    labels: int [B, H, W] pseudo labels, `ignore_index` where the pseudo-labelling rejected the pixel.
    power: confidence exponent, >= 0. 0 (default) is exactly `upsampled_cross_entropy` (ESL's recipe).
    ignore_index, align_corners: as in `upsampled_cross_entropy`.
  Returns:
    float32 scalar; 0 when every pixel is ignored.
  """
  if power == 0:
    return upsampled_cross_entropy(
        logits, labels, ignore_index=ignore_index, align_corners=align_corners
    )
  chex.assert_rank(labels, 3)
  upsampled = upsample_logits(logits, labels.shape[1:], align_corners=align_corners)
  weights = entropy_confidence_weights(upsampled, power)
  return softmax_cross_entropy_with_ignore(
      upsampled, labels, ignore_index=ignore_index, weights=weights
  )
