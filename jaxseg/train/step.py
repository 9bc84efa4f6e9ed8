"""The train state and the jitted train step.

Train state: a plain dict pytree
  step           int32 []            optimiser steps taken
  params         float32 pytree      trained variables (every optimiser group)
  model_state    pytree              other collections (e.g. BatchNorm 'batch_stats')
  opt_state      optax state
  extra          pytree              `TrainTask.init_extra` / `post_update` slot ({} if unused)
  rng            uint32 [2]          base key; step key = fold_in(rng, step)
  nonfinite_step int32 []            first step with a non-finite loss term or gradient, -1 if none
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxseg.errors import ConfigError
from jaxseg.models import conv_lowering
from jaxseg.train import optimizer as optim
from jaxseg.train import sharding as shd
from jaxseg.train.task import TrainTask


class NonFiniteLossError(FloatingPointError):
  """Raised when a loss term or a group's gradient became NaN/inf; no checkpoint is written past it."""


def split_variables(variables: dict) -> tuple[Any, dict]:
  variables = dict(variables)
  params = variables.pop("params")
  return params, variables


@dataclasses.dataclass
class TrainSetup:
  """Everything derived from the config to build, shard and restore a train state."""

  mesh: jax.sharding.Mesh
  optimizer: optim.Optimizer
  abstract_state: Any  # ShapeDtypeStructs with shardings
  state_shardings: Any
  init_state: Callable[[], Any]
  batch_sharding: jax.sharding.NamedSharding
  init_extra: Callable[[Any, Any], Any] | None = None  # jitted, sharded; re-run after init_weights
  conv_algorithm: str = "direct"  # train.conv_algorithm: how the step's convolutions are computed

  @property
  def frozen(self) -> Any:
    return self.optimizer.frozen


def setup(
    config, task: TrainTask, example_batch: dict, mesh: jax.sharding.Mesh | None = None
) -> TrainSetup:
  """Builds mesh, optimiser and the sharded (abstract) train state.

  Args:
    example_batch: one *global* batch of numpy arrays (shapes/dtypes only matter);
      a dict of such dicts for a multi-source task.
  """
  conv_algorithm = str(config.train.conv_algorithm)
  if conv_algorithm not in conv_lowering.ALGORITHMS:
    raise ConfigError(
        f"train.conv_algorithm must be one of {', '.join(conv_lowering.ALGORITHMS)}, got "
        f"{conv_algorithm!r}"
    )
  mesh = mesh or shd.make_mesh(config.mesh)
  batch_sharding = shd.batch_sharding(mesh)
  batch_shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), example_batch)

  def variables_fn(rng):
    return split_variables(task.init_fn(rng, _zeros_like(batch_shapes)))

  def extra_fn(params, model_state):
    return {} if task.init_extra is None else task.init_extra(params, model_state)

  def init_state_fn(rng):
    init_rng, state_rng = jax.random.split(rng)
    params, model_state = variables_fn(init_rng)
    return dict(
        step=jnp.zeros((), jnp.int32),
        params=params,
        model_state=model_state,
        opt_state=opt.tx.init(params),
        extra=extra_fn(params, model_state),
        rng=state_rng,
        nonfinite_step=jnp.full((), -1, jnp.int32),
    )

  rng = jax.random.PRNGKey(int(config.seed))
  params_shape = jax.eval_shape(lambda r: variables_fn(r)[0], rng)
  opt = optim.build_optimizer(config.optimizer, params_shape, config.train.total_steps)
  state_shape = jax.eval_shape(init_state_fn, rng)
  specs = shd.partition_specs(state_shape, config.sharding_rules, mesh, config.fsdp_min_size)
  state_shardings = shd.named_shardings(specs, mesh)
  abstract_state = jax.tree.map(
      lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
      state_shape,
      state_shardings,
  )
  init_jit = jax.jit(init_state_fn, out_shardings=state_shardings)
  extra_jit = None
  if task.init_extra is not None:
    extra_jit = jax.jit(extra_fn, out_shardings=state_shardings["extra"])
  return TrainSetup(
      mesh=mesh,
      optimizer=opt,
      abstract_state=abstract_state,
      state_shardings=state_shardings,
      init_state=lambda: init_jit(rng),
      batch_sharding=batch_sharding,
      init_extra=extra_jit,
      conv_algorithm=conv_algorithm,
  )


