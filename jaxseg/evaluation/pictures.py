"""Pictures a person can look at: labelled image grids, masks in palette colours,
de-normalised images. The one grid renderer of the project (training pictures,
SEAM grids and CAM overlays all use it)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxseg.data.palette import colorize


def image_grid(
    tiles: Sequence[np.ndarray] | np.ndarray,
    titles: Sequence[str] | None = None,
    *,
    columns: int | None = None,
    pad: int = 4,
    title_height: int = 14,
    min_width: int = 128,
) -> np.ndarray:
  """Lays out uint8 tiles [H, W, 3] (same size) in a grid with titles.

  Tiles narrower than `min_width` are enlarged by an integer factor (nearest
  neighbour) so the titles fit. Returns a uint8 white-background picture.
  """
  tiles = [np.asarray(t) for t in tiles]
  if not tiles:
    raise ValueError("image_grid needs at least one tile.")
  height, width = tiles[0].shape[:2]
  for t in tiles:
    if t.shape != (height, width, 3) or t.dtype != np.uint8:
      raise ValueError(
          f"all tiles must be uint8 [{height}, {width}, 3], got {t.dtype} " f"{t.shape}."
      )
  if titles is not None and len(titles) != len(tiles):
    raise ValueError(f"{len(titles)} titles for {len(tiles)} tiles.")
  factor = max(1, -(-min_width // width))
  if factor > 1:
    tiles = [np.repeat(np.repeat(t, factor, 0), factor, 1) for t in tiles]
    height, width = height * factor, width * factor
  columns = columns or len(tiles)
  rows = -(-len(tiles) // columns)
  top = title_height if titles else 0
  cell_h, cell_w = height + top + pad, width + pad
  canvas = Image.new("RGB", (columns * cell_w + pad, rows * cell_h + pad), "white")
  draw = ImageDraw.Draw(canvas)
  font = ImageFont.load_default()
  for i, tile in enumerate(tiles):
    x = pad + (i % columns) * cell_w
    y = pad + (i // columns) * cell_h
    canvas.paste(Image.fromarray(tile), (x, y + top))
    if titles:
      draw.text((x, y), titles[i], fill="black", font=font)
  return np.asarray(canvas)


def write_image_grid(
    path: str, rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str] | None = None
) -> str:
  """Writes rows of equal-size uint8 [H, W, 3] tiles as a PNG, column titles on top; returns the path."""
  rows = [list(r) for r in rows]
  if not rows or not rows[0]:
    raise ValueError(f"write_image_grid({path}): no tiles")
  columns = len(rows[0])
  if any(len(r) != columns for r in rows):
    raise ValueError(f"write_image_grid({path}): rows differ in length {[len(r) for r in rows]}")
  tiles = [t for r in rows for t in r]
  tile_titles = None
  if titles is not None:
    if len(titles) != columns:
      raise ValueError(f"write_image_grid({path}): {len(titles)} titles for {columns} columns")
    tile_titles = list(titles) + [""] * (len(tiles) - columns)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(image_grid(tiles, tile_titles, columns=columns)).save(path)
  return path


def to_uint8_image(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """Undoes `normalize` (x = (pixel/255 - mean) / std): float [H, W, 3] -> uint8 [H, W, 3]."""
  image = np.asarray(image, np.float32) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
  return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def write_segmentation_grid(path: str, examples: Sequence[dict], mean, std) -> str:
  """One row per example: image | ground truth | prediction."""
  rows = [
      [to_uint8_image(e["image"], mean, std), colorize(e["mask"]), colorize(e["pred"])]
      for e in examples
  ]
  return write_image_grid(path, rows, titles=["image", "ground truth", "prediction"])
