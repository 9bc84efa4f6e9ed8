"""Scene model and sampling of the synthetic data: camera, background, objects and their motion.

Pure numpy, no state, no files. `render` rasterises the scenes drawn here.

Scene model
  A pinhole camera (height above the floor, downward pitch, vertical field of view) looks at a floor that meets
  a back wall (`Camera`). The background is the floor and the wall in two muted colours, with a smooth gradient,
  a low-contrast texture and sensor noise (`Background`). On the floor stand 1..N flat objects (`ObjectSpec`).
  Each object belongs to one of K foreground classes, and the class alone fixes its appearance
  (`shapes.class_appearance`). Classes are drawn independently and uniformly, so no class predicts
  another; the class is visible in the object pixels themselves, never in the context.
  An object stands on the floor where the bottom of its bounding circle touches it, so its depth follows from
  its image position (`object_pose`).

Extension points
  `sample_scene(rng, ...) -> Scene` draws a small frozen dataclass of object and background parameters;
  nothing here touches pixels.
  - Depth: `Camera` holds the geometry (floor / wall depth per row, intrinsics).
  - Video: each object has a velocity and an angular velocity; `object_pose(..., time=t)` moves it, reflecting
    at the borders of the floor. `VideoDynamics` (all off by default) adds a panning, more textured background,
    objects that grow and shrink, a global illumination and colour drift and stronger sensor noise; its per-video
    draws (`Dynamics`, `sample_dynamics`) come from their own generator, so the scene draws are the same with
    or without them, and every term is the identity at time 0.
  - New classes, shapes or textures: `shapes`.
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
import numbers

import numpy as np

from jaxseg.data.synthetic.shapes import class_appearance

# Where objects may stand, as fractions of the image: the bottom of an object's bounding circle (its foot)
# stays between just below the floor line and just below the image, and its centre stays this far from the
# left and right borders.
_FOOT_MARGIN = 0.06
_FOOT_MAX = 1.05
_X_MARGIN = 0.08


# ----------------------------------------------------------------------------------------------------------
# Scene description.
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Camera:
  """Pinhole camera above a floor that meets a back wall (no roll, no yaw)."""

  height: float  # metres above the floor
  pitch: float  # radians, looking down
  vertical_fov: float  # radians
  wall_distance: float  # metres, horizontal distance to the back wall

  def intrinsics(self, height: int, width: int) -> np.ndarray:
    """float32 [3, 3] K for pixel-index coordinates (pixel (r, c) has its centre at u = c, v = r)."""
    focal = 0.5 * height / math.tan(0.5 * self.vertical_fov)
    return np.array(
        [[focal, 0.0, 0.5 * (width - 1)], [0.0, focal, 0.5 * (height - 1)], [0.0, 0.0, 1.0]],
        dtype=np.float32,
    )

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
  gradient_angle: float  # radians
  gradient_strength: float  # relative brightness change across the image
  # Plane waves (cycles per image, angle, phase in cycles, relative amplitude) of the 'waves' texture.
  waves: tuple[tuple[float, float, float, float], ...]
  noise_seed: int  # seeds the 'blocks' texture and the sensor noise


@dataclasses.dataclass(frozen=True)
class ObjectSpec:
  """One object. Positions are fractions of the image, the radius a fraction of min(height, width).

  The depth is not stored: it follows from where the object touches the floor (`object_pose`).
  """

  class_id: int  # 1..K
  shape: str
  texture: str
  centre: tuple[float, float]  # (y, x) at time 0
  radius: float  # bounding radius
  rotation: float  # radians at time 0
  velocity: tuple[float, float]  # (vy, vx) per unit time
  angular_velocity: float  # radians per unit time
  colour: tuple[float, float, float]  # base RGB in [0, 1]
  pattern_colour: tuple[float, float, float]  # RGB of the texture pattern
  texture_frequency: float  # cycles per unit radius
  texture_phase: tuple[float, float]  # cycles, along local u and v
  shading: tuple[float, float]  # (angle, strength) of a brightness ramp across the object


@dataclasses.dataclass(frozen=True)
class Scene:
  objects: tuple[ObjectSpec, ...]
  background: Background
  camera: Camera
  image_size: tuple[
      int, int
  ]  # (height, width) the scene was sampled for; render at this aspect ratio
  num_classes: int


@dataclasses.dataclass(frozen=True)
class Pose:
  """Where an object is at one time, in pixels of one rendering."""

  centre: tuple[float, float]  # (y, x); pixel (r, c) covers [r, r + 1) x [c, c + 1)
  radius: float
  rotation: float
  depth: float  # metres


@dataclasses.dataclass(frozen=True)
class VideoDynamics:
  """Video-only changes over time besides the objects' motion and rotation (all off by default).

  Each term is the identity at time 0, so frame 0 of a video is the still image with the same arguments
  (except with `background_detail`, which adds texture to every frame, or `noise_std`). Times are in the
  units of `SyntheticVideos.times` (one frame with frame_interval 1). Every video draws its own amounts in
  [0.5, 1] x the given maximum and its own directions, periods and phases (`sample_dynamics`).
  """

  # Pan of the background texture (floor and wall: a slowly turning camera), fraction of the image width per
  # unit time; the direction is within 30 degrees of horizontal, left or right.
  background_speed: float = 0.0
  # Relative amplitude of three extra colour waves of 3..8 cycles per image in the background (0: the still
  # images' smooth low-contrast background; 0.1 gives visible colour texture).
  background_detail: float = 0.0
  # Objects grow and shrink: radius x exp(a (sin(w t + p) - sin p)), a up to this, a period of 12..36.
  scale_amplitude: float = 0.0
  # Global brightness: every pixel x exp(a (sin(w t + p) - sin p)) before the style, a up to this.
  illumination_amplitude: float = 0.0
  # White balance: each RGB channel x exp(a_c (sin(w_c t + p_c) - sin p_c)), a_c up to this.
  colour_drift: float = 0.0
  # Per-frame sensor noise std in [0, 1] intensity units; None keeps the style's (0.02 for 'default').
  # Unlike the other terms, it changes frame 0 too.
  noise_std: float | None = None
  # Colour is not identity. With camouflage c, every object's two colours move a fraction c of the way to
  # two of the video's five palette colours, which the background shows as blotches (changes frame 0): at
  # 1, objects and background share their colours, and objects tell apart by texture and shape only.
  camouflage: float = 0.0
  # Exposure and white balance that jump from frame to frame: log gains ~ N(0, flicker) for brightness
  # and N(0, flicker / 2) per channel, drawn per frame (0 at time 0).
  flicker: float = 0.0
  # Two soft shadows drift across the scene, darkening what is under them by up to this fraction
  # (changes frame 0).
  shadows: float = 0.0
  # Non-rigid objects: each squashes and stretches (area kept), u x e^s, v x e^-s with s an oscillation
  # of amplitude up to this.
  deformation: float = 0.0

  _NAMES = (
      "background_speed",
      "background_detail",
      "scale_amplitude",
      "illumination_amplitude",
      "colour_drift",
      "camouflage",
      "flicker",
      "shadows",
      "deformation",
  )

  def __post_init__(self):
    for name in self._NAMES:
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
      object.__setattr__(self, name, float(value))
    if self.noise_std is not None:
      if (
          isinstance(self.noise_std, bool)
          or not isinstance(self.noise_std, numbers.Real)
          or not 0 <= self.noise_std <= 0.5
      ):
        raise ValueError(f"noise_std must be None or a number in [0, 0.5], got {self.noise_std!r}")
      object.__setattr__(self, "noise_std", float(self.noise_std))

  @property
  def changes_frames(self) -> bool:
    """Whether a video renders differently from the dynamics-free one (the noise override aside)."""
    return any(getattr(self, name) for name in self._NAMES)


Oscillation = tuple[
    float, float, float
]  # (amplitude, angular frequency, phase) of a(sin(w t + p) - sin p)


def _oscillation(value: Oscillation, time: float) -> float:
  amplitude, omega, phase = value
  return amplitude * (math.sin(omega * time + phase) - math.sin(phase))


@dataclasses.dataclass(frozen=True)
class Dynamics:
  """One video's draws of `VideoDynamics`."""

  background_velocity: tuple[
      float, float
  ]  # (vy, vx) of the texture, fractions of the image per unit time
  # Extra background waves: (cycles per image, angle, phase in cycles, amplitude, RGB direction).
  background_waves: tuple[tuple[float, float, float, float, tuple[float, float, float]], ...]
  object_scales: tuple[Oscillation, ...]  # one per object of the scene, of log(radius scale)
  illumination: Oscillation  # of log(brightness gain)
  colour: tuple[Oscillation, Oscillation, Oscillation]  # of log(gain) of R, G, B
  noise_std: float | None
  # Camouflage: the video's palette of RGB colours, how far objects move to them, the two palette colours
  # of each object (base, pattern), and each palette colour's field of waves in the background
  # (cycles per image, angle, phase in cycles).
  palette: tuple[tuple[float, float, float], ...] | None = None
  camouflage: float = 0.0
  colour_slots: tuple[tuple[int, int], ...] = ()
  blotch_waves: tuple[tuple[tuple[float, float, float], ...], ...] = ()
  flicker: float = 0.0  # std of the per-frame log gain
  flicker_seed: int = 0
  # Shadows: (y, x, vy, vx, radius, strength), positions and radius as fractions of the image.
  shadows: tuple[tuple[float, float, float, float, float, float], ...] = ()
  object_deformations: tuple[Oscillation, ...] = ()  # one per object, of log(stretch)

  def object_scale(self, index: int, time: float) -> float:
    """Radius multiplier of object `index` at `time` (1 at time 0)."""
    if not self.object_scales:
      return 1.0
    return math.exp(_oscillation(self.object_scales[index], time))

  def object_stretch(self, index: int, time: float) -> float:
    """Stretch of object `index` at `time`: its local u is multiplied by it and v divided (1 at time 0)."""
    if not self.object_deformations:
      return 1.0
    return math.exp(_oscillation(self.object_deformations[index], time))

  def object_colours(
      self, index: int, obj: ObjectSpec
  ) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(base, pattern) RGB of object `index`: its own, moved `camouflage` of the way to the palette."""
    if self.palette is None:
      return obj.colour, obj.pattern_colour
    base, pattern = self.colour_slots[index]
    c = self.camouflage
    mix = lambda own, target: tuple(float(a + c * (b - a)) for a, b in zip(own, target))
    return mix(obj.colour, self.palette[base]), mix(obj.pattern_colour, self.palette[pattern])

  def shadow_map(self, height: int, width: int, time: float) -> np.ndarray | None:
    """float32 [H, W] brightness multiplier of the shadows at `time` (None without shadows)."""
    if not self.shadows:
      return None
    rows = (np.arange(height, dtype=np.float32) + 0.5)[:, None] / height
    cols = (np.arange(width, dtype=np.float32) + 0.5)[None, :] / width
    dark = np.zeros((height, width), np.float32)
    for y, x, vy, vx, radius, strength in self.shadows:
      cy, cx = _reflect(y + vy * time, -0.2, 1.2), _reflect(x + vx * time, -0.2, 1.2)
      d2 = ((rows - cy) ** 2 + (cols - cx) ** 2) / (radius * radius)
      dark = np.maximum(dark, strength * np.clip(1.5 - d2, 0.0, 1.0))  # flat core, soft edge
    return (1.0 - dark).astype(np.float32)

  def background_offset(self, time: float) -> tuple[float, float]:
    """(dy, dx) shift of the background texture at `time`, fractions of the image."""
    return (self.background_velocity[0] * time, self.background_velocity[1] * time)

  def gain(self, time: float) -> np.ndarray:
    """float32 [3] RGB gain of the illumination at `time` (ones at time 0)."""
    log_gain = np.asarray(
        [_oscillation(self.illumination, time) + _oscillation(c, time) for c in self.colour]
    )
    if self.flicker and time != 0.0:
      # Per frame, independent of the other frames: the bit pattern of the time keys the draw.
      rng = np.random.default_rng([self.flicker_seed, int(np.float64(time).view(np.uint64))])
      log_gain = log_gain + self.flicker * (rng.standard_normal() + 0.5 * rng.standard_normal(3))
    return np.exp(log_gain.astype(np.float64)).astype(np.float32)

  @property
  def has_gain(self) -> bool:
    return bool(self.illumination[0] or any(c[0] for c in self.colour) or self.flicker)

  @property
  def changes_frames(self) -> bool:
    return bool(
        any(self.background_velocity)
        or self.background_waves
        or any(a for a, _, _ in self.object_scales)
        or self.has_gain
        or self.palette is not None
        or self.shadows
        or any(a for a, _, _ in self.object_deformations)
    )


def sample_dynamics(rng: np.random.Generator, scene: Scene, options: VideoDynamics) -> Dynamics:
  """Draws one video's `Dynamics` (a fixed number of draws, whatever the options)."""

  def oscillation(amplitude: float) -> Oscillation:
    a, period, phase = rng.uniform(0.5, 1.0), rng.uniform(12.0, 36.0), rng.uniform(0.0, 2 * np.pi)
    return (float(a * amplitude), float(2 * np.pi / period), float(phase))

  speed = rng.uniform(0.5, 1.0) * options.background_speed
  angle = rng.uniform(-np.pi / 6, np.pi / 6) + (np.pi if rng.uniform() < 0.5 else 0.0)
  waves = []
  for _ in range(3):
    cycles, wave_angle, phase = rng.uniform(3.0, 8.0), rng.uniform(0.0, 2 * np.pi), rng.uniform()
    direction = rng.standard_normal(3)
    direction = direction / max(np.linalg.norm(direction), 1e-6) * math.sqrt(3.0)
    amplitude = rng.uniform(0.5, 1.0) * options.background_detail
    if amplitude > 0:
      waves.append((cycles, wave_angle, phase, amplitude, tuple(float(d) for d in direction)))
  object_scales = tuple(oscillation(options.scale_amplitude) for _ in scene.objects)
  illumination = oscillation(options.illumination_amplitude)
  colour = tuple(oscillation(options.colour_drift) for _ in range(3))
  # The draws below came later; they follow the ones above so that those stay what they were.
  # Camouflage palette: the floor's colour and four more of about its brightness but any hue, so that
  # brightness and one colour channel do not tell the other (what MAST's objective must reconstruct).
  value = float(np.clip(max(scene.background.floor_colour), 0.45, 0.75))
  palette = [scene.background.floor_colour] + [
      _hsv(rng.uniform(), rng.uniform(0.35, 0.7), value * rng.uniform(0.85, 1.15)) for _ in range(4)
  ]
  colour_slots = tuple(
      tuple(int(i) for i in rng.choice(len(palette), size=2, replace=False)) for _ in scene.objects
  )
  # Each palette colour owns a smooth random field; the background shows the colour whose field is highest.
  blotches = tuple(
      tuple(
          (float(rng.uniform(1.5, 4.0)), float(rng.uniform(0.0, 2 * np.pi)), float(rng.uniform()))
          for _ in range(2)
      )
      for _ in palette
  )
  flicker_seed = int(rng.integers(0, 2**31))
  shadows = []
  for _ in range(2):
    y, x = rng.uniform(0.0, 1.0, size=2)
    shadow_speed, heading = rng.uniform(0.01, 0.03), rng.uniform(0.0, 2 * np.pi)
    radius, strength = rng.uniform(0.15, 0.3), rng.uniform(0.5, 1.0) * options.shadows
    shadows.append(
        tuple(
            float(v)
            for v in (
                y,
                x,
                shadow_speed * math.sin(heading),
                shadow_speed * math.cos(heading),
                radius,
                strength,
            )
        )
    )
  deformations = tuple(oscillation(options.deformation) for _ in scene.objects)
  return Dynamics(
      background_velocity=(float(speed * math.sin(angle)), float(speed * math.cos(angle))),
      background_waves=tuple(waves),
      object_scales=object_scales if options.scale_amplitude > 0 else (),
      illumination=illumination,
      colour=colour,
      noise_std=options.noise_std,
      palette=tuple(palette) if options.camouflage > 0 else None,
      camouflage=options.camouflage,
      colour_slots=colour_slots,
      blotch_waves=blotches if options.camouflage > 0 else (),
      flicker=options.flicker,
      flicker_seed=flicker_seed,
      shadows=tuple(shadows) if options.shadows > 0 else (),
      object_deformations=deformations if options.deformation > 0 else (),
  )


