"""Optimiser factory: optax chains built from `config.optimizer`.

One optimiser config (`config.optimizer`) describes the *default group*. Named
groups (`config.optimizer.groups.<name>`, each a complete optimiser config made
by `optimizer_group`) take the parameters whose '/'-joined path matches their
`params` regex (first group wins, in declaration order); everything else stays
in the default group. So ADVENT's segmenter (SGD, momentum 0.9) and its
discriminators (Adam, betas (0.9, 0.99)) are two groups of one train state.

Inside each group, `lr_multipliers` (e.g. new layers at 10x, as SEAM and
DeepLab do) and `frozen` stay as sugar: one `optax.multi_transform` slot per
(group, multiplier); frozen parameters get `optax.set_to_zero`. The default
group's `frozen` freezes matching parameters of every group.

`listing_multiplicity` (sgd/momentum only) reproduces a quirk of the official ADVENT code: its
segmenter's SGD group lists each backbone tensor several times (`get_1x_lr_params_no_scale` yields
`parameters()` of every ancestor module: conv1 1x, each Bottleneck conv 3x, each downsample conv
4x), and PyTorch 2.x's single-tensor SGD applies the update once per listing (see `pytorch_sgd`).
It exists to reproduce the published ADVENT numbers; the default `listing_multiplicity=()` gives
the intended single update per step (and keeps the plain optax path).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxseg.config import ConfigError
from jaxseg.train.sharding import leaf_path

DEFAULT_GROUP = "default"
FROZEN = "frozen"


def optimizer_fields() -> dict[str, Any]:
  """The keys of one complete optimiser config, with the trainer's defaults."""
  return dict(
      name="momentum",  # sgd | momentum | adam | adamw
      learning_rate=0.01,
      momentum=0.9,
      nesterov=False,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      weight_decay=1e-4,  # coupled L2 for sgd/momentum/adam (as PyTorch), decoupled for adamw
      weight_decay_exclude="",  # regex on param paths exempt from weight decay ('' = none)
      schedule="poly",  # constant | poly | cosine | step
      poly_power=0.9,
      # 'step': lr * step_factor ** (number of boundaries b with step > b); boundaries in optimiser
      # steps, may be fractional (MAST halves its lr after 0.4M, 0.6M, 0.8M, 1M samples: / batch).
      step_boundaries=(),
      step_factor=0.5,
      warmup_steps=0,
      # poly / cosine horizon in optimiser steps (0 = train.total_steps); ADVENT decays over
      # MAX_ITERS 250000 but stops at EARLY_STOP 120000.
      decay_steps=0,
      end_learning_rate=0.0,
      lr_multipliers=(),  # ((regex, multiplier), ...), first match wins; e.g. new layers at 10x
      frozen="",  # regex on param paths that are not trained ('' = none)
      # ((regex, k), ...), first match wins, default 1 (sgd/momentum only): the update is applied k
      # times per step, as PyTorch 2.x SGD does for a tensor listed k times (ADVENT's quirk).
      listing_multiplicity=(),
  )


def optimizer_group(params: str, **overrides: Any) -> ml_collections.ConfigDict:
  """A named group's config: every optimiser key plus `params`, the path regex it takes.

  Example (ADVENT's discriminators):
    config.optimizer.groups.discriminator = optimizer_group(
        r'^disc', name='adam', learning_rate=1e-4, b2=0.99, weight_decay=0.0)
  """
  fields = optimizer_fields()
  unknown = sorted(set(overrides) - set(fields))
  if unknown:
    raise ConfigError(f"optimizer group: unknown key(s) {unknown}; known: {sorted(fields)}")
  fields.update(overrides)
  return ml_collections.ConfigDict(dict(params=params, **fields))


def step_schedule(lr: float, boundaries, factor: float) -> optax.Schedule:
  """lr * factor ** #{b in boundaries: step > b} (MAST's `adjust_lr`, boundaries in steps)."""
  bounds = sorted(float(b) for b in boundaries)
  if not bounds:
    return optax.constant_schedule(lr)
  table = jnp.asarray(bounds, jnp.float32)

  def schedule(step):
    passed = jnp.sum(jnp.asarray(step, jnp.float32) > table)
    return lr * jnp.power(jnp.float32(factor), passed)

  return schedule


