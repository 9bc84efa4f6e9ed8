"""grain pipelines over random-access sources, and device prefetch.

Training: source -> per-epoch shuffle -> repeat -> per-index random augment ->
this process's shard -> batch. Every random draw depends only on (seed, index),
so a run is reproducible and its position is one small iterator state.

Evaluation: a fixed order, each process taking its own rows of every global
batch; the last batch is padded with masked-out copies (`valid` = 0) so every
process runs the same number of steps.
"""

from __future__ import annotations

import functools
import json
import queue
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grain
import jax
import numpy as np
from absl import flags


def _process_layout(
    global_batch_size: int, process_index: int | None, process_count: int | None
) -> tuple[int, int, int]:
  pi = jax.process_index() if process_index is None else process_index
  pc = jax.process_count() if process_count is None else process_count
  if global_batch_size % pc:
    raise ValueError(f"batch size {global_batch_size} is not divisible by the " f"{pc} processes")
  return pi, pc, global_batch_size // pc


def train_dataset(
    source,
    augment,
    *,
    seed: int,
    global_batch_size: int,
    keys: Sequence[str] | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.MapDataset:
  """Infinite, shuffled, augmented batches of this process's shard.

  Args:
    source: random-access source (`__len__`, `__getitem__` -> example dict).
    augment: a `grain.transforms.RandomMap` (or callable(example, rng)).
    global_batch_size: summed over processes; each gets `global / process_count`.
    keys: the example keys to keep (None = all), so only what the step reads
      is batched and sent to the device.
  Returns:
    MapDataset whose element b is this process's slice of global batch b:
    dict of numpy arrays with leading dim `global_batch_size / process_count`. With a
    process-local source, element b is batch b of this process's own shuffle of its range.
  """
  pi, pc, local = _process_layout(global_batch_size, process_index, process_count)
  # A process-local source (a prepared split read per host, `source.process_local`) already holds
  # only this process's range: it is shuffled and batched here without taking every pc-th batch.
  process_local = bool(getattr(source, "process_local", False))
  if len(source) < (local if process_local else global_batch_size):
    raise ValueError(
        f"training set has {len(source)} examples, fewer than the "
        f"{'local' if process_local else 'global'} batch size "
        f"{local if process_local else global_batch_size}"
    )
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat(None)
  ds = ds.random_map(augment)
  if keys is not None:
    ds = ds.map(functools.partial(_select, keys=tuple(keys)))
  # Local batch m holds elements [m * local, (m + 1) * local); process pi takes
  # local batches pi, pi + pc, ..., so global batch b is elements
  # [b * global, (b + 1) * global) in order, exactly as on one process.
  batches = ds.batch(local, drop_remainder=True)
  return batches if process_local else batches[pi::pc]


def make_iterator(ds: grain.MapDataset, num_workers: int = 0) -> grain.DatasetIterator:
  """Iterator with checkpointable state; `num_workers` > 0 uses worker processes."""
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))
  if num_workers > 0:
    # grain's worker processes read absl flags; outside an absl app (library
    # use, notebooks, tests) they are unparsed, so use their defaults.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(it_ds)


def source_seed(seed: int, name: str | None) -> int:
  """The shuffle/augment seed of a named source: each source draws independently of the others.

  The single-source form (name None) keeps `seed` itself.
  """
  if name is None:
    return int(seed)
  return int(
      np.random.SeedSequence([int(seed), zlib.crc32(name.encode())]).generate_state(1)[0] >> 1
  )


class MultiSourceIterator:
  """Draws one batch from each named iterator: `next()` -> {name: batch}.

  Its state is {name: that iterator's state}, so each source keeps its own
  epoch and position across checkpoints.
  """

  def __init__(self, iterators: dict[str, Any]):
    self._iterators = dict(iterators)

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, Any]:
    return {name: next(it) for name, it in self._iterators.items()}

  def get_state(self) -> dict[str, Any]:
    return {name: it.get_state() for name, it in self._iterators.items()}

  def set_state(self, state: dict[str, Any]) -> None:
    if not isinstance(state, dict) or set(state) != set(self._iterators):
      got = sorted(state) if isinstance(state, dict) else type(state).__name__
      raise ValueError(
          f"checkpointed data state has sources {got}, this run has "
          f"{sorted(self._iterators)}: the checkpoint is from a different task"
      )
    for name, it in self._iterators.items():
      it.set_state(state[name])


