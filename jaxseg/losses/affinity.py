"""AffinityNet's balanced affinity loss (psa / SEAM `train_aff.py` l.97-109), a pure function.

  bg_loss  = sum(-bg_pos  * log(aff + 1e-5))     / (sum(bg_pos)  + 1e-5)
  fg_loss  = sum(-fg_pos  * log(aff + 1e-5))     / (sum(fg_pos)  + 1e-5)
  neg_loss = sum(-neg     * log(1 + 1e-5 - aff)) / (sum(neg)     + 1e-5)
  loss     = bg_loss / 4 + fg_loss / 4 + neg_loss / 2

Sums and counts run over the whole batch (every sample, pair offset and pixel at once), not per sample.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

AFFINITY_EPS = 1e-5  # inside the logs and added to the counts (train_aff.py l.101-107)
BG_WEIGHT, FG_WEIGHT, NEG_WEIGHT = 0.25, 0.25, 0.5  # train_aff.py l.109


def affinity_loss(
    affinities: jax.Array, bg_pos: jax.Array, fg_pos: jax.Array, neg: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Official balanced cross-entropy on predicted pair affinities.

  Args:
    affinities: float [B, P, n_from] in (0, 1] (`jaxseg.models.affinitynet.pairwise_affinities`).
    bg_pos, fg_pos, neg: {0, 1} float (or bool) [B, P, n_from] pair labels
      (`jaxseg.methods.seam.affinity.affinity_pair_labels`); pairs in none of them are ignored.
  Returns:
    (loss float32 scalar, metrics dict with 'bg_loss', 'fg_loss', 'neg_loss', 'bg_count', 'fg_count',
    'neg_count'; counts include the +1e-5 like the official log).
  """
  chex.assert_rank([affinities, bg_pos, fg_pos, neg], 3)
  chex.assert_equal_shape([affinities, bg_pos, fg_pos, neg])
  aff = affinities.astype(jnp.float32)
  bg_pos, fg_pos, neg = (x.astype(jnp.float32) for x in (bg_pos, fg_pos, neg))
  log_pos = jnp.log(aff + AFFINITY_EPS)
  log_neg = jnp.log(1.0 + AFFINITY_EPS - aff)
  bg_count = jnp.sum(bg_pos) + AFFINITY_EPS
  fg_count = jnp.sum(fg_pos) + AFFINITY_EPS
  neg_count = jnp.sum(neg) + AFFINITY_EPS
  bg_loss = jnp.sum(-bg_pos * log_pos) / bg_count
  fg_loss = jnp.sum(-fg_pos * log_pos) / fg_count
  neg_loss = jnp.sum(-neg * log_neg) / neg_count
  loss = BG_WEIGHT * bg_loss + FG_WEIGHT * fg_loss + NEG_WEIGHT * neg_loss
  metrics = {
      "bg_loss": bg_loss,
      "fg_loss": fg_loss,
      "neg_loss": neg_loss,
      "bg_count": bg_count,
      "fg_count": fg_count,
      "neg_count": neg_count,
  }
  return loss, metrics
