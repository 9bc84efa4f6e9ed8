"""Shape silhouettes and surface textures of the synthetic scenes, as functions of object-local coordinates.

Coordinates are object-local and radius-normalised: `u` points right and `v` points down (image convention),
and the object's bounding circle is the unit circle. `u` and `v` are float arrays of one shape (usually the
[h, w] pixel window around an object). A signed distance is negative inside the shape and is in radius units:
multiply by the radius in pixels to get pixels.
"""
from __future__ import annotations

import numpy as np

# One shape family per class, cycled when there are more classes than families (classes that share a
# family then differ in texture and hue; see synthetic.class_appearance).
SHAPES = ("disc", "square", "triangle", "ring", "cross", "star", "hexagon", "ellipse", "crescent",
          "semicircle")
TEXTURES = ("solid", "stripes", "dots", "checker", "rings")


def _regular_polygon(sides: int, radius: float, inner_radius: float | None = None) -> np.ndarray:
  """Vertices [n, 2] as (u, v) of a regular polygon (or a star when inner_radius is set), apex up."""
  if inner_radius is None:
    angles = -np.pi / 2 + 2 * np.pi * np.arange(sides) / sides
    radii = np.full(sides, radius)
  else:
    angles = -np.pi / 2 + np.pi * np.arange(2 * sides) / sides
    radii = np.where(np.arange(2 * sides) % 2 == 0, radius, inner_radius)
  return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


_TRIANGLE = _regular_polygon(3, 1.05)
_HEXAGON = _regular_polygon(6, 1.0)
_STAR = _regular_polygon(5, 1.0, inner_radius=0.45)


def polygon_sdf(u: np.ndarray, v: np.ndarray, vertices: np.ndarray) -> np.ndarray:
  """Signed distance to a simple (possibly non-convex) polygon with vertices [n, 2] as (u, v)."""
  nearest_sq = np.full(np.broadcast(u, v).shape, np.inf)
  inside = np.zeros(nearest_sq.shape, dtype=bool)
  for i in range(len(vertices)):
    (u0, v0), (u1, v1) = vertices[i], vertices[i - 1]
    eu, ev = u1 - u0, v1 - v0
    wu, wv = u - u0, v - v0
    t = np.clip((wu * eu + wv * ev) / (eu * eu + ev * ev), 0.0, 1.0)
    nearest_sq = np.minimum(nearest_sq, (wu - eu * t) ** 2 + (wv - ev * t) ** 2)
    if ev != 0.0:  # Even-odd rule: count edges crossed by the ray from the point towards +u.
      crosses = ((v0 > v) != (v1 > v)) & (u < u0 + (v - v0) * eu / ev)
      inside ^= crosses
  return np.where(inside, -1.0, 1.0) * np.sqrt(nearest_sq)


def _box_sdf(u: np.ndarray, v: np.ndarray, half_u: float, half_v: float) -> np.ndarray:
  qu, qv = np.abs(u) - half_u, np.abs(v) - half_v
  return np.hypot(np.maximum(qu, 0.0), np.maximum(qv, 0.0)) + np.minimum(np.maximum(qu, qv), 0.0)


def shape_sdf(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Signed distance (radius units) of the named shape family at local coordinates (u, v)."""
  radius = np.hypot(u, v)
  if shape == "disc":
    return radius - 0.95
  if shape == "square":
    return _box_sdf(u, v, 0.72, 0.72)
  if shape == "triangle":
    return polygon_sdf(u, v, _TRIANGLE)
  if shape == "ring":
    return np.abs(radius - 0.7) - 0.28
  if shape == "cross":
    return np.minimum(_box_sdf(u, v, 0.98, 0.32), _box_sdf(u, v, 0.32, 0.98))
  if shape == "star":
    return polygon_sdf(u, v, _STAR)
  if shape == "hexagon":
    return polygon_sdf(u, v, _HEXAGON)
  if shape == "ellipse":
    # Not an exact distance, but exact on the axes and close enough for 1-pixel anti-aliasing.
    return (np.hypot(u / 1.0, v / 0.55) - 1.0) * 0.55
  if shape == "crescent":
    return np.maximum(radius - 0.95, 0.78 - np.hypot(u - 0.48, v))
  if shape == "semicircle":
    # Upper half of a disc, shifted down so the silhouette is centred in the bounding circle.
    return np.maximum(np.hypot(u, v - 0.4) - 1.0, v - 0.4)
  raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _sharpen(wave: np.ndarray) -> np.ndarray:
  """Maps a [-1, 1] wave to [0, 1] with steep (but not aliasing-hard) transitions."""
  return np.clip(0.5 + 1.2 * wave, 0.0, 1.0)


def texture_weight(texture: str, u: np.ndarray, v: np.ndarray, frequency: float,
                   phase: tuple[float, float]) -> np.ndarray:
  """Weight in [0, 1] of the second (pattern) colour at local coordinates (u, v).

  frequency: pattern cycles per unit radius; phase: (phase_u, phase_v) in cycles, so that instances of a
  class do not all show the pattern at the same offset.
  """
  pu, pv = frequency * u + phase[0], frequency * v + phase[1]
  if texture == "solid":
    return np.zeros(np.broadcast(u, v).shape)
  if texture == "stripes":
    return _sharpen(np.sin(2 * np.pi * pu))
  if texture == "dots":
    du, dv = pu - np.round(pu), pv - np.round(pv)
    return np.clip(0.5 + 8.0 * (0.27 - np.hypot(du, dv)), 0.0, 1.0)
  if texture == "checker":
    return _sharpen(2.0 * np.sin(2 * np.pi * pu) * np.sin(2 * np.pi * pv))
  if texture == "rings":
    return _sharpen(np.sin(2 * np.pi * (frequency * np.hypot(u, v) + phase[0])))
  raise ValueError(f"unknown texture {texture!r}; expected one of {TEXTURES}")
