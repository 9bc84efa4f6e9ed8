"""Unlabelled RGB-D captures in per-scene folders, for depth-derived pre-training (e.g. HN-labels).

Layout:
  <root>/<scene>/rgb/<frame>.jpg (or .png)   colour frames
  <root>/<scene>/depth/<frame>.png           16-bit grey PNG, depth in 1/depth_scale metres (default
                                             millimetres), 0 = no measurement; same size as the frame
  <root>/<scene>/intrinsics.txt              the colour camera's pinhole intrinsics, in pixels, as
      4 numbers    fx fy cx cy (one line, spaces or commas),
      9 numbers    the 3x3 matrix K row by row (last row 0 0 1), or
      16 numbers   a 4x4 matrix whose top-left 3x3 is K (ScanNet's intrinsic_*.txt).
Every `rgb/` frame needs a `depth/` PNG of the same stem. Scenes are the sub-folders of root that
hold an `rgb/` folder, in natural order; frames in natural order of their names.

`RgbdFolderSource(root)[i]`: image uint8 [H, W, 3], depth float32 [H, W] metres (0 = invalid),
intrinsics float32 [3, 3], scene str, index, id '<scene>/<frame stem>'.

Building the source lists the folders, pairs every frame with its depth file and reads every scene's
intrinsics (small text files); images are read per item. `DataError`s name the file: missing
folders, a frame without depth, a missing or malformed intrinsics file (at build); an unreadable
image, a depth PNG that is not 16-bit (8-bit depth holds 0..255 only: a visualisation, not
millimetres), and depth and colour of different sizes (per item).
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from jaxseg.data.errors import DataError
from jaxseg.data.readers.sources import _open_decoded, check_utf8_name, decode_image
from jaxseg.data.readers.videos import list_frames, natural_key
from jaxseg.data.transforms import validate_example

_LAYOUT = (
    "expected <root>/<scene>/rgb/<frame>.jpg|png, <root>/<scene>/depth/<frame>.png (16-bit, "
    "millimetres), <root>/<scene>/intrinsics.txt ('fx fy cx cy' or a 3x3 matrix)"
)
_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def parse_intrinsics(text: str, where: str) -> np.ndarray:
  """float32 [3, 3] K from 'fx fy cx cy', a 3x3 matrix or a 4x4 matrix (see the module doc)."""
  fields = [f for f in re.split(r"[\s,;\[\]]+", text) if f]
  try:
    values = np.array([float(f) for f in fields], np.float64)
  except ValueError as e:
    raise DataError(
        f"{where}: intrinsics are not numbers ({text.strip()[:80]!r})\nhint: {_LAYOUT}"
    ) from e
  if values.size == 4:
    fx, fy, cx, cy = values
    k = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float64)
  elif values.size in (9, 16):
    n = 3 if values.size == 9 else 4
    k = values.reshape(n, n)[:3, :3]
    if not np.allclose(k[2], (0, 0, 1)) or k[1, 0] != 0:
      raise DataError(
          f"{where}: not a pinhole K (expected rows [fx s cx], [0 fy cy], [0 0 1]), got "
          f"{k.tolist()}"
      )
  else:
    raise DataError(
        f"{where}: expected 4 numbers (fx fy cx cy), 9 (3x3 K) or 16 (4x4), got {values.size}"
        f"\nhint: {_LAYOUT}"
    )
  if not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0:
    raise DataError(f"{where}: focal lengths must be finite and positive, got {k.tolist()}")
  return k.astype(np.float32)


def read_intrinsics(path: str) -> np.ndarray:
  """float32 [3, 3] K from an intrinsics text file."""
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except FileNotFoundError as e:
    raise DataError(f"{path}: intrinsics file not found\nhint: {_LAYOUT}") from e
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"{path}: cannot read intrinsics ({type(e).__name__}: {e})") from e
  return parse_intrinsics(text, path)


def decode_depth(path: str, depth_scale: float = 1000.0) -> np.ndarray:
  """A 16-bit depth PNG as float32 [H, W] metres (value / depth_scale; 0 stays 0 = invalid)."""
  with _open_decoded(path, "depth") as image:
    if image.mode not in _DEPTH_MODES:
      hint = (
          "8-bit depth holds only 0..255 (a normalised visualisation?); save depth as a 16-bit "
          "grey PNG in millimetres, e.g. Image.fromarray(depth_mm.astype(np.uint16))"
          if image.mode in ("L", "P", "1", "LA")
          else "save depth as a 16-bit grey PNG in millimetres"
      )
      raise DataError(f"{path}: depth PNG has mode {image.mode!r}, not 16-bit grey\nhint: {hint}")
    values = np.asarray(image)
  if values.size and (values.min() < 0 or values.max() > 65535):
    raise DataError(f"{path}: depth values [{values.min()}, {values.max()}] are not 16-bit")
  return (values.astype(np.float32) / np.float32(depth_scale)).astype(np.float32)


class RgbdFolderSource:
  """RGB-D frames of per-scene folders with their intrinsics (see the module doc)."""

  def __init__(
      self,
      root: str | os.PathLike,
      depth_scale: float = 1000.0,
      *,
      rgb_dir: str = "rgb",
      depth_dir: str = "depth",
      intrinsics_file: str = "intrinsics.txt",
  ):
    """Lists the scenes and frames and reads the intrinsics.

    Args:
      root: the folder of scene folders.
      depth_scale: depth PNG units per metre (1000: millimetres; TUM RGB-D: 5000).
      rgb_dir, depth_dir, intrinsics_file: names inside each scene folder.
    """
    self.root = os.fspath(root)
    self.depth_scale = float(depth_scale)
    if not self.depth_scale > 0:
      raise ValueError(f"depth_scale must be positive, got {depth_scale}")
    self.rgb_dir, self.depth_dir = rgb_dir, depth_dir
    if not os.path.isdir(self.root):
      raise DataError(f"RGB-D root folder not found: {self.root}\nhint: {_LAYOUT}")
    scenes = sorted(
        (
            check_utf8_name(self.root, n)
            for n in os.listdir(self.root)
            if os.path.isdir(os.path.join(self.root, n, rgb_dir))
        ),
        key=natural_key,
    )
    if not scenes:
      raise DataError(f"{self.root}: no scene folders with an {rgb_dir}/ folder\nhint: {_LAYOUT}")
    self.scenes = tuple(scenes)
    intrinsics, items = [], []
    for s, scene in enumerate(self.scenes):
      folder = os.path.join(self.root, scene)
      depth_folder = os.path.join(folder, depth_dir)
      if not os.path.isdir(depth_folder):
        raise DataError(f"{depth_folder}: depth folder not found\nhint: {_LAYOUT}")
      intrinsics.append(read_intrinsics(os.path.join(folder, intrinsics_file)))
      depth_stems = {os.path.splitext(n)[0] for n in list_frames(depth_folder, (".png",))}
      frames = list_frames(os.path.join(folder, rgb_dir), (".jpg", ".jpeg", ".png"))
      missing = [f for f in frames if os.path.splitext(f)[0] not in depth_stems]
      if missing:
        stem = os.path.splitext(missing[0])[0]
        raise DataError(
            f"{os.path.join(depth_folder, stem + '.png')}: depth of frame "
            f"{os.path.join(folder, rgb_dir, missing[0])} not found ({len(missing)} frames of "
            f"scene {scene!r} have no depth)"
        )
      items.extend((s, f) for f in frames)
    if not items:
      raise DataError(f"{self.root}: the scenes hold no {rgb_dir}/ frames\nhint: {_LAYOUT}")
    self.intrinsics = np.stack(intrinsics)
    self.items = tuple(items)
    self.ids = tuple(f"{self.scenes[s]}/{os.path.splitext(f)[0]}" for s, f in items)

  def __len__(self) -> int:
    return len(self.items)

  def __repr__(self) -> str:
    return (
        f"RgbdFolderSource(root={self.root!r}, scenes={len(self.scenes)}, "
        f"depth_scale={self.depth_scale}, len={len(self)})"
    )

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    if not -len(self) <= index < len(self):
      raise IndexError(f"RGB-D: index {index} out of range for {len(self)} frames")
    index %= len(self)
    s, name = self.items[index]
    folder = os.path.join(self.root, self.scenes[s])
    image_path = os.path.join(folder, self.rgb_dir, name)
    depth_path = os.path.join(folder, self.depth_dir, os.path.splitext(name)[0] + ".png")
    image = decode_image(image_path)
    depth = decode_depth(depth_path, self.depth_scale)
    if depth.shape != image.shape[:2]:
      raise DataError(
          f"{depth_path}: depth is {depth.shape[0]}x{depth.shape[1]} (HxW) but its colour frame "
          f"{image_path} is {image.shape[0]}x{image.shape[1]}\nhint: register and resize depth "
          "to the colour frame first (the intrinsics describe the colour frame)"
      )
    example = {
        "image": image,
        "depth": depth,
        "intrinsics": self.intrinsics[s].copy(),
        "scene": self.scenes[s],
        "index": index,
        "id": self.ids[index],
    }
    return validate_example(example, 1, source=image_path)
