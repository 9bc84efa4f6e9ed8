"""The PASCAL VOC colour palette, for drawing class masks as pictures.

Label i gets the colour whose bits interleave the bits of i over R, G and B (VOC devkit convention):
0 is black, 1 is (128, 0, 0), 2 is (0, 128, 0), ... and 255 (the ignore label) is (224, 224, 192).
"""

from __future__ import annotations

import numpy as np


def palette() -> np.ndarray:
  """VOC palette: uint8 [256, 3]; row i is the RGB colour of label i."""
  labels = np.arange(256, dtype=np.int64)
  rgb = np.zeros((256, 3), dtype=np.int64)
  # Bit 3*k + channel of the label becomes bit (7 - k) of that channel: the lowest label bits give the
  # most significant colour bits, so small labels get far-apart colours.
  for k in range(3):
    for channel in range(3):
      rgb[:, channel] |= ((labels >> (3 * k + channel)) & 1) << (7 - k)
  return rgb.astype(np.uint8)


_PALETTE = palette()
_PALETTE.setflags(write=False)


def colorize(mask: np.ndarray) -> np.ndarray:
  """Class mask integer [..., H, W] (values 0..255) -> uint8 RGB picture [..., H, W, 3]."""
  mask = np.asarray(mask)
  if not np.issubdtype(mask.dtype, np.integer):
    raise ValueError(f"colorize: mask must hold integer labels, got dtype {mask.dtype}")
  if mask.size and (mask.min() < 0 or mask.max() > 255):
    raise ValueError(f"colorize: labels must lie in [0, 255], got [{mask.min()}, {mask.max()}]")
  return _PALETTE[mask]
