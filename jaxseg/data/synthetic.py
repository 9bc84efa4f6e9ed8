"""Embedded synthetic segmentation data: random-access scenes generated from (seed, index), no files.

Scene model
  A pinhole camera (height above the floor, downward pitch, vertical field of view) looks at a floor that meets
  a back wall (`Camera`). The background is the floor and the wall in two muted colours, with a smooth gradient,
  a low-contrast texture and sensor noise (`Background`). On the floor stand 1..N flat objects (`ObjectSpec`).
  Each object belongs to one of K foreground classes, and the class alone fixes its appearance
  (`class_appearance`): a shape family (disc, square, triangle, ring, cross, star, hexagon, ellipse, crescent,
  semicircle), a mean hue (K hues evenly spaced, small jitter), a saturation and value, a texture (solid,
  stripes, dots, checker, rings) at a class-specific frequency, and a class-specific size range. Classes beyond
  the 10 shape families reuse a shape with another texture and an opposite hue, so up to 50 classes stay
  distinct. Classes are drawn independently and uniformly, so no class predicts another; the class is visible
  in the object pixels themselves, never in the context.
  An object stands on the floor where the bottom of its bounding circle touches it, so its depth follows from
  its image position. Objects are painted far to near (painter's order equals depth order), so nearer objects
  occlude farther ones. Edges are anti-aliased in the image; the masks hold a pixel when its centre is inside.

Sample layout (`SyntheticScenes[i]`)
  image      uint8 [H, W, 3]  RGB.
  mask       uint8 [H, W]     0 = background, 1..K = class (VOC convention; 255 = ignore, never produced).
  instances  int32 [H, W]     0 = background, 1 + (position of the object in `scene.objects`) on its visible
                              pixels; an object hidden completely leaves its id unused.
  labels     float32 [K]      multi-hot, labels[c - 1] = 1 iff class c has >= min_visible_pixels mask pixels.
  index      int64 scalar     the sample index.
  depth      float32 [H, W]   metres along the optical axis (only with with_depth=True).
  intrinsics float32 [3, 3]   pinhole K for pixel-index coordinates (only with with_depth=True).
  `SyntheticVideos[i]` holds frames [T, H, W, 3], masks [T, H, W], instances [T, H, W] (ids stable over time),
  labels [K] (over the clip), frame_labels [T, K], times [T], index, and depths [T, H, W] / intrinsics.

Determinism: sample i is a function of (seed, i, constructor arguments) only; its generator is
`np.random.default_rng([seed, i])`. Frame 0 of video i equals image i for the same arguments.

Extension points
  Sampling and rendering are separate: `sample_scene(rng, ...) -> Scene` draws a small frozen dataclass of
  object and background parameters; `render_scene(scene, height=, width=, time=, style=) -> dict` rasterises it
  with numpy coordinate grids (work is confined to each object's bounding box).
  - Domain style: `Style` (colour matrix, contrast, gamma, blur, noise, background texture) is applied at render
    time, so a style changes the image only, never geometry, masks or labels. Named styles are in `STYLES`
    ('default', 'shifted', 'foggy'); add one there or pass a `Style`.
  - Depth: `render_scene` always returns `depth` and `intrinsics`; `Camera` holds the geometry.
  - Video: each object has a velocity and an angular velocity; `render_scene(..., time=t)` moves objects
    (reflecting at the borders of the floor) and re-sorts them by depth, so occlusions change over time.
  - New shapes or textures: `synthetic_shapes.shape_sdf` / `texture_weight`.
"""
from __future__ import annotations

import colorsys
import dataclasses
import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxseg.data.synthetic_shapes import SHAPES, TEXTURES, shape_sdf, texture_weight

MAX_CLASSES = len(SHAPES) * len(TEXTURES)  # Every class gets its own (shape, texture) pair.
MIN_IMAGE_SIZE = 16
MAX_OBJECTS = 64

# Where objects may stand, as fractions of the image: the bottom of an object's bounding circle (its foot)
# stays between just below the floor line and just below the image, and its centre stays this far from the
# left and right borders.
_FOOT_MARGIN = 0.06
_FOOT_MAX = 1.05
_X_MARGIN = 0.08
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


