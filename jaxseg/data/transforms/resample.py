"""Array resampling primitives: nearest, PIL bilinear / bicubic, and unit-vector fields.

All of them put pixel centres at half-integers (`align_corners=False`): resizing an axis from n
to n' maps the continuous coordinate x (pixel i has its centre at x = i) to
x' = (x + 0.5) * n' / n - 0.5. `geometric` moves camera intrinsics with the same map.

Bilinear resampling is PIL's: when shrinking, the triangle filter is widened by the scale
factor (antialiasing), which equals `jax.image.resize(x, shape, "linear", antialias=True)` and
what torchvision's `Resize` does on PIL images. Nearest neighbour takes source pixel
`floor((i + 0.5) * in_size / out_size)` for output pixel i (PIL's rule, applied per axis in
numpy, so any dtype and channel count works). scipy.ndimage.zoom was ~10x slower than PIL on
512x512 RGB and cv2 is not installed.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# A bilinear blend of unit normals shorter than this points nowhere in particular (opposite
# normals across a crease cancel), so the pixel takes its nearest source normal instead.
_MIN_BLEND_NORM = 1e-3


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
  """int64 [out_size]: the source index nearest to each output pixel centre."""
  centres = (np.arange(out_size) + 0.5) * (in_size / out_size)
  return np.minimum(np.floor(centres).astype(np.int64), in_size - 1)


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """[H, W, ...] -> [h, w, ...] by nearest neighbour; dtype kept."""
  rows = nearest_indices(array.shape[0], size[0])
  cols = nearest_indices(array.shape[1], size[1])
  return array[rows[:, None], cols[None, :]]


def resize_bilinear(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """PIL bilinear of [H, W, ...]; uint8 RGB in one call, anything else per channel in mode 'F'.

  Floating input keeps its dtype, uint8 is rounded back to uint8, other dtypes become float32.
  """
  pil_size = (size[1], size[0])  # PIL wants (width, height).
  if array.dtype == np.uint8 and array.ndim == 3 and array.shape[-1] == 3:
    return np.asarray(Image.fromarray(array, mode="RGB").resize(pil_size, Image.BILINEAR))
  out_dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else np.float32
  flat = array.reshape(array.shape[:2] + (-1,)).astype(np.float32, copy=False)
  channels = [
      np.asarray(
          Image.fromarray(np.ascontiguousarray(flat[..., c]), mode="F").resize(
              pil_size, Image.BILINEAR
          )
      )
      for c in range(flat.shape[-1])
  ]
  out = np.stack(channels, axis=-1).reshape(size + array.shape[2:])
  if array.dtype == np.uint8:  # a uint8 image that is not 3-channel RGB.
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
  return out.astype(out_dtype, copy=False)


def resize_bicubic_rgb(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """PIL bicubic of a uint8 [H, W, 3] RGB image (SEAM/PSA's `RandomResizeLong`)."""
  return np.asarray(Image.fromarray(array, mode="RGB").resize((size[1], size[0]), Image.BICUBIC))


def resize_normals(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Resizes a unit-vector field [H, W, 3] (0 = invalid) and renormalises it.

  Which pixels are valid is resampled with nearest neighbour (the rule of masks and depth), so
  zero vectors stay zero and the valid region keeps the shape the depth map gets. Directions
  are the bilinear blend renormalised to unit length: zero neighbours only shorten the blend,
  never bend it. Where the blend nearly cancels, the nearest source normal is used.

  Returns:
    float [h, w, 3] (float32 unless the input is another float type): unit or exactly 0.
  """
  dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else np.float32
  vectors = array.astype(np.float64)
  valid = resize_nearest(np.any(vectors != 0, axis=-1), size)
  nearest = resize_nearest(vectors, size)
  blend = resize_bilinear(vectors.astype(np.float32), size).astype(np.float64)
  norm = np.linalg.norm(blend, axis=-1, keepdims=True)
  out = np.where(norm > _MIN_BLEND_NORM, blend, nearest)
  out /= np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-30)
  out[~valid] = 0.0
  return out.astype(dtype)
