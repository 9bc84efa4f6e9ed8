"""Gravity direction, height above the floor and angle to gravity from a depth map's geometry.

Pure JAX, batched over a leading B axis, jit-able; camera frame as in `geometry` (x right, y down,
z forward), so a level camera has "up" = (0, -1, 0).

Gravity (`estimate_gravity`) follows the algorithm of Gupta et al.'s HHA code (RGBD utils,
`getYDir`; ECCV 2014 "Learning rich features from RGB-D images"): start from the camera's up
axis, then repeatedly (a fixed number of iterations per stage, stages with angle thresholds
45 deg then 15 deg, 5 iterations each, as in their defaults)
  1. take the valid normals within `threshold` of the current up direction or of its opposite
     (|n . g| > cos threshold: floor-, table-top- and ceiling-like) and the normals within
     `threshold` of perpendicular (|n . g| < sin threshold: wall-like);
  2. re-estimate g as the unit vector most parallel to the first set and most perpendicular to
     the second: the eigenvector of the smallest eigenvalue of
     A = sum_perp n n^T - sum_par n n^T;
  3. flip it to the side of the previous estimate (so it keeps pointing up).
Written independently; differences from their code (our choices):
  * the sign convention: our normals face the camera and g points up, so the floor has angle 0;
  * a tiny pull towards the previous estimate, A - prior_weight * (#used normals) g g^T, which
    only matters when the normals leave a direction undetermined (e.g. one wall and no floor:
    every vector in the wall's plane fits equally well) and keeps g there instead of an
    arbitrary eigenvector; at a fixed point g is an eigenvector of A, so it adds no bias;
  * an iteration with no usable normal keeps the previous estimate.
HHA fits the normals used for gravity over a larger window (radius 10 at 640 x 480) than the
normals it encodes (radius 3); `hn_labels` can do the same (`gravity_normal_radius`).

Height (`height_above_floor`): h = p . g, relative to the floor level, a low percentile of the
valid heights. HHA takes the minimum (0th percentile) and, if that is less than 0.9 m below the
camera, assumes the floor is 1.3 m below it (a camera that sees no floor); we keep that fallback
and use a low percentile instead of the minimum (robust to sensor outliers; see
`default_hn_config` for the value).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp

CAMERA_UP = (0.0, -1.0, 0.0)  # "up" of a level camera in the camera frame (y points down).
HHA_ANGLE_THRESHOLDS = (45.0, 15.0)  # degrees, Gupta et al.'s getYDir defaults
HHA_ITERATIONS = (5, 5)
HHA_MIN_CAMERA_HEIGHT = 0.9  # metres: a lowest point closer to the camera than this is no floor
HHA_FALLBACK_CAMERA_HEIGHT = 1.3  # metres: the camera height assumed then


def _unit(v: jax.Array) -> jax.Array:
  return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def estimate_gravity(
    normals: jax.Array,
    normal_valid: jax.Array,
    *,
    angle_thresholds: Sequence[float] = HHA_ANGLE_THRESHOLDS,
    iterations: Sequence[int] = HHA_ITERATIONS,
    initial: Sequence[float] = CAMERA_UP,
    prior_weight: float = 1e-3,
) -> jax.Array:
  """Unit "up" vector (opposite to gravity) in camera coordinates, by Gupta et al.'s iteration.

  See the module docstring for the algorithm and where it departs from HHA's `getYDir`.

  Args:
    normals: float [B, H, W, 3] unit normals (sign irrelevant: only n n^T and |n . g| are used).
    normal_valid: bool [B, H, W].
    angle_thresholds: degrees, one per stage (static).
    iterations: iterations per stage (static ints).
    initial: the starting up vector in the camera frame; the camera's up axis by default.
    prior_weight: weight, per used normal, of the pull towards the previous estimate.

  Returns:
    float32 [B, 3] unit up vectors, each on the same side as `initial` at every iteration.
  """
  if len(angle_thresholds) != len(iterations):
    raise ValueError(
        f"one iteration count per angle threshold, got {angle_thresholds} and {iterations}"
    )
  return _estimate_gravity(
      normals,
      normal_valid,
      tuple(float(t) for t in angle_thresholds),
      tuple(int(i) for i in iterations),
      tuple(float(v) for v in initial),
      prior_weight,
  )


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _estimate_gravity(
    normals: jax.Array,
    normal_valid: jax.Array,
    angle_thresholds: tuple[float, ...],
    iterations: tuple[int, ...],
    initial: tuple[float, float, float],
    prior_weight: float,
) -> jax.Array:
  chex.assert_rank(normals, 4)
  chex.assert_axis_dimension(normals, 3, 3)
  chex.assert_shape(normal_valid, normals.shape[:3])
  b = normals.shape[0]
  n = jnp.where(normal_valid[..., None], jnp.asarray(normals, jnp.float32), 0.0).reshape(b, -1, 3)
  mask = normal_valid.reshape(b, -1)
  g0 = _unit(jnp.broadcast_to(jnp.asarray(initial, jnp.float32), (b, 3)))

  def step(threshold_deg: float):
    cos_t = math.cos(math.radians(threshold_deg))
    sin_t = math.sin(math.radians(threshold_deg))

    def body(_, g):
      sim = jnp.abs(jnp.einsum("bpc,bc->bp", n, g))
      parallel = mask & (sim > cos_t)
      perpendicular = mask & (sim < sin_t)
      weight = perpendicular.astype(jnp.float32) - parallel.astype(jnp.float32)
      a = jnp.einsum("bp,bpi,bpj->bij", weight, n, n)
      used = jnp.sum(parallel | perpendicular, axis=1).astype(jnp.float32)
      a = a - (prior_weight * used)[:, None, None] * jnp.einsum("bi,bj->bij", g, g)
      _, vectors = jnp.linalg.eigh(a)
      new = vectors[:, :, 0]  # eigh sorts eigenvalues ascending.
      side = jnp.sign(jnp.sum(new * g, axis=-1, keepdims=True))
      new = _unit(new * jnp.where(side == 0, 1.0, side))
      return jnp.where((used > 0)[:, None], new, g)

    return body

  g = g0
  for threshold, count in zip(angle_thresholds, iterations):
    g = jax.lax.fori_loop(0, count, step(threshold), g)
  return g


@functools.partial(
    jax.jit, static_argnames=("percentile", "min_camera_height", "fallback_camera_height")
)
def floor_level(
    points: jax.Array,
    valid: jax.Array,
    gravity: jax.Array,
    *,
    percentile: float = 1.0,
    min_camera_height: float = HHA_MIN_CAMERA_HEIGHT,
    fallback_camera_height: float = HHA_FALLBACK_CAMERA_HEIGHT,
) -> jax.Array:
  """Height p . g of the floor (the camera is at height 0; the floor is normally below, < 0).

  The floor is the `percentile`-th percentile of p . g over the valid pixels. If that lies less
  than `min_camera_height` below the camera, or no pixel is valid, the floor is taken to be
  `fallback_camera_height` below the camera (HHA's rule, 0.9 m and 1.3 m). min_camera_height <= 0
  disables the fallback (then an image without valid pixels gets floor 0).

  Args:
    points: float [B, H, W, 3] camera-frame points.
    valid: bool [B, H, W].
    gravity: float [B, 3] unit up vectors.
    percentile: in [0, 100].
    min_camera_height, fallback_camera_height: metres.

  Returns:
    float32 [B] floor heights along `gravity`.
  """
  chex.assert_rank([points, valid, gravity], [4, 3, 2])
  chex.assert_shape(valid, points.shape[:3])
  chex.assert_shape(gravity, (points.shape[0], 3))
  heights = jnp.einsum("bhwc,bc->bhw", jnp.asarray(points, jnp.float32), gravity)
  heights = jnp.where(valid, heights, jnp.nan).reshape(points.shape[0], -1)
  floor = jnp.nanpercentile(heights, percentile, axis=1)
  if min_camera_height > 0:
    fallback = (~jnp.isfinite(floor)) | (floor > -min_camera_height)
    floor = jnp.where(fallback, -fallback_camera_height, floor)
  return jnp.where(jnp.isfinite(floor), floor, 0.0).astype(jnp.float32)


def height_above_floor(
    points: jax.Array,
    valid: jax.Array,
    gravity: jax.Array,
    *,
    percentile: float = 1.0,
    min_camera_height: float = HHA_MIN_CAMERA_HEIGHT,
    fallback_camera_height: float = HHA_FALLBACK_CAMERA_HEIGHT,
) -> jax.Array:
  """Height of every point above the floor along `gravity`, in metres (see `floor_level`).

  Args:
    points: float [B, H, W, 3] camera-frame points.
    valid: bool [B, H, W].
    gravity: float [B, 3] unit up vectors.
    percentile, min_camera_height, fallback_camera_height: as in `floor_level`.

  Returns:
    float32 [B, H, W], p . g - floor; 0 where invalid. Points below the floor level (the lowest
    `percentile` percent, and noise) are negative.
  """
  floor = floor_level(
      points,
      valid,
      gravity,
      percentile=percentile,
      min_camera_height=min_camera_height,
      fallback_camera_height=fallback_camera_height,
  )
  heights = jnp.einsum("bhwc,bc->bhw", jnp.asarray(points, jnp.float32), gravity)
  return jnp.where(valid, heights - floor[:, None, None], 0.0)


def normal_gravity_angle(normals: jax.Array, gravity: jax.Array) -> jax.Array:
  """Angle between each normal and the up vector, in degrees [0, 180].

  0 = facing up (floor, table top), 90 = vertical surface (wall), 180 = facing down (ceiling).
  A zero (invalid) normal gets 90; mask it with its validity.

  Args:
    normals: float [B, H, W, 3] unit normals (facing the camera).
    gravity: float [B, 3] unit up vectors.

  Returns:
    float32 [B, H, W].
  """
  chex.assert_rank([normals, gravity], [4, 2])
  chex.assert_shape(gravity, (normals.shape[0], 3))
  cos = jnp.einsum("bhwc,bc->bhw", jnp.asarray(normals, jnp.float32), gravity)
  return jnp.degrees(jnp.arccos(jnp.clip(cos, -1.0, 1.0)))