# ----------------------------------------------------------------------------------------------------------
# Classes.
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ClassAppearance:
  """What every object of one class looks like (before per-object jitter)."""
  shape: str                         # one of synthetic_shapes.SHAPES
  texture: str                       # one of synthetic_shapes.TEXTURES
  hue: float                         # mean hue in [0, 1)
  hue_jitter: float                  # objects draw their hue in hue +- hue_jitter
  saturation: float
  value: float
  light_pattern: bool                # pattern colour lighter (True) or darker (False) than the base colour
  texture_frequency: float           # pattern cycles per unit (bounding) radius
  radius_range: tuple[float, float]  # bounding radius as a fraction of min(height, width)


def _frac(x: float) -> float:
  return x - math.floor(x)


def _check_num_classes(num_classes: Any) -> int:
  if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
    raise ValueError(f"num_classes must be an integer, got {num_classes!r}")
  if not 1 <= num_classes <= MAX_CLASSES:
    raise ValueError(f"num_classes must be in [1, {MAX_CLASSES}], got {num_classes}")
  return int(num_classes)


def class_appearance(class_id: int, num_classes: int) -> ClassAppearance:
  """Appearance of foreground class `class_id` (1..num_classes) in a K-class dataset."""
  num_classes = _check_num_classes(num_classes)
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
  num_classes = _check_num_classes(num_classes)
  names = ["background"]
  for class_id in range(1, num_classes + 1):
    appearance = class_appearance(class_id, num_classes)
    names.append(appearance.shape if class_id <= len(SHAPES)
                 else f"{appearance.shape}_{appearance.texture}")
  return names


# ----------------------------------------------------------------------------------------------------------
# Scene description.
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Camera:
  """Pinhole camera above a floor that meets a back wall (no roll, no yaw)."""
  height: float          # metres above the floor
  pitch: float           # radians, looking down
  vertical_fov: float    # radians
  wall_distance: float   # metres, horizontal distance to the back wall

  def intrinsics(self, height: int, width: int) -> np.ndarray:
    """float32 [3, 3] K for pixel-index coordinates (pixel (r, c) has its centre at u = c, v = r)."""
    focal = 0.5 * height / math.tan(0.5 * self.vertical_fov)
    return np.array([[focal, 0.0, 0.5 * (width - 1)],
                     [0.0, focal, 0.5 * (height - 1)],
                     [0.0, 0.0, 1.0]], dtype=np.float32)

  def _ray_slope(self, row_frac: np.ndarray | float) -> np.ndarray | float:
    # (v - cy) / fy for a row given as a fraction of the image height (0 = top edge, 1 = bottom edge).
    return (np.asarray(row_frac) - 0.5) * 2.0 * math.tan(0.5 * self.vertical_fov)

  def floor_depth(self, row_frac: np.ndarray | float) -> np.ndarray:
    """Depth (metres) where the rays of these rows meet the floor; inf above the horizon."""
    down = self._ray_slope(row_frac) * math.cos(self.pitch) + math.sin(self.pitch)
    with np.errstate(divide="ignore"):
      return np.where(down > 1e-9, self.height / np.maximum(down, 1e-9), np.inf)

  def wall_depth(self, row_frac: np.ndarray | float) -> np.ndarray:
    """Depth (metres) where the rays of these rows meet the back wall."""
    forward = math.cos(self.pitch) - self._ray_slope(row_frac) * math.sin(self.pitch)
    return np.where(forward > 1e-9, self.wall_distance / np.maximum(forward, 1e-9), np.inf)

  def floor_line(self) -> float:
    """Row (fraction of the image height) where the floor meets the wall."""
    slope = math.tan(math.atan2(self.height, self.wall_distance) - self.pitch)
    return 0.5 + 0.5 * slope / math.tan(0.5 * self.vertical_fov)


@dataclasses.dataclass(frozen=True)
class Background:
  """Floor and wall colours plus the parameters of gradient, texture and noise."""
  floor_colour: tuple[float, float, float]  # RGB in [0, 1]
  wall_colour: tuple[float, float, float]
  gradient_angle: float                     # radians
  gradient_strength: float                  # relative brightness change across the image
  # Plane waves (cycles per image, angle, phase in cycles, relative amplitude) of the 'waves' texture.
  waves: tuple[tuple[float, float, float, float], ...]
  noise_seed: int                           # seeds the 'blocks' texture and the sensor noise


