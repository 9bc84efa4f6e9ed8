"""AdvEnt adversarial losses and ADVENT's segmentation cross-entropy on upsampled logits (pure, NHWC).

Official code (valeoai/ADVENT, also used unchanged by valeoai/ESL):
  `advent/utils/func.py: bce_loss`           BCEWithLogits against a constant domain label, mean over the map
  `advent/utils/func.py: loss_calc`          -> `advent/utils/loss.py: cross_entropy_2d`, applied to
                                             `interp(pred)`: logits upsampled bilinearly with
                                             align_corners=True to the label size, then CE averaged over
                                             the non-ignored pixels
  `advent/domain_adaptation/train_UDA.py`    domain labels source = 0, target = 1; the segmenter is trained
                                             to make target maps look like source (`bce(D(I_trg), 0)`),
                                             the discriminator on detached maps with each term halved.

`entropy_weighted_cross_entropy` is a jaxseg extension for self-training on pseudo labels: each pixel's CE
is weighted by its prediction's confidence (1 - normalised entropy) ** power. Power 0 is ESL's recipe
(plain hard-label CE, `loss_calc` on the pseudo labels) and gives exactly `upsampled_cross_entropy`.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jaxseg.losses.entropy import normalized_entropy
from jaxseg.losses.segmentation import softmax_cross_entropy_with_ignore
from jaxseg.models.resize import resize_bilinear

# ADVENT's domain labels (`source_label = 0`, `target_label = 1` in train_UDA.py).
SOURCE_DOMAIN_LABEL = 0.0
TARGET_DOMAIN_LABEL = 1.0
IGNORE_INDEX = 255


def bce_with_logits(logits: jax.Array, label: float) -> jax.Array:
  """ADVENT's `bce_loss`: `BCEWithLogitsLoss()(logits, full_like(logits, label))`, mean over all elements.

  Args:
    logits: float [B, h, w, 1] discriminator patch logits (any shape works).
    label: the domain label every element is compared with (`SOURCE_DOMAIN_LABEL` / `TARGET_DOMAIN_LABEL`).
  Returns:
    float32 scalar.
  """
  x = logits.astype(jnp.float32)
  # max(x, 0) - x y + log(1 + exp(-|x|)): the overflow-free form PyTorch also uses.
  per_element = jnp.maximum(x, 0.0) - x * label + jnp.log1p(jnp.exp(-jnp.abs(x)))
  return jnp.mean(per_element)


def adversarial_generator_loss(target_d_logits: jax.Array) -> jax.Array:
  """Segmenter's adversarial term: fool D into calling target maps source, `bce(D(I_trg), 0)`.

  Args:
    target_d_logits: float [B, h, w, 1], D applied to the target self-information map. Gradients should
      reach only the segmenter (differentiate w.r.t. its parameters; D is frozen in this step).
  Returns:
    float32 scalar (ADVENT weights it 0.001 main / 0.0002 aux).
  """
  return bce_with_logits(target_d_logits, SOURCE_DOMAIN_LABEL)


def discriminator_loss(source_d_logits: jax.Array, target_d_logits: jax.Array) -> jax.Array:
  """Discriminator's loss: `bce(D(I_src), 0) / 2 + bce(D(I_trg), 1) / 2`.

  ADVENT runs two backward passes, one per half; their gradients add up to this sum's. The maps fed to
  D must be detached from the segmenter (`jax.lax.stop_gradient`) by the caller.

  Args:
    source_d_logits, target_d_logits: float [B, h, w, 1] D outputs on the source / target maps (the two
      may differ in size: GTA5 and Cityscapes inputs have different resolutions).
  Returns:
    float32 scalar.
  """
  return 0.5 * bce_with_logits(source_d_logits, SOURCE_DOMAIN_LABEL) + 0.5 * bce_with_logits(
      target_d_logits, TARGET_DOMAIN_LABEL
  )


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