def make_schedule(cfg, total_steps: int) -> optax.Schedule:
  """Learning-rate schedule: optional linear warm-up, then constant / poly / cosine / step.

  poly: lr * (1 - step / total_steps) ** power, as the DeepLab/SEAM PyTorch code
  computes it (`PolyOptimizer`), decaying to `end_learning_rate`. `decay_steps` > 0 replaces
  `total_steps` as the horizon of poly / cosine (training may stop before it, as ADVENT's does).
  """
  lr, end = float(cfg.learning_rate), float(cfg.end_learning_rate)
  warmup = int(cfg.warmup_steps)
  horizon = int(cfg.get("decay_steps", 0) or 0) or int(total_steps)
  decay_steps = max(horizon - warmup, 1)
  if cfg.schedule == "constant":
    main = optax.constant_schedule(lr)
  elif cfg.schedule == "poly":
    main = optax.polynomial_schedule(lr, end, float(cfg.poly_power), decay_steps)
  elif cfg.schedule == "cosine":
    main = optax.cosine_decay_schedule(lr, decay_steps, alpha=end / lr if lr else 0.0)
  elif cfg.schedule == "step":
    main = step_schedule(lr, cfg.get("step_boundaries", ()), float(cfg.get("step_factor", 0.5)))
  else:
    raise ConfigError(
        f"optimizer.schedule={cfg.schedule!r}: expected constant, poly, cosine or step"
    )
  if warmup <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def _path_labels(params: Any, fn: Callable[[str], Any]) -> Any:
  return jax.tree_util.tree_map_with_path(lambda p, _: fn(leaf_path(p)), params)


def _multiplier_for(path: str, multipliers) -> float:
  for pattern, mult in multipliers:
    if re.search(pattern, path):
      return float(mult)
  return 1.0


def group_configs(cfg) -> dict[str, Any]:
  """{group name: its optimiser config}, the default group first, then the named groups in order."""
  groups = {DEFAULT_GROUP: cfg}
  for name, group in (cfg.get("groups") or {}).items():
    if name in (DEFAULT_GROUP, FROZEN) or "/" in name:
      raise ConfigError(f"optimizer.groups.{name}: reserved or invalid group name")
    if not group.get("params"):
      raise ConfigError(
          f"optimizer.groups.{name}.params: empty; set the regex of the parameters it takes"
      )
    groups[name] = group
  return groups


def param_groups(cfg, params: Any) -> Any:
  """The named optimiser group of every parameter (a tree shaped like `params`, str leaves)."""
  named = [(n, re.compile(g.params)) for n, g in group_configs(cfg).items() if n != DEFAULT_GROUP]

  def group(path: str) -> str:
    for name, pattern in named:
      if pattern.search(path):
        return name
    return DEFAULT_GROUP

  return _path_labels(params, group)


def group_labels(cfg, params: Any) -> Any:
  """The optax slot of every parameter: 'frozen' or '<group>/x<lr multiplier>' (e.g. 'default/x10').

  Args:
    cfg: `config.optimizer`.
    params: the parameter tree (arrays or ShapeDtypeStructs).
  Returns:
    A tree shaped like `params` with string leaves, as `optax.multi_transform` takes.
  """
  configs = group_configs(cfg)
  global_frozen = re.compile(cfg.frozen) if cfg.frozen else None

  def label(path: str, group: str) -> str:
    g = configs[group]
    if (global_frozen is not None and global_frozen.search(path)) or (
        g.frozen and re.search(g.frozen, path)
    ):
      return FROZEN
    multipliers = tuple(tuple(m) for m in g.lr_multipliers)
    return f"{group}/x{_multiplier_for(path, multipliers):g}"

  paths = _path_labels(params, lambda p: p)
  return jax.tree.map(label, paths, param_groups(cfg, params))


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """The optimiser of a train state.

  Attributes:
    tx: the optax transformation over the whole params tree.
    schedules: {group: base learning-rate schedule} for the groups that hold parameters.
    groups: params-shaped tree of group names (frozen parameters keep their group's name).
    frozen: params-shaped tree of bools (True = not trained), or None if nothing is frozen.
  """

  tx: optax.GradientTransformation
  schedules: dict[str, optax.Schedule]
  groups: Any
  frozen: Any