@dataclasses.dataclass(frozen=True)
class ObjectSpec:
  """One object. Positions are fractions of the image, the radius a fraction of min(height, width).

  The depth is not stored: it follows from where the object touches the floor (`object_pose`).
  """
  class_id: int                                # 1..K
  shape: str
  texture: str
  centre: tuple[float, float]                  # (y, x) at time 0
  radius: float                                # bounding radius
  rotation: float                              # radians at time 0
  velocity: tuple[float, float]                # (vy, vx) per unit time
  angular_velocity: float                      # radians per unit time
  colour: tuple[float, float, float]           # base RGB in [0, 1]
  pattern_colour: tuple[float, float, float]   # RGB of the texture pattern
  texture_frequency: float                     # cycles per unit radius
  texture_phase: tuple[float, float]           # cycles, along local u and v
  shading: tuple[float, float]                 # (angle, strength) of a brightness ramp across the object


@dataclasses.dataclass(frozen=True)
class Scene:
  objects: tuple[ObjectSpec, ...]
  background: Background
  camera: Camera
  image_size: tuple[int, int]  # (height, width) the scene was sampled for; render at this aspect ratio
  num_classes: int


@dataclasses.dataclass(frozen=True)
class Pose:
  """Where an object is at one time, in pixels of one rendering."""
  centre: tuple[float, float]  # (y, x); pixel (r, c) covers [r, r + 1) x [c, c + 1)
  radius: float
  rotation: float
  depth: float                 # metres


def _hsv(hue: float, saturation: float, value: float) -> tuple[float, float, float]:
  return tuple(float(c) for c in colorsys.hsv_to_rgb(hue % 1.0, saturation, value))


def _foot_range(camera: Camera) -> tuple[float, float]:
  return camera.floor_line() + _FOOT_MARGIN, _FOOT_MAX


def _sample_camera(rng: np.random.Generator) -> Camera:
  # These ranges put the floor line between about 10% and 38% of the image height.
  return Camera(height=rng.uniform(1.3, 1.6), pitch=math.radians(rng.uniform(22.0, 30.0)),
                vertical_fov=math.radians(rng.uniform(55.0, 65.0)), wall_distance=rng.uniform(7.0, 10.0))


def _sample_background(rng: np.random.Generator) -> Background:
  # Low saturation keeps the background from taking on any class colour.
  floor = _hsv(rng.uniform(), rng.uniform(0.05, 0.3), rng.uniform(0.35, 0.75))
  wall = _hsv(rng.uniform(), rng.uniform(0.05, 0.25), rng.uniform(0.45, 0.85))
  waves = tuple((rng.uniform(0.5, 3.0), rng.uniform(0.0, 2 * np.pi), rng.uniform(), rng.uniform(0.02, 0.06))
                for _ in range(3))
  return Background(floor_colour=floor, wall_colour=wall, gradient_angle=rng.uniform(0.0, 2 * np.pi),
                    gradient_strength=rng.uniform(0.0, 0.25), waves=waves,
                    noise_seed=int(rng.integers(0, 2**31)))


def _sample_object(rng: np.random.Generator, class_id: int, num_classes: int, camera: Camera,
                   image_size: tuple[int, int], object_scale: float = 1.0) -> ObjectSpec:
  height, width = image_size
  look = class_appearance(class_id, num_classes)
  radius = rng.uniform(*look.radius_range) * object_scale
  foot = rng.uniform(*_foot_range(camera))
  centre = (foot - radius * min(height, width) / height, rng.uniform(_X_MARGIN, 1.0 - _X_MARGIN))
  speed, heading = rng.uniform(0.01, 0.04), rng.uniform(0.0, 2 * np.pi)
  hue = look.hue + rng.uniform(-look.hue_jitter, look.hue_jitter)
  saturation = float(np.clip(look.saturation + rng.uniform(-0.08, 0.08), 0.0, 1.0))
  value = float(np.clip(look.value + rng.uniform(-0.08, 0.08), 0.0, 1.0))
  colour = _hsv(hue, saturation, value)
  if look.light_pattern:
    pattern = tuple(0.35 * c + 0.65 for c in colour)
  else:
    pattern = _hsv(hue, 0.85 * saturation, 0.4 * value)
  return ObjectSpec(
      class_id=int(class_id), shape=look.shape, texture=look.texture, centre=centre, radius=radius,
      rotation=rng.uniform(0.0, 2 * np.pi), velocity=(speed * math.sin(heading), speed * math.cos(heading)),
      angular_velocity=rng.uniform(-0.15, 0.15), colour=colour, pattern_colour=pattern,
      texture_frequency=look.texture_frequency, texture_phase=(rng.uniform(), rng.uniform()),
      shading=(rng.uniform(0.0, 2 * np.pi), rng.uniform(0.0, 0.15)))


