"""Small multi-host helpers for host-side stages (inference passes, evaluation summaries)."""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils


def process_indices(n: int) -> range:
  """This process's share of n items (strided, so every process gets a similar load)."""
  return range(jax.process_index(), n, jax.process_count())


def sum_over_processes(x: np.ndarray) -> np.ndarray:
  """Sum of a host array over every process (e.g. confusion matrices of each process's share)."""
  if jax.process_count() == 1:
    return x
  return np.asarray(multihost_utils.process_allgather(x)).sum(axis=0)


def sync(name: str) -> None:
  """Waits until every process reaches this point (no-op on one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def is_main_process() -> bool:
  return jax.process_index() == 0
