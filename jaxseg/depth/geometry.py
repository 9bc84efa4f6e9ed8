"""Depth-map geometry in pure JAX: back-projection to a point cloud and robust surface normals.

All functions are batched over a leading B axis, channels last, jit-able (`surface_normals` is
jitted with its window radius static), and computed in float32.

Camera frame (pinhole, the convention of `jaxseg.data.transforms.geometric` and
`synthetic.Camera.intrinsics`): x to the right, y down, z forward along the optical axis, in
metres. Pixel (row r, column c) has its centre at image coordinates u = c, v = r, and K maps
a point to (u, v) = (fx X / Z + s Y / Z + cx, fy Y / Z + cy). Depth is z-depth (distance along
the optical axis, as Kinect / NYUv2 store it), not the distance along the ray.

Normals (`surface_normals`) come from a least-squares plane fit (PCA: the eigenvector of the
smallest eigenvalue of the local scatter matrix) over a (2 r + 1)^2 window, using only the
neighbours that are valid and whose depth is within a relative threshold of the centre's (so the
fit does not straddle a depth discontinuity). This is our choice; Gupta et al.'s HHA code fits a
plane (by least squares, another parametrisation) to every measured pixel of the square window,
with no edge test. See the function docstring for every threshold.
"""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp

# A window with fewer usable points than this gets no normal (3 points define a plane; we want a
# fit, not an interpolation).
DEFAULT_MIN_POINTS = 6
# Relative depth step |z_n - z_c| / z_c above which a neighbour is taken to lie across a depth
# edge and is left out of the centre's plane fit.
DEFAULT_DEPTH_EDGE_THRESHOLD = 0.1
# A fit whose middle eigenvalue is below this fraction of the largest is degenerate (the usable
# points lie nearly on a line), so its normal is undefined.
DEFAULT_MIN_PLANARITY = 1e-3


def intrinsics_matrix(intrinsics: jax.Array) -> jax.Array:
  """[B, 3, 3] K from [B, 3, 3] K (returned as float32) or [B, 4] (fx, fy, cx, cy)."""
  intrinsics = jnp.asarray(intrinsics, jnp.float32)
  if intrinsics.ndim == 2 and intrinsics.shape[-1] == 4:
    fx, fy, cx, cy = (intrinsics[:, i] for i in range(4))
    zero, one = jnp.zeros_like(fx), jnp.ones_like(fx)
    rows = [
        jnp.stack([fx, zero, cx], -1),
        jnp.stack([zero, fy, cy], -1),
        jnp.stack([zero, zero, one], -1),
    ]
    return jnp.stack(rows, axis=-2)
  chex.assert_shape(intrinsics, (None, 3, 3))
  return intrinsics


