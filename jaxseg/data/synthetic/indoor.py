"""Synthetic indoor RGB-D scenes with known geometry: a room with furniture, ray cast in numpy.

`SyntheticIndoorScenes` is a random-access source (like `sources.SyntheticScenes`) of rooms seen
by a tilted pinhole camera, with Kinect-like depth and the true geometry, for testing and
demonstrating depth-derived labels (`jaxseg.depth`: gravity, height, normals, HN labels).

Scene model (world frame: metres, z up, the floor is z = 0)
  * A closed box room [0, Lx] x [0, Ly] x [0, Lz]: floor, four walls and a ceiling, so every
    ray hits something (every pixel has a class and a true depth).
  * Furniture standing on the floor: boxes (yaw-rotated cuboids, "furniture") and vertical
    cylinders ("object"), placed in front of the camera, apart from each other and the camera.
  * The camera stands inside the room at a random height, looks towards the room at a random
    yaw, pitched down and rolled by random angles, so gravity in the camera frame varies.
  * Pixel (r, c) has its centre at (u, v) = (c, r) (`jaxseg.data.transforms` convention);
    fx = fy = focal * W (focal 0.81 by default, NYUv2's Kinect: 518.86 / 640), cx = (W - 1) / 2,
    cy = (H - 1) / 2. The camera frame is x right, y down, z forward (as `jaxseg.depth`).

Rendering: rays of all pixels are intersected with the room (slab exit), each box (slab entry)
and each cylinder (side quadric + top cap) in vectorised numpy; the nearest hit wins.
  * image: per-surface albedo (floor planks or tiles, plain walls and ceiling with a faint
    texture, boxes and cylinders with stripes or bands in their own coordinates), Lambertian
    shading by a directional light from above plus ambient, and sensor noise.
  * depth: z-depth in metres, Kinect-like: axial noise sigma(z) = depth_noise * (0.0012 +
    0.0019 (z - 0.4)^2) m (the form of Nguyen et al. 2012's Kinect v1 model; independent per
    pixel, so harsher than a real sensor's locally correlated noise at full resolution), and
    holes (0) at (a) random dropout blobs, (b) the far side of depth edges plus a shadow band to
    the left of nearer surfaces (the projector-camera baseline), (c) grazing incidence
    (|cos| < 0.1) and (d) beyond a per-scene maximum range (5-8 m). `holes=False` and
    `depth_noise=0` give the true depth.

Sample layout (`SyntheticIndoorScenes[i]`), with each key's kind for `jaxseg.data.transforms`
(`SyntheticIndoorScenes.KINDS`, pass it as `kinds=` so the truth keys transform correctly):
  image          uint8 [H, W, 3]     image
  mask           uint8 [H, W]        mask: 0 floor, 1 wall, 2 furniture (box), 3 object
                                     (cylinder), 4 ceiling (`INDOOR_CLASSES`); never 255.
  depth          float32 [H, W]      depth: metres, 0 = invalid.
  intrinsics     float32 [3, 3]      intrinsics: K.
  index          int64 scalar        other.
  gravity        float32 [3]         other: true unit up vector in the camera frame. It is not
                                     moved by transforms: after a horizontal flip negate its x.
  normals_true   float32 [H, W, 3]   normals: true unit normals (camera frame, facing the camera).
  height_true    float32 [H, W]      map: true height above the floor, metres.
  camera_height, camera_pitch, camera_roll   float32 scalars, other: metres above the floor,
                                     radians (pitch > 0 looks down; roll about the optical axis).

Determinism: sample i is a function of (seed, i, constructor arguments) only; the scene is drawn
from `np.random.default_rng([seed, i])` and the noise from seeds stored in the scene.
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxseg.data.transforms import resample

INDOOR_CLASSES = ("floor", "wall", "furniture", "object", "ceiling")
FLOOR, WALL, FURNITURE, OBJECT, CEILING = range(5)
MIN_IMAGE_SIZE = 16
KINECT_FOCAL = 518.8579 / 640.0  # NYUv2 fx / width

_UP = np.array([0.0, 0.0, 1.0])
_GRAZING_COS = 0.1  # |cos(incidence)| below this: no depth (Kinect loses very oblique surfaces)
_EDGE_STEP = 0.05  # relative depth step that counts as a depth edge for the holes


# ----------------------------------------------------------------------------------------------
# Scene description.
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class IndoorCamera:
  """Pinhole camera in the room: position (world, metres), yaw / pitch / roll (radians)."""

  position: tuple[float, float, float]
  yaw: float  # heading of the optical axis in the floor plane, from the world x axis
  pitch: float  # > 0 looks down
  roll: float  # about the optical axis
  focal: float  # fx = fy = focal * image width

  def rotation(self) -> np.ndarray:
    """float64 [3, 3] camera-to-world rotation; its columns are the camera x, y, z axes."""
    cy, sy = math.cos(self.yaw), math.sin(self.yaw)
    forward = np.array([cy, sy, 0.0])
    right = np.array([sy, -cy, 0.0])
    down = -_UP
    cp, sp = math.cos(self.pitch), math.sin(self.pitch)
    forward, down = cp * forward + sp * down, cp * down - sp * forward
    cr, sr = math.cos(self.roll), math.sin(self.roll)
    right, down = cr * right + sr * down, cr * down - sr * right
    return np.stack([right, down, forward], axis=1)

  def intrinsics(self, height: int, width: int) -> np.ndarray:
    """float32 [3, 3] K (pixel (r, c) centred at u = c, v = r)."""
    f = self.focal * width
    return np.array(
        [[f, 0.0, 0.5 * (width - 1)], [0.0, f, 0.5 * (height - 1)], [0.0, 0.0, 1.0]], np.float32
    )

  def gravity(self) -> np.ndarray:
    """float32 [3] unit up vector in the camera frame."""
    return (self.rotation().T @ _UP).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Surface:
  """Appearance of one surface: base colour, pattern colour and pattern parameters."""

  colour: tuple[float, float, float]  # RGB in [0, 1]
  pattern_colour: tuple[float, float, float]
  pattern: str  # 'planks' | 'tiles' | 'plain' | 'stripes' | 'bands'
  scale: float  # metres per pattern period
  angle: float  # radians: orientation of planks / stripes


@dataclasses.dataclass(frozen=True)
class Box:
  """Cuboid on the floor: centre (x, y) of its footprint, size (sx, sy, sz), yaw about z."""

  centre: tuple[float, float]
  size: tuple[float, float, float]
  yaw: float
  surface: Surface


@dataclasses.dataclass(frozen=True)
class Cylinder:
  """Vertical cylinder on the floor: axis at (x, y), radius, height."""

  centre: tuple[float, float]
  radius: float
  height: float
  surface: Surface


@dataclasses.dataclass(frozen=True)
class IndoorScene:
  """Everything `render_indoor_scene` needs; no pixels."""

  room: tuple[float, float, float]  # (Lx, Ly, Lz) metres
  camera: IndoorCamera
  boxes: tuple[Box, ...]
  cylinders: tuple[Cylinder, ...]
  floor: Surface
  wall: Surface
  ceiling: Surface
  light: tuple[float, float, float]  # unit direction towards the light (world)
  ambient: float
  max_range: float  # metres: no depth beyond
  hole_fraction: float  # fraction of pixels in random dropout blobs
  noise_seed: int


# ----------------------------------------------------------------------------------------------
# Sampling.
# ----------------------------------------------------------------------------------------------


def _colour(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]):
  rgb = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*sat), rng.uniform(*val))
  return tuple(float(c) for c in rgb)


def _surface(rng: np.random.Generator, kind: str) -> Surface:
  if kind == "floor":
    pattern = str(rng.choice(["planks", "tiles"]))
    colour = _colour(rng, (0.2, 0.6), (0.35, 0.75))
    scale = rng.uniform(0.12, 0.3) if pattern == "planks" else rng.uniform(0.3, 0.7)
  elif kind == "wall":
    pattern, colour, scale = "plain", _colour(rng, (0.0, 0.3), (0.6, 0.95)), rng.uniform(0.5, 1.5)
  elif kind == "ceiling":
    pattern, colour, scale = "plain", _colour(rng, (0.0, 0.08), (0.85, 1.0)), 1.0
  else:  # furniture / object
    pattern = str(rng.choice(["stripes", "bands", "plain"]))
    colour = _colour(rng, (0.3, 0.9), (0.3, 0.9))
    scale = rng.uniform(0.08, 0.3)
  contrast = rng.uniform(0.1, 0.3) if pattern != "plain" else rng.uniform(0.02, 0.06)
  pattern_colour = tuple(float(np.clip(c * (1 - contrast), 0, 1)) for c in colour)
  return Surface(colour, pattern_colour, pattern, float(scale), float(rng.uniform(0, math.pi)))


def sample_indoor_scene(
    rng: np.random.Generator,
    *,
    image_size: tuple[int, int],
    num_boxes: tuple[int, int] = (1, 3),
    num_cylinders: tuple[int, int] = (0, 2),
    camera_height_range: tuple[float, float] = (1.0, 1.7),
    pitch_range_deg: tuple[float, float] = (0.0, 30.0),
    roll_range_deg: tuple[float, float] = (-12.0, 12.0),
    focal: float = KINECT_FOCAL,
    max_range_range: tuple[float, float] = (5.0, 8.0),
    hole_fraction_range: tuple[float, float] = (0.01, 0.06),
) -> IndoorScene:
  """Draws a room, a camera and furniture in view (see the module docstring)."""
  height, width = image_size
  lx, ly, lz = rng.uniform(3.5, 7.0), rng.uniform(3.5, 7.0), rng.uniform(2.4, 3.2)
  cam_h = rng.uniform(*camera_height_range)
  # The camera stands in the room, looking roughly at the far side (at least 2 m of free view).
  for _ in range(100):
    cx, cy = rng.uniform(0.4, lx - 0.4), rng.uniform(0.4, ly - 0.4)
    to_centre = math.atan2(0.5 * ly - cy, 0.5 * lx - cx)
    yaw = to_centre + rng.uniform(-0.6, 0.6)
    dx, dy = math.cos(yaw), math.sin(yaw)
    reach = min(
        ((lx if dx > 0 else 0.0) - cx) / dx if abs(dx) > 1e-9 else np.inf,
        ((ly if dy > 0 else 0.0) - cy) / dy if abs(dy) > 1e-9 else np.inf,
    )
    if reach >= 2.0:
      break
  camera = IndoorCamera(
      position=(float(cx), float(cy), float(cam_h)),
      yaw=float(yaw),
      pitch=float(math.radians(rng.uniform(*pitch_range_deg))),
      roll=float(math.radians(rng.uniform(*roll_range_deg))),
      focal=float(focal),
  )
  half_fov = math.atan(0.5 * width / (focal * width)) * 0.85
  placed: list[tuple[float, float, float]] = []  # (x, y, bounding radius)

  def place(bound: float) -> tuple[float, float] | None:
    for _ in range(30):
      dist = rng.uniform(1.0, max(1.2, min(4.5, reach - 0.3)))
      angle = yaw + rng.uniform(-half_fov, half_fov)
      x, y = cx + dist * math.cos(angle), cy + dist * math.sin(angle)
      inside = bound + 0.05 <= x <= lx - bound - 0.05 and bound + 0.05 <= y <= ly - bound - 0.05
      clear = math.hypot(x - cx, y - cy) > bound + 0.5 and all(
          math.hypot(x - px, y - py) > bound + pr + 0.1 for px, py, pr in placed
      )
      if inside and clear:
        placed.append((x, y, bound))
        return float(x), float(y)
    return None

  boxes = []
  for _ in range(int(rng.integers(num_boxes[0], num_boxes[1] + 1))):
    size = (rng.uniform(0.3, 1.2), rng.uniform(0.3, 1.2), rng.uniform(0.3, 1.2))
    box_yaw = rng.uniform(0, math.pi) if rng.uniform() < 0.5 else 0.0
    centre = place(0.5 * math.hypot(size[0], size[1]))
    if centre is not None:
      boxes.append(Box(centre, tuple(map(float, size)), float(box_yaw), _surface(rng, "box")))
  cylinders = []
  for _ in range(int(rng.integers(num_cylinders[0], num_cylinders[1] + 1))):
    radius, cyl_h = rng.uniform(0.1, 0.35), rng.uniform(0.3, 1.5)
    centre = place(radius)
    if centre is not None:
      cylinders.append(Cylinder(centre, float(radius), float(cyl_h), _surface(rng, "object")))
  elevation, azimuth = rng.uniform(math.radians(40), math.radians(80)), rng.uniform(0, 2 * math.pi)
  light = (
      math.cos(elevation) * math.cos(azimuth),
      math.cos(elevation) * math.sin(azimuth),
      math.sin(elevation),
  )
  return IndoorScene(
      room=(float(lx), float(ly), float(lz)),
      camera=camera,
      boxes=tuple(boxes),
      cylinders=tuple(cylinders),
      floor=_surface(rng, "floor"),
      wall=_surface(rng, "wall"),
      ceiling=_surface(rng, "ceiling"),
      light=tuple(float(v) for v in light),
      ambient=float(rng.uniform(0.35, 0.55)),
      max_range=float(rng.uniform(*max_range_range)),
      hole_fraction=float(rng.uniform(*hole_fraction_range)),
      noise_seed=int(rng.integers(0, 2**31)),
  )


# ----------------------------------------------------------------------------------------------
# Ray casting.
# ----------------------------------------------------------------------------------------------


def _safe(d: np.ndarray) -> np.ndarray:
  """Direction components with exact zeros nudged, so slab divisions never give 0 / 0."""
  return np.where(d == 0, 1e-12, d)


@dataclasses.dataclass
class _Hits:
  """Nearest hit so far per ray: t, class, surface id, world normal."""

  t: np.ndarray
  cls: np.ndarray
  surface: np.ndarray
  normal: np.ndarray

  def update(self, t: np.ndarray, cls: int, surface: int, normal: np.ndarray) -> None:
    closer = t < self.t
    self.t = np.where(closer, t, self.t)
    self.cls = np.where(closer, cls, self.cls)
    self.surface = np.where(closer, surface, self.surface)
    self.normal = np.where(closer[:, None], normal, self.normal)


def _cast_room(o: np.ndarray, d: np.ndarray, room: tuple[float, float, float]) -> _Hits:
  sd = _safe(d)
  hi = np.asarray(room)
  t_axes = np.where(d > 0, (hi - o) / sd, (0.0 - o) / sd)  # [N, 3] exit distance per axis
  t_axes = np.where(d == 0, np.inf, t_axes)
  axis = np.argmin(t_axes, axis=1)
  t = np.take_along_axis(t_axes, axis[:, None], axis=1)[:, 0]
  positive = np.take_along_axis(d, axis[:, None], axis=1)[:, 0] > 0
  normal = np.zeros_like(d)
  normal[np.arange(len(d)), axis] = np.where(positive, -1.0, 1.0)
  cls = np.where(axis < 2, WALL, np.where(positive, CEILING, FLOOR))
  # Surface ids: 0 floor, 1 ceiling, 2..5 walls (x = 0, x = Lx, y = 0, y = Ly).
  surface = np.where(axis < 2, 2 + 2 * axis + positive, np.where(positive, 1, 0))
  return _Hits(t, cls.astype(np.int64), surface.astype(np.int64), normal)


def _cast_box(o: np.ndarray, d: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
  c, s = math.cos(box.yaw), math.sin(box.yaw)
  to_local = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
  ol = to_local @ (o - np.array([box.centre[0], box.centre[1], 0.0]))
  dl = d @ to_local.T
  half = np.array([0.5 * box.size[0], 0.5 * box.size[1]])
  lo = np.array([-half[0], -half[1], 0.0])
  hi = np.array([half[0], half[1], box.size[2]])
  sd = _safe(dl)
  t1, t2 = (lo - ol) / sd, (hi - ol) / sd
  t_in, t_out = np.minimum(t1, t2), np.maximum(t1, t2)
  axis = np.argmax(t_in, axis=1)
  near = np.take_along_axis(t_in, axis[:, None], axis=1)[:, 0]
  far = np.min(t_out, axis=1)
  hit = (near <= far) & (near > 1e-6)
  local_normal = np.zeros_like(d)
  rows = np.arange(len(d))
  local_normal[rows, axis] = -np.sign(dl[rows, axis])
  return np.where(hit, near, np.inf), local_normal @ to_local  # rotate back: to_local^T n


def _cast_cylinder(o: np.ndarray, d: np.ndarray, cyl: Cylinder) -> tuple[np.ndarray, np.ndarray]:
  ox, oy = o[0] - cyl.centre[0], o[1] - cyl.centre[1]
  a = d[:, 0] ** 2 + d[:, 1] ** 2
  b = 2.0 * (ox * d[:, 0] + oy * d[:, 1])
  c = ox * ox + oy * oy - cyl.radius**2
  disc = b * b - 4.0 * a * c
  with np.errstate(invalid="ignore", divide="ignore"):
    t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * np.maximum(a, 1e-12))
  z_side = o[2] + t_side * d[:, 2]
  side = (disc > 0) & (t_side > 1e-6) & (z_side >= 0.0) & (z_side <= cyl.height)
  t_side = np.where(side, t_side, np.inf)
  t_finite = np.where(side, t_side, 0.0)
  n_side = np.stack(
      [(ox + t_finite * d[:, 0]) / cyl.radius, (oy + t_finite * d[:, 1]) / cyl.radius, 0 * a],
      axis=1,
  )
  t_cap = np.full(len(d), np.inf)
  if o[2] > cyl.height:
    with np.errstate(divide="ignore", invalid="ignore"):
      t = (cyl.height - o[2]) / _safe(d[:, 2])
    px, py = ox + t * d[:, 0], oy + t * d[:, 1]
    cap = (d[:, 2] < 0) & (px * px + py * py <= cyl.radius**2)
    t_cap = np.where(cap, t, np.inf)
  use_cap = t_cap < t_side
  normal = np.where(use_cap[:, None], _UP, n_side)
  return np.minimum(t_side, t_cap), normal


# ----------------------------------------------------------------------------------------------
# Appearance.
# ----------------------------------------------------------------------------------------------


def _hash01(*ints: np.ndarray) -> np.ndarray:
  """Deterministic pseudo-random numbers in [0, 1) from integer arrays (per plank / tile)."""
  h = np.zeros(np.broadcast(*ints).shape, np.uint64)
  for i, v in enumerate(ints):
    h ^= (np.asarray(v).astype(np.int64).astype(np.uint64) + np.uint64(0x9E3779B9 * (i + 1))) * (
        np.uint64(0x85EBCA6B)
    )
    h ^= h >> np.uint64(13)
    h *= np.uint64(0xC2B2AE35)
    h ^= h >> np.uint64(16)
  return (h % np.uint64(1 << 20)).astype(np.float64) / float(1 << 20)


def _pattern(surface: Surface, a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Weight in [0, 1] of the pattern colour at surface coordinates (a, b) in metres."""
  ca, sa = math.cos(surface.angle), math.sin(surface.angle)
  u, v = ca * a + sa * b, -sa * a + ca * b
  if surface.pattern == "planks":
    plank = np.floor(u / surface.scale)
    shift = _hash01(plank) * 2.0
    seam = np.abs(u / surface.scale - np.round(u / surface.scale)) < 0.04
    return np.clip(_hash01(plank, np.floor(v / 1.2 + shift)) * 0.8 + seam, 0, 1)
  if surface.pattern == "tiles":
    i, j = np.floor(u / surface.scale), np.floor(v / surface.scale)
    grout = np.minimum(np.abs(u / surface.scale - np.round(u / surface.scale)), 1.0)
    grout = np.minimum(grout, np.abs(v / surface.scale - np.round(v / surface.scale))) < 0.03
    return np.clip(((i + j) % 2) * 0.7 + 0.3 * _hash01(i, j) + grout, 0, 1)
  if surface.pattern == "stripes":
    return 0.5 + 0.5 * np.sign(np.sin(2 * math.pi * u / surface.scale))
  if surface.pattern == "bands":
    return 0.5 + 0.5 * np.sin(2 * math.pi * b / surface.scale)
  return 0.5 + 0.25 * (np.sin(2 * math.pi * u / surface.scale) + np.sin(2 * math.pi * v / 0.37))


