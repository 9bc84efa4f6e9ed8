"""Metric writing: TensorBoard events + `metrics.jsonl`, a console progress line,
and image grids (PNG) for pictures.

Only process 0 writes; the others get no-op writers, so callers need not check.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Mapping, Sequence

import jax
import numpy as np
from PIL import Image, ImageDraw


class MetricWriter:
  """Writes scalars to `workdir/metrics.jsonl` and TensorBoard event files."""

  def __init__(self, workdir: str, *, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._tb = None
    self._jsonl = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
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

  def __init__(self, total_steps: int, first_step: int = 0, *, enabled: bool = True, stream=None):
    self.total = total_steps
    self.enabled = enabled and jax.process_index() == 0
    self.stream = stream or sys.stderr
    self._t0 = time.perf_counter()
    self._s0 = first_step

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
    self.stream.write(f"[{'#' * filled}{'.' * (width - filled)}] {step}/{self.total} "
                      f"{rate:.2f} step/s ETA {eta_s} {shown}\n")
    self.stream.flush()


def _fmt(v) -> str:
  v = _to_python(v)
  return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_image_grid(path: str, rows: Sequence[Sequence[np.ndarray]],
                     titles: Sequence[str] | None = None, pad: int = 2, scale: int = 1) -> str:
  """Writes a grid of uint8 RGB tiles as a PNG; returns the path.

  Args:
    rows: rows of tiles; each tile uint8 [H, W, 3] (or [H, W], shown grey).
      Tiles in a row may differ in size; each cell is as large as the largest.
    titles: optional column titles drawn above the first row.
    scale: integer upscaling of every tile (nearest), for small images.
  """
  tiles = [[_as_rgb(t).repeat(scale, 0).repeat(scale, 1) for t in row] for row in rows]
  if not tiles or not tiles[0]:
    raise ValueError(f"write_image_grid({path}): no tiles")
  cell_h = max(t.shape[0] for row in tiles for t in row)
  cell_w = max(t.shape[1] for row in tiles for t in row)
  ncol = max(len(row) for row in tiles)
  title_h = 12 if titles else 0
  canvas = np.full((title_h + len(tiles) * (cell_h + pad) + pad,
                    ncol * (cell_w + pad) + pad, 3), 255, np.uint8)
  for r, row in enumerate(tiles):
    for c, t in enumerate(row):
      y = title_h + pad + r * (cell_h + pad)
      x = pad + c * (cell_w + pad)
      canvas[y:y + t.shape[0], x:x + t.shape[1]] = t
  image = Image.fromarray(canvas)
  if titles:
    draw = ImageDraw.Draw(image)
    for c, title in enumerate(titles):
      draw.text((pad + c * (cell_w + pad), 0), str(title), fill=(0, 0, 0))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  image.save(path)
  return path


def _as_rgb(tile: np.ndarray) -> np.ndarray:
  tile = np.asarray(tile)
  if tile.dtype != np.uint8:
    raise ValueError(f"image grid tiles must be uint8, got {tile.dtype}")
  if tile.ndim == 2:
    tile = np.repeat(tile[..., None], 3, axis=-1)
  if tile.ndim != 3 or tile.shape[-1] != 3:
    raise ValueError(f"image grid tile must be [H, W, 3] or [H, W], got {tile.shape}")
  return tile
