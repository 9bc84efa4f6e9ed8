"""The one training loop every method uses.

A method describes *what* to train with a `TrainTask` (`jaxseg.train.task`);
this module does the rest: mesh, sharded state and optimiser groups
(`jaxseg.train.step`), data from one or several named sources, prefetch,
metrics, the per-step NaN/inf check, checkpoints, exact resume, evaluation
during training with a best checkpoint.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.data import pipeline
from jaxseg.errors import ConfigError
from jaxseg.train import checkpoint as ckpt_lib
from jaxseg.train import metrics as metrics_lib
from jaxseg.train import preemption
from jaxseg.train import sharding as shd
from jaxseg.train.step import (
    NonFiniteLossError,  # noqa: F401  (re-exported)
    TrainSetup,  # noqa: F401
    make_train_step,
    raise_nonfinite,
    setup,
    split_variables,  # noqa: F401
)
from jaxseg.train.task import (
    Batch,  # noqa: F401
    DataSource,  # noqa: F401
    LossFn,  # noqa: F401
    TrainTask,
)


def compiled_count(step_fn) -> int | None:
  """Executables a jitted function holds (one per input signature), or None where this JAX does not
  say (`_cache_size` is private: a newer JAX may drop it; the recompilation check is then skipped).
  """
  size = getattr(step_fn, "_cache_size", None)
  return size() if callable(size) else None


def restore_or_init(
    ts: TrainSetup,
    checkpointer: ckpt_lib.Checkpointer | None,
    init_weights=None,
    init_extra: bool = True,
):
  """The newest loadable checkpoint in the workdir if any, else a fresh state.

  Damaged checkpoints are reported, moved aside and skipped (`Checkpointer.restore_latest_usable`).
  Returns (state, iterator_state) (iterator_state None for a fresh state).
  """
  if checkpointer is not None:
    restored = checkpointer.restore_latest_usable(ts.abstract_state)
    if restored is not None:
      step, state, iterator_state = restored
      if jax.process_index() == 0:
        print(f"resuming from step {step} ({checkpointer.directory}/{step})", flush=True)
      return state, iterator_state
  state = ts.init_state()
  if init_weights is not None:
    # Host round trip that also works when parameters are sharded across hosts (FSDP over processes).
    params, model_state = init_weights(
        shd.host_copy(state["params"]), shd.host_copy(state["model_state"])
    )
    loaded = shd.put_global(
        (params, model_state), (ts.state_shardings["params"], ts.state_shardings["model_state"])
    )
    # Optimiser state was built for zero-init buffers; it does not depend on values.
    state = dict(state, params=loaded[0], model_state=loaded[1])
    if init_extra and ts.init_extra is not None:
      state["extra"] = ts.init_extra(state["params"], state["model_state"])
  return state, None


def _datasets(config, task: TrainTask):
  """(grain dataset or {name: dataset}, one global example batch of zeros)."""
  tcfg = config.train
  seed = int(config.seed)

  def build(src, name=None):
    size = int(src.batch_size or tcfg.batch_size)
    ds = pipeline.train_dataset(
        src.source,
        src.augment,
        seed=pipeline.source_seed(seed, name),
        global_batch_size=size,
        keys=src.keys,
    )
    example = jax.tree.map(lambda x: np.zeros((size,) + x.shape[1:], x.dtype), ds[0])
    return ds, example

  sources = task.data_sources()
  if sources is None:
    return build(task.single_source())
  built = {name: build(src, name) for name, src in sources.items()}
  return {n: b[0] for n, b in built.items()}, {n: b[1] for n, b in built.items()}


def train(config, workdir: str, task: TrainTask) -> dict:
  """Runs (or resumes) training to `config.train.total_steps`. Returns the final state.

  Raises:
    NonFiniteLossError: a loss term or a group's gradient became NaN/inf; names the first bad
      step, the terms and the groups. The last checkpoint written is from before it.
  """
  tcfg = config.train
  total = int(tcfg.total_steps)
  data_ds, example = _datasets(config, task)
  ts = setup(config, task, example)
  _check_batch_sizes(example if isinstance(data_ds, dict) else {None: example}, ts.mesh)
  checkpointer = ckpt_lib.Checkpointer(
      workdir, keep=int(tcfg.keep_checkpoints), async_save=bool(tcfg.async_checkpoint)
  )
  eval_every = int(tcfg.eval_every)
  evaluator = task.make_evaluator(ts) if (eval_every and task.make_evaluator is not None) else None
  if eval_every and task.make_evaluator is None:
    raise ValueError("train.eval_every is set but this method has no evaluator during training")
  best = None
  if tcfg.best_metric:
    if evaluator is None:
      raise ValueError(f"train.best_metric={tcfg.best_metric!r} needs train.eval_every > 0")
    best = ckpt_lib.BestCheckpointer(
        workdir, metric=str(tcfg.best_metric), mode=str(tcfg.best_mode)
    )
  state, iterator_state = restore_or_init(ts, checkpointer, task.init_weights)
  first_step = int(jax.device_get(state["step"]))
  # Rows logged after the checkpoint by an interrupted run are replayed now: drop them.
  writer = metrics_lib.MetricWriter(workdir, drop_after=first_step)
  num_workers = int(tcfg.num_workers)
  if isinstance(data_ds, dict):
    iterator = pipeline.MultiSourceIterator(
        {n: pipeline.make_iterator(ds, num_workers) for n, ds in data_ds.items()}
    )
  else:
    iterator = pipeline.make_iterator(data_ds, num_workers)
  if iterator_state is not None:
    pipeline.decode_state(iterator, iterator_state)
  prefetcher = pipeline.DevicePrefetcher(
      iterator, lambda b: shd.global_batch(b, ts.batch_sharding), depth=int(tcfg.prefetch_batches)
  )
  step_fn = make_train_step(task, ts)
  progress = metrics_lib.Progress(total, first_step, enabled=bool(tcfg.progress_bar))
  log_every, ckpt_every = max(int(tcfg.log_every), 1), int(tcfg.checkpoint_every)
  window, window_len, compiled, pending = None, 0, None, None
  guard = preemption.PreemptionGuard()
  if first_step < total and jax.process_index() == 0 and tcfg.progress_bar:
    print(f"compiling the train step ({workdir})...", flush=True)
  try:
    guard.__enter__()
    for step in range(first_step, total):
      batch, iterator_state = next(prefetcher)
      state, measured, flags = step_fn(state, batch)
      # The previous step's flags: reading them waits for that step only, while this one runs.
      if pending is not None and _any_flag(pending[1]):
        raise_nonfinite(*pending)
      pending = (step, flags)
      window = measured if window is None else jax.tree.map(jnp.add, window, measured)
      window_len += 1
      done = step + 1
      if compiled is None:
        compiled = compiled_count(step_fn)
        progress.restart(done)  # The ETA leaves the compile time out.
      is_last = done == total
      saved = False
      if done % log_every == 0 or is_last:
        checkpointer.check_for_errors()  # a failed asynchronous save stops the run here
        _check_finite(state, flags)
        scalars = {k: float(v) / window_len for k, v in jax.device_get(window).items()}
        writer.write_scalars(done, scalars)
        progress.update(done, {k: scalars[k] for k in ("loss",) if k in scalars})
        window, window_len = None, 0
        if tcfg.check_recompile and compiled_count(step_fn) != compiled:
          raise RuntimeError(
              f"train step recompiled at step {done}: batch shapes or dtypes changed"
          )
      if (ckpt_every and done % ckpt_every == 0) or is_last:
        _check_finite(state, flags)  # Never write a checkpoint past a NaN.
        checkpointer.save(done, state, iterator_state)
        saved = True
      if evaluator is not None and (done % eval_every == 0 or is_last):
        _check_finite(state, flags)
        results = {k: float(v) for k, v in evaluator(state).items()}
        writer.write_scalars(done, {f"eval/{k}": v for k, v in results.items()})
        if best is not None:
          best.save(done, state, results)
      if not is_last and guard.requested(done):
        _check_finite(state, flags)
        if pending is not None and _any_flag(pending[1]):
          raise_nonfinite(*pending)
        if not saved:
          checkpointer.save(done, state, iterator_state)
        checkpointer.wait()
        raise preemption.Preempted(done, f"{checkpointer.directory}/{done}", guard.signame)
  finally:
    guard.__exit__()
    prefetcher.close()
    checkpointer.close()
    if best is not None:
      best.close()
    writer.close()
  return state


def _check_batch_sizes(examples: dict, mesh) -> None:
  """Every global batch splits evenly over the mesh's 'data' axis (else a clear config error).

  Args:
    examples: {source name (None for the single-source form): one global example batch}.
  """
  ways = int(mesh.shape["data"])
  for name, batch in examples.items():
    size = int(jax.tree.leaves(batch)[0].shape[0])
    if size % ways:
      key = "train.batch_size" if name is None else f"the batch size of source {name!r}"
      raise ConfigError(
          f"{key}={size} does not split over the {ways} devices of the mesh's 'data' axis; "
          f"use a multiple of {ways} (or set mesh.data)"
      )


def _any_flag(flags: dict) -> bool:
  return any(bool(v) for v in jax.device_get(flags).values())


def _check_finite(state, flags) -> None:
  bad = int(jax.device_get(state["nonfinite_step"]))
  if bad >= 0:
    # The flags of the current step name what went wrong if it was this step; otherwise the
    # per-step check has already raised with the earlier step's flags.
    raise_nonfinite(bad, jax.device_get(flags))


def load_state(
    config, workdir: str, task: TrainTask, example_batch: dict, *, which: str = "latest"
):
  """Restores a checkpoint's train state for evaluation / inference.

  Args:
    which: 'latest' (checkpoints/) or 'best' (checkpoints_best/, by `train.best_metric`).
  Returns:
    (state, TrainSetup).
  """
  ts = setup(config, task, example_batch)
  if which == "best":
    checkpointer = ckpt_lib.BestCheckpointer(
        workdir, metric=str(config.train.best_metric or "unused"), mode=str(config.train.best_mode)
    )
  elif which == "latest":
    checkpointer = ckpt_lib.Checkpointer(
        workdir, keep=int(config.train.keep_checkpoints), async_save=False
    )
  else:
    raise ValueError(f"which={which!r}: expected 'latest' or 'best'")
  try:
    step = checkpointer.latest_step() if which == "latest" else checkpointer.best_step()
    if step is None:
      raise FileNotFoundError(
          f"no checkpoint in {checkpointer.directory}: run the 'train' stage first"
      )
    return checkpointer.restore_state_only(step, ts.abstract_state), ts
  finally:
    checkpointer.close()


def variables_of(state: dict) -> dict[str, Any]:
  """The Flax variables dict {'params': ..., other collections} of a train state."""
  return {"params": state["params"], **state["model_state"]}