def sample_scene(rng: np.random.Generator, *, num_classes: int, image_size: tuple[int, int],
                 min_objects: int = 1, max_objects: int = 4, object_scale: float = 1.0) -> Scene:
  """Draws a scene: camera, background and min_objects..max_objects objects of uniform random classes.

  `object_scale` multiplies every object's radius (1.0: objects cover ~4-14 % of the image each; 1.6 gives
  VOC-like sizes of ~10-35 %). The random draws are the same for any scale.
  """
  camera = _sample_camera(rng)
  background = _sample_background(rng)
  num_objects = int(rng.integers(min_objects, max_objects + 1))
  class_ids = rng.integers(1, num_classes + 1, size=num_objects)
  objects = tuple(_sample_object(rng, int(c), num_classes, camera, image_size, object_scale)
                  for c in class_ids)
  return Scene(objects=objects, background=background, camera=camera, image_size=tuple(image_size),
               num_classes=num_classes)


def _reflect(x: float, low: float, high: float) -> float:
  """Folds x into [low, high] as a point bouncing between two walls."""
  span = high - low
  if span <= 0:
    return low
  q = (x - low) % (2 * span)
  return low + (2 * span - q if q > span else q)


def object_pose(obj: ObjectSpec, camera: Camera, *, height: int, width: int, time: float = 0.0) -> Pose:
  """Pose of `obj` at `time` in an image of height x width pixels."""
  radius_y = obj.radius * min(height, width) / height  # radius as a fraction of the height
  foot_low, foot_high = _foot_range(camera)
  y = _reflect(obj.centre[0] + obj.velocity[0] * time, foot_low - radius_y, foot_high - radius_y)
  x = _reflect(obj.centre[1] + obj.velocity[1] * time, _X_MARGIN, 1.0 - _X_MARGIN)
  depth = float(camera.floor_depth(y + radius_y))
  return Pose(centre=(y * height, x * width), radius=obj.radius * min(height, width),
              rotation=obj.rotation + obj.angular_velocity * time, depth=depth)


# ----------------------------------------------------------------------------------------------------------
# Styles.
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Style:
  """Image-only appearance of a domain, applied at render time (geometry and labels are untouched)."""
  hue_rotation: float = 0.0                        # degrees, rotation about the grey axis
  saturation: float = 1.0                          # 0 = grey, 1 = unchanged
  gain: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per-channel colour cast
  contrast: float = 1.0                            # about mid-grey
  brightness: float = 0.0                          # added after contrast
  gamma: float = 1.0
  blur_sigma: float = 0.0                          # pixels (Gaussian)
  noise_std: float = 0.02                          # sensor noise, in [0, 1] intensity units
  background_texture: str = "waves"                # 'waves' (smooth) | 'blocks' (coarse tinted tiles)


STYLES: dict[str, Style] = {
    "default": Style(),
    # A second camera/domain: warm cast, washed-out colours, lower contrast, soft focus, noisier, tiled walls.
    "shifted": Style(hue_rotation=15.0, saturation=0.7, gain=(1.08, 0.97, 0.82), contrast=0.75,
                     brightness=0.04, gamma=1.25, blur_sigma=0.8, noise_std=0.05, background_texture="blocks"),
    # Haze: low contrast, bright, blurry.
    "foggy": Style(saturation=0.7, contrast=0.6, brightness=0.15, blur_sigma=1.0, noise_std=0.03),
}
_BACKGROUND_TEXTURES = ("waves", "blocks")


