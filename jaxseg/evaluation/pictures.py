"""Pictures a person can look at: labelled image grids, masks in palette colours,
de-normalised images. The one grid renderer of the project (training pictures,
SEAM grids, CAM overlays and the vos GIFs all use it). Pictures of class masks carry a legend:
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
    strips: Sequence[np.ndarray] = (),
) -> np.ndarray:
  """Lays out uint8 tiles [H, W, 3] (same size) in a grid with titles.

  Tiles narrower than `min_width` are enlarged by an integer factor (nearest
  neighbour) so the titles fit. `header` is a line of text above the grid,
  `legend` [(class id, name)] a row of palette swatches with names below it,
  `strips` uint8 [h, w, 3] pictures below that (`colour_bar`, `text_strip`).
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
  below = ([key] if key is not None else []) + [np.asarray(x) for x in strips]
  foot = sum(x.shape[0] + pad for x in below)
  canvas_w = max(canvas_w, *(x.shape[1] + 2 * pad for x in below)) if below else canvas_w
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
  y = head + rows * cell_h + pad
  for strip in below:
    canvas.paste(Image.fromarray(strip), (pad, y))
    y += strip.shape[0] + pad
  return np.asarray(canvas)


def text_strip(text: str, width: int, *, line_height: int = 14) -> np.ndarray:
  """uint8 [h, width, 3] white strip with `text` in black, wrapped at spaces to fit `width`."""
  font = ImageFont.load_default()
  lines, line = [], ""
  for word in text.split(" "):
    trial = f"{line} {word}".strip()
    if line and font.getlength(trial) > width:
      lines.append(line)
      line = word
    else:
      line = trial
  lines.append(line)
  strip = Image.new("RGB", (max(width, 1), line_height * len(lines)), "white")
  draw = ImageDraw.Draw(strip)
  for i, text_line in enumerate(lines):
    draw.text((0, i * line_height + 1), text_line, fill="black", font=font)
  return np.asarray(strip)


def grey_heat(values: np.ndarray, low: float = 0.0, high: float = 1.0) -> np.ndarray:
  """float [H, W] -> uint8 [H, W, 3]: `low` black to `high` white (the colours of `colour_bar`)."""
  scaled = np.clip((np.asarray(values, np.float32) - low) / max(high - low, 1e-12), 0, 1)
  return np.repeat(np.round(255 * scaled).astype(np.uint8)[..., None], 3, -1)


def colour_bar(
    title: str, width: int, *, low: float = 0.0, high: float = 1.0, height: int = 10
) -> np.ndarray:
  """uint8 strip: `title`, then a black-to-white ramp (`grey_heat`'s colours) labelled `low` and
  `high` at its ends."""
  font = ImageFont.load_default()
  left, right = f"{low:g}", f"{high:g}"
  label = f"{title}: "
  x0 = int(np.ceil(font.getlength(label + left))) + 4
  x1 = max(x0 + 32, width - int(np.ceil(font.getlength(right))) - 4)
  strip = Image.new("RGB", (max(width, x1 + 40), max(height, 12) + 2), "white")
  draw = ImageDraw.Draw(strip)
  draw.text((0, 1), label + left, fill="black", font=font)
  ramp = grey_heat(np.tile(np.linspace(low, high, x1 - x0)[None], (height, 1)), low, high)
  strip.paste(Image.fromarray(ramp), (x0, 1))
  draw.rectangle((x0 - 1, 0, x1, height + 1), outline=(96, 96, 96))
  draw.text((x1 + 4, 1), right, fill="black", font=font)
  return np.asarray(strip)


def legend_entries(
    masks: Iterable[np.ndarray], class_names: Sequence[str] | None = None
) -> list[tuple[int, str]]:
  """[(class id, name)] of the labels present in `masks`, sorted; 255 is 'ignore', a class
  without a name (or beyond `class_names`) is its number. Pass the notes that say what 'ignore'
  means in that picture to `write_image_grid`."""
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
    header: str | None = None,
    notes: Sequence[str] = (),
    colour_bars: Sequence[tuple[str, float, float]] = (),
) -> str:
  """Writes rows of equal-size uint8 [H, W, 3] tiles as a PNG, column titles on top, `header` above,
  the class `legend` [(id, name)] (see `legend_entries`) below, then a `colour_bar` per (title, low,
  high) and a line of text per note (what a colour means, e.g. the ignore label); returns the path.
  """
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
  width = columns * (max(tiles[0].shape[1], 128) + 4)
  strips = [colour_bar(t, min(width, 360), low=lo, high=hi) for t, lo, hi in colour_bars]
  strips += [text_strip(n, max(width - 8, 200)) for n in notes]
  grid = image_grid(
      tiles, tile_titles, columns=columns, legend=legend, header=header, strips=strips
  )
  Image.fromarray(grid).save(path)
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


