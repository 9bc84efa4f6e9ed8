"""Optimiser factory: schedules, per-group learning-rate multipliers, frozen params, wd masks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxseg.errors import ConfigError
from jaxseg.train.config import trainer_config
from jaxseg.train.optimizer import make_optimizer, make_schedule


def _cfg(**kw):
  c = trainer_config().optimizer
  c.update(kw)
  return c


def test_poly_schedule_matches_pytorch_formula():
  sched = make_schedule(_cfg(schedule="poly", learning_rate=0.01, poly_power=0.9), total_steps=100)
  for step in (0, 1, 50, 99):
    assert float(sched(step)) == pytest.approx(0.01 * (1 - step / 100) ** 0.9, rel=1e-5)


def test_warmup_then_cosine():
  sched = make_schedule(
      _cfg(schedule="cosine", learning_rate=1.0, warmup_steps=10), total_steps=110
  )
  assert float(sched(0)) == 0.0
  assert float(sched(5)) == pytest.approx(0.5)
  assert float(sched(10)) == pytest.approx(1.0)
  assert float(sched(60)) == pytest.approx(0.5, abs=1e-3)


def _one_step(cfg, params, grads):
  tx, _ = make_optimizer(cfg, params, total_steps=10)
  updates, _ = tx.update(grads, tx.init(params), params)
  return updates


def test_lr_multipliers_and_frozen_groups():
  params = {"backbone": {"w": jnp.ones(3)}, "head": {"w": jnp.ones(3)}, "stem": {"w": jnp.ones(3)}}
  grads = jax.tree.map(jnp.ones_like, params)
  cfg = _cfg(
      name="sgd",
      learning_rate=0.1,
      weight_decay=0.0,
      schedule="constant",
      lr_multipliers=((r"^head/", 10.0),),
      frozen=r"^stem/",
  )
  up = _one_step(cfg, params, grads)
  np.testing.assert_allclose(up["backbone"]["w"], -0.1)
  np.testing.assert_allclose(up["head"]["w"], -1.0)
  np.testing.assert_allclose(up["stem"]["w"], 0.0)


def test_coupled_weight_decay_with_mask():
  params = {"conv": {"kernel": jnp.full(2, 2.0), "bias": jnp.full(2, 2.0)}}
  grads = jax.tree.map(jnp.zeros_like, params)
  cfg = _cfg(
      name="momentum",
      learning_rate=1.0,
      weight_decay=0.1,
      schedule="constant",
      weight_decay_exclude=r"bias$",
  )
  up = _one_step(cfg, params, grads)
  np.testing.assert_allclose(up["conv"]["kernel"], -0.2)  # -lr * wd * p
  np.testing.assert_allclose(up["conv"]["bias"], 0.0)


def test_momentum_matches_pytorch_sgd():
  # PyTorch: buf = mu * buf + (g + wd * p); p -= lr * buf.
  p, lr, mu, wd = np.array([1.0, -2.0]), 0.1, 0.9, 0.01
  grads = [np.array([0.5, 0.25]), np.array([-1.0, 2.0]), np.array([0.3, 0.3])]
  buf, ref = np.zeros(2), p.copy()
  for g in grads:
    buf = mu * buf + g + wd * ref
    ref = ref - lr * buf
  cfg = _cfg(name="momentum", learning_rate=lr, momentum=mu, weight_decay=wd, schedule="constant")
  params = {"w": jnp.asarray(p, jnp.float32)}
  tx, _ = make_optimizer(cfg, params, 10)
  state = tx.init(params)
  for g in grads:
    up, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
    params = optax.apply_updates(params, up)
  np.testing.assert_allclose(params["w"], ref, rtol=1e-6)


def test_unknown_optimizer_is_an_error():
  with pytest.raises(ConfigError, match="optimizer.name"):
    make_optimizer(_cfg(name="lion"), {"w": jnp.ones(1)}, 10)


def test_poly_horizon_decay_steps_is_independent_of_total_steps():
  """ADVENT decays over MAX_ITERS (250000) but stops at EARLY_STOP (120000): decay_steps sets the horizon."""
  sched = make_schedule(
      _cfg(schedule="poly", learning_rate=0.01, poly_power=0.9, decay_steps=400), total_steps=100
  )
  for step in (0, 50, 99):
    assert float(sched(step)) == pytest.approx(0.01 * (1 - step / 400) ** 0.9, rel=1e-5)
  default = make_schedule(
      _cfg(schedule="poly", learning_rate=0.01, poly_power=0.9), total_steps=100
  )
  assert float(default(50)) == pytest.approx(0.01 * 0.5**0.9, rel=1e-5)  # 0 = total_steps
