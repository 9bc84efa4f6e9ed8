"""Optimiser factory: optax chains built from `config.optimizer`.

Learning-rate multipliers per parameter group (e.g. SEAM and DeepLab train new
layers at 10x the backbone rate) are `optax.multi_transform` groups, one per
distinct multiplier; frozen parameters get `optax.set_to_zero`.
"""
from __future__ import annotations

import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from jaxseg.config import ConfigError
from jaxseg.train.sharding import leaf_path


def make_schedule(cfg, total_steps: int) -> optax.Schedule:
  """Learning-rate schedule: optional linear warm-up, then constant / poly / cosine.

  poly: lr * (1 - step / total_steps) ** power, as the DeepLab/SEAM PyTorch code
  computes it (`PolyOptimizer`), decaying to `end_learning_rate`.
  """
  lr, end = float(cfg.learning_rate), float(cfg.end_learning_rate)
  warmup = int(cfg.warmup_steps)
  decay_steps = max(int(total_steps) - warmup, 1)
  if cfg.schedule == "constant":
    main = optax.constant_schedule(lr)
  elif cfg.schedule == "poly":
    main = optax.polynomial_schedule(lr, end, float(cfg.poly_power), decay_steps)
  elif cfg.schedule == "cosine":
    main = optax.cosine_decay_schedule(lr, decay_steps, alpha=end / lr if lr else 0.0)
  else:
    raise ConfigError(f"optimizer.schedule={cfg.schedule!r}: expected constant, poly or cosine")
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


def group_labels(cfg, params: Any) -> Any:
  """The optimiser group of every parameter: 'frozen' or 'x<lr multiplier>' (e.g. 'x10').

  Args:
    cfg: `config.optimizer` (reads `frozen` and `lr_multipliers`).
    params: the parameter tree (arrays or ShapeDtypeStructs).
  Returns:
    A tree shaped like `params` with string leaves, as `optax.multi_transform` takes.
  """
  multipliers = tuple(tuple(m) for m in cfg.lr_multipliers)
  frozen = re.compile(cfg.frozen) if cfg.frozen else None

  def label(path: str) -> str:
    if frozen is not None and frozen.search(path):
      return "frozen"
    return f"x{_multiplier_for(path, multipliers):g}"

  return _path_labels(params, label)


def make_optimizer(cfg, params: Any, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Builds the optimiser for `params` (arrays or ShapeDtypeStructs).

  Returns:
    (tx, schedule): the optax transformation and the base schedule (for logging).
  """
  schedule = make_schedule(cfg, total_steps)
  exclude_wd = re.compile(cfg.weight_decay_exclude) if cfg.weight_decay_exclude else None
  wd_mask = _path_labels(params, lambda p: not (exclude_wd and exclude_wd.search(p)))
  labels = group_labels(cfg, params)
  groups = {}
  for label in set(jax.tree.leaves(labels)):
    if label == "frozen":
      groups[label] = optax.set_to_zero()
    else:
      mult = float(label[1:])
      groups[label] = _base_optimizer(cfg, lambda step, m=mult: schedule(step) * m, wd_mask)

  chain = []
  if cfg.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(float(cfg.grad_clip_norm)))
  chain.append(optax.multi_transform(groups, labels))
  return optax.chain(*chain), schedule


def _base_optimizer(cfg, lr: optax.Schedule, wd_mask) -> optax.GradientTransformation:
  wd = float(cfg.weight_decay)
  if cfg.name in ("sgd", "momentum"):
    # PyTorch SGD: g += wd * p (coupled L2) before the momentum buffer.
    momentum = float(cfg.momentum) if cfg.name == "momentum" else None
    parts = [optax.add_decayed_weights(wd, wd_mask)] if wd else []
    parts.append(optax.sgd(lr, momentum=momentum, nesterov=bool(cfg.nesterov)))
    return optax.chain(*parts)
  if cfg.name == "adamw":
    return optax.adamw(lr, b1=float(cfg.b1), b2=float(cfg.b2), eps=float(cfg.eps),
                       weight_decay=wd, mask=wd_mask)
  raise ConfigError(f"optimizer.name={cfg.name!r}: expected sgd, momentum or adamw")


def global_norm(tree: Any) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))