def _hsv(hue: float, saturation: float, value: float) -> tuple[float, float, float]:
  return tuple(float(c) for c in colorsys.hsv_to_rgb(hue % 1.0, saturation, value))


def _foot_range(camera: Camera) -> tuple[float, float]:
  return camera.floor_line() + _FOOT_MARGIN, _FOOT_MAX


def _sample_camera(rng: np.random.Generator) -> Camera:
  # These ranges put the floor line between about 10% and 38% of the image height.
  return Camera(
      height=rng.uniform(1.3, 1.6),
      pitch=math.radians(rng.uniform(22.0, 30.0)),
      vertical_fov=math.radians(rng.uniform(55.0, 65.0)),
      wall_distance=rng.uniform(7.0, 10.0),
  )


def _sample_background(rng: np.random.Generator) -> Background:
  # Low saturation keeps the background from taking on any class colour.
  floor = _hsv(rng.uniform(), rng.uniform(0.05, 0.3), rng.uniform(0.35, 0.75))
  wall = _hsv(rng.uniform(), rng.uniform(0.05, 0.25), rng.uniform(0.45, 0.85))
  waves = tuple(
      (rng.uniform(0.5, 3.0), rng.uniform(0.0, 2 * np.pi), rng.uniform(), rng.uniform(0.02, 0.06))
      for _ in range(3)
  )
  return Background(
      floor_colour=floor,
      wall_colour=wall,
      gradient_angle=rng.uniform(0.0, 2 * np.pi),
      gradient_strength=rng.uniform(0.0, 0.25),
      waves=waves,
      noise_seed=int(rng.integers(0, 2**31)),
  )