def _albedo(
    scene: IndoorScene, surface_id: np.ndarray, points: np.ndarray, normal: np.ndarray
) -> np.ndarray:
  surfaces = [scene.floor, scene.ceiling] + [scene.wall] * 4
  surfaces += [box.surface for box in scene.boxes] + [cyl.surface for cyl in scene.cylinders]
  albedo = np.zeros_like(points)
  for sid, surface in enumerate(surfaces):
    sel = surface_id == sid
    if not sel.any():
      continue
    p, n = points[sel], normal[sel]
    horizontal = np.abs(n[:, 2]) > 0.5
    # Coordinates in the surface: (x, y) on horizontal faces, (along the face, z) on vertical.
    a = np.where(horizontal, p[:, 0], n[:, 1] * p[:, 0] - n[:, 0] * p[:, 1])
    b = np.where(horizontal, p[:, 1], p[:, 2])
    w = _pattern(surface, a, b)[:, None]
    if 2 <= sid < 6:  # the four walls: slightly different tints
      tint = 0.94 + 0.06 * (sid - 2) / 3.0
    else:
      tint = 1.0
    albedo[sel] = tint * (
        (1 - w) * np.asarray(surface.colour) + w * np.asarray(surface.pattern_colour)
    )
  return albedo


# ----------------------------------------------------------------------------------------------
# Depth sensor.
# ----------------------------------------------------------------------------------------------


