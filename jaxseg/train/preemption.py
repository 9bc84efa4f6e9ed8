"""Preemption: SIGTERM / SIGINT finish the current step, write a checkpoint and stop cleanly.

SLURM, Kubernetes and preemptible VMs send SIGTERM before killing a job; Ctrl-C
sends SIGINT. While training, the first such signal only sets a flag: the loop
finishes its step, writes a checkpoint (every process) and raises `Preempted`,
which `launch.py` turns into one line and exit status 0. A second signal exits at
once (status 128 + signal), as users expect from a second Ctrl-C.

With several processes, each host may see the signal at a different step, so the
decision to stop is JAX's preemption sync point
(`multihost_utils.reached_preemption_sync_point`, fed by the distributed
runtime's SIGTERM notifier), which every process reaches at the same step.
"""

from __future__ import annotations

import os
import signal
import threading

import jax


class Preempted(Exception):  # noqa: N818  (a normal way for a run to stop, not an error)
  """Training stopped on a signal after writing a checkpoint; rerun the command to resume."""

  def __init__(self, step: int, directory: str, signame: str):
    self.step, self.directory, self.signame = step, directory, signame
    super().__init__(
        f"{signame}: stopped after step {step}, checkpoint written to {directory}; "
        "rerun the same command to resume"
    )


class PreemptionGuard:
  """Context manager that turns SIGTERM / SIGINT into a stop request checked between steps."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signum: int | None = None
    self._previous = {}
    self._multi = jax.process_count() > 1

  def __enter__(self) -> PreemptionGuard:
    if threading.current_thread() is threading.main_thread():
      for sig in self.SIGNALS:
        if self._multi and sig == signal.SIGTERM:
          continue  # JAX's distributed runtime owns SIGTERM; see `requested`.
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()

  def _handle(self, signum, frame) -> None:
    del frame
    if self.signum is not None:  # Second signal: stop now.
      os._exit(128 + signum)
    self.signum = signum
    print(
        f"{signal.Signals(signum).name} received: finishing the step and writing a checkpoint "
        "(send it again to exit at once)",
        flush=True,
    )

  @property
  def signame(self) -> str:
    return signal.Signals(self.signum).name if self.signum is not None else "SIGTERM"

  def requested(self, step: int) -> bool:
    """True when training should stop after `step` (the same step on every process)."""
    if self._multi:
      from jax.experimental import multihost_utils

      try:
        return bool(multihost_utils.reached_preemption_sync_point(step))
      except RuntimeError:  # No preemption sync manager (not started by jax.distributed).
        return False
    return self.signum is not None