def _sample_object(
    rng: np.random.Generator,
    class_id: int,
    num_classes: int,
    camera: Camera,
    image_size: tuple[int, int],
    object_scale: float = 1.0,
) -> ObjectSpec:
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
      class_id=int(class_id),
      shape=look.shape,
      texture=look.texture,
      centre=centre,
      radius=radius,
      rotation=rng.uniform(0.0, 2 * np.pi),
      velocity=(speed * math.sin(heading), speed * math.cos(heading)),
      angular_velocity=rng.uniform(-0.15, 0.15),
      colour=colour,
      pattern_colour=pattern,
      texture_frequency=look.texture_frequency,
      texture_phase=(rng.uniform(), rng.uniform()),
      shading=(rng.uniform(0.0, 2 * np.pi), rng.uniform(0.0, 0.15)),
  )


def sample_scene(
    rng: np.random.Generator,
    *,
    num_classes: int,
    image_size: tuple[int, int],
    min_objects: int = 1,
    max_objects: int = 4,
    object_scale: float = 1.0,
) -> Scene:
  """Draws a scene: camera, background and min_objects..max_objects objects of uniform random classes.

  `object_scale` multiplies every object's radius (1.0: objects cover ~4-14 % of the image each; 1.6 gives
  VOC-like sizes of ~10-35 %). The random draws are the same for any scale.
  """
  camera = _sample_camera(rng)
  background = _sample_background(rng)
  num_objects = int(rng.integers(min_objects, max_objects + 1))
  class_ids = rng.integers(1, num_classes + 1, size=num_objects)
  objects = tuple(
      _sample_object(rng, int(c), num_classes, camera, image_size, object_scale) for c in class_ids
  )
  return Scene(
      objects=objects,
      background=background,
      camera=camera,
      image_size=tuple(image_size),
      num_classes=num_classes,
  )


