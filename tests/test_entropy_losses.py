"""Entropy losses against the official ADVENT / ESL outputs (shared/golden/esl, copied to tests/data/esl)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.losses import (
    entropy_loss,
    normalized_entropy,
    self_information_map,
    softmax_cross_entropy_with_ignore,
)

GOLDEN = os.path.join(os.path.dirname(__file__), "data", "esl", "entropy_golden.npz")


@pytest.fixture(scope="module")
def golden():
  with np.load(GOLDEN) as data:
    return {k: data[k] for k in data.files}


def nhwc(x):
  return jnp.asarray(np.moveaxis(x, 1, -1))


def test_self_information_map_matches_advent(golden):
  got = self_information_map(nhwc(golden["adv_trg_prob"]))
  np.testing.assert_allclose(got, nhwc(golden["adv_trg_entropy_map"]), rtol=1e-5, atol=1e-7)


def test_entropy_loss_matches_advent_minent(golden):
  got = entropy_loss(nhwc(golden["adv_trg_prob"]))
  np.testing.assert_allclose(got, golden["adv_trg_entropy_loss"], rtol=1e-5)


def test_normalized_entropy_matches_esl(golden):
  got = normalized_entropy(nhwc(golden["pl_prob"]))
  np.testing.assert_allclose(got, golden["esl_entropy"], rtol=1e-5, atol=1e-6)


def test_source_cross_entropy_matches_advent_loss_calc(golden):
  label = golden["seg_label"].astype(np.int32)
  got = softmax_cross_entropy_with_ignore(nhwc(golden["adv_src_logits_up"]), jnp.asarray(label))
  np.testing.assert_allclose(got, golden["seg_loss_ce_src"], rtol=1e-5)


def test_entropy_bounds_and_gradient():
  logits = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 5, 7)) * 3
  probs = jax.nn.softmax(logits, axis=-1)
  ent = normalized_entropy(probs)
  assert float(ent.min()) >= 0.0 and float(ent.max()) <= 1.0
  uniform = jnp.full((1, 2, 2, 7), 1 / 7)
  np.testing.assert_allclose(normalized_entropy(uniform), 1.0, rtol=1e-6)
  np.testing.assert_allclose(entropy_loss(uniform), 1.0, rtol=1e-6)
  one_hot = jax.nn.one_hot(jnp.zeros((1, 2, 2), jnp.int32), 7)
  np.testing.assert_allclose(normalized_entropy(one_hot), 0.0, atol=1e-7)  # 0 log 0 = 0, no NaN
  grad = jax.grad(lambda z: entropy_loss(jax.nn.softmax(z, axis=-1)))(logits)
  assert bool(jnp.all(jnp.isfinite(grad)))
  # Minimising entropy sharpens: a small step against the gradient lowers the loss.
  lower = entropy_loss(jax.nn.softmax(logits - 10.0 * grad, axis=-1))
  assert float(lower) < float(entropy_loss(probs))
