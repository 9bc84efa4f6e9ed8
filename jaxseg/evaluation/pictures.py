"""Pictures a person can look at: masks in palette colours, de-normalised images, grids."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxseg.data.palette import colorize
from jaxseg.train.metrics import write_image_grid


def to_uint8_image(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """Undoes `normalize` (x = (pixel/255 - mean) / std): float [H, W, 3] -> uint8 [H, W, 3]."""
  image = np.asarray(image, np.float32) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
  return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def write_segmentation_grid(path: str, examples: Sequence[dict], mean, std) -> str:
  """One row per example: image | ground truth | prediction."""
  rows = [[to_uint8_image(e["image"], mean, std), colorize(e["mask"]), colorize(e["pred"])]
          for e in examples]
  scale = max(1, 160 // max(rows[0][0].shape[:2]))
  return write_image_grid(path, rows, titles=["image", "ground truth", "prediction"], scale=scale)