def _reflect(x: float, low: float, high: float) -> float:
  """Folds x into [low, high] as a point bouncing between two walls."""
  span = high - low
  if span <= 0:
    return low
  q = (x - low) % (2 * span)
  return low + (2 * span - q if q > span else q)


def object_pose(
    obj: ObjectSpec,
    camera: Camera,
    *,
    height: int,
    width: int,
    time: float = 0.0,
    scale: float = 1.0,
) -> Pose:
  """Pose of `obj` at `time` in an image of height x width pixels; `scale` multiplies its radius (video
  dynamics), keeping its foot where it would be at scale 1."""
  radius_y = obj.radius * min(height, width) / height  # radius as a fraction of the height
  foot_low, foot_high = _foot_range(camera)
  if scale != 1.0:
    foot = _reflect(obj.centre[0] + radius_y + obj.velocity[0] * time, foot_low, foot_high)
    x = _reflect(obj.centre[1] + obj.velocity[1] * time, _X_MARGIN, 1.0 - _X_MARGIN)
    return Pose(
        centre=((foot - scale * radius_y) * height, x * width),
        radius=scale * obj.radius * min(height, width),
        rotation=obj.rotation + obj.angular_velocity * time,
        depth=float(camera.floor_depth(foot)),
    )
  y = _reflect(obj.centre[0] + obj.velocity[0] * time, foot_low - radius_y, foot_high - radius_y)
  x = _reflect(obj.centre[1] + obj.velocity[1] * time, _X_MARGIN, 1.0 - _X_MARGIN)
  depth = float(camera.floor_depth(y + radius_y))
  return Pose(
      centre=(y * height, x * width),
      radius=obj.radius * min(height, width),
      rotation=obj.rotation + obj.angular_velocity * time,
      depth=depth,
  )
