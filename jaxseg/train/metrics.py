"""Metric writing: TensorBoard events + `metrics.jsonl` and a console progress line.

Only process 0 writes; the others get no-op writers, so callers need not check.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping

import jax
import numpy as np


class MetricWriter:
  """Writes scalars to `workdir/metrics.jsonl` and TensorBoard event files."""

  def __init__(self, workdir: str, *, enabled: bool | None = None, drop_after: int | None = None):
    """Args:
    drop_after: on a resume, the restored step: rows of later steps (logged by the
      interrupted run after its last checkpoint, and about to be replayed) are removed,
      so `metrics.jsonl` keeps one row per step.
    """
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._tb = None
    self._jsonl = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      path = os.path.join(workdir, "metrics.jsonl")
      if drop_after is not None and os.path.exists(path):
        _drop_rows_after(path, drop_after)
      self._jsonl = open(path, "a")
      try:
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      except ImportError:  # TensorBoard output is optional.
        self._tb = None

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), **{k: _to_python(v) for k, v in scalars.items()}}
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in scalars.items():
        v = _to_python(v)
        if isinstance(v, (int, float)):
          self._tb.add_scalar(k, v, int(step))

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def _drop_rows_after(path: str, step: int) -> None:
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  kept = [line for line in lines if json.loads(line).get("step", 0) <= step]
  if len(kept) == len(lines):
    return
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(kept)
  os.replace(tmp, path)


def _to_python(v):
  v = np.asarray(v)
  if v.ndim == 0:
    return v.item()
  return v.tolist()


def read_metrics(workdir: str) -> list[dict]:
  """Reads back `metrics.jsonl` (one dict per logged step)."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


class Progress:
  """One console line: step/total, step/s, ETA and the latest scalars (process 0 only)."""

  def __init__(
      self,
      total_steps: int,
      first_step: int = 0,
      *,
      enabled: bool = True,
      stream=None,
      unit: str = "step",
  ):
    self.total = total_steps
    self.unit = unit
    self.enabled = enabled and jax.process_index() == 0
    self.stream = stream or sys.stderr
    self._t0 = time.perf_counter()
    self._s0 = first_step

  def restart(self, step: int) -> None:
    """Starts the rate/ETA clock at `step` (after the first step, so compile time is left out)."""
    self._t0, self._s0 = time.perf_counter(), step

  def update(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    # Rate over the last interval, so compile time does not drag it down.
    now = time.perf_counter()
    elapsed = now - self._t0
    rate = (step - self._s0) / elapsed if elapsed > 0 else 0.0
    self._t0, self._s0 = now, step
    eta = (self.total - step) / rate if rate > 0 else math.inf
    width = 24
    filled = int(width * step / max(self.total, 1))
    shown = " ".join(f"{k}={_fmt(v)}" for k, v in scalars.items())
    eta_s = "?" if math.isinf(eta) else time.strftime("%H:%M:%S", time.gmtime(eta))
    self.stream.write(
        f"[{'#' * filled}{'.' * (width - filled)}] {step}/{self.total} "
        f"{rate:.2f} {self.unit}/s ETA {eta_s} {shown}\n"
    )
    self.stream.flush()


def _fmt(v) -> str:
  v = _to_python(v)
  return f"{v:.4g}" if isinstance(v, float) else str(v)
