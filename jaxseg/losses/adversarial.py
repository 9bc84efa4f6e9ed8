"""AdvEnt's adversarial losses (pure, NHWC): the segmenter's and the discriminator's BCE terms.

Official code (valeoai/ADVENT, also used unchanged by valeoai/ESL):
  `advent/utils/func.py: bce_loss`           BCEWithLogits against a constant domain label, mean over the map
  `advent/domain_adaptation/train_UDA.py`    domain labels source = 0, target = 1; the segmenter is trained
                                             to make target maps look like source (`bce(D(I_trg), 0)`),
                                             the discriminator on detached maps with each term halved.
The discriminator's input (the self-information map, `prob_2_entropy`) is in `jaxseg.losses.entropy`;
ADVENT's segmentation CE (`loss_calc`) in `jaxseg.losses.segmentation`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# ADVENT's domain labels (`source_label = 0`, `target_label = 1` in train_UDA.py).
SOURCE_DOMAIN_LABEL = 0.0
TARGET_DOMAIN_LABEL = 1.0


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


def discriminator_loss_terms(
    source_d_logits: jax.Array, target_d_logits: jax.Array
) -> dict[str, jax.Array]:
  """The two halves of `discriminator_loss`, one per ADVENT backward pass (and per logged value).

  Args:
    source_d_logits, target_d_logits: as `discriminator_loss`.
  Returns:
    {'source': bce(D(I_src), 0) / 2, 'target': bce(D(I_trg), 1) / 2}, float32 scalars.
  """
  return {
      "source": 0.5 * bce_with_logits(source_d_logits, SOURCE_DOMAIN_LABEL),
      "target": 0.5 * bce_with_logits(target_d_logits, TARGET_DOMAIN_LABEL),
  }


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
  halves = discriminator_loss_terms(source_d_logits, target_d_logits)
  return halves["source"] + halves["target"]
