"""Pictures a person can look at: labelled image grids, masks in palette colours,
de-normalised images. The one grid renderer of the project (training pictures,
SEAM grids and CAM overlays all use it). Pictures of class masks carry a legend:
a colour swatch and the name of every class present."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxseg.data.palette import colorize, palette

IGNORE_LABEL = 255


def image_grid(
    tiles: Sequence[np.ndarray] | np.ndarray,
    titles: Sequence[str] | None = None,
    *,
    columns: int | None = None,
    pad: int = 4,
    title_height: int = 14,
    min_width: int = 128,
    header: str | None = None,
    legend: Sequence[tuple[int, str]] | None = None,
) -> np.ndarray:
  """Lays out uint8 tiles [H, W, 3] (same size) in a grid with titles.

  Tiles narrower than `min_width` are enlarged by an integer factor (nearest
  neighbour) so the titles fit. `header` is a line of text above the grid,
  `legend` [(class id, name)] a row of palette swatches with names below it.
  Returns a uint8 white-background picture.
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
  canvas_w = columns * cell_w + pad
  head = title_height + pad if header else 0
  key = class_legend(legend, canvas_w - 2 * pad) if legend else None
  foot = key.shape[0] + pad if key is not None else 0
  canvas = Image.new("RGB", (canvas_w, head + rows * cell_h + pad + foot), "white")
  draw = ImageDraw.Draw(canvas)
  font = ImageFont.load_default()
  if header:
    draw.text((pad, pad), header, fill="black", font=font)
  for i, tile in enumerate(tiles):
    x = pad + (i % columns) * cell_w
    y = head + pad + (i // columns) * cell_h
    canvas.paste(Image.fromarray(tile), (x, y + top))
    if titles:
      draw.text((x, y), titles[i], fill="black", font=font)
  if key is not None:
    canvas.paste(Image.fromarray(key), (pad, head + rows * cell_h + pad))
  return np.asarray(canvas)


def legend_entries(
    masks: Iterable[np.ndarray], class_names: Sequence[str] | None = None
) -> list[tuple[int, str]]:
  """[(class id, name)] of the labels present in `masks`, sorted; 255 is 'ignore', a class
  without a name (or beyond `class_names`) is its number."""
  present = set()
  for mask in masks:
    present.update(int(v) for v in np.unique(np.asarray(mask)))
  names = list(class_names or ())

  def name(c: int) -> str:
    if 0 <= c < len(names):
      return str(names[c])
    return "ignore" if c == IGNORE_LABEL else str(c)

  return [(c, name(c)) for c in sorted(present)]


def class_legend(
    entries: Sequence[tuple[int, str]], width: int, *, swatch: int = 10, line_height: int = 14
) -> np.ndarray:
  """uint8 [h, width, 3] white strip: per entry a swatch in the class's palette colour and its
  name, wrapped onto as many lines as `width` needs."""
  font = ImageFont.load_default()
  colours = palette()
  cells, x, y = [], 0, 0
  for class_id, name in entries:
    text = f"{class_id} {name}" if name != str(class_id) else name
    cell_w = swatch + 4 + int(np.ceil(font.getlength(text))) + 10
    if x and x + cell_w > width:
      x, y = 0, y + line_height
    cells.append((x, y, class_id, text))
    x += cell_w
  strip = Image.new("RGB", (max(width, 1), y + line_height), "white")
  draw = ImageDraw.Draw(strip)
  for x, y, class_id, text in cells:
    top = y + (line_height - swatch) // 2
    draw.rectangle(
        (x, top, x + swatch - 1, top + swatch - 1),
        fill=tuple(int(v) for v in colours[class_id % 256]),
        outline=(96, 96, 96),
    )
    draw.text((x + swatch + 4, y + 1), text, fill="black", font=font)
  return np.asarray(strip)


def write_image_grid(
    path: str,
    rows: Sequence[Sequence[np.ndarray]],
    titles: Sequence[str] | None = None,
    *,
    legend: Sequence[tuple[int, str]] | None = None,
) -> str:
  """Writes rows of equal-size uint8 [H, W, 3] tiles as a PNG, column titles on top and the class
  `legend` [(id, name)] (see `legend_entries`) below; returns the path."""
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
  Image.fromarray(image_grid(tiles, tile_titles, columns=columns, legend=legend)).save(path)
  return path


def to_uint8_image(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """Undoes `normalize` (x = (pixel/255 - mean) / std): float [H, W, 3] -> uint8 [H, W, 3]."""
  image = np.asarray(image, np.float32) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
  return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def write_segmentation_grid(
    path: str, examples: Sequence[dict], mean, std, class_names: Sequence[str] | None = None
) -> str:
  """One row per example: image | ground truth | prediction, and the legend of the classes in
  the masks and predictions (named by `class_names`, numbered without)."""
  rows = [
      [to_uint8_image(e["image"], mean, std), colorize(e["mask"]), colorize(e["pred"])]
      for e in examples
  ]
  legend = legend_entries([m for e in examples for m in (e["mask"], e["pred"])], class_names)
  return write_image_grid(path, rows, titles=["image", "ground truth", "prediction"], legend=legend)