def get_style(style: str | Style) -> Style:
  """A `Style` from its name in STYLES (or the `Style` itself)."""
  if isinstance(style, Style):
    if style.background_texture not in _BACKGROUND_TEXTURES:
      raise ValueError(f"Style.background_texture must be one of {_BACKGROUND_TEXTURES}, "
                       f"got {style.background_texture!r}")
    return style
  if style not in STYLES:
    raise ValueError(f"unknown style {style!r}; expected one of {sorted(STYLES)} or a Style")
  return STYLES[style]


def _colour_matrix(style: Style) -> np.ndarray:
  """float32 [3, 3] M so that rgb_out = M @ rgb: desaturate, rotate hue about grey, then colour cast."""
  s = style.saturation
  desaturate = s * np.eye(3) + (1.0 - s) * np.outer(np.ones(3), _LUMA)
  angle = math.radians(style.hue_rotation)
  axis = np.ones(3) / math.sqrt(3.0)
  cross = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
  rotate = math.cos(angle) * np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * np.outer(axis, axis)
  return (np.diag(style.gain) @ rotate @ desaturate).astype(np.float32)


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
  """Separable Gaussian blur of float [H, W, C] with edge padding."""
  radius = max(1, math.ceil(3.0 * sigma))
  taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  taps = (taps / taps.sum()).astype(np.float32)
  height, width = image.shape[:2]
  padded = np.pad(image, ((radius, radius), (0, 0), (0, 0)), mode="edge")
  image = sum(t * padded[i:i + height] for i, t in enumerate(taps))
  padded = np.pad(image, ((0, 0), (radius, radius), (0, 0)), mode="edge")
  return sum(t * padded[:, i:i + width] for i, t in enumerate(taps))


def _time_key(time: float) -> int:
  # The bit pattern of the float: distinct times get independent noise, the same time the same noise.
  return int(np.float64(time).view(np.uint64))


# ----------------------------------------------------------------------------------------------------------
# Rendering.
# ----------------------------------------------------------------------------------------------------------


def _render_background(background: Background, camera: Camera, height: int, width: int,
                       style: Style) -> tuple[np.ndarray, np.ndarray]:
  """(rgb float32 [H, W, 3] in about [0, 1], depth float32 [H, W] in metres)."""
  rows = (np.arange(height, dtype=np.float32) + 0.5) / height
  cols = (np.arange(width, dtype=np.float32) + 0.5) / width
  floor, wall = camera.floor_depth(rows), camera.wall_depth(rows)
  on_wall = wall < floor
  depth = np.broadcast_to(np.minimum(floor, wall)[:, None], (height, width)).astype(np.float32)
  base = np.where(on_wall[:, None], np.float32(background.wall_colour),
                  np.float32(background.floor_colour)).astype(np.float32)  # [H, 3]

  y, x = rows[:, None] - 0.5, cols[None, :] - 0.5
  angle = background.gradient_angle
  brightness = 1.0 + background.gradient_strength * (x * math.cos(angle) + y * math.sin(angle))  # [H, W]
  if style.background_texture == "waves":
    for cycles, wave_angle, phase, amplitude in background.waves:
      along = x * math.cos(wave_angle) + y * math.sin(wave_angle)
      brightness = brightness + amplitude * np.sin(2 * np.pi * (cycles * along + phase))
    rgb = base[:, None, :] * brightness[..., None]
  else:  # 'blocks': coarse tiles with a random tint each, about 6 across the shorter side.
    rng = np.random.default_rng([background.noise_seed, 0])
    tiles_y = max(1, round(6 * height / min(height, width)))
    tiles_x = max(1, round(6 * width / min(height, width)))
    tints = rng.uniform(-0.12, 0.12, size=(tiles_y, tiles_x, 3)).astype(np.float32)
    tile = tints[(rows * tiles_y).astype(np.int64)][:, (cols * tiles_x).astype(np.int64)]
    rgb = base[:, None, :] * (brightness[..., None] + tile)
  return rgb.astype(np.float32), depth


