"""What the objects of the synthetic scenes look like: per-class appearance, shape silhouettes, textures.

Each of K foreground classes alone fixes its objects' appearance (`class_appearance`): a shape family (disc,
square, triangle, ring, cross, star, hexagon, ellipse, crescent, semicircle), a mean hue (K hues evenly
spaced, small jitter), a saturation and value, a texture (solid, stripes, dots, checker, rings) at a
class-specific frequency, and a class-specific size range. Classes beyond the 10 shape families reuse a shape
with another texture and an opposite hue, so up to MAX_CLASSES = 50 classes stay distinct.

Silhouettes (`shape_sdf`) and textures (`texture_weight`) are functions of object-local, radius-normalised
coordinates: `u` points right and `v` points down (image convention), and the object's bounding circle is the
unit circle. `u` and `v` are float arrays of one shape (usually the [h, w] pixel window around an object). A
signed distance is negative inside the shape and is in radius units: multiply by the radius in pixels to get
pixels.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import numpy as np

# One shape family per class, cycled when there are more classes than families (classes that share a
# family then differ in texture and hue; see class_appearance).
SHAPES = (
    "disc",
    "square",
    "triangle",
    "ring",
    "cross",
    "star",
    "hexagon",
    "ellipse",
    "crescent",
    "semicircle",
)
TEXTURES = ("solid", "stripes", "dots", "checker", "rings")
MAX_CLASSES = len(SHAPES) * len(TEXTURES)  # Every class gets its own (shape, texture) pair.


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


def texture_weight(
    texture: str, u: np.ndarray, v: np.ndarray, frequency: float, phase: tuple[float, float]
) -> np.ndarray:
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


# ----------------------------------------------------------------------------------------------------------
# Classes.
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ClassAppearance:
  """What every object of one class looks like (before per-object jitter)."""

  shape: str  # one of SHAPES
  texture: str  # one of TEXTURES
  hue: float  # mean hue in [0, 1)
  hue_jitter: float  # objects draw their hue in hue +- hue_jitter
  saturation: float
  value: float
  light_pattern: bool  # pattern colour lighter (True) or darker (False) than the base colour
  texture_frequency: float  # pattern cycles per unit (bounding) radius
  radius_range: tuple[float, float]  # bounding radius as a fraction of min(height, width)


def _frac(x: float) -> float:
  return x - math.floor(x)


def check_num_classes(num_classes: Any) -> int:
  """`num_classes` as an int; ValueError unless it is an integer in [1, MAX_CLASSES]."""
  if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
    raise ValueError(f"num_classes must be an integer, got {num_classes!r}")
  if not 1 <= num_classes <= MAX_CLASSES:
    raise ValueError(f"num_classes must be in [1, {MAX_CLASSES}], got {num_classes}")
  return int(num_classes)


def class_appearance(class_id: int, num_classes: int) -> ClassAppearance:
  """Appearance of foreground class `class_id` (1..num_classes) in a K-class dataset."""
  num_classes = check_num_classes(num_classes)
  if not 1 <= class_id <= num_classes:
    raise ValueError(f"class_id must be in [1, {num_classes}], got {class_id}")
  k = class_id - 1
  family = k // len(SHAPES)  # > 0 only when classes outnumber shape families.
  mean_radius = 0.13 + 0.08 * _frac(0.618034 * k + 0.3)
  return ClassAppearance(
      shape=SHAPES[k % len(SHAPES)],
      # (k + 2 * family) % 5 gives classes that share a shape different textures.
      texture=TEXTURES[(k + 2 * family) % len(TEXTURES)],
      hue=k / num_classes,
      hue_jitter=min(0.04, 0.2 / num_classes),
      saturation=0.6 + 0.3 * _frac(0.381966 * k + 0.2),
      value=0.65 + 0.28 * _frac(0.618034 * k + 0.5),
      light_pattern=k % 2 == 1,
      texture_frequency=1.1 + 0.9 * _frac(0.754878 * k + 0.1),
      radius_range=(0.8 * mean_radius, 1.2 * mean_radius),
  )


def class_names(num_classes: int) -> list[str]:
  """['background', name of class 1, ..., name of class K]: the shape, plus the texture beyond 10 classes."""
  num_classes = check_num_classes(num_classes)
  names = ["background"]
  for class_id in range(1, num_classes + 1):
    appearance = class_appearance(class_id, num_classes)
    names.append(
        appearance.shape if class_id <= len(SHAPES) else f"{appearance.shape}_{appearance.texture}"
    )
  return names