def backproject(depth: jax.Array, intrinsics: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Back-projects z-depth maps to camera-frame point clouds.

  Pixel (r, c) with depth d goes to d K^-1 [c, r, 1]^T (pixel centres at integer (u, v) = (c, r);
  see the module docstring for the axes). K must be upper triangular with last row (0, 0, 1), as
  every pinhole K is (skew allowed: a horizontal flip of `jaxseg.data.transforms` negates it).

  Args:
    depth: float [B, H, W] z-depth in metres; <= 0 or non-finite means no measurement.
    intrinsics: float [B, 3, 3] K, or [B, 4] (fx, fy, cx, cy), for the same H x W pixel grid.

  Returns:
    points: float32 [B, H, W, 3] (x right, y down, z forward), exactly 0 where invalid.
    valid: bool [B, H, W], depth finite and > 0.
  """
  chex.assert_rank(depth, 3)
  k = intrinsics_matrix(intrinsics)
  chex.assert_equal_shape_prefix([depth, k], 1)
  depth = jnp.asarray(depth, jnp.float32)
  valid = jnp.isfinite(depth) & (depth > 0)
  z = jnp.where(valid, depth, 0.0)
  _, h, w = depth.shape
  v = jnp.arange(h, dtype=jnp.float32)[None, :, None]
  u = jnp.arange(w, dtype=jnp.float32)[None, None, :]
  param = lambda i, j: k[:, i, j][:, None, None]
  # Inverse of the upper-triangular K, row by row: y_n = (v - cy) / fy, x_n = (u - cx - s y_n) / fx.
  y_n = (v - param(1, 2)) / param(1, 1)
  x_n = (u - param(0, 2) - param(0, 1) * y_n) / param(0, 0)
  points = jnp.stack([x_n * z, y_n * z, z], axis=-1)
  return points, valid


def _sym3_smallest_eigenvector(m: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Eigenvector of the smallest eigenvalue of symmetric 3x3 matrices, in closed form.

  Args:
    m: float32 [..., 6], the upper triangle (m00, m01, m02, m11, m12, m22), scaled to O(1).

  Returns:
    vector: float32 [..., 3] unit eigenvector (arbitrary sign; 0 where undefined).
    eigenvalues: float32 [..., 3] sorted ascending.

  Eigenvalues by the trigonometric solution of the characteristic cubic (Smith 1961), then the
  eigenvector as the longest cross product of two rows of (M - lambda_min I). Written out rather
  than `jnp.linalg.eigh` so millions of tiny matrices stay cheap and fusible on every backend.
  """
  a00, a01, a02, a11, a12, a22 = (m[..., i] for i in range(6))
  q = (a00 + a11 + a22) / 3.0
  p1 = a01 * a01 + a02 * a02 + a12 * a12
  b00, b11, b22 = a00 - q, a11 - q, a22 - q
  p2 = b00 * b00 + b11 * b11 + b22 * b22 + 2.0 * p1
  p = jnp.sqrt(p2 / 6.0)
  safe_p = jnp.where(p > 0, p, 1.0)
  det_b = (
      b00 * (b11 * b22 - a12 * a12) - a01 * (a01 * b22 - a12 * a02) + a02 * (a01 * a12 - b11 * a02)
  ) / (safe_p**3)
  phi = jnp.arccos(jnp.clip(det_b / 2.0, -1.0, 1.0)) / 3.0
  lam_max = q + 2.0 * p * jnp.cos(phi)
  lam_min = q + 2.0 * p * jnp.cos(phi + 2.0 * math.pi / 3.0)
  lam_mid = 3.0 * q - lam_max - lam_min
  eigenvalues = jnp.stack([lam_min, lam_mid, lam_max], axis=-1)
  r0 = jnp.stack([a00 - lam_min, a01, a02], axis=-1)
  r1 = jnp.stack([a01, a11 - lam_min, a12], axis=-1)
  r2 = jnp.stack([a02, a12, a22 - lam_min], axis=-1)
  candidates = jnp.stack([jnp.cross(r0, r1), jnp.cross(r0, r2), jnp.cross(r1, r2)], axis=-2)
  norms = jnp.sum(candidates * candidates, axis=-1)
  best = jnp.argmax(norms, axis=-1)
  vector = jnp.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]
  length = jnp.sqrt(jnp.max(norms, axis=-1, keepdims=True))
  vector = jnp.where(length > 0, vector / jnp.where(length > 0, length, 1.0), 0.0)
  return vector, eigenvalues