# Outline colours of object ids 1, 2, ...: saturated hues that synthetic and natural frames rarely fill
# large areas with, each drawn on a black rim so it reads on light and dark frames alike.
OUTLINE_COLOURS = np.array(
    [(255, 255, 0), (0, 255, 255), (255, 0, 255), (0, 255, 0), (255, 128, 0), (255, 255, 255)],
    np.uint8,
)


def enlarge(image: np.ndarray, factor: int) -> np.ndarray:
  """Nearest-neighbour enlargement by an integer factor (pixels stay sharp squares)."""
  return np.repeat(np.repeat(np.asarray(image), factor, 0), factor, 1)


def _edges(ids: np.ndarray) -> np.ndarray:
  """bool [H, W]: pixels with a 4-neighbour of another id (both sides of every boundary)."""
  edge = np.zeros(ids.shape, bool)
  vertical, horizontal = ids[1:] != ids[:-1], ids[:, 1:] != ids[:, :-1]
  edge[1:] |= vertical
  edge[:-1] |= vertical
  edge[:, 1:] |= horizontal
  edge[:, :-1] |= horizontal
  return edge


def outline_overlay(
    frame: np.ndarray, ids: np.ndarray, *, ignore: int = IGNORE_LABEL
) -> np.ndarray:
  """uint8 [H, W, 3]: `frame` with the outline of each object id (> 0) of `ids` [H, W] drawn on it,
  in the object's `OUTLINE_COLOURS` on a black rim; the frame inside and outside stays as it is, so the
  picture shows what the mask covers without hiding it. `ignore` pixels count as background."""
  ids = np.where(np.asarray(ids) == ignore, 0, np.asarray(ids))
  out = np.array(frame, np.uint8)
  objects = [k for k in np.unique(ids) if k > 0]
  rims = np.zeros(ids.shape, bool)
  lines = []
  for k in objects:
    inside = ids == k
    line = inside & _edges(inside)
    lines.append((k, line))
    rims |= _edges(line) & ~line
  out[rims] = 0
  for k, line in lines:
    out[line] = OUTLINE_COLOURS[(int(k) - 1) % len(OUTLINE_COLOURS)]
  return out


def video_columns(
    frames: np.ndarray,
    columns: Sequence[tuple[str, np.ndarray | None]],
    *,
    header: str = "",
    scale: int = 3,
    min_width: int = 160,
) -> list[np.ndarray]:
  """One uint8 picture per frame of a video: the columns side by side with their titles above and a
  header line ("<header>  frame t/T"). `frames` uint8 [T, H, W, 3]; `columns` [(title, ids [T, H, W]
  or None)]: None shows the frame alone, ids are drawn as outlines (`outline_overlay`). Frames are
  enlarged (nearest) by `scale`, or more so that a tile is `min_width` wide, so titles fit and the
  outlines stay thin against the objects."""
  frames = np.asarray(frames)
  num_frames, _, width = frames.shape[:3]
  factor = max(int(scale), -(-int(min_width) // width))
  big_ids = [None if ids is None else np.asarray(ids) for _, ids in columns]
  titles = [title for title, _ in columns]
  pictures = []
  for t in range(num_frames):
    frame = enlarge(frames[t], factor)
    tiles = [
        frame if ids is None else outline_overlay(frame, enlarge(ids[t], factor)) for ids in big_ids
    ]
    line = f"{header}  frame {t + 1}/{num_frames}".strip()
    pictures.append(image_grid(tiles, titles, header=line, min_width=0))
  return pictures


def write_gif(path: str, pictures: Sequence[np.ndarray], duration_ms: int = 200) -> str:
  """Writes uint8 [H, W, 3] pictures as a looping GIF (atomically: a reader never sees half a file)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  images = [Image.fromarray(np.asarray(p)) for p in pictures]
  tmp = f"{path}.tmp{os.getpid()}.gif"
  images[0].save(tmp, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
  os.replace(tmp, path)
  return path


def write_video_gif(
    path: str,
    frames: np.ndarray,
    columns: Sequence[tuple[str, np.ndarray | None]],
    *,
    header: str = "",
    duration_ms: int = 200,
) -> str:
  """`video_columns` of one video as a GIF at `path`; returns the path."""
  return write_gif(path, video_columns(frames, columns, header=header), duration_ms)