def _paint_object(obj: ObjectSpec, pose: Pose, instance_id: int, image: np.ndarray, mask: np.ndarray,
                  instances: np.ndarray, depth: np.ndarray) -> None:
  """Paints one object over the arrays, in place, inside its bounding box only."""
  height, width = mask.shape
  cy, cx = pose.centre
  reach = 1.15 * pose.radius + 1.0  # Bounding circle of every shape, plus the anti-aliasing fringe.
  y0, y1 = max(0, math.floor(cy - reach)), min(height, math.ceil(cy + reach))
  x0, x1 = max(0, math.floor(cx - reach)), min(width, math.ceil(cx + reach))
  if y0 >= y1 or x0 >= x1:
    return
  dy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - np.float32(cy)
  dx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - np.float32(cx)
  cos, sin = np.float32(math.cos(pose.rotation)), np.float32(math.sin(pose.rotation))
  scale = np.float32(1.0 / pose.radius)
  u = (cos * dx + sin * dy) * scale
  v = (cos * dy - sin * dx) * scale

  distance = shape_sdf(obj.shape, u, v) * pose.radius  # pixels, negative inside
  alpha = np.clip(0.5 - distance, 0.0, 1.0).astype(np.float32)
  inside = distance <= 0.0
  pattern = texture_weight(obj.texture, u, v, obj.texture_frequency, obj.texture_phase).astype(np.float32)
  colour = np.float32(obj.colour) + pattern[..., None] * (np.float32(obj.pattern_colour) - np.float32(obj.colour))
  shade_angle, shade_strength = obj.shading
  colour *= (1.0 + shade_strength * (u * math.cos(shade_angle) + v * math.sin(shade_angle)))[..., None]

  window = image[y0:y1, x0:x1]
  window += alpha[..., None] * (colour - window)
  mask[y0:y1, x0:x1][inside] = obj.class_id
  instances[y0:y1, x0:x1][inside] = instance_id
  depth[y0:y1, x0:x1][inside] = pose.depth


def _finish(image: np.ndarray, style: Style, noise_seed: int, time: float) -> np.ndarray:
  """Style colour transform, blur and sensor noise; float [H, W, 3] -> uint8."""
  if style.saturation != 1.0 or style.hue_rotation != 0.0 or style.gain != (1.0, 1.0, 1.0):
    image = image @ _colour_matrix(style).T
  if style.contrast != 1.0 or style.brightness != 0.0:
    image = (image - 0.5) * style.contrast + 0.5 + style.brightness
  image = np.clip(image, 0.0, 1.0)
  if style.gamma != 1.0:
    image = image ** style.gamma
  if style.blur_sigma > 0:
    image = _gaussian_blur(image, style.blur_sigma)
  if style.noise_std > 0:
    rng = np.random.default_rng([noise_seed, 1, _time_key(time)])
    image = image + style.noise_std * rng.standard_normal(image.shape, dtype=np.float32)
  return np.clip(image * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8)


def render_scene(scene: Scene, *, height: int | None = None, width: int | None = None, time: float = 0.0,
                 style: str | Style = "default") -> dict[str, np.ndarray]:
  """Rasterises `scene` at `time` (objects moved by their velocities).

  Returns image uint8 [H, W, 3], mask uint8 [H, W] (0 background, 1..K class), instances int32 [H, W]
  (0 background, 1 + index into scene.objects), depth float32 [H, W] (metres) and intrinsics float32 [3, 3].
  height/width default to scene.image_size; keep its aspect ratio.
  """
  style = get_style(style)
  height = scene.image_size[0] if height is None else int(height)
  width = scene.image_size[1] if width is None else int(width)
  if min(height, width) < 1:
    raise ValueError(f"render_scene: image size must be positive, got {(height, width)}")
  image, depth = _render_background(scene.background, scene.camera, height, width, style)
  mask = np.zeros((height, width), dtype=np.uint8)
  instances = np.zeros((height, width), dtype=np.int32)
  poses = [object_pose(obj, scene.camera, height=height, width=width, time=time) for obj in scene.objects]
  # Painter's order: far to near (ties by position in the scene), so nearer objects occlude farther ones.
  for i in sorted(range(len(poses)), key=lambda i: (-poses[i].depth, i)):
    _paint_object(scene.objects[i], poses[i], i + 1, image, mask, instances, depth)
  return dict(image=_finish(image, style, scene.background.noise_seed, time), mask=mask,
              instances=instances, depth=depth, intrinsics=scene.camera.intrinsics(height, width))


