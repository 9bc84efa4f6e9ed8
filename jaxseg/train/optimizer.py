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

`optimizer.name` picks a registered optimiser (`register_optimizer`, as big_vision's
`optax.big_vision.<name>`): sgd, momentum, adam and adamw are built in; a method registers its own
(with the extra config keys it reads) next to its config, e.g. ADVENT's `advent_sgd` in
`jaxseg/methods/uda/optimizer.py`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxseg.errors import ConfigError
from jaxseg.train.sharding import leaf_path

DEFAULT_GROUP = "default"
FROZEN = "frozen"


def optimizer_fields() -> dict[str, Any]:
  """The keys of one complete optimiser config, with the trainer's defaults."""
  return dict(
      name="momentum",  # a registered optimiser: sgd | momentum | adam | adamw | a method's own
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
  )


def optimizer_group(params: str, **overrides: Any) -> ml_collections.ConfigDict:
  """A named group's config: every optimiser key plus `params`, the path regex it takes.

  Example (ADVENT's discriminators):
    config.optimizer.groups.discriminator = optimizer_group(
        r'^disc', name='adam', learning_rate=1e-4, b2=0.99, weight_decay=0.0)
  """
  fields = optimizer_fields()
  fields.update(optimizer_kind(overrides.get("name", fields["name"]), "optimizer group").fields)
  unknown = sorted(set(overrides) - set(fields))
  if unknown:
    raise ConfigError(f"optimizer group: unknown key(s) {unknown}; known: {sorted(fields)}")
  fields.update(overrides)
  return ml_collections.ConfigDict(dict(params=params, **fields))


# (cfg, learning-rate schedule, weight-decay mask, params, where) -> the group's transformation.
# `cfg` is the group's optimiser config, `wd_mask` a params-shaped tree of bools (True = decayed),
# `params` the whole tree (arrays or ShapeDtypeStructs), `where` the config path for error messages.
Build = Callable[[Any, optax.Schedule, Any, Any, str], optax.GradientTransformation]


@dataclasses.dataclass(frozen=True)
class OptimizerKind:
  """A registered optimiser: its builder and the config keys it reads beyond `optimizer_fields()`."""

  build: Build
  fields: dict[str, Any]


_REGISTRY: dict[str, OptimizerKind] = {}


def register_optimizer(name: str, build: Build, **fields: Any) -> None:
  """Makes `optimizer.name=<name>` build with `build`; `fields` are its extra config keys (defaults).

  A method registers its own optimiser in its package (imported whenever its config is), so the
  shared factory never holds one paper's quirk.
  """
  clash = sorted(set(fields) & set(optimizer_fields()))
  if clash:
    raise ValueError(f"register_optimizer({name!r}): {clash} are already optimiser keys")
  _REGISTRY[name] = OptimizerKind(build, dict(fields))


def optimizer_kind(name: str, where: str = "optimizer") -> OptimizerKind:
  if name not in _REGISTRY:
    raise ConfigError(f"{where}.name={name!r}: unknown optimiser; known: {sorted(_REGISTRY)}")
  return _REGISTRY[name]


def check_group_keys(cfg, where: str = "optimizer") -> None:
  """Raises `ConfigError` naming each key of the named groups of `cfg` that no optimiser reads.

  The groups are named by the config, so `jaxseg.config.check_keys` leaves their entries to this.
  """
  for name, group in (cfg.get("groups") or {}).items():
    kind = optimizer_kind(group.get("name", "momentum"), f"{where}.groups.{name}")
    known = {"params", *optimizer_fields(), *kind.fields}
    unknown = sorted(set(group.keys()) - known)
    if unknown:
      keys = ", ".join(f"{where}.groups.{name}.{k}" for k in unknown)
      raise ConfigError(f"unknown optimiser key(s) {keys}; known: {sorted(known)}")


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


def path_labels(params: Any, fn: Callable[[str], Any]) -> Any:
  return jax.tree_util.tree_map_with_path(lambda p, _: fn(leaf_path(p)), params)


def _multiplier_for(path: str, multipliers) -> float:
  for pattern, mult in multipliers:
    if re.search(pattern, path):
      return float(mult)
  return 1.0


def group_configs(cfg) -> dict[str, Any]:
  """{group name: its optimiser config}, the default group first, then the named groups in order."""
  check_group_keys(cfg)
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

  return path_labels(params, group)


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

  paths = path_labels(params, lambda p: p)
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
    wd_mask = path_labels(params, lambda p, e=exclude: not (e and e.search(p)))
    lr = lambda step, s=schedules[group], m=float(mult[1:]): s(step) * m  # noqa: E731
    where = f"optimizer.groups.{group}" if group != DEFAULT_GROUP else "optimizer"
    transforms[label] = optimizer_kind(g.name, where).build(g, lr, wd_mask, params, where)
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


def _sgd(cfg, lr, wd_mask, params, where) -> optax.GradientTransformation:
  """PyTorch SGD: g += wd * p (coupled L2) before the momentum buffer; buf = g at the first step."""
  del params, where
  momentum = float(cfg.momentum) if cfg.name != "sgd" else None
  wd = float(cfg.weight_decay)
  parts = [optax.add_decayed_weights(wd, wd_mask)] if wd else []
  parts.append(optax.sgd(lr, momentum=momentum, nesterov=bool(cfg.nesterov)))
  return optax.chain(*parts)


def _adam(cfg, lr, wd_mask, params, where) -> optax.GradientTransformation:
  """PyTorch Adam: coupled L2 (g += wd * p), then m / (sqrt(v_hat) + eps) with bias correction."""
  del params, where
  wd = float(cfg.weight_decay)
  parts = [optax.add_decayed_weights(wd, wd_mask)] if wd else []
  parts.append(optax.adam(lr, b1=float(cfg.b1), b2=float(cfg.b2), eps=float(cfg.eps)))
  return optax.chain(*parts)


def _adamw(cfg, lr, wd_mask, params, where) -> optax.GradientTransformation:
  del params, where
  return optax.adamw(
      lr,
      b1=float(cfg.b1),
      b2=float(cfg.b2),
      eps=float(cfg.eps),
      weight_decay=float(cfg.weight_decay),
      mask=wd_mask,
  )


register_optimizer("sgd", _sgd)
register_optimizer("momentum", _sgd)
register_optimizer("adam", _adam)
register_optimizer("adamw", _adamw)


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