def encode_state(iterator: grain.DatasetIterator) -> bytes:
  return json.dumps(iterator.get_state()).encode()


def decode_state(iterator: grain.DatasetIterator, state: bytes) -> None:
  iterator.set_state(json.loads(state.decode()))


def _select(example: dict, keys: tuple[str, ...]) -> dict:
  missing = [k for k in keys if k not in example]
  if missing:
    raise KeyError(f"example has no key(s) {missing}; it has {sorted(example)}")
  return {k: example[k] for k in keys}


class _Padded:
  """Eval example source padded to whole global batches in process-major order."""

  def __init__(self, source, transform, num_batches, global_batch, local, pi, keys):
    self.source, self.transform, self.keys = source, transform, keys
    self.num_batches, self.global_batch, self.local, self.pi = num_batches, global_batch, local, pi

  def __len__(self):
    return self.num_batches * self.local

  def __getitem__(self, j):
    index = (j // self.local) * self.global_batch + self.pi * self.local + j % self.local
    valid = index < len(self.source)
    example = self.transform(self.source[index if valid else 0])
    example = dict(example) if self.keys is None else _select(example, self.keys)
    example["valid"] = np.asarray(valid, np.bool_)
    return example


def eval_batches(
    source,
    transform: Callable[[dict], dict],
    *,
    global_batch_size: int,
    keys: Sequence[str] | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
) -> tuple[Iterator[dict[str, np.ndarray]], int]:
  """This process's slices of fixed-order eval batches.

  Returns:
    (iterator of local batches with a bool `valid` [b] key, number of batches).
  """
  pi, _, local = _process_layout(global_batch_size, process_index, process_count)
  num_batches = -(-len(source) // global_batch_size)
  padded = _Padded(
      source,
      transform,
      num_batches,
      global_batch_size,
      local,
      pi,
      None if keys is None else tuple(keys),
  )
  ds = grain.MapDataset.source(padded).batch(local, drop_remainder=True)
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))
  return iter(it), num_batches


class DevicePrefetcher:
  """Moves batches to device ahead of the step, in a background thread.

  Yields `(global_batch, iterator_state_bytes)`: the state recorded right after
  the batch was drawn, which is what a checkpoint taken after consuming that
  batch must store (the live iterator is ahead by the prefetch depth).
  """

  def __init__(
      self,
      iterator: grain.DatasetIterator,
      put: Callable[[Any], Any],
      depth: int = 2,
      record_state: bool = True,
  ):
    self._iterator, self._put, self._record = iterator, put, record_state
    self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()

  def _run(self):
    try:
      for batch in self._iterator:
        state = encode_state(self._iterator) if self._record else b""
        item = (self._put(batch), state)
        while not self._stop.is_set():
          try:
            self._queue.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
        if self._stop.is_set():
          return
      self._queue.put(StopIteration())
    except BaseException as e:  # Surface loader errors (bad files) in the main thread.
      self._queue.put(e)

  def __iter__(self):
    return self

  def __next__(self):
    item = self._queue.get()
    if isinstance(item, StopIteration):
      raise StopIteration
    if isinstance(item, BaseException):
      self.close()
      raise item
    return item

  def close(self, timeout: float = 30.0):
    """Stops the thread and waits for it: a thread left inside grain or a device transfer at
    interpreter exit aborts the process ('terminate called ...')."""
    self._stop.set()
    while self._thread.is_alive():
      try:
        while True:
          self._queue.get_nowait()  # Unblock a pending put.
      except queue.Empty:
        pass
      self._thread.join(timeout=0.1)
      timeout -= 0.1
      if timeout <= 0:
        break
