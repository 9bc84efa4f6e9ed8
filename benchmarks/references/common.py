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


def timer(torch, step, batch):
  def run(warmup: int, steps: int, repeats: int) -> dict:
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    step_s = median_step_seconds(step, sync, warmup=warmup, steps=steps, repeats=repeats)
    return dict(images_per_s=batch / step_s, step_s=step_s)

  return run