@functools.partial(jax.jit, static_argnames="radius")
def surface_normals(
    points: jax.Array,
    valid: jax.Array,
    *,
    radius: int = 3,
    depth_edge_threshold: float = DEFAULT_DEPTH_EDGE_THRESHOLD,
    min_points: int = DEFAULT_MIN_POINTS,
    min_planarity: float = DEFAULT_MIN_PLANARITY,
) -> tuple[jax.Array, jax.Array]:
  """Unit surface normals by a local plane fit that does not cross depth edges or holes.

  For each valid pixel c, the fit uses the pixels n of the (2 radius + 1)^2 window around it
  that are valid and satisfy |z_n - z_c| <= depth_edge_threshold * z_c (relative to the centre's
  depth, so one threshold works at every range; the same for every offset in the window). The
  normal is the eigenvector of the smallest eigenvalue of their scatter matrix
  sum (p_n - mean)(p_n - mean)^T (total least squares, exact on noise-free planes); points are
  taken relative to p_c before summing so float32 keeps the precision of the local offsets.

  A pixel gets no normal (normal 0, valid False) if its depth is invalid, fewer than
  `min_points` window pixels (centre included) pass the tests, or the fit is degenerate:
  lambda_mid < min_planarity * lambda_max (points nearly collinear).

  Normals point towards the camera: n . p_c <= 0 (p_c is the ray to the pixel).

  The window is in pixels, so its metric size (and the noise it averages) depends on the
  resolution: radius 3 is HHA's at 640 x 480 (Gupta et al.'s patch size for the normals they
  encode); at 64 x 64 radius 2 fits best on our synthetic scenes. Near a crease (e.g. where a
  wall meets the floor, both sides at the same depth) the window mixes the two planes, so
  normals within `radius` pixels of a crease bend towards each other; the depth test only
  separates surfaces at different depths. A strongly slanted surface whose depth grows by more
  than the threshold per pixel (towards its vanishing line, or at coarse resolutions) looks like
  an edge: its neighbours along the slope are refused and the pixel may get no normal.

  Args:
    points: float [B, H, W, 3] camera-frame points (`backproject`).
    valid: bool [B, H, W] points with a depth measurement.
    radius: window half-size in pixels (static).
    depth_edge_threshold: relative depth difference that counts as a depth edge.
    min_points: fewest usable window pixels for a fit.
    min_planarity: smallest lambda_mid / lambda_max of a usable fit.

  Returns:
    normals: float32 [B, H, W, 3] unit vectors (camera frame), 0 where invalid.
    normal_valid: bool [B, H, W].
  """
  chex.assert_rank(points, 4)
  chex.assert_axis_dimension(points, 3, 3)
  chex.assert_shape(valid, points.shape[:3])
  if radius < 1:
    raise ValueError(f"radius must be >= 1, got {radius}")
  points = jnp.where(valid[..., None], jnp.asarray(points, jnp.float32), 0.0)
  _, h, w, _ = points.shape
  size = 2 * radius + 1
  pad = ((0, 0), (radius, radius), (radius, radius))
  padded_points = jnp.pad(points, pad + ((0, 0),))
  padded_valid = jnp.pad(valid, pad)
  z_c = points[..., 2]
  limit = depth_edge_threshold * z_c

  def accumulate(k, carry):
    count, s, ss = carry
    dy, dx = k // size, k % size
    nb = jax.lax.dynamic_slice_in_dim(
        jax.lax.dynamic_slice_in_dim(padded_points, dy, h, axis=1), dx, w, axis=2
    )
    nb_valid = jax.lax.dynamic_slice_in_dim(
        jax.lax.dynamic_slice_in_dim(padded_valid, dy, h, axis=1), dx, w, axis=2
    )
    q = nb - points
    use = nb_valid & (jnp.abs(q[..., 2]) <= limit)
    q = jnp.where(use[..., None], q, 0.0)
    outer = jnp.stack(
        [
            q[..., 0] * q[..., 0],
            q[..., 0] * q[..., 1],
            q[..., 0] * q[..., 2],
            q[..., 1] * q[..., 1],
            q[..., 1] * q[..., 2],
            q[..., 2] * q[..., 2],
        ],
        axis=-1,
    )
    return count + use.astype(jnp.float32), s + q, ss + outer

  zeros = jnp.zeros_like(z_c)
  count, s, ss = jax.lax.fori_loop(
      0,
      size * size,
      accumulate,
      (zeros, jnp.zeros_like(points), jnp.zeros(points.shape[:3] + (6,), jnp.float32)),
  )
  n = jnp.maximum(count, 1.0)
  mean = s / n[..., None]
  mx, my, mz = mean[..., 0], mean[..., 1], mean[..., 2]
  cov = ss / n[..., None] - jnp.stack(
      [mx * mx, mx * my, mx * mz, my * my, my * mz, mz * mz], axis=-1
  )
  # Scale to unit trace so the closed-form eigen-solver works on O(1) numbers.
  trace = cov[..., 0] + cov[..., 3] + cov[..., 5]
  cov = cov / jnp.where(trace > 0, trace, 1.0)[..., None]
  normals, eigenvalues = _sym3_smallest_eigenvector(cov)
  planar = eigenvalues[..., 1] >= min_planarity * eigenvalues[..., 2]
  normal_valid = valid & (count >= min_points) & (trace > 0) & planar
  normal_valid &= jnp.sum(normals * normals, axis=-1) > 0.5
  # Orient towards the camera: the ray to the pixel is p_c, so n . p_c must be <= 0.
  facing = jnp.sum(normals * points, axis=-1)
  normals = jnp.where((facing > 0)[..., None], -normals, normals)
  normals = jnp.where(normal_valid[..., None], normals, 0.0)
  return normals, normal_valid
