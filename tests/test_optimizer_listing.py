"""`listing_multiplicity`: PyTorch 2.x SGD applied once per listing of a tensor (ADVENT's quirk)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxseg.errors import ConfigError
from jaxseg.methods.uda import optimizer as advent_optimizer
from jaxseg.methods.uda.optimizer import pytorch_sgd
from jaxseg.train.config import trainer_config
from jaxseg.train.optimizer import build_optimizer, optimizer_group

LR, MU, WD, POWER, TOTAL, STEPS = 0.05, 0.9, 5e-4, 0.9, 10, 3
# A backbone tensor listed once (conv1), three times (a Bottleneck conv), four times (a downsample
# conv), as ADVENT's `get_1x_lr_params_no_scale` yields them; the head is in its own 10x group.
LISTINGS = {"conv1": 1, "conv": 3, "downsample": 4}
MULTIPLICITY = ((r"downsample", 4), (r"^backbone/layer1/", 3))


def _init():
  rng = np.random.default_rng(0)
  return {
      "backbone": {
          "conv1": rng.normal(size=(3, 2)),
          "layer1": {"conv": rng.normal(size=(4,)), "downsample": rng.normal(size=(2, 2))},
      },
      "head": {"w": rng.normal(size=(3,))},
  }


C = {"conv1": 1.5, "conv": 0.7, "downsample": 2.0, "head": 1.2}  # loss: sum c/2 p^2 + p


def _grad(name, p):
  return C[name] * p + 1.0


def _poly(t):
  return LR * (1 - t / TOTAL) ** POWER


def _torch_sgd_step(params, groups, state):
  """PyTorch 2.x `SGD.step` with `_single_tensor_sgd` (foreach=False), written out in numpy.

  `params` holds the tensors (float64 arrays, updated in place) and `groups` lists them per param
  group as `(lr, [names, possibly repeated])`; `state` maps name -> momentum_buffer, as
  `optimizer.state[p]`. Gradients are fixed during the step (computed from the step's start).
  """
  grads = {n: _grad(n, p.copy()) for n, p in params.items()}
  for lr, listed in groups:
    # _init_group: one entry per listing; a duplicated tensor gets its state's buffer every time.
    momentum_buffer_list = [state.get(n) for n in listed]
    for i, name in enumerate(listed):
      param = params[name]
      grad = grads[name] + WD * param  # grad.add(param, alpha=weight_decay): the current param
      buf = momentum_buffer_list[i]
      if buf is None:
        buf = grad.copy()  # torch.clone(grad).detach()
        momentum_buffer_list[i] = buf
      else:
        buf *= MU  # buf.mul_(momentum).add_(grad, alpha=1 - dampening): in place, shared
        buf += grad
      param -= lr * buf  # param.add_(grad, alpha=-lr), in place
    for name, buf in zip(listed, momentum_buffer_list):
      state[name] = buf  # the last listing's buffer is the one kept


def _reference(listings):
  init = _init()
  params = {
      "conv1": init["backbone"]["conv1"].copy(),
      "conv": init["backbone"]["layer1"]["conv"].copy(),
      "downsample": init["backbone"]["layer1"]["downsample"].copy(),
      "head": init["head"]["w"].copy(),
  }
  # Listings interleaved the way ADVENT yields them (per ancestor module).
  listed = ["conv1"]
  for depth in range(max(listings.values())):
    listed += [n for n in ("conv", "downsample") if listings[n] > depth]
  state, out = {}, []
  for t in range(STEPS):
    lr = _poly(t)
    _torch_sgd_step(params, [(lr, listed), (10 * lr, ["head"])], state)
    out.append({n: p.copy() for n, p in params.items()})
  return out


def _config(name="momentum", listing_multiplicity=None, **kw):
  """The optimiser config; with `listing_multiplicity` ADVENT's registered `advent_sgd` (momentum 0
  for plain 'sgd')."""
  c = trainer_config().optimizer
  if listing_multiplicity is not None:
    with c.unlocked():
      c.listing_multiplicity = listing_multiplicity
    if name == "sgd":
      kw["momentum"] = 0.0
    name = advent_optimizer.NAME
  c.update(
      name=name,
      learning_rate=LR,
      momentum=MU,
      weight_decay=WD,
      schedule="poly",
      poly_power=POWER,
      lr_multipliers=((r"^head/", 10.0),),
  )
  c.update(kw)
  return c


def _train(cfg, params, steps=STEPS, jit=True):
  tx = build_optimizer(cfg, params, TOTAL).tx
  state = tx.init(params)

  def step(params, state):
    grads = {
        "backbone": {
            "conv1": _grad("conv1", params["backbone"]["conv1"]),
            "layer1": {
                n: _grad(n, params["backbone"]["layer1"][n]) for n in ("conv", "downsample")
            },
        },
        "head": {"w": _grad("head", params["head"]["w"])},
    }
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  step = jax.jit(step) if jit else step
  out = []
  for _ in range(steps):
    params, state = step(params, state)
    out.append(jax.device_get(params))
  return out


def _flat(p):
  return {
      "conv1": p["backbone"]["conv1"],
      "conv": p["backbone"]["layer1"]["conv"],
      "downsample": p["backbone"]["layer1"]["downsample"],
      "head": p["head"]["w"],
  }


def _params32():
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), _init())


def test_repeated_listings_match_pytorch_single_tensor_sgd():
  got = _train(_config(listing_multiplicity=MULTIPLICITY), _params32())
  ref = _reference(LISTINGS)
  once = _reference({"conv1": 1, "conv": 1, "downsample": 1})
  for t in range(STEPS):
    for name, value in _flat(got[t]).items():
      np.testing.assert_allclose(value, ref[t][name], rtol=2e-6, atol=1e-7, err_msg=f"{t} {name}")
  # The quirk is not a no-op: repeated listings move ~k times as far as a single one.
  for name in ("conv", "downsample"):
    assert not np.allclose(ref[-1][name], once[-1][name], rtol=1e-3)
  for name in ("conv1", "head"):
    np.testing.assert_array_equal(ref[-1][name], once[-1][name])


@pytest.mark.parametrize("name,nesterov", [("momentum", False), ("momentum", True), ("sgd", False)])
def test_multiplicity_one_is_bit_identical_to_the_optax_path(name, nesterov):
  params = _params32()
  plain = _train(_config(name=name, nesterov=nesterov), params)
  ones = _train(_config(name=name, nesterov=nesterov, listing_multiplicity=((".", 1),)), params)
  quirk = _train(_config(name=name, nesterov=nesterov, listing_multiplicity=MULTIPLICITY), params)
  for t in range(STEPS):
    for a, b in zip(jax.tree.leaves(plain[t]), jax.tree.leaves(ones[t])):
      np.testing.assert_array_equal(a, b)
    # Leaves listed once under `pytorch_sgd` (conv1, and the head in its own slot) are unchanged.
    for n in ("conv1", "head"):
      np.testing.assert_array_equal(_flat(quirk[t])[n], _flat(plain[t])[n])

  # `pytorch_sgd` itself with multiplicity 1 is the optax chain, bit for bit, jitted or not.
  lr = optax.polynomial_schedule(LR, 0.0, POWER, TOTAL)
  mask = jax.tree.map(lambda _: True, params)
  mask["head"]["w"] = False
  momentum = MU if name == "momentum" else None
  chain = optax.chain(
      optax.add_decayed_weights(WD, mask), optax.sgd(lr, momentum=momentum, nesterov=nesterov)
  )
  mine = pytorch_sgd(lr, momentum, WD, mask, multiplicity=1, nesterov=nesterov)
  for jit in (False, True):
    results = []
    for tx in (chain, mine):
      p, state = params, tx.init(params)
      update = jax.jit(tx.update) if jit else tx.update
      for _ in range(STEPS):
        grads = jax.tree.map(lambda x: 1.3 * x + 1.0, p)
        u, state = update(grads, state, p)
        p = optax.apply_updates(p, u)
      results.append(p)
    for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
      np.testing.assert_array_equal(a, b)


def test_listing_multiplicity_config_errors():
  params = _params32()
  # Only the registered `advent_sgd` reads the key: another optimiser's group refuses it by name.
  with pytest.raises(ConfigError, match="listing_multiplicity"):
    optimizer_group(r"^head/", name="adamw", listing_multiplicity=((r"w", 2),))
  cfg = _config()
  with cfg.unlocked():
    cfg.groups = {"head": optimizer_group(r"^head/", name="adamw")}
    cfg.groups.head.listing_multiplicity = ((r"w", 2),)
  with pytest.raises(ConfigError, match=r"optimizer\.groups\.head\.listing_multiplicity"):
    build_optimizer(cfg, params, TOTAL)
  with pytest.raises(ConfigError, match=r"listing_multiplicity: entry"):
    build_optimizer(_config(listing_multiplicity=((r"conv", 0),)), params, TOTAL)
  with pytest.raises(ConfigError, match=r"optimizer\.name='sgdd': unknown optimiser"):
    build_optimizer(_config(name="sgdd"), params, TOTAL)
  # Empty (the default) is the factory's momentum SGD.
  build_optimizer(_config(listing_multiplicity=()), params, TOTAL)
