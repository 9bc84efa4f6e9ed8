"""Files that stages write: palette PNG masks and JSON summaries, atomically.

Each file is written to a temporary name and renamed, so a killed run never
leaves a half-written mask or summary that a resumed run would trust.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from PIL import Image

from jaxseg.data.palette import palette


def write_palette_png(path: str, mask: np.ndarray) -> str:
  """Class mask uint8 [H, W] -> indexed PNG with the VOC palette (the DAVIS / VOC results layout)."""
  mask = np.asarray(mask)
  if mask.ndim != 2 or not (
      np.issubdtype(mask.dtype, np.integer)
      and mask.min(initial=0) >= 0
      and mask.max(initial=0) <= 255
  ):
    raise ValueError(
        f"{path}: expected an integer mask [H, W] with values in 0..255, got "
        f"{mask.dtype} {mask.shape}"
    )
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  image = Image.fromarray(mask.astype(np.uint8), mode="P")
  image.putpalette(palette().reshape(-1).tolist())
  tmp = f"{path}.tmp{os.getpid()}.png"
  image.save(tmp)
  os.replace(tmp, path)
  return path


def write_json(path: str, value: Any) -> str:
  """JSON summary (indent 2), written atomically."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=2)
  os.replace(tmp, path)
  return path


def read_json(path: str, hint: str = "") -> Any:
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found" + (f": {hint}" if hint else ""))
  with open(path) as f:
    return json.load(f)
