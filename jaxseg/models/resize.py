"""Bilinear resizing with PyTorch's two coordinate conventions, for every model, loss and CAM in jaxseg.

`jax.image.resize` has no align_corners=True mode, which SEAM (all training-time resizes) and ADVENT/ESL
(logit upsampling) use, and it antialiases when shrinking, which PyTorch and cv2 do not. Here a resize is a
separable product of two small interpolation matrices: differentiable, jit-friendly (sizes are static) and
equal to `F.interpolate(mode='bilinear')` / `cv2.resize(INTER_LINEAR)` on the same input. (The data
transforms resize images on the host with PIL's antialiased bilinear, and the AffinityNet random walk keeps
its channel-first `jax.image.resize` upsampling, which is parity-tested against the official code.)
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=256)
def interpolation_matrix(in_size: int, out_size: int, align_corners: bool = False) -> np.ndarray:
  """float32 [out_size, in_size] weights of 1-D linear interpolation, as `F.interpolate(mode='bilinear')`.

  align_corners=True:  source = i * (in - 1) / (out - 1)   (0 when out == 1)
  align_corners=False: source = (i + 0.5) * in / out - 0.5, clamped to [0, in - 1] (half-pixel centres, no
                       antialiasing when shrinking, like PyTorch and cv2 INTER_LINEAR).
  """
  if in_size < 1 or out_size < 1:
    raise ValueError(f"interpolation sizes must be >= 1, got {in_size} -> {out_size}")
  i = np.arange(out_size, dtype=np.float64)
  if align_corners:
    src = i * ((in_size - 1) / (out_size - 1)) if out_size > 1 else np.zeros_like(i)
  else:
    src = np.clip((i + 0.5) * (in_size / out_size) - 0.5, 0.0, in_size - 1)
  lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = src - lo
  matrix = np.zeros((out_size, in_size), np.float64)
  np.add.at(matrix, (np.arange(out_size), lo), 1.0 - frac)
  np.add.at(matrix, (np.arange(out_size), hi), frac)
  matrix = matrix.astype(np.float32)
  matrix.setflags(write=False)  # cached: shared by every caller
  return matrix


def resize_bilinear(x: jax.Array, size: tuple[int, int], *, align_corners: bool) -> jax.Array:
  """Bilinear resize of x [B, h, w, ...] to float32 [B, H, W, ...], `size = (H, W)`.

  Computed in float32 at HIGHEST matmul precision so that fp32 results match PyTorch to rounding.
  """
  chex.assert_rank(x, {3, 4, 5})
  out_h, out_w = int(size[0]), int(size[1])
  rows = jnp.asarray(interpolation_matrix(x.shape[1], out_h, align_corners))
  cols = jnp.asarray(interpolation_matrix(x.shape[2], out_w, align_corners))
  return jnp.einsum(
      "Hh,bhw...,Ww->bHW...", rows, x.astype(jnp.float32), cols, precision=jax.lax.Precision.HIGHEST
  )