def build_optimizer(cfg, params: Any, total_steps: int) -> Optimizer:
  """Builds the optimiser for `params` (arrays or ShapeDtypeStructs) from `config.optimizer`."""
  configs = group_configs(cfg)
  labels = group_labels(cfg, params)
  groups = param_groups(cfg, params)
  used = set(jax.tree.leaves(groups))
  schedules = {n: make_schedule(configs[n], total_steps) for n in configs if n in used}
  transforms = {}
  for label in sorted(set(jax.tree.leaves(labels))):
    if label == FROZEN:
      transforms[label] = optax.set_to_zero()
      continue
    group, mult = label.split("/")
    g = configs[group]
    exclude = re.compile(g.weight_decay_exclude) if g.weight_decay_exclude else None
    wd_mask = _path_labels(params, lambda p, e=exclude: not (e and e.search(p)))
    lr = lambda step, s=schedules[group], m=float(mult[1:]): s(step) * m  # noqa: E731
    where = f"optimizer.groups.{group}" if group != DEFAULT_GROUP else "optimizer"
    multiplicity = _listing_multiplicity(g, params, where)
    transforms[label] = _base_optimizer(g, lr, wd_mask, where, multiplicity)
  chain = []
  if cfg.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(float(cfg.grad_clip_norm)))
  chain.append(optax.multi_transform(transforms, labels))
  frozen = jax.tree.map(lambda label: label == FROZEN, labels)
  if not any(jax.tree.leaves(frozen)):
    frozen = None
  return Optimizer(tx=optax.chain(*chain), schedules=schedules, groups=groups, frozen=frozen)


def make_optimizer(
    cfg, params: Any, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(tx, schedule of the default group) for `params`; see `build_optimizer`."""
  opt = build_optimizer(cfg, params, total_steps)
  schedule = opt.schedules.get(DEFAULT_GROUP) or make_schedule(cfg, total_steps)
  return opt.tx, schedule


def _listing_multiplicity(cfg, params: Any, where: str) -> Any:
  """Params-shaped tree of `listing_multiplicity` ints, or None when every leaf is listed once."""
  pairs = tuple(tuple(m) for m in (cfg.get("listing_multiplicity") or ()))
  if not pairs:
    return None
  if cfg.name not in ("sgd", "momentum"):
    raise ConfigError(
        f"{where}.listing_multiplicity={pairs!r}: only sgd and momentum apply an update once per "
        f"listing (PyTorch SGD); {where}.name={cfg.name!r}. Set it to ()."
    )
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

  tree = _path_labels(params, count)
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


def _base_optimizer(
    cfg, lr: optax.Schedule, wd_mask, where: str, multiplicity: Any = None
) -> optax.GradientTransformation:
  wd = float(cfg.weight_decay)
  if cfg.name in ("sgd", "momentum"):
    # PyTorch SGD: g += wd * p (coupled L2) before the momentum buffer; buf = g at the first step.
    momentum = float(cfg.momentum) if cfg.name == "momentum" else None
    if multiplicity is not None:  # ADVENT's duplicated listings; see `pytorch_sgd`.
      return pytorch_sgd(lr, momentum, wd, wd_mask, multiplicity, nesterov=bool(cfg.nesterov))
    parts = [optax.add_decayed_weights(wd, wd_mask)] if wd else []
    parts.append(optax.sgd(lr, momentum=momentum, nesterov=bool(cfg.nesterov)))
    return optax.chain(*parts)
  if cfg.name == "adam":
    # PyTorch Adam: coupled L2 (g += wd * p), then m / (sqrt(v_hat) + eps) with bias correction.
    parts = [optax.add_decayed_weights(wd, wd_mask)] if wd else []
    parts.append(optax.adam(lr, b1=float(cfg.b1), b2=float(cfg.b2), eps=float(cfg.eps)))
    return optax.chain(*parts)
  if cfg.name == "adamw":
    return optax.adamw(
        lr, b1=float(cfg.b1), b2=float(cfg.b2), eps=float(cfg.eps), weight_decay=wd, mask=wd_mask
    )
  raise ConfigError(f"{where}.name={cfg.name!r}: expected sgd, momentum, adam or adamw")


def global_norm(tree: Any) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.zeros((), jnp.float32)
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))


def group_norms(tree: Any, groups: Any) -> dict[str, jax.Array]:
  """{group: L2 norm of the leaves of `tree` in that group}; `groups` is `Optimizer.groups`."""
  out: dict[str, list] = {}
  for leaf, group in zip(jax.tree.leaves(tree), jax.tree.leaves(groups)):
    out.setdefault(group, []).append(leaf)
  return {g: global_norm(leaves) for g, leaves in out.items()}