def _zeros_like(shapes):
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def make_train_step(task: TrainTask, ts: TrainSetup):
  """The jitted step: (state, batch) -> (state, metrics, nonfinite); state is donated.

  metrics: every term the loss returns, 'loss', the learning rate and gradient
    norm of each optimiser group ('learning_rate', 'grad_norm' for the default
    group; 'learning_rate/<g>', 'grad_norm/<g>' for named groups).
  nonfinite: {name: bool} over every metric and every group's gradient norm,
    computed on device; the loop reads it one step late, so it never stalls the device.
  """
  opt = ts.optimizer
  named_groups = len(opt.schedules) > 1 or optim.DEFAULT_GROUP not in opt.schedules

  def loss_fn(params, model_state, batch, rng):
    if opt.frozen is not None:
      # Frozen parameters get no update anyway; stopping their gradient lets XLA drop the backward
      # pass below them (SEAM freezes its first, highest-resolution blocks), as requires_grad=False does.
      params = jax.tree.map(lambda p, f: jax.lax.stop_gradient(p) if f else p, params, opt.frozen)
    return task.loss_fn(params, model_state, batch, rng)

  def step_fn(state, batch):
    rng = jax.random.fold_in(state["rng"], state["step"])
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    with conv_lowering.conv_algorithm(ts.conv_algorithm):  # read while the step is traced
      (loss, (aux, model_state)), grads = grad_fn(state["params"], state["model_state"], batch, rng)
    updates, opt_state = opt.tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    norms = optim.group_norms(grads, opt.groups)
    terms = dict(loss=loss, **aux)
    flags = {n: ~jnp.all(jnp.isfinite(v)) for n, v in terms.items()}
    flags.update({f"grad/{g}": ~jnp.isfinite(v) for g, v in norms.items()})
    bad = jnp.any(jnp.stack(list(flags.values())))
    nonfinite_step = jnp.where(
        (state["nonfinite_step"] < 0) & bad, state["step"], state["nonfinite_step"]
    )
    new_state = dict(
        state,
        step=state["step"] + 1,
        params=params,
        model_state=model_state,
        opt_state=opt_state,
        nonfinite_step=nonfinite_step,
    )
    if task.post_update is not None:
      new_state = task.post_update(new_state)
    measurements = dict(terms)
    if named_groups:
      for g, schedule in opt.schedules.items():
        measurements[f"learning_rate/{g}"] = schedule(state["step"])
        measurements[f"grad_norm/{g}"] = norms[g]
    else:
      measurements["learning_rate"] = opt.schedules[optim.DEFAULT_GROUP](state["step"])
      measurements["grad_norm"] = norms[optim.DEFAULT_GROUP]
    return new_state, measurements, flags

  repl = shd.replicated(ts.mesh)
  return jax.jit(step_fn, donate_argnums=(0,), out_shardings=(ts.state_shardings, repl, repl))


def raise_nonfinite(step: int, flags: dict[str, Any]) -> None:
  """Raises `NonFiniteLossError` naming the step, the loss terms and the groups whose gradient is bad."""
  bad = [n for n, v in flags.items() if bool(np.asarray(v))]
  terms = [n for n in bad if not n.startswith("grad/")]
  groups = [n[len("grad/") :] for n in bad if n.startswith("grad/")]
  raise NonFiniteLossError(
      f"non-finite values at step {step + 1} (optimiser step {step}): loss terms {terms or 'none'}, "
      f"gradients of optimiser groups {groups or 'none'}; training stopped and no checkpoint was "
      "written after it. Lower the learning rate or check the data."
  )
