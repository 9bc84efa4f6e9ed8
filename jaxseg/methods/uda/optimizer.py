"""ADVENT's segmenter optimiser: PyTorch 2.x SGD applying the update once per *listing* of a tensor.

The official ADVENT code's segmenter SGD group lists each backbone tensor several times
(`ResNetMulti.get_1x_lr_params_no_scale` yields `parameters()` of every ancestor module: conv1 1x,
each Bottleneck conv 3x, each downsample conv 4x), and PyTorch 2.x's single-tensor SGD applies the
update once per listing (golden README section 6). That is one paper's PyTorch artefact, so it
lives here and is registered with the shared optimiser factory as `optimizer.name='advent_sgd'`,
with its own key `optimizer.listing_multiplicity` ((regex, k), ...; first match wins, default 1).
`listing_multiplicity=()` builds plain PyTorch momentum SGD (the factory's `momentum`): the
recipe's intent, each tensor updated once per step.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxseg.errors import ConfigError
from jaxseg.train import optimizer as optim

NAME = "advent_sgd"


def listing_multiplicity(cfg, params: Any, where: str) -> Any:
  """Params-shaped tree of `listing_multiplicity` ints, or None when every leaf is listed once."""
  pairs = tuple(tuple(m) for m in (cfg.get("listing_multiplicity") or ()))
  if not pairs:
    return None
  for pair in pairs:
    if len(pair) != 2 or not isinstance(pair[0], str) or not _is_count(pair[1]):
      raise ConfigError(
          f"{where}.listing_multiplicity: entry {pair!r} is not (regex, integer >= 1)"
      )
  compiled = [(re.compile(pattern), int(k)) for pattern, k in pairs]

  def count(path: str) -> int:
    for pattern, k in compiled:
      if pattern.search(path):
        return k
    return 1

  tree = optim.path_labels(params, count)
  return None if all(k == 1 for k in jax.tree.leaves(tree)) else tree


def _is_count(k: Any) -> bool:
  return not isinstance(k, bool) and isinstance(k, (int, float)) and int(k) == k and k >= 1


class PytorchSgdState(NamedTuple):
  """State of `pytorch_sgd`: the step count and the momentum buffers (None without momentum)."""

  count: jax.Array
  momentum_buffer: Any


def pytorch_sgd(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float | None = None,
    weight_decay: float = 0.0,
    wd_mask: Any = None,
    multiplicity: Any = 1,
    nesterov: bool = False,
) -> optax.GradientTransformation:
  """PyTorch 2.x single-tensor SGD that applies the update once per *listing* of a tensor.

  Official ADVENT (`ResNetMulti.get_1x_lr_params_no_scale`) lists every backbone tensor several
  times in the segmenter's SGD group (conv1 1x, each Bottleneck conv 3x, each downsample conv 4x),
  and PyTorch 2.x's `_single_tensor_sgd` (CPU) updates the tensor once per listing. With `k`
  listings, `d = grad + weight_decay * p` (coupled L2, `p` the current, already-updated value;
  `grad` fixed during the step) and, for each listing in a row:

    first step:  buf = d;                   p -= lr * buf   (each listing clones its own buffer;
                                                             the last one is kept)
    later steps: buf = momentum * buf + d;  p -= lr * buf   (one buffer shared, updated in place)

  (nesterov: p -= lr * (d + momentum * buf); momentum None or 0: p -= lr * d, no buffer.) `lr` is
  the schedule at the step count, the same for all listings. It exists to reproduce the published
  ADVENT numbers (golden README section 6); `listing_multiplicity=()` in the config, the default,
  is the single update per step, built with plain optax (`add_decayed_weights` + `optax.sgd`).

  With every multiplicity 1 this is exactly that optax chain (same operations, bit-identical). For
  k > 1 the returned update is `p_k - p_0`, so `optax.apply_updates` gives `p_k` (exactly whenever
  p_k and p_0 are within a factor 2 of each other, Sterbenz; otherwise to the last ulp).

  Args:
    learning_rate: a float or an optax schedule of the step count.
    momentum: momentum factor, or None (plain SGD, as the config's 'sgd').
    weight_decay: coupled L2 factor (PyTorch's `weight_decay`).
    wd_mask: params-shaped tree of bools (True = decayed), or None (all decayed).
    multiplicity: params-shaped tree of static ints >= 1 (listings per tensor), or one int.
    nesterov: PyTorch's `nesterov`.
  """
  weight_decay = float(weight_decay)
  if momentum is not None and float(momentum) == 0.0:
    momentum = None
  momentum = None if momentum is None else float(momentum)
  if not isinstance(multiplicity, int):
    bad = [k for k in jax.tree.leaves(multiplicity) if not (isinstance(k, int) and k >= 1)]
    if bad:
      raise ValueError(f"pytorch_sgd: multiplicity leaves must be static ints >= 1, got {bad[:3]}")
  elif multiplicity < 1:
    raise ValueError(f"pytorch_sgd: multiplicity must be >= 1, got {multiplicity}")

  def static_trees(tree):
    # Inside `optax.multi_transform`, `tree` has `optax.MaskedNode`s where other slots' leaves are;
    # the static trees are params-shaped, so their leaves line up with a leaf or a MaskedNode.
    counts = multiplicity
    if isinstance(counts, int):
      counts = jax.tree.map(lambda _: multiplicity, tree)
    leaves, treedef = jax.tree.flatten(counts)
    decayed = [True] * len(leaves) if wd_mask is None else treedef.flatten_up_to(wd_mask)
    return leaves, decayed, treedef

  def init_fn(params):
    buf = None
    if momentum is not None:
      buf = jax.tree.map(jnp.zeros_like, params)
    return PytorchSgdState(count=jnp.zeros([], jnp.int32), momentum_buffer=buf)

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("pytorch_sgd needs params (coupled weight decay, repeated listings)")
    counts, decayed, treedef = static_trees(updates)
    grads = treedef.flatten_up_to(updates)
    ps = treedef.flatten_up_to(params)
    bufs = [None] * len(counts)
    if momentum is not None:
      bufs = treedef.flatten_up_to(state.momentum_buffer)
    rate = learning_rate(state.count) if callable(learning_rate) else learning_rate
    first = state.count == 0
    out_updates, out_bufs = [], []
    for k, decay, g, p0, buf in zip(counts, decayed, grads, ps, bufs):
      if isinstance(g, optax.MaskedNode):
        out_updates.append(g)
        out_bufs.append(buf)
        continue
      step = jnp.array(-rate, dtype=g.dtype)
      p = p0
      for i in range(k):
        d = g + weight_decay * p if weight_decay and decay else g
        if momentum is None:
          direction = d
        else:
          # buf is zero at the first step, so the first listing is `optax.trace` exactly; later
          # listings of the first step clone their own d, as PyTorch's `buf is None` branch does.
          prev = buf if i == 0 else jnp.where(first, jnp.zeros_like(buf), buf)
          buf = d + momentum * prev
          direction = d + momentum * buf if nesterov else buf
        if k == 1:
          update = step * direction
        else:
          p = p + step * direction
      out_updates.append(update if k == 1 else p - p0)
      out_bufs.append(buf)
    new_buf = None if momentum is None else treedef.unflatten(out_bufs)
    return treedef.unflatten(out_updates), PytorchSgdState(
        count=optax.safe_increment(state.count), momentum_buffer=new_buf
    )

  return optax.GradientTransformation(init_fn, update_fn)


def build_advent_sgd(cfg, lr, wd_mask, params, where: str) -> optax.GradientTransformation:
  """The `advent_sgd` optimiser of a group config (momentum, nesterov, weight_decay as PyTorch's)."""
  multiplicity = listing_multiplicity(cfg, params, where)
  if multiplicity is None:  # every tensor listed once: exactly the factory's momentum SGD
    return optim.optimizer_kind("momentum").build(cfg, lr, wd_mask, params, where)
  momentum = float(cfg.momentum) or None
  return pytorch_sgd(
      lr, momentum, float(cfg.weight_decay), wd_mask, multiplicity, nesterov=bool(cfg.nesterov)
  )


optim.register_optimizer(NAME, build_advent_sgd, listing_multiplicity=())
