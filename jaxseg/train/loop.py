"""The one training loop every method uses.

A method describes *what* to train with a `TrainTask` (how to initialise its
variables, its loss, its data); this module does the rest: mesh, sharded
state, optimiser, the jitted step with donated state, prefetch, metrics,
NaN checks, checkpoints and exact resume.

Train state: a plain dict pytree
  step           int32 []            optimiser steps taken
  params         float32 pytree      trained variables
  model_state    pytree              other collections (e.g. BatchNorm 'batch_stats')
  opt_state      optax state
  rng            uint32 [2]          base key; step key = fold_in(rng, step)
  nonfinite_step int32 []            first step with a non-finite loss, -1 if none
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxseg.data import pipeline
from jaxseg.train import checkpoint as ckpt_lib
from jaxseg.train import metrics as metrics_lib
from jaxseg.train import optimizer as optim
from jaxseg.train import sharding as shd

Batch = dict[str, jax.Array]
# loss_fn(params, model_state, batch, rng) -> (loss, (metrics, new_model_state))
LossFn = Callable[[Any, Any, Batch, jax.Array], tuple[jax.Array, tuple[dict, Any]]]


@dataclasses.dataclass(frozen=True)
class TrainTask:
  """What a method trains.

  Attributes:
    init_fn: (rng, batch) -> variables dict {'params': ..., other collections}.
      Called under `jax.eval_shape` and `jax.jit`; `batch` is a global batch.
    loss_fn: (params, model_state, batch, rng) -> (scalar loss, (metrics dict
      of scalars, new model_state)). `model_state` holds the non-param
      collections of `init_fn`'s result.
    train_source: random-access source of example dicts.
    augment: grain RandomMap producing fixed-shape examples for batching.
    keys: example keys the loss reads (None = all); only these are batched.
    init_weights: optional (params, model_state) -> (params, model_state) run
      on the host once, when training starts from scratch (not on resume):
      loads pretrained weights (e.g. ImageNet backbones) into the fresh state.
  """
  init_fn: Callable[[jax.Array, Batch], dict]
  loss_fn: LossFn
  train_source: Any
  augment: Any
  keys: tuple[str, ...] | None = None
  init_weights: Callable[[Any, Any], tuple[Any, Any]] | None = None


class NonFiniteLossError(FloatingPointError):
  """Raised when the loss became NaN/inf; no checkpoint is written past it."""


def split_variables(variables: dict) -> tuple[Any, dict]:
  variables = dict(variables)
  params = variables.pop("params")
  return params, variables


@dataclasses.dataclass
class TrainSetup:
  """Everything derived from the config to build, shard and restore a train state."""
  mesh: jax.sharding.Mesh
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  abstract_state: Any        # ShapeDtypeStructs with shardings
  state_shardings: Any
  init_state: Callable[[], Any]
  batch_sharding: jax.sharding.NamedSharding
  frozen: Any = None         # params-shaped tree of bools: True = frozen (optimizer.frozen), or None


def setup(config, task: TrainTask, example_batch: dict[str, np.ndarray],
          mesh: jax.sharding.Mesh | None = None) -> TrainSetup:
  """Builds mesh, optimiser and the sharded (abstract) train state.

  Args:
    example_batch: one *global* batch of numpy arrays (shapes/dtypes only matter).
  """
  mesh = mesh or shd.make_mesh(config.mesh)
  batch_sharding = shd.batch_sharding(mesh)
  batch_shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), example_batch)

  def init_state_fn(rng):
    init_rng, state_rng = jax.random.split(rng)
    params, model_state = split_variables(task.init_fn(init_rng, _zeros_like(batch_shapes)))
    return dict(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                opt_state=tx.init(params), rng=state_rng,
                nonfinite_step=jnp.full((), -1, jnp.int32))

  rng = jax.random.PRNGKey(int(config.seed))
  params_shape = jax.eval_shape(lambda r: split_variables(task.init_fn(r, _zeros_like(batch_shapes)))[0], rng)
  tx, schedule = optim.make_optimizer(config.optimizer, params_shape, config.train.total_steps)
  state_shape = jax.eval_shape(init_state_fn, rng)
  specs = shd.partition_specs(state_shape, config.sharding_rules, mesh, config.fsdp_min_size)
  state_shardings = shd.named_shardings(specs, mesh)
  abstract_state = jax.tree.map(
      lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), state_shape, state_shardings)
  init_jit = jax.jit(init_state_fn, out_shardings=state_shardings)
  frozen = None
  if config.optimizer.frozen:
    frozen = jax.tree.map(lambda label: label == "frozen", optim.group_labels(config.optimizer, params_shape))
  return TrainSetup(mesh=mesh, tx=tx, schedule=schedule, abstract_state=abstract_state,
                    state_shardings=state_shardings, init_state=lambda: init_jit(rng),
                    batch_sharding=batch_sharding, frozen=frozen)


def _zeros_like(shapes):
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def make_train_step(task: TrainTask, ts: TrainSetup):
  """The jitted step: (state, batch) -> (state, metrics); state is donated."""
  tx, schedule = ts.tx, ts.schedule

  def loss_fn(params, model_state, batch, rng):
    if ts.frozen is not None:
      # Frozen parameters get no update anyway; stopping their gradient lets XLA drop the backward
      # pass below them (SEAM freezes its first, highest-resolution blocks), as requires_grad=False does.
      params = jax.tree.map(lambda p, f: jax.lax.stop_gradient(p) if f else p, params, ts.frozen)
    return task.loss_fn(params, model_state, batch, rng)

  def step_fn(state, batch):
    rng = jax.random.fold_in(state["rng"], state["step"])
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (aux, model_state)), grads = grad_fn(state["params"], state["model_state"], batch, rng)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    bad = ~jnp.isfinite(loss)
    nonfinite_step = jnp.where((state["nonfinite_step"] < 0) & bad, state["step"],
                               state["nonfinite_step"])
    new_state = dict(step=state["step"] + 1, params=params, model_state=model_state,
                     opt_state=opt_state, rng=state["rng"], nonfinite_step=nonfinite_step)
    measurements = dict(loss=loss, **aux, learning_rate=schedule(state["step"]),
                        grad_norm=optim.global_norm(grads))
    return new_state, measurements

  repl = shd.replicated(ts.mesh)
  return jax.jit(step_fn, donate_argnums=(0,), out_shardings=(ts.state_shardings, repl))


def restore_or_init(ts: TrainSetup, checkpointer: ckpt_lib.Checkpointer | None,
                    init_weights=None):
  """Latest checkpoint in the workdir if any, else a fresh state. Returns (state, iterator_state)."""
  if checkpointer is not None:
    step = checkpointer.latest_step()
    if step is not None:
      logging.info("Resuming from %s step %d", checkpointer.directory, step)
      return checkpointer.restore(step, ts.abstract_state)
  state = ts.init_state()
  if init_weights is not None:
    # Host round trip that also works when parameters are sharded across hosts (FSDP over processes).
    params, model_state = init_weights(shd.host_copy(state["params"]), shd.host_copy(state["model_state"]))
    loaded = shd.put_global((params, model_state),
                            (ts.state_shardings["params"], ts.state_shardings["model_state"]))
    # Optimiser state was built for zero-init buffers; it does not depend on values.
    state = dict(state, params=loaded[0], model_state=loaded[1])
  return state, None


def train(config, workdir: str, task: TrainTask,
          on_log: Callable[[int, dict], None] | None = None) -> dict:
  """Runs (or resumes) training to `config.train.total_steps`. Returns the final state.

  Raises:
    NonFiniteLossError: the loss became NaN/inf; names the first bad step. The
      last checkpoint written is from before it.
  """
  tcfg = config.train
  total = int(tcfg.total_steps)
  data_ds = pipeline.train_dataset(task.train_source, task.augment, seed=int(config.seed),
                                   global_batch_size=int(tcfg.batch_size), keys=task.keys)
  example = jax.tree.map(lambda x: np.zeros((int(tcfg.batch_size),) + x.shape[1:], x.dtype), data_ds[0])
  ts = setup(config, task, example)
  checkpointer = ckpt_lib.Checkpointer(workdir, keep=int(tcfg.keep_checkpoints),
                                       async_save=bool(tcfg.async_checkpoint))
  writer = metrics_lib.MetricWriter(workdir)
  state, iterator_state = restore_or_init(ts, checkpointer, task.init_weights)
  first_step = int(jax.device_get(state["step"]))
  iterator = pipeline.make_iterator(data_ds, int(tcfg.num_workers))
  if iterator_state is not None:
    pipeline.decode_state(iterator, iterator_state)
  prefetcher = pipeline.DevicePrefetcher(
      iterator, lambda b: shd.global_batch(b, ts.batch_sharding), depth=int(tcfg.prefetch_batches))
  step_fn = make_train_step(task, ts)
  progress = metrics_lib.Progress(total, first_step, enabled=bool(tcfg.progress_bar))
  log_every, ckpt_every = max(int(tcfg.log_every), 1), int(tcfg.checkpoint_every)
  window, window_len, compiled = None, 0, None
  try:
    for step in range(first_step, total):
      batch, iterator_state = next(prefetcher)
      state, measured = step_fn(state, batch)
      window = measured if window is None else jax.tree.map(jnp.add, window, measured)
      window_len += 1
      done = step + 1
      if compiled is None:
        compiled = step_fn._cache_size()  # pylint: disable=protected-access
      is_last = done == total
      if done % log_every == 0 or is_last:
        _check_finite(state)
        scalars = {k: float(v) / window_len for k, v in jax.device_get(window).items()}
        writer.write_scalars(done, scalars)
        progress.update(done, {k: scalars[k] for k in ("loss",) if k in scalars})
        if on_log is not None:
          on_log(done, scalars)
        window, window_len = None, 0
        if tcfg.check_recompile and step_fn._cache_size() != compiled:  # pylint: disable=protected-access
          raise RuntimeError(f"train step recompiled at step {done}: batch shapes or dtypes changed")
      if (ckpt_every and done % ckpt_every == 0) or is_last:
        _check_finite(state)  # Never write a checkpoint past a NaN.
        checkpointer.save(done, state, iterator_state)
  finally:
    prefetcher.close()
    checkpointer.close()
    writer.close()
  return state


def _check_finite(state) -> None:
  bad = int(jax.device_get(state["nonfinite_step"]))
  if bad >= 0:
    raise NonFiniteLossError(
        f"loss is NaN/inf at step {bad + 1} (optimiser step {bad}); training stopped "
        "and no checkpoint was written after it. Lower the learning rate or check the data.")


def load_state(config, workdir: str, task: TrainTask, example_batch: dict[str, np.ndarray]):
  """Restores the latest checkpoint's train state for evaluation / inference."""
  ts = setup(config, task, example_batch)
  checkpointer = ckpt_lib.Checkpointer(workdir, keep=int(config.train.keep_checkpoints),
                                       async_save=False)
  try:
    step = checkpointer.latest_step()
    if step is None:
      raise FileNotFoundError(
          f"no checkpoint in {os.path.join(workdir, 'checkpoints')}: run the 'train' stage first")
    return checkpointer.restore_state_only(step, ts.abstract_state), ts
  finally:
    checkpointer.close()
