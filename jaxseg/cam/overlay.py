"""Pictures: CAM heat-map overlays and labelled image grids.

`overlay_cam` reproduces pytorch-grad-cam's `show_cam_on_image` (OpenCV's
COLORMAP_JET, `(1 - w) * heatmap + w * image`, divided by its max, truncated
to uint8) bit for bit, but returns RGB by default (the library's default BGR
heat map on an RGB image swaps red and blue).
"""

import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxseg.evaluation.pictures import image_grid


def jet_colormap() -> np.ndarray:
  """OpenCV's COLORMAP_JET as a [256, 3] uint8 RGB table.

  The Octave jet ramps evaluated on 0..255 in units of 1/255: every value is
  a multiple of 0.5, and OpenCV rounds halves to even, as np.round does.
  """
  i = np.arange(256, dtype=np.float64)
  red = np.minimum(4 * i - 382.5, -4 * i + 1147.5)
  green = np.minimum(4 * i - 127.5, -4 * i + 892.5)
  blue = np.minimum(4 * i + 127.5, -4 * i + 637.5)
  return np.round(np.clip(np.stack([red, green, blue], 1), 0, 255)).astype(np.uint8)


def _as_unit_float(image: jax.Array | np.ndarray) -> jax.Array:
  if image.dtype == np.uint8:
    # A table divided in numpy: XLA turns x / 255 into x * (1 / 255), which
    # differs in the last bit and can change the truncated uint8 output.
    return jnp.asarray(np.arange(256, dtype=np.float32) / 255)[image]
  if not jnp.issubdtype(image.dtype, jnp.floating):
    raise ValueError(f"image must be uint8 or float in [0, 1], got dtype {image.dtype}.")
  if not isinstance(image, jax.core.Tracer) and (np.min(image) < 0 or np.max(image) > 1):
    raise ValueError(
        "float image must be in [0, 1] (pass uint8 images as uint8), got "
        f"range [{float(np.min(image))}, {float(np.max(image))}]."
    )
  return jnp.asarray(image, jnp.float32)


def overlay_cam(
    image: jax.Array | np.ndarray,
    cam: jax.Array | np.ndarray,
    *,
    image_weight: float = 0.5,
    rgb: bool = True,
) -> jax.Array:
  """Heat map of `cam` blended over `image`.

  Args:
    image: [..., H, W, 3] uint8, or float in [0, 1] (RGB).
    cam: [..., H, W] in [0, 1] (values outside are clipped).
    image_weight: weight of the image; 1 - image_weight for the heat map.
    rgb: heat map in RGB (default) or BGR (pytorch-grad-cam's default).
  Returns:
    [..., H, W, 3] uint8.
  """
  if not 0.0 <= image_weight <= 1.0:
    raise ValueError(f"image_weight must be in [0, 1], got {image_weight}.")
  if image.shape[-1] != 3 or image.shape[:-1] != cam.shape:
    raise ValueError(
        f"image {image.shape} and cam {cam.shape} must be [..., H, W, 3] " "and [..., H, W]."
    )
  pixels = _as_unit_float(image)
  index = (255 * jnp.clip(jnp.asarray(cam, jnp.float32), 0, 1)).astype(jnp.uint8)
  lut = jet_colormap() if rgb else jet_colormap()[:, ::-1]
  heatmap = jnp.asarray(lut.astype(np.float32) / 255)[index]
  blend = (1 - image_weight) * heatmap + image_weight * pixels
  blend = blend / jnp.max(blend, axis=(-3, -2, -1), keepdims=True)
  return (255 * blend).astype(jnp.uint8)


def write_cam_grid(
    path: str | os.PathLike,
    image: np.ndarray,
    cams: Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
    *,
    columns: int | None = None,
    image_weight: float = 0.5,
    include_image: bool = True,
    header: str | None = None,
) -> np.ndarray:
  """Writes a PNG of `image` followed by one overlay per CAM (`header`: a title line on top).

  Args:
    path: output file (the format follows the extension).
    image: [H, W, 3] uint8 (or float in [0, 1]) RGB.
    cams: CAMs [H, W] in [0, 1], one tile each.
    titles: one per CAM (the image tile is titled 'image').
  Returns:
    The written picture, uint8 [.., .., 3].
  """
  pixels = np.asarray(image)
  if pixels.dtype != np.uint8:
    pixels = (255 * np.asarray(_as_unit_float(pixels))).round().astype(np.uint8)
  tiles = [np.asarray(overlay_cam(pixels, np.asarray(c), image_weight=image_weight)) for c in cams]
  names = list(titles) if titles is not None else None
  if include_image:
    tiles.insert(0, pixels)
    names = ["image"] + names if names is not None else None
  picture = image_grid(tiles, names, columns=columns, header=header)
  Image.fromarray(picture).save(path)
  return picture
