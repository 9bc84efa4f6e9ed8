"""Small multi-host helpers for host-side stages (inference passes, evaluation summaries)."""

from __future__ import annotations

import logging
import os

import jax
import numpy as np
from jax.experimental import multihost_utils


def process_indices(n: int) -> range:
  """This process's share of n items (strided, so every process gets a similar load)."""
  return range(jax.process_index(), n, jax.process_count())


def host_pass(n: int, what: str):
  """`process_indices(n)`, honouring a stop request (SIGTERM / Ctrl-C) between items: the item in
  progress finishes, then `preemption.StopRequested` names `what` and the items done."""
  from jaxseg.train import preemption

  for done, i in enumerate(process_indices(n)):
    if done:
      preemption.check_stop(f"in {what} after {done} of {len(process_indices(n))} items")
    yield i


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


def multi_process_requested(
    coordinator_address: str | None = None, num_processes: int | None = None
):
  """Whether this is one of several processes: flags, JAX_* / SLURM / TPU pod environment."""
  if coordinator_address or num_processes:
    return True
  env = os.environ
  if env.get("JAX_COORDINATOR_ADDRESS") or int(env.get("JAX_NUM_PROCESSES", "1")) > 1:
    return True
  if int(env.get("SLURM_NTASKS", "1")) > 1:
    return True
  return len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
  """Calls `jax.distributed.initialize()` when this is one of several processes (else nothing)."""
  if not multi_process_requested(coordinator_address, num_processes):
    return
  if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS") == "cpu":
    # CPU collectives across processes need gloo.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {}
  if coordinator_address:
    kwargs = dict(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )
  jax.distributed.initialize(**kwargs)
  logging.info(
      "process %d of %d, %d local / %d global devices",
      jax.process_index(),
      jax.process_count(),
      jax.local_device_count(),
      jax.device_count(),
  )
