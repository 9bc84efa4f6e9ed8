"""HN labels: per-pixel classes from height above the floor and normal angle to gravity.

Method "hn" (Lahoud & Ghanem, "RGB-based Semantic Segmentation Using Self-Supervised Depth
Pre-Training", arXiv 2002.02200): a segmentation network is pre-trained from RGB on labels
computed from depth alone, then fine-tuned on few semantic labels. No official code exists;
this module is jaxseg's reconstruction. What is from where:

From the paper (abstract; the full text was not available to us):
  * the labels are computed automatically from depth, with no manual annotation;
  * they encode "height and normal patches": each pixel's height and surface-normal direction;
  * the network is pre-trained as a dense per-pixel classifier (segmentation) on them.

From Gupta et al.'s HHA code (the standard way to get height and angle from NYUv2 depth):
  * gravity by their iterative normal-set estimate, thresholds 45 then 15 deg, 5 + 5
    iterations, started at the camera's up axis (`gravity.estimate_gravity`);
  * height = coordinate along gravity above the floor, floor = lowest point, with their fallback
    (floor 1.3 m below the camera if the lowest point is less than 0.9 m below it);
  * angle = arccos(n . g) in degrees; normals from a local plane fit over a square window
    (radius 3 at 640 x 480 for the encoded normals, 10 for the gravity normals).

Our choices (the paper's values are unknown; every one is a config field):
  * the bins: heights with inner edges 0.25, 0.5, ..., 2.0 m (9 bins, the last >= 2 m) and
    angles with inner edges 30, 60, 120, 150 deg (5 bins: up-facing, sloped up, vertical,
    sloped down, down-facing); a value v falls in bin k with edges[k-1] <= v < edges[k];
  * one class per (height bin, angle bin) pair: label = height_bin * num_angle_bins + angle_bin
    (Cartesian product, 45 classes by default), not two separate heads;
  * the floor at the 1st percentile of the heights rather than the minimum (robust to noise and
    outliers; a floor covering under 1% of the valid pixels is then missed);
  * normals: a PCA plane fit over the window restricted to valid neighbours within a relative
    depth step of 0.1 of the centre (`geometry.surface_normals`); HHA's fit uses every
    measured pixel of the window (no depth-edge test). Normals face the camera and gravity
    points up, so the floor has angle 0;
  * pixels without a depth measurement or without a normal get `ignore_index` (255). HHA
    computes its maps on the hole-filled depth (NYUv2's `depths`) and so has no holes; pass
    filled depth here to get labels everywhere (and raw depth to trust only measurements);
  * window radii are in pixels, HHA's 3 (label normals) and 10 (gravity normals) by default,
    which suit 640 x 480 input. They do not scale with the image: for small images use
    smaller ones. Measured on `SyntheticIndoorScenes` with Kinect-like noise (iid per pixel):
    at 64 x 64, normal_radius=2 with gravity_normal_radius=0 (reuse the label normals) gives a
    median gravity error of 0.15 deg, HHA's (3, 10) 1.3 deg; at 480 x 640, (3, 0) gave 1.0 and
    3.6 deg on two scenes, (3, 10) 0.6 deg on both, at ~10x the cost (441 window offsets).
"""

from __future__ import annotations

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import ml_collections

from jaxseg.depth import geometry
from jaxseg.depth import gravity as gravity_lib


def default_hn_config() -> ml_collections.ConfigDict:
  """Default HN-label settings; "HHA" marks values from Gupta et al.'s code, "ours" our choices."""
  c = ml_collections.ConfigDict()
  # ours: inner bin edges; 9 height bins, the first [< 0.25 m) holds the floor (and anything
  # below the floor level), the last [>= 2.0 m) ceilings and high walls.
  c.height_edges = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
  # ours: 5 angle bins (degrees between the normal and up): [0, 30) up-facing (floor, table
  # tops), [30, 60), [60, 120) vertical (walls, cabinet fronts), [120, 150), [150, 180] down-facing.
  c.angle_edges = (30.0, 60.0, 120.0, 150.0)
  c.normal_radius = 3  # HHA (patch size 3 at 640 x 480); pixels
  c.gravity_normal_radius = 10  # HHA (patch size 10 at 640 x 480); 0 = reuse the label normals
  c.depth_edge_threshold = geometry.DEFAULT_DEPTH_EDGE_THRESHOLD  # ours: relative depth step
  c.min_points = geometry.DEFAULT_MIN_POINTS  # ours: fewest usable window pixels per fit
  c.min_planarity = geometry.DEFAULT_MIN_PLANARITY  # ours: lambda_mid / lambda_max of a fit
  c.gravity_angle_thresholds = gravity_lib.HHA_ANGLE_THRESHOLDS  # HHA: degrees per stage
  c.gravity_iterations = gravity_lib.HHA_ITERATIONS  # HHA: iterations per stage
  c.gravity_prior_weight = 1e-3  # ours: pull towards the previous estimate (degenerate cases)
  c.floor_percentile = 1.0  # ours (HHA: 0, the lowest point)
  c.min_camera_height = gravity_lib.HHA_MIN_CAMERA_HEIGHT  # HHA: metres; <= 0 disables fallback
  c.fallback_camera_height = gravity_lib.HHA_FALLBACK_CAMERA_HEIGHT  # HHA: metres
  c.ignore_index = 255
  return c