def image_labels(mask: np.ndarray, num_classes: int, min_visible_pixels: int) -> np.ndarray:
  """float32 [K] multi-hot: entry c - 1 is 1 iff class c covers >= min_visible_pixels pixels of mask [H, W]."""
  counts = np.bincount(mask.ravel(), minlength=num_classes + 1)[1:num_classes + 1]
  return (counts >= min_visible_pixels).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# Datasets.
# ----------------------------------------------------------------------------------------------------------


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise ValueError(f"{name} must be an integer, got {value!r}")
  if value < low or (high is not None and value > high):
    bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
    raise ValueError(f"{name} must be {bounds}, got {value}")
  return int(value)


@dataclasses.dataclass(frozen=True)
class SceneConfig:
  """Validated scene arguments shared by SyntheticScenes and SyntheticVideos."""
  num_classes: int = 6
  image_size: tuple[int, int] = (64, 64)
  seed: int = 0
  min_objects: int = 1
  max_objects: int = 4
  style: str | Style = "default"
  with_depth: bool = False
  min_visible_pixels: int | None = None  # None: 0.4% of the image area (16 pixels at 64x64)
  object_scale: float = 1.0              # multiplies every object radius

  def __post_init__(self):
    set_ = lambda name, value: object.__setattr__(self, name, value)
    set_("num_classes", _check_num_classes(self.num_classes))
    size = self.image_size
    if isinstance(size, np.ndarray):
      size = tuple(size.tolist())
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
      size = (size, size)
    if not isinstance(size, Sequence) or len(size) != 2:
      raise ValueError(f"image_size must be an int or a (height, width) pair, got {self.image_size!r}")
    set_("image_size", (_check_int("image_size[0] (height)", size[0], MIN_IMAGE_SIZE),
                        _check_int("image_size[1] (width)", size[1], MIN_IMAGE_SIZE)))
    set_("seed", _check_int("seed", self.seed, 0))
    set_("min_objects", _check_int("min_objects", self.min_objects, 0, MAX_OBJECTS))
    set_("max_objects", _check_int("max_objects", self.max_objects, max(1, self.min_objects), MAX_OBJECTS))
    get_style(self.style)
    if not isinstance(self.object_scale, numbers.Real) or not 0.1 <= float(self.object_scale) <= 4.0:
      raise ValueError(f"object_scale must be a number in [0.1, 4], got {self.object_scale!r}")
    set_("object_scale", float(self.object_scale))
    if not isinstance(self.with_depth, (bool, np.bool_)):
      raise ValueError(f"with_depth must be a bool, got {self.with_depth!r}")
    height, width = self.image_size
    if self.min_visible_pixels is None:
      set_("min_visible_pixels", max(1, round(0.004 * height * width)))
    else:
      set_("min_visible_pixels",
           _check_int("min_visible_pixels", self.min_visible_pixels, 1, height * width))

  def scene(self, index: int) -> Scene:
    rng = np.random.default_rng([self.seed, index])
    return sample_scene(rng, num_classes=self.num_classes, image_size=self.image_size,
                        min_objects=self.min_objects, max_objects=self.max_objects,
                        object_scale=self.object_scale)


def _check_index(owner: str, index: Any, length: int) -> int:
  if isinstance(index, (bool, np.bool_)) or not isinstance(index, numbers.Integral):
    raise TypeError(f"{owner}: index must be an integer, got {type(index).__name__} {index!r}")
  if not 0 <= index < length:
    raise IndexError(f"{owner}: index {int(index)} out of range for length {length}")
  return int(index)


class _SceneSource:
  """What both synthetic sources share: a `SceneConfig` and its class list."""
  config: "SceneConfig"

  @property
  def num_classes(self) -> int:
    return self.config.num_classes

  @property
  def class_names(self) -> list[str]:
    return class_names(self.config.num_classes)


