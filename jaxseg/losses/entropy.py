"""Entropy of softmax predictions: ADVENT's MinEnt loss and self-information maps, ESL's entropy map.

Pure functions on NHWC arrays (channels last), computed in float32. They follow the official code
(valeoai/ADVENT `advent/utils/loss.py: entropy_loss`, `advent/utils/func.py: prob_2_entropy`;
valeoai/ESL `advent/domain_adaptation/esl_UDA.py: compute_entropy`), including their choice of log base
and epsilon, which differ:

  ADVENT: -p * log2(p + 1e-30) / log2(C)       (epsilon inside the log)
  ESL:    -(1 / ln C) * sum_c p ln p             (no epsilon; 0 * log 0 is taken as 0 here, where the
                                                 official code would produce NaN)
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp

ADVENT_EPS = 1e-30


def self_information_map(probs: jax.Array) -> jax.Array:
  """ADVENT's weighted self-information I = -p log2(p + 1e-30) / log2(C), per class (not summed).

  Args:
    probs: float [B, H, W, C] softmax probabilities.
  Returns:
    float32 [B, H, W, C]; summing over C gives the normalised entropy in [0, 1]. This is the
    discriminator input of AdvEnt (`prob_2_entropy`).
  """
  chex.assert_rank(probs, 4)
  p = probs.astype(jnp.float32)
  return -p * jnp.log2(p + ADVENT_EPS) / math.log2(p.shape[-1])


def entropy_loss(probs: jax.Array) -> jax.Array:
  """ADVENT's MinEnt loss: the mean over pixels of the normalised entropy (official `entropy_loss`).

  Args:
    probs: float [B, H, W, C] softmax probabilities (ADVENT upsamples the logits to the label size first).
  Returns:
    float32 scalar: sum(-p log2(p + 1e-30)) / (B * H * W * log2 C).
  """
  chex.assert_rank(probs, 4)
  return jnp.sum(self_information_map(probs)) / math.prod(probs.shape[:3])


def normalized_entropy(probs: jax.Array) -> jax.Array:
  """ESL's per-pixel entropy normalised by ln C (`compute_entropy`), in [0, 1].

  Args:
    probs: float [B, H, W, C] softmax probabilities.
  Returns:
    float32 [B, H, W].
  """
  chex.assert_rank(probs, 4)
  p = probs.astype(jnp.float32)
  plogp = jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)
  return -jnp.sum(plogp, axis=-1) / math.log(p.shape[-1])
