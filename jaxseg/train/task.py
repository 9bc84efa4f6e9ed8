"""What a method trains: `TrainTask` and its named data sources.

A method describes *what* to train; `jaxseg.train.loop` does the rest (mesh,
sharded state, optimiser, the jitted step, data, checkpoints, evaluation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax

Batch = dict[str, Any]
# loss_fn(params, model_state, batch, rng) -> (loss, (metrics, new_model_state))
LossFn = Callable[[Any, Any, Batch, jax.Array], tuple[jax.Array, tuple[dict, Any]]]


@dataclasses.dataclass(frozen=True)
class DataSource:
  """One named input stream of a training step.

  Attributes:
    source: random-access source (`__len__`, `__getitem__` -> example dict).
    augment: grain RandomMap producing fixed-shape examples (its own crop size,
      e.g. source domain 1280x720 and target domain 1024x512, or clips [T, H, W, 3]).
    keys: example keys the loss reads (None = all); only these are batched.
    batch_size: this source's global batch size (None = `config.train.batch_size`).
  """

  source: Any
  augment: Any
  keys: tuple[str, ...] | None = None
  batch_size: int | None = None


@dataclasses.dataclass(frozen=True)
class TrainTask:
  """What a method trains.

  Data comes either from one source (`train_source`, `augment`, `keys`: the batch
  is a flat dict, `batch['image']`) or from named `sources` (the batch is a dict
  of dicts, `batch['source']['image']`, `batch['target']['image']`); each named
  source has its own shuffle, epochs and checkpointed iterator position.

  Attributes:
    init_fn: (rng, batch) -> variables dict {'params': ..., other collections}.
      Called under `jax.eval_shape` and `jax.jit`; `batch` is a global batch.
    loss_fn: (params, model_state, batch, rng) -> (scalar loss, (metrics dict
      of scalars, new model_state)). Every metric is logged and checked for
      NaN/inf each step; name the loss terms there (e.g. {'seg': .., 'adv': ..}).
    train_source, augment, keys: the single-source form (see `DataSource`).
    sources: {name: DataSource}, the multi-source form.
    init_weights: optional (params, model_state) -> (params, model_state) run
      on the host once, when training starts from scratch (not on resume):
      loads pretrained weights (e.g. ImageNet backbones) into the fresh state.
    init_extra: optional (params, model_state) -> pytree: the initial value of
      the state's 'extra' slot (e.g. an EMA teacher's params), built after
      `init_weights`, sharded like the rest of the state and checkpointed.
    post_update: optional state -> state, run inside the jitted step after the
      optimiser update (e.g. EMA teachers, momentum encoders writing 'extra').
    make_evaluator: optional TrainSetup -> (state -> {metric: float}); built once
      per run and called every `train.eval_every` steps (keep its jitted
      functions in the closure, so evaluation never recompiles).
  """

  init_fn: Callable[[jax.Array, Batch], dict]
  loss_fn: LossFn
  train_source: Any = None
  augment: Any = None
  keys: tuple[str, ...] | None = None
  sources: Mapping[str, DataSource] | None = None
  init_weights: Callable[[Any, Any], tuple[Any, Any]] | None = None
  init_extra: Callable[[Any, Any], Any] | None = None
  post_update: Callable[[dict], dict] | None = None
  make_evaluator: Callable[[Any], Callable[[dict], dict]] | None = None

  def data_sources(self) -> dict[str, DataSource] | None:
    """{name: DataSource} for the multi-source form, None for the single-source one."""
    if self.sources is not None:
      if self.train_source is not None:
        raise ValueError("TrainTask: give either train_source/augment or sources, not both")
      if not self.sources:
        raise ValueError("TrainTask.sources is empty")
      return dict(self.sources)
    if self.train_source is None:
      raise ValueError("TrainTask: no data (set train_source and augment, or sources)")
    return None

  def single_source(self) -> DataSource:
    return DataSource(self.train_source, self.augment, self.keys)
