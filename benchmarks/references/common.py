"""What the driver (train_step.py) and the reference harnesses share: the UDA shapes, the timing loop
and the PyTorch helpers, so that jaxseg's step and the official one are timed alike at the same shapes.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import time
import types
from collections.abc import Callable
from typing import Any

UDA_SOURCE, UDA_TARGET = (720, 1280), (512, 1024)  # (H, W): GTA5 source, Cityscapes target (ADVENT)


def uda_shapes(args) -> tuple[tuple[int, int], tuple[int, int]]:
  """(source, target) (H, W): ADVENT's, or scaled so that the source width is --size."""
  scale = (args.size / UDA_SOURCE[1]) if args.size else 1.0
  return (
      tuple(int(round(s * scale)) for s in UDA_SOURCE),
      tuple(int(round(s * scale)) for s in UDA_TARGET),
  )


def median_step_seconds(
    step: Callable[[], Any], sync: Callable[[], Any], *, warmup: int, steps: int, repeats: int
) -> float:
  """Median over `repeats` windows of seconds per `step()`; `sync()` waits for queued work, and is called
  only at the end of each window, so nothing inside a window blocks the host."""
  for _ in range(warmup):  # compilation caches, cuDNN autotuning, oneDNN primitive creation
    step()
  sync()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      step()
    sync()
    times.append((time.perf_counter() - start) / steps)
  return statistics.median(times)


class Contender:
  """A step to time: `step()` queues one step, `sync()` waits for queued work, `report(step_s)` is its
  result row."""

  def __init__(self, step, sync, report):
    self.step, self.sync, self.report = step, sync, report


def interleaved_medians(contenders: dict, *, steps: int, repeats: int) -> dict[str, float]:
  """{name: median seconds per step} of warmed-up `Contender`s, timed in alternating windows (A B C A B C
  ...: `repeats` windows of `steps` steps each), so that load from other processes on a shared machine
  falls on every contender alike rather than on whichever ran while it lasted."""
  times = {name: [] for name in contenders}
  for _ in range(repeats):
    for name, c in contenders.items():
      c.sync()
      start = time.perf_counter()
      for _ in range(steps):
        c.step()
      c.sync()
      times[name].append((time.perf_counter() - start) / steps)
  return {name: statistics.median(t) for name, t in times.items()}


def stub_missing(names):
  """Inert modules for imports the official code makes but never uses in the timed step."""

  class _Stub(types.ModuleType):

    def __getattr__(self, attr):
      if attr.startswith("__"):
        raise AttributeError(attr)
      return _Stub(f"{self.__name__}.{attr}")

    def __call__(self, *a, **k):
      raise RuntimeError(f"{self.__name__} is a stub (not installed)")

  for name in names:
    top = name.split(".")[0]
    try:
      if importlib.util.find_spec(top) is not None:
        continue
    except ValueError:
      pass
    sys.modules[name] = _Stub(name)


def torch_device(torch):
  return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def timer(torch, step, batch, **info):
  """run(warmup, steps, repeats) -> {images_per_s, step_s, **info}: the median of the official `step`."""
  sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

  def report(step_s: float) -> dict:
    return dict(images_per_s=batch / step_s, step_s=step_s, **info)

  def run(warmup: int, steps: int, repeats: int) -> dict:
    return report(median_step_seconds(step, sync, warmup=warmup, steps=steps, repeats=repeats))

  run.contender = Contender(step, sync, report)
  return run