@dataclasses.dataclass(frozen=True)
class HNParams:
  """Hashable, validated form of an HN config (the static argument of the jitted labeller)."""

  height_edges: tuple[float, ...]
  angle_edges: tuple[float, ...]
  normal_radius: int
  gravity_normal_radius: int
  depth_edge_threshold: float
  min_points: int
  min_planarity: float
  gravity_angle_thresholds: tuple[float, ...]
  gravity_iterations: tuple[int, ...]
  gravity_prior_weight: float
  floor_percentile: float
  min_camera_height: float
  fallback_camera_height: float
  ignore_index: int

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict | None = None) -> HNParams:
    """Validates `config` (fields of `default_hn_config`; missing ones take their default)."""
    merged = default_hn_config().to_dict()
    if config is not None:
      given = config.to_dict() if hasattr(config, "to_dict") else dict(config)
      unknown = sorted(set(given) - set(merged))
      if unknown:
        raise ValueError(f"unknown HN config fields {unknown}; known: {sorted(merged)}")
      merged.update(given)
    c = ml_collections.ConfigDict(merged)
    params = cls(
        height_edges=tuple(float(e) for e in c.height_edges),
        angle_edges=tuple(float(e) for e in c.angle_edges),
        normal_radius=int(c.normal_radius),
        gravity_normal_radius=int(c.gravity_normal_radius),
        depth_edge_threshold=float(c.depth_edge_threshold),
        min_points=int(c.min_points),
        min_planarity=float(c.min_planarity),
        gravity_angle_thresholds=tuple(float(t) for t in c.gravity_angle_thresholds),
        gravity_iterations=tuple(int(i) for i in c.gravity_iterations),
        gravity_prior_weight=float(c.gravity_prior_weight),
        floor_percentile=float(c.floor_percentile),
        min_camera_height=float(c.min_camera_height),
        fallback_camera_height=float(c.fallback_camera_height),
        ignore_index=int(c.ignore_index),
    )
    for name in ("height_edges", "angle_edges"):
      edges = getattr(params, name)
      if any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"{name} must be strictly increasing, got {edges}")
    if any(not 0 < e < 180 for e in params.angle_edges):
      raise ValueError(f"angle_edges must lie in (0, 180) degrees, got {params.angle_edges}")
    if params.normal_radius < 1 or params.gravity_normal_radius < 0:
      raise ValueError("normal_radius must be >= 1 and gravity_normal_radius >= 0")
    if len(params.gravity_angle_thresholds) != len(params.gravity_iterations):
      raise ValueError("gravity_angle_thresholds and gravity_iterations must have equal length")
    if not 0 <= params.floor_percentile <= 100:
      raise ValueError(f"floor_percentile must be in [0, 100], got {params.floor_percentile}")
    if not params.num_classes <= params.ignore_index or params.ignore_index < 0:
      raise ValueError(
          f"{params.num_classes} HN classes collide with ignore_index {params.ignore_index}"
      )
    return params

  @property
  def num_height_bins(self) -> int:
    return len(self.height_edges) + 1

  @property
  def num_angle_bins(self) -> int:
    return len(self.angle_edges) + 1

  @property
  def num_classes(self) -> int:
    return self.num_height_bins * self.num_angle_bins


def hn_num_classes(config: ml_collections.ConfigDict | None = None) -> int:
  """Number of HN classes: (len(height_edges) + 1) * (len(angle_edges) + 1)."""
  return HNParams.from_config(config).num_classes


def _range_name(edges: tuple[float, ...], k: int, unit: str) -> str:
  lo = "-inf" if k == 0 else f"{edges[k - 1]:g}"
  hi = "inf" if k == len(edges) else f"{edges[k]:g}"
  return f"[{lo},{hi}){unit}"


def hn_class_names(config: ml_collections.ConfigDict | None = None) -> list[str]:
  """One name per HN class, e.g. 'h[0.25,0.5)m a[60,120)deg', in label order."""
  p = HNParams.from_config(config)
  return [
      f"h{_range_name(p.height_edges, h, 'm')} a{_range_name(p.angle_edges, a, 'deg')}"
      for h in range(p.num_height_bins)
      for a in range(p.num_angle_bins)
  ]