class SyntheticScenes(_SceneSource):
  """Random-access source of synthetic segmentation samples (see the module docstring for the layout).

  Picklable and cheap to build: a sample is generated on demand from (seed, index). Use it through
  `grain.MapDataset.source(SyntheticScenes(...))`.
  """

  def __init__(self, num_images: int, *, num_classes: int = 6, image_size: int | tuple[int, int] = (64, 64),
               seed: int = 0, min_objects: int = 1, max_objects: int = 4, style: str | Style = "default",
               with_depth: bool = False, min_visible_pixels: int | None = None, object_scale: float = 1.0):
    self.num_images = _check_int("num_images", num_images, 0)
    self.config = SceneConfig(num_classes=num_classes, image_size=image_size, seed=seed,
                              min_objects=min_objects, max_objects=max_objects, style=style,
                              with_depth=with_depth, min_visible_pixels=min_visible_pixels,
                              object_scale=object_scale)

  def __len__(self) -> int:
    return self.num_images

  def __repr__(self) -> str:
    return f"SyntheticScenes(num_images={self.num_images}, config={self.config})"

  def scene(self, index: int) -> Scene:
    """The scene description of sample `index` (e.g. to re-render it in another style)."""
    return self.config.scene(_check_index("SyntheticScenes", index, self.num_images))

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = _check_index("SyntheticScenes", index, self.num_images)
    config = self.config
    rendered = render_scene(config.scene(index), style=config.style)
    sample = dict(image=rendered["image"], mask=rendered["mask"], instances=rendered["instances"],
                  labels=image_labels(rendered["mask"], config.num_classes, config.min_visible_pixels),
                  index=np.int64(index))
    if config.with_depth:
      sample["depth"] = rendered["depth"]
      sample["intrinsics"] = rendered["intrinsics"]
    return sample


class SyntheticVideos(_SceneSource):
  """Random-access source of synthetic clips: objects move, rotate and occlude each other over time.

  A sample holds frames uint8 [T, H, W, 3], masks uint8 [T, H, W], instances int32 [T, H, W] (an object keeps
  its id in every frame), labels float32 [K] (classes visible enough in any frame), frame_labels float32
  [T, K], times float32 [T] (frame t is rendered at t * frame_interval), index int64, and with with_depth
  depths float32 [T, H, W] and intrinsics float32 [3, 3].
  """

  def __init__(self, num_videos: int, *, num_frames: int = 8, frame_interval: float = 1.0,
               num_classes: int = 6, image_size: int | tuple[int, int] = (64, 64), seed: int = 0,
               min_objects: int = 1, max_objects: int = 4, style: str | Style = "default",
               with_depth: bool = False, min_visible_pixels: int | None = None):
    self.num_videos = _check_int("num_videos", num_videos, 0)
    self.num_frames = _check_int("num_frames", num_frames, 1)
    if isinstance(frame_interval, bool) or not isinstance(frame_interval, numbers.Real) or frame_interval <= 0:
      raise ValueError(f"frame_interval must be a positive number, got {frame_interval!r}")
    self.frame_interval = float(frame_interval)
    self.config = SceneConfig(num_classes=num_classes, image_size=image_size, seed=seed,
                              min_objects=min_objects, max_objects=max_objects, style=style,
                              with_depth=with_depth, min_visible_pixels=min_visible_pixels)

  def __len__(self) -> int:
    return self.num_videos

  def __repr__(self) -> str:
    return (f"SyntheticVideos(num_videos={self.num_videos}, num_frames={self.num_frames}, "
            f"frame_interval={self.frame_interval}, config={self.config})")

  def scene(self, index: int) -> Scene:
    return self.config.scene(_check_index("SyntheticVideos", index, self.num_videos))

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = _check_index("SyntheticVideos", index, self.num_videos)
    config = self.config
    scene = config.scene(index)
    times = np.arange(self.num_frames, dtype=np.float32) * np.float32(self.frame_interval)
    frames = [render_scene(scene, time=float(t), style=config.style) for t in times]
    masks = np.stack([f["mask"] for f in frames])
    frame_labels = np.stack([image_labels(m, config.num_classes, config.min_visible_pixels) for m in masks])
    sample = dict(frames=np.stack([f["image"] for f in frames]), masks=masks,
                  instances=np.stack([f["instances"] for f in frames]), labels=frame_labels.max(axis=0),
                  frame_labels=frame_labels, times=times, index=np.int64(index))
    if config.with_depth:
      sample["depths"] = np.stack([f["depth"] for f in frames])
      sample["intrinsics"] = frames[0]["intrinsics"]
    return sample
