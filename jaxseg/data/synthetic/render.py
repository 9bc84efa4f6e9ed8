"""Rendering of the synthetic scenes: domain styles and numpy rasterisation.

`render_scene(scene, height=, width=, time=, style=) -> dict` rasterises a `scenes.Scene` with numpy
coordinate grids (work is confined to each object's bounding box). Objects are painted far to near (painter's
order equals depth order), so nearer objects occlude farther ones. Edges are anti-aliased in the image; the
masks hold a pixel when its centre is inside.

Extension points
  - Domain style: `Style` (colour matrix, contrast, gamma, blur, noise, background texture) is applied at render
    time, so a style changes the image only, never geometry, masks or labels. Named styles are in `STYLES`
    ('default', 'shifted', 'foggy'); add one there or pass a `Style`.
  - Depth: `render_scene` always returns `depth` and `intrinsics`.
  - Video: `render_scene(..., time=t)` moves objects (`scenes.object_pose`) and re-sorts them by
    depth, so occlusions change over time. `render_scene(..., dynamics=d)` (a `scenes.Dynamics`)
    also pans and enriches the background texture, scales the objects, drifts the illumination and sets the
    sensor noise; without it the rendering is exactly the still images' one.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jaxseg.data.synthetic.scenes import (
    Background,
    Camera,
    Dynamics,
    ObjectSpec,
    Pose,
    Scene,
    object_pose,
)
from jaxseg.data.synthetic.shapes import shape_sdf, texture_weight

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


# ----------------------------------------------------------------------------------------------------------
# Styles.
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Style:
  """Image-only appearance of a domain, applied at render time (geometry and labels are untouched)."""

  hue_rotation: float = 0.0  # degrees, rotation about the grey axis
  saturation: float = 1.0  # 0 = grey, 1 = unchanged
  gain: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per-channel colour cast
  contrast: float = 1.0  # about mid-grey
  brightness: float = 0.0  # added after contrast
  gamma: float = 1.0
  blur_sigma: float = 0.0  # pixels (Gaussian)
  noise_std: float = 0.02  # sensor noise, in [0, 1] intensity units
  background_texture: str = "waves"  # 'waves' (smooth) | 'blocks' (coarse tinted tiles)


STYLES: dict[str, Style] = {
    "default": Style(),
    # A second camera/domain: warm cast, washed-out colours, lower contrast, soft focus, noisier, tiled walls.
    "shifted": Style(
        hue_rotation=15.0,
        saturation=0.7,
        gain=(1.08, 0.97, 0.82),
        contrast=0.75,
        brightness=0.04,
        gamma=1.25,
        blur_sigma=0.8,
        noise_std=0.05,
        background_texture="blocks",
    ),
    # Haze: low contrast, bright, blurry.
    "foggy": Style(saturation=0.7, contrast=0.6, brightness=0.15, blur_sigma=1.0, noise_std=0.03),
}
_BACKGROUND_TEXTURES = ("waves", "blocks")


def get_style(style: str | Style) -> Style:
  """A `Style` from its name in STYLES (or the `Style` itself)."""
  if isinstance(style, Style):
    if style.background_texture not in _BACKGROUND_TEXTURES:
      raise ValueError(
          f"Style.background_texture must be one of {_BACKGROUND_TEXTURES}, "
          f"got {style.background_texture!r}"
      )
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
  rotate = (
      math.cos(angle) * np.eye(3)
      + math.sin(angle) * cross
      + (1 - math.cos(angle)) * np.outer(axis, axis)
  )
  return (np.diag(style.gain) @ rotate @ desaturate).astype(np.float32)


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
  """Separable Gaussian blur of float [H, W, C] with edge padding."""
  radius = max(1, math.ceil(3.0 * sigma))
  taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  taps = (taps / taps.sum()).astype(np.float32)
  height, width = image.shape[:2]
  padded = np.pad(image, ((radius, radius), (0, 0), (0, 0)), mode="edge")
  image = sum(t * padded[i : i + height] for i, t in enumerate(taps))
  padded = np.pad(image, ((0, 0), (radius, radius), (0, 0)), mode="edge")
  return sum(t * padded[:, i : i + width] for i, t in enumerate(taps))


def _time_key(time: float) -> int:
  # The bit pattern of the float: distinct times get independent noise, the same time the same noise.
  return int(np.float64(time).view(np.uint64))


# ----------------------------------------------------------------------------------------------------------
# Rendering.
# ----------------------------------------------------------------------------------------------------------


def _render_background(
    background: Background,
    camera: Camera,
    height: int,
    width: int,
    style: Style,
    dynamics: Dynamics | None = None,
    time: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
  """(rgb float32 [H, W, 3] in about [0, 1], depth float32 [H, W] in metres).

  With `dynamics`, the texture (gradient, waves, tiles, and the extra colour waves of `dynamics`) is read
  at coordinates shifted by the pan offset at `time`; the floor line and the depth stay put."""
  rows = (np.arange(height, dtype=np.float32) + 0.5) / height
  cols = (np.arange(width, dtype=np.float32) + 0.5) / width
  floor, wall = camera.floor_depth(rows), camera.wall_depth(rows)
  on_wall = wall < floor
  depth = np.broadcast_to(np.minimum(floor, wall)[:, None], (height, width)).astype(np.float32)
  base = np.where(
      on_wall[:, None], np.float32(background.wall_colour), np.float32(background.floor_colour)
  ).astype(
      np.float32
  )  # [H, 3]

  y, x = rows[:, None] - 0.5, cols[None, :] - 0.5
  off_y, off_x = (0.0, 0.0) if dynamics is None else dynamics.background_offset(time)
  panned = off_y != 0.0 or off_x != 0.0
  if panned:  # texture coordinates: the texture is unbounded and slides under the image
    y, x = y + np.float32(off_y), x + np.float32(off_x)
  angle = background.gradient_angle
  brightness = 1.0 + background.gradient_strength * (
      x * math.cos(angle) + y * math.sin(angle)
  )  # [H, W]
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
    if panned:  # the tiles repeat beyond the image
      ty = np.floor((y[:, 0] + 0.5) * tiles_y).astype(np.int64) % tiles_y
      tx = np.floor((x[0] + 0.5) * tiles_x).astype(np.int64) % tiles_x
    else:
      ty, tx = (rows * tiles_y).astype(np.int64), (cols * tiles_x).astype(np.int64)
    tile = tints[ty][:, tx]
    rgb = base[:, None, :] * (brightness[..., None] + tile)
  if dynamics is not None:
    # Extra colour texture: each wave moves the colour along its own RGB direction.
    for cycles, wave_angle, phase, amplitude, direction in dynamics.background_waves:
      along = x * math.cos(wave_angle) + y * math.sin(wave_angle)
      wave = amplitude * np.sin(2 * np.pi * (cycles * along + phase))
      rgb = rgb + base[:, None, :] * wave[..., None] * np.float32(direction)
    if dynamics.blotch_waves:
      # Camouflage: blotches of the palette's colours (each where its own wave field is highest), with
      # the background's shading, so the objects' colours are all over the background too.
      fields = np.stack(
          [
              sum(
                  np.sin(2 * np.pi * (cycles * (x * math.cos(a) + y * math.sin(a)) + phase))
                  for cycles, a, phase in waves
              )
              for waves in dynamics.blotch_waves
          ]
      )
      camo = np.float32(dynamics.palette)[np.argmax(fields, axis=0)] * brightness[..., None]
      rgb = rgb + dynamics.camouflage * (camo - rgb)
  return rgb.astype(np.float32), depth


def _paint_object(
    obj: ObjectSpec,
    pose: Pose,
    instance_id: int,
    image: np.ndarray,
    mask: np.ndarray,
    instances: np.ndarray,
    depth: np.ndarray,
    colours: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None,
    stretch: float = 1.0,
) -> None:
  """Paints one object over the arrays, in place, inside its bounding box only.

  colours: (base, pattern) RGB instead of the object's own (video camouflage); stretch: its local u is
  multiplied by it and v divided (video deformation)."""
  height, width = mask.shape
  cy, cx = pose.centre
  # Bounding circle of every shape (stretched), plus the anti-aliasing fringe.
  reach = 1.15 * pose.radius * max(stretch, 1.0 / stretch) + 1.0
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
  if stretch != 1.0:
    u, v = u / np.float32(stretch), v * np.float32(stretch)

  distance = shape_sdf(obj.shape, u, v) * pose.radius  # pixels, negative inside
  alpha = np.clip(0.5 - distance, 0.0, 1.0).astype(np.float32)
  inside = distance <= 0.0
  pattern = texture_weight(obj.texture, u, v, obj.texture_frequency, obj.texture_phase).astype(
      np.float32
  )
  base, pattern_colour = (obj.colour, obj.pattern_colour) if colours is None else colours
  colour = np.float32(base) + pattern[..., None] * (np.float32(pattern_colour) - np.float32(base))
  shade_angle, shade_strength = obj.shading
  colour *= (1.0 + shade_strength * (u * math.cos(shade_angle) + v * math.sin(shade_angle)))[
      ..., None
  ]

  window = image[y0:y1, x0:x1]
  window += alpha[..., None] * (colour - window)
  mask[y0:y1, x0:x1][inside] = obj.class_id
  instances[y0:y1, x0:x1][inside] = instance_id
  depth[y0:y1, x0:x1][inside] = pose.depth


def _finish(
    image: np.ndarray,
    style: Style,
    noise_seed: int,
    time: float,
    gain: np.ndarray | None = None,
) -> np.ndarray:
  """Illumination gain (video dynamics), style colour transform, blur and sensor noise; float [H, W, 3] ->
  uint8."""
  if gain is not None:
    image = image * gain
  if style.saturation != 1.0 or style.hue_rotation != 0.0 or style.gain != (1.0, 1.0, 1.0):
    image = image @ _colour_matrix(style).T
  if style.contrast != 1.0 or style.brightness != 0.0:
    image = (image - 0.5) * style.contrast + 0.5 + style.brightness
  image = np.clip(image, 0.0, 1.0)
  if style.gamma != 1.0:
    image = image**style.gamma
  if style.blur_sigma > 0:
    image = _gaussian_blur(image, style.blur_sigma)
  if style.noise_std > 0:
    rng = np.random.default_rng([noise_seed, 1, _time_key(time)])
    image = image + style.noise_std * rng.standard_normal(image.shape, dtype=np.float32)
  return np.clip(image * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8)


def render_scene(
    scene: Scene,
    *,
    height: int | None = None,
    width: int | None = None,
    time: float = 0.0,
    style: str | Style = "default",
    dynamics: Dynamics | None = None,
) -> dict[str, np.ndarray]:
  """Rasterises `scene` at `time` (objects moved by their velocities; `dynamics`: the video-only changes
  of `scenes.sample_dynamics`, None for none).

  Returns image uint8 [H, W, 3], mask uint8 [H, W] (0 background, 1..K class), instances int32 [H, W]
  (0 background, 1 + index into scene.objects), depth float32 [H, W] (metres) and intrinsics float32 [3, 3].
  height/width default to scene.image_size; keep its aspect ratio.
  """
  style = get_style(style)
  height = scene.image_size[0] if height is None else int(height)
  width = scene.image_size[1] if width is None else int(width)
  if min(height, width) < 1:
    raise ValueError(f"render_scene: image size must be positive, got {(height, width)}")
  gain = None
  if dynamics is not None:
    if dynamics.object_scales and len(dynamics.object_scales) != len(scene.objects):
      raise ValueError(
          f"dynamics has {len(dynamics.object_scales)} object scales for {len(scene.objects)} objects"
      )
    if dynamics.noise_std is not None:
      style = dataclasses.replace(style, noise_std=dynamics.noise_std)
    if dynamics.has_gain:
      gain = dynamics.gain(time)
  image, depth = _render_background(
      scene.background, scene.camera, height, width, style, dynamics, time
  )
  mask = np.zeros((height, width), dtype=np.uint8)
  instances = np.zeros((height, width), dtype=np.int32)
  poses = [
      object_pose(
          obj,
          scene.camera,
          height=height,
          width=width,
          time=time,
          scale=1.0 if dynamics is None else dynamics.object_scale(i, time),
      )
      for i, obj in enumerate(scene.objects)
  ]
  # Painter's order: far to near (ties by position in the scene), so nearer objects occlude farther ones.
  for i in sorted(range(len(poses)), key=lambda i: (-poses[i].depth, i)):
    extra = {}
    if dynamics is not None:
      extra = dict(
          colours=dynamics.object_colours(i, scene.objects[i]),
          stretch=dynamics.object_stretch(i, time),
      )
    _paint_object(scene.objects[i], poses[i], i + 1, image, mask, instances, depth, **extra)
  if dynamics is not None and dynamics.shadows:
    image *= dynamics.shadow_map(height, width, time)[..., None]
  return dict(
      image=_finish(image, style, scene.background.noise_seed, time, gain),
      mask=mask,
      instances=instances,
      depth=depth,
      intrinsics=scene.camera.intrinsics(height, width),
  )