def _bin(values: jax.Array, edges: tuple[float, ...]) -> jax.Array:
  """Bin k of each value: edges[k - 1] <= v < edges[k] (k = 0 below the first edge)."""
  if not edges:
    return jnp.zeros(values.shape, jnp.int32)
  return jnp.sum(values[..., None] >= jnp.asarray(edges, values.dtype), axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames="params")
def _hn_labels(
    depth: jax.Array, intrinsics: jax.Array, params: HNParams
) -> tuple[jax.Array, dict[str, jax.Array]]:
  points, valid = geometry.backproject(depth, intrinsics)
  normal_kwargs = dict(
      depth_edge_threshold=params.depth_edge_threshold,
      min_points=params.min_points,
      min_planarity=params.min_planarity,
  )
  normals, normal_valid = geometry.surface_normals(
      points, valid, radius=params.normal_radius, **normal_kwargs
  )
  if params.gravity_normal_radius and params.gravity_normal_radius != params.normal_radius:
    g_normals, g_valid = geometry.surface_normals(
        points, valid, radius=params.gravity_normal_radius, **normal_kwargs
    )
  else:
    g_normals, g_valid = normals, normal_valid
  up = gravity_lib.estimate_gravity(
      g_normals,
      g_valid,
      angle_thresholds=params.gravity_angle_thresholds,
      iterations=params.gravity_iterations,
      prior_weight=params.gravity_prior_weight,
  )
  floor = gravity_lib.floor_level(
      points,
      valid,
      up,
      percentile=params.floor_percentile,
      min_camera_height=params.min_camera_height,
      fallback_camera_height=params.fallback_camera_height,
  )
  heights = jnp.einsum("bhwc,bc->bhw", points, up) - floor[:, None, None]
  heights = jnp.where(valid, heights, 0.0)
  angles = gravity_lib.normal_gravity_angle(normals, up)
  label_valid = valid & normal_valid
  ignore = jnp.int32(params.ignore_index)
  height_bins = jnp.where(label_valid, _bin(heights, params.height_edges), ignore)
  angle_bins = jnp.where(label_valid, _bin(angles, params.angle_edges), ignore)
  labels = jnp.where(label_valid, height_bins * params.num_angle_bins + angle_bins, ignore)
  aux = dict(
      gravity=up,
      floor=floor,
      points=points,
      heights=heights,
      normals=normals,
      angles=jnp.where(label_valid, angles, 0.0),
      height_bins=height_bins,
      angle_bins=angle_bins,
      valid=label_valid,
      depth_valid=valid,
  )
  return labels, aux


def hn_labels(
    depth: jax.Array,
    intrinsics: jax.Array,
    config: ml_collections.ConfigDict | HNParams | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """HN labels of a batch of depth maps (see the module docstring for every choice).

  Jitted per config (the config's values are static); it can also be called inside a caller's
  jit, e.g. `jax.jit(lambda d, k: hn_labels(d, k, config))`.

  Args:
    depth: float [B, H, W] z-depth in metres, 0 (or non-finite) = no measurement.
    intrinsics: float [B, 3, 3] K or [B, 4] (fx, fy, cx, cy) of the same pixel grid (after any
      crop / scale / flip: use the intrinsics `jaxseg.data.transforms` returns).
    config: `default_hn_config()` or a subset of its fields (or an `HNParams`); None = defaults.

  Returns:
    labels: int32 [B, H, W], height_bin * num_angle_bins + angle_bin, or ignore_index where the
      depth or the normal is missing.
    aux: dict of
      gravity      float32 [B, 3] unit up vector (camera frame),
      floor        float32 [B] floor level along gravity (-camera height above the floor),
      points       float32 [B, H, W, 3] back-projected points (0 where invalid),
      heights      float32 [B, H, W] metres above the floor (0 where the depth is invalid),
      normals      float32 [B, H, W, 3] unit normals facing the camera (0 where invalid),
      angles       float32 [B, H, W] degrees between normal and up (0 where invalid),
      height_bins, angle_bins  int32 [B, H, W] (ignore_index where invalid),
      valid        bool [B, H, W] pixels with a label,
      depth_valid  bool [B, H, W] pixels with a depth measurement.
  """
  params = config if isinstance(config, HNParams) else HNParams.from_config(config)
  chex.assert_rank(depth, 3)
  chex.assert_rank(intrinsics, 2 if jnp.shape(intrinsics)[-1:] == (4,) else 3)
  return _hn_labels(jnp.asarray(depth, jnp.float32), jnp.asarray(intrinsics, jnp.float32), params)