def kinect_noise_std(depth: np.ndarray) -> np.ndarray:
  """Axial noise standard deviation (metres) at z-depth `depth`: 0.0012 + 0.0019 (z - 0.4)^2."""
  return 0.0012 + 0.0019 * np.square(depth - 0.4)


def _sensor_depth(
    scene: IndoorScene,
    depth: np.ndarray,
    cos_incidence: np.ndarray,
    depth_noise: float,
    holes: bool,
) -> np.ndarray:
  rng = np.random.default_rng([scene.noise_seed, 1])
  height, width = depth.shape
  out = depth.astype(np.float64)
  if depth_noise > 0:
    out = out + depth_noise * kinect_noise_std(depth) * rng.standard_normal(depth.shape)
  if not holes:
    return out.astype(np.float32)
  missing = (depth > scene.max_range) | (np.abs(cos_incidence) < _GRAZING_COS)
  # Far side of depth edges: a 4-neighbour nearer by more than _EDGE_STEP (relative).
  padded = np.pad(depth, 1, mode="edge")
  for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
    nb = padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
    missing |= nb < depth * (1.0 - _EDGE_STEP)
  # Shadow band: pixels left of a nearer surface (projector baseline), ~W / 160 pixels wide.
  band = max(1, round(width / 160))
  padded = np.pad(depth, ((0, 0), (0, band + 1)), mode="edge")
  for s in range(2, band + 2):
    missing |= padded[:, s : s + width] < depth * (1.0 - _EDGE_STEP)
  # Random dropout blobs: a smooth random field above its (1 - hole_fraction) quantile.
  coarse = rng.standard_normal((max(2, height // 8), max(2, width // 8))).astype(np.float32)
  field = resample.resize_bilinear(coarse, (height, width))
  missing |= field > np.quantile(field, 1.0 - scene.hole_fraction)
  return np.where(missing, 0.0, out).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Rendering.
# ----------------------------------------------------------------------------------------------


def render_indoor_scene(
    scene: IndoorScene,
    image_size: tuple[int, int],
    *,
    depth_noise: float = 1.0,
    holes: bool = True,
) -> dict[str, np.ndarray]:
  """Ray casts `scene`; returns the sample keys of the module docstring except `index`."""
  height, width = image_size
  camera = scene.camera
  k = camera.intrinsics(height, width).astype(np.float64)
  rot = camera.rotation()
  rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  y_n = (rows - k[1, 2]) / k[1, 1]
  x_n = (cols - k[0, 2]) / k[0, 0]
  rays = np.stack([x_n, y_n, np.ones_like(x_n)], axis=-1).reshape(-1, 3)  # camera, z = 1
  o = np.asarray(camera.position)
  d = rays @ rot.T  # world directions; the hit distance t along d is the z-depth
  hits = _cast_room(o, d, scene.room)
  for i, box in enumerate(scene.boxes):
    t, n = _cast_box(o, d, box)
    hits.update(t, FURNITURE, 6 + i, n)
  for i, cyl in enumerate(scene.cylinders):
    t, n = _cast_cylinder(o, d, cyl)
    hits.update(t, OBJECT, 6 + len(scene.boxes) + i, n)
  points = o + hits.t[:, None] * d
  albedo = _albedo(scene, hits.surface, points, hits.normal)
  diffuse = np.maximum(hits.normal @ np.asarray(scene.light), 0.0)
  shade = scene.ambient + (1.0 - scene.ambient) * diffuse
  rng = np.random.default_rng([scene.noise_seed, 0])
  image = albedo * shade[:, None] + rng.normal(0.0, 0.012, albedo.shape)
  image = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8).reshape(height, width, 3)
  normals_cam = hits.normal @ rot  # rot^T n, row-wise
  unit_rays = rays / np.linalg.norm(rays, axis=1, keepdims=True)
  cos_incidence = np.sum(normals_cam * unit_rays, axis=1).reshape(height, width)
  depth_true = hits.t.reshape(height, width)
  return dict(
      image=image,
      mask=hits.cls.reshape(height, width).astype(np.uint8),
      depth=_sensor_depth(scene, depth_true, cos_incidence, depth_noise, holes),
      intrinsics=camera.intrinsics(height, width),
      gravity=camera.gravity(),
      normals_true=normals_cam.reshape(height, width, 3).astype(np.float32),
      height_true=points[:, 2].reshape(height, width).astype(np.float32),
      camera_height=np.float32(camera.position[2]),
      camera_pitch=np.float32(camera.pitch),
      camera_roll=np.float32(camera.roll),
  )


# ----------------------------------------------------------------------------------------------
# Source.
# ----------------------------------------------------------------------------------------------


def _check_range(name: str, value: Any, low: float, high: float) -> tuple[float, float]:
  if not isinstance(value, Sequence) or len(value) != 2:
    raise ValueError(f"{name} must be a (low, high) pair, got {value!r}")
  lo, hi = float(value[0]), float(value[1])
  if not low <= lo <= hi <= high:
    raise ValueError(f"{name} must satisfy {low} <= low <= high <= {high}, got {value!r}")
  return lo, hi


def _check_int(name: str, value: Any, low: int) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
    raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
  return int(value)


class SyntheticIndoorScenes:
  """Random-access source of synthetic indoor RGB-D samples (layout in the module docstring).

  Picklable and cheap to build; sample i is generated on demand from (seed, i).

  Args:
    num_scenes: length of the source.
    image_size: (H, W) or an int.
    seed: base seed.
    depth_noise: scale of the Kinect-like axial noise (0 = noise-free depth).
    holes: whether the depth has Kinect-like holes (0).
    num_boxes, num_cylinders: (min, max) furniture counts (fewer if they do not fit).
    camera_height_range: metres (keep the low end >= 0.9 m for HHA's floor fallback).
    pitch_range_deg, roll_range_deg: camera tilt, degrees (pitch > 0 looks down). Gupta et al.'s
      gravity estimate starts at the camera axis; beyond ~40 deg of tilt it may lock onto walls.
    focal: fx = fy = focal * W.
  """

  KINDS = {
      "image": "image",
      "mask": "mask",
      "depth": "depth",
      "intrinsics": "intrinsics",
      "index": "other",
      "gravity": "other",
      "normals_true": "normals",
      "height_true": "map",
      "camera_height": "other",
      "camera_pitch": "other",
      "camera_roll": "other",
  }
  num_classes = len(INDOOR_CLASSES)
  class_names = list(INDOOR_CLASSES)

  def __init__(
      self,
      num_scenes: int,
      *,
      image_size: int | tuple[int, int] = (64, 64),
      seed: int = 0,
      depth_noise: float = 1.0,
      holes: bool = True,
      num_boxes: tuple[int, int] = (1, 3),
      num_cylinders: tuple[int, int] = (0, 2),
      camera_height_range: tuple[float, float] = (1.0, 1.7),
      pitch_range_deg: tuple[float, float] = (0.0, 30.0),
      roll_range_deg: tuple[float, float] = (-12.0, 12.0),
      focal: float = KINECT_FOCAL,
  ):
    self.num_scenes = _check_int("num_scenes", num_scenes, 0)
    if isinstance(image_size, numbers.Integral):
      image_size = (image_size, image_size)
    if len(image_size) != 2:
      raise ValueError(f"image_size must be an int or (H, W), got {image_size!r}")
    self.image_size = tuple(_check_int("image_size", s, MIN_IMAGE_SIZE) for s in image_size)
    self.seed = _check_int("seed", seed, 0)
    if not isinstance(depth_noise, numbers.Real) or depth_noise < 0:
      raise ValueError(f"depth_noise must be a number >= 0, got {depth_noise!r}")
    self.depth_noise = float(depth_noise)
    self.holes = bool(holes)
    self.num_boxes = tuple(int(v) for v in _check_range("num_boxes", num_boxes, 0, 8))
    self.num_cylinders = tuple(int(v) for v in _check_range("num_cylinders", num_cylinders, 0, 8))
    self.camera_height_range = _check_range("camera_height_range", camera_height_range, 0.2, 2.2)
    self.pitch_range_deg = _check_range("pitch_range_deg", pitch_range_deg, -60.0, 60.0)
    self.roll_range_deg = _check_range("roll_range_deg", roll_range_deg, -45.0, 45.0)
    if not isinstance(focal, numbers.Real) or not 0.2 <= focal <= 5.0:
      raise ValueError(f"focal must be a number in [0.2, 5], got {focal!r}")
    self.focal = float(focal)

  def __len__(self) -> int:
    return self.num_scenes

  def __repr__(self) -> str:
    return (
        f"SyntheticIndoorScenes(num_scenes={self.num_scenes}, image_size={self.image_size}, "
        f"seed={self.seed}, depth_noise={self.depth_noise}, holes={self.holes})"
    )

  def _check_index(self, index: Any) -> int:
    if isinstance(index, (bool, np.bool_)) or not isinstance(index, numbers.Integral):
      raise TypeError(f"SyntheticIndoorScenes: index must be an integer, got {index!r}")
    if not 0 <= index < self.num_scenes:
      raise IndexError(f"SyntheticIndoorScenes: index {int(index)} out of range {self.num_scenes}")
    return int(index)

  def scene(self, index: int) -> IndoorScene:
    """The scene description of sample `index`."""
    index = self._check_index(index)
    return sample_indoor_scene(
        np.random.default_rng([self.seed, index]),
        image_size=self.image_size,
        num_boxes=self.num_boxes,
        num_cylinders=self.num_cylinders,
        camera_height_range=self.camera_height_range,
        pitch_range_deg=self.pitch_range_deg,
        roll_range_deg=self.roll_range_deg,
        focal=self.focal,
    )

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = self._check_index(index)
    sample = render_indoor_scene(
        self.scene(index), self.image_size, depth_noise=self.depth_noise, holes=self.holes
    )
    return dict(sample, index=np.int64(index))
