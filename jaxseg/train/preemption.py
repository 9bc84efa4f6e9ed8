"""Preemption: SIGTERM / SIGINT finish the current step or item, and the run stops cleanly.

SLURM, Kubernetes and preemptible VMs send SIGTERM before killing a job; Ctrl-C
sends SIGINT. While training, the first such signal only sets a flag: the loop
finishes its step, writes a checkpoint (every process) and raises `Preempted`,
which `launch.py` turns into one line and exit status 0. A second signal exits at
once (status 128 + signal), as users expect from a second Ctrl-C.

`run_stages` holds one guard for the whole run, so a signal between training steps, between
stages or inside a host pass (inference, pseudo labels, evaluation, propagation) is honoured too:
a stage boundary or a host pass's `check_stop` raises `StopRequested` after its current item (its
outputs so far complete: they are written atomically), `launch.py` prints one line and exits 0,
and the same command continues (finished stages and items are skipped).

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


class StopRequested(Exception):  # noqa: N818  (a normal way for a run to stop)
  """A signal stopped the run outside training steps (between stages, in a host pass)."""


_ACTIVE: list[PreemptionGuard] = []  # the outermost guard installed in this process


class PreemptionGuard:
  """Context manager that turns SIGTERM / SIGINT into a stop request checked between steps.

  Nested guards share the outermost one's state: a signal received between stages is seen by the
  next stage's training loop.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signum: int | None = None
    self._previous = {}
    self._multi = jax.process_count() > 1

  def __enter__(self) -> PreemptionGuard:
    if _ACTIVE:
      self._outer = _ACTIVE[0]
      return self
    self._outer = None
    _ACTIVE.append(self)
    if threading.current_thread() is threading.main_thread():
      for sig in self.SIGNALS:
        if self._multi and sig == signal.SIGTERM:
          continue  # JAX's distributed runtime owns SIGTERM; see `requested`.
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    if self._outer is not None:
      return
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()
    _ACTIVE.remove(self)

  def _handle(self, signum, frame) -> None:
    del frame
    if self.signum is not None:  # Second signal: stop now.
      os._exit(128 + signum)
    self.signum = signum
    print(
        f"{signal.Signals(signum).name} received: finishing the current step or item, then "
        "stopping (send it again to exit at once)",
        flush=True,
    )

  @property
  def signame(self) -> str:
    if self._outer is not None:
      return self._outer.signame
    return signal.Signals(self.signum).name if self.signum is not None else "SIGTERM"

  def requested(self, step: int) -> bool:
    """True when training should stop after `step` (the same step on every process)."""
    if self._outer is not None:
      return self._outer.requested(step)
    if self._multi:
      from jax.experimental import multihost_utils

      try:
        return bool(multihost_utils.reached_preemption_sync_point(step))
      except RuntimeError:  # No preemption sync manager (not started by jax.distributed).
        return False
    return self.signum is not None


def check_stop(where: str) -> None:
  """Raises `StopRequested` when a signal asked this run to stop (one process: `where` names the
  place, e.g. 'in infer after image 37'); a host pass calls it between items. With several
  processes host passes do not stop mid-way (each host's share differs in length, so they cannot
  agree on an item): the signal is honoured at the next training step."""
  if not _ACTIVE or _ACTIVE[0]._multi or _ACTIVE[0].signum is None:
    return
  raise StopRequested(
      f"{_ACTIVE[0].signame}: stopped {where}; rerun the same command to continue from there"
  )
