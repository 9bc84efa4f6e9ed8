"""Embedded synthetic segmentation data: random-access scenes generated from (seed, index), no files.

This module holds the sources (`SyntheticScenes`, `SyntheticVideos`: `__len__` / `__getitem__`, argument
checking in `SceneConfig`). The pure numpy generators live in three modules of this package, each
importing only the ones before it: `shapes` (what each class looks like: shape, texture, colour, size),
`scenes` (camera, background, objects, their sampling and motion) and `render` (domain styles,
occlusion, depth; `render_scene`). Their public names are re-exported here (`sources.render_scene`,
`sources.Style`, `sources.class_names`, ...).

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

Video dynamics (`SyntheticVideos` and `SyntheticClips` only, all off by default; `VideoDynamics`): a panning
background with extra colour texture (`background_speed`, `background_detail`), objects that grow and shrink
(`scale_amplitude`), a global illumination and white-balance drift (`illumination_amplitude`,
`colour_drift`), the sensor noise (`noise_std`), and what makes colour alone a poor cue for correspondence:
objects in the background's two colours (`camouflage`), per-frame exposure jumps (`flicker`), drifting
shadows (`shadows`) and squashing objects (`deformation`). Their per-video draws come from their own generator
`np.random.default_rng([seed, i, 1])`, so the scenes (objects, classes, motion) are the same with or without
them.

Determinism: sample i is a function of (seed, i, constructor arguments) only; its generator is
`np.random.default_rng([seed, i])`. Frame 0 of video i equals image i for the same arguments (with video
dynamics too, unless `background_detail`, `noise_std`, `camouflage` or `shadows` is set: each other term is
the identity at time 0).
"""

from __future__ import annotations

import dataclasses
import numbers
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxseg.data.synthetic.render import STYLES, Style, get_style, render_scene
from jaxseg.data.synthetic.scenes import (
    Background,
    Camera,
    Dynamics,
    ObjectSpec,
    Pose,
    Scene,
    VideoDynamics,
    object_pose,
    sample_dynamics,
    sample_scene,
)
from jaxseg.data.synthetic.shapes import (
    MAX_CLASSES,
    SHAPES,
    TEXTURES,
    ClassAppearance,
    check_num_classes,
    class_appearance,
    class_names,
    shape_sdf,
    texture_weight,
)

__all__ = [
    "MAX_CLASSES",
    "MAX_OBJECTS",
    "MIN_IMAGE_SIZE",
    "SHAPES",
    "STYLES",
    "TEXTURES",
    "Background",
    "Camera",
    "ClassAppearance",
    "Dynamics",
    "ObjectSpec",
    "Pose",
    "Scene",
    "SceneConfig",
    "Style",
    "SyntheticScenes",
    "SyntheticClips",
    "SyntheticVideos",
    "VideoDynamics",
    "class_appearance",
    "class_names",
    "get_style",
    "image_labels",
    "object_pose",
    "render_scene",
    "sample_dynamics",
    "sample_scene",
    "shape_sdf",
    "texture_weight",
]

MIN_IMAGE_SIZE = 16
MAX_OBJECTS = 64
# Rendered training frames kept per `SyntheticClips` (and per process): a 1000-step MAST run at 64 x 64
# draws 16 000 clip frames from 64 videos x 24 frames, so each frame is rendered once instead of ~10 times.
FRAME_CACHE_BYTES = 256 * 2**20


def image_labels(mask: np.ndarray, num_classes: int, min_visible_pixels: int) -> np.ndarray:
  """float32 [K] multi-hot: entry c - 1 is 1 iff class c covers >= min_visible_pixels pixels of mask [H, W]."""
  counts = np.bincount(mask.ravel(), minlength=num_classes + 1)[1 : num_classes + 1]
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
  object_scale: float = 1.0  # multiplies every object radius

  def __post_init__(self):
    set_ = lambda name, value: object.__setattr__(self, name, value)
    set_("num_classes", check_num_classes(self.num_classes))
    size = self.image_size
    if isinstance(size, np.ndarray):
      size = tuple(size.tolist())
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
      size = (size, size)
    if not isinstance(size, Sequence) or len(size) != 2:
      raise ValueError(
          f"image_size must be an int or a (height, width) pair, got {self.image_size!r}"
      )
    set_(
        "image_size",
        (
            _check_int("image_size[0] (height)", size[0], MIN_IMAGE_SIZE),
            _check_int("image_size[1] (width)", size[1], MIN_IMAGE_SIZE),
        ),
    )
    set_("seed", _check_int("seed", self.seed, 0))
    set_("min_objects", _check_int("min_objects", self.min_objects, 0, MAX_OBJECTS))
    set_(
        "max_objects",
        _check_int("max_objects", self.max_objects, max(1, self.min_objects), MAX_OBJECTS),
    )
    get_style(self.style)
    if (
        not isinstance(self.object_scale, numbers.Real)
        or not 0.1 <= float(self.object_scale) <= 4.0
    ):
      raise ValueError(f"object_scale must be a number in [0.1, 4], got {self.object_scale!r}")
    set_("object_scale", float(self.object_scale))
    if not isinstance(self.with_depth, (bool, np.bool_)):
      raise ValueError(f"with_depth must be a bool, got {self.with_depth!r}")
    height, width = self.image_size
    if self.min_visible_pixels is None:
      set_("min_visible_pixels", max(1, round(0.004 * height * width)))
    else:
      set_(
          "min_visible_pixels",
          _check_int("min_visible_pixels", self.min_visible_pixels, 1, height * width),
      )

  def scene(self, index: int) -> Scene:
    rng = np.random.default_rng([self.seed, index])
    return sample_scene(
        rng,
        num_classes=self.num_classes,
        image_size=self.image_size,
        min_objects=self.min_objects,
        max_objects=self.max_objects,
        object_scale=self.object_scale,
    )


def _check_index(owner: str, index: Any, length: int) -> int:
  if isinstance(index, (bool, np.bool_)) or not isinstance(index, numbers.Integral):
    raise TypeError(f"{owner}: index must be an integer, got {type(index).__name__} {index!r}")
  if not 0 <= index < length:
    raise IndexError(f"{owner}: index {int(index)} out of range for length {length}")
  return int(index)


class _SceneSource:
  """What both synthetic sources share: a `SceneConfig` and its class list."""

  config: SceneConfig

  @property
  def num_classes(self) -> int:
    return self.config.num_classes

  @property
  def class_names(self) -> list[str]:
    return class_names(self.config.num_classes)


class _VideoSource(_SceneSource):
  """What both video sources share: the `VideoDynamics` and their per-video draws."""

  dynamics_options: VideoDynamics

  def dynamics(self, video: int) -> Dynamics | None:
    """Video `video`'s draws of the dynamics (None when there are none: the still-image rendering)."""
    options = self.dynamics_options
    if not options.changes_frames and options.noise_std is None:
      return None
    rng = np.random.default_rng([self.config.seed, video, 1])
    return sample_dynamics(rng, self.config.scene(video), options)


class SyntheticScenes(_SceneSource):
  """Random-access source of synthetic segmentation samples (see the module docstring for the layout).

  Picklable and cheap to build: a sample is generated on demand from (seed, index). Use it through
  `grain.MapDataset.source(SyntheticScenes(...))`.
  """

  def __init__(
      self,
      num_images: int,
      *,
      num_classes: int = 6,
      image_size: int | tuple[int, int] = (64, 64),
      seed: int = 0,
      min_objects: int = 1,
      max_objects: int = 4,
      style: str | Style = "default",
      with_depth: bool = False,
      min_visible_pixels: int | None = None,
      object_scale: float = 1.0,
  ):
    self.num_images = _check_int("num_images", num_images, 0)
    self.config = SceneConfig(
        num_classes=num_classes,
        image_size=image_size,
        seed=seed,
        min_objects=min_objects,
        max_objects=max_objects,
        style=style,
        with_depth=with_depth,
        min_visible_pixels=min_visible_pixels,
        object_scale=object_scale,
    )

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
    sample = dict(
        image=rendered["image"],
        mask=rendered["mask"],
        instances=rendered["instances"],
        labels=image_labels(rendered["mask"], config.num_classes, config.min_visible_pixels),
        index=np.int64(index),
    )
    if config.with_depth:
      sample["depth"] = rendered["depth"]
      sample["intrinsics"] = rendered["intrinsics"]
    return sample


class SyntheticVideos(_VideoSource):
  """Random-access source of synthetic clips: objects move, rotate and occlude each other over time.

  A sample holds frames uint8 [T, H, W, 3], masks uint8 [T, H, W], instances int32 [T, H, W] (an object keeps
  its id in every frame), labels float32 [K] (classes visible enough in any frame), frame_labels float32
  [T, K], times float32 [T] (frame t is rendered at t * frame_interval), index int64, and with with_depth
  depths float32 [T, H, W] and intrinsics float32 [3, 3].

  Video dynamics (keyword arguments, all off by default; `VideoDynamics` documents each): background_speed
  (pan of the background texture, fraction of the width per unit time), background_detail (extra colour
  texture in the background), scale_amplitude (objects grow and shrink), illumination_amplitude and
  colour_drift (global brightness and white-balance drift), noise_std (per-frame sensor noise; None: the
  style's), camouflage (objects take the background's two colours), flicker (per-frame exposure and white
  balance jumps), shadows (drifting soft shadows), deformation (objects squash and stretch).
  """

  def __init__(
      self,
      num_videos: int,
      *,
      num_frames: int = 8,
      frame_interval: float = 1.0,
      num_classes: int = 6,
      image_size: int | tuple[int, int] = (64, 64),
      seed: int = 0,
      min_objects: int = 1,
      max_objects: int = 4,
      style: str | Style = "default",
      with_depth: bool = False,
      min_visible_pixels: int | None = None,
      object_scale: float = 1.0,
      background_speed: float = 0.0,
      background_detail: float = 0.0,
      scale_amplitude: float = 0.0,
      illumination_amplitude: float = 0.0,
      colour_drift: float = 0.0,
      noise_std: float | None = None,
      camouflage: float = 0.0,
      flicker: float = 0.0,
      shadows: float = 0.0,
      deformation: float = 0.0,
  ):
    self.num_videos = _check_int("num_videos", num_videos, 0)
    self.num_frames = _check_int("num_frames", num_frames, 1)
    self.dynamics_options = VideoDynamics(
        background_speed=background_speed,
        background_detail=background_detail,
        scale_amplitude=scale_amplitude,
        illumination_amplitude=illumination_amplitude,
        colour_drift=colour_drift,
        noise_std=noise_std,
        camouflage=camouflage,
        flicker=flicker,
        shadows=shadows,
        deformation=deformation,
    )
    if (
        isinstance(frame_interval, bool)
        or not isinstance(frame_interval, numbers.Real)
        or frame_interval <= 0
    ):
      raise ValueError(f"frame_interval must be a positive number, got {frame_interval!r}")
    self.frame_interval = float(frame_interval)
    self.config = SceneConfig(
        num_classes=num_classes,
        image_size=image_size,
        seed=seed,
        min_objects=min_objects,
        max_objects=max_objects,
        style=style,
        with_depth=with_depth,
        min_visible_pixels=min_visible_pixels,
        object_scale=object_scale,
    )

  def __len__(self) -> int:
    return self.num_videos

  def __repr__(self) -> str:
    return (
        f"SyntheticVideos(num_videos={self.num_videos}, num_frames={self.num_frames}, "
        f"frame_interval={self.frame_interval}, config={self.config}, "
        f"dynamics={self.dynamics_options})"
    )

  def scene(self, index: int) -> Scene:
    return self.config.scene(_check_index("SyntheticVideos", index, self.num_videos))

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = _check_index("SyntheticVideos", index, self.num_videos)
    config = self.config
    scene = config.scene(index)
    times = np.arange(self.num_frames, dtype=np.float32) * np.float32(self.frame_interval)
    dynamics = self.dynamics(index)
    frames = [
        render_scene(scene, time=float(t), style=config.style, dynamics=dynamics) for t in times
    ]
    masks = np.stack([f["mask"] for f in frames])
    frame_labels = np.stack(
        [image_labels(m, config.num_classes, config.min_visible_pixels) for m in masks]
    )
    sample = dict(
        frames=np.stack([f["image"] for f in frames]),
        masks=masks,
        instances=np.stack([f["instances"] for f in frames]),
        labels=frame_labels.max(axis=0),
        frame_labels=frame_labels,
        times=times,
        index=np.int64(index),
    )
    if config.with_depth:
      sample["depths"] = np.stack([f["depth"] for f in frames])
      sample["intrinsics"] = frames[0]["intrinsics"]
    return sample


class SyntheticClips(_VideoSource):
  """Unlabelled training clips of synthetic videos (the frame-pair / clip sampler of MAST and CRW).

  Item i is a clip of video `i % num_videos` (the same scenes as `SyntheticVideos` with these arguments):
  `clip_length` frames `gap` frames apart, the gap drawn from `frame_gaps` with `gap_probs` and the start
  frame uniformly from those that keep the clip inside the video's `num_frames`, both from
  rng([seed, 7, i]), so item i is the same clip in every epoch and process. Keys: clip uint8
  [T, H, W, 3], index int64 (no masks: the clips train without labels).

  Video dynamics (keyword arguments, all off by default; `VideoDynamics` documents each): background_speed
  (pan of the background texture, fraction of the width per unit time), background_detail (extra colour
  texture in the background), scale_amplitude (objects grow and shrink), illumination_amplitude and
  colour_drift (global brightness and white-balance drift), noise_std (per-frame sensor noise; None: the
  style's), camouflage (objects take the background's two colours), flicker (per-frame exposure and white
  balance jumps), shadows (drifting soft shadows), deformation (objects squash and stretch).
  """

  def __init__(
      self,
      num_videos: int,
      *,
      num_clips: int,
      clip_length: int = 2,
      num_frames: int = 24,
      frame_gaps: Sequence[int] = (1, 2, 3),
      gap_probs: Sequence[float] | None = None,
      frame_interval: float = 1.0,
      background_speed: float = 0.0,
      background_detail: float = 0.0,
      scale_amplitude: float = 0.0,
      illumination_amplitude: float = 0.0,
      colour_drift: float = 0.0,
      noise_std: float | None = None,
      camouflage: float = 0.0,
      flicker: float = 0.0,
      shadows: float = 0.0,
      deformation: float = 0.0,
      **scene_kwargs: Any,
  ):
    self.num_videos = _check_int("num_videos", num_videos, 1)
    self.num_clips = _check_int("num_clips", num_clips, 0)
    self.clip_length = _check_int("clip_length", clip_length, 1)
    self.num_frames = _check_int("num_frames", num_frames, 1)
    self.frame_gaps = tuple(_check_int("frame_gaps[i]", g, 1) for g in frame_gaps)
    if not self.frame_gaps:
      raise ValueError("frame_gaps must hold at least one gap")
    if (max(self.frame_gaps)) * (self.clip_length - 1) >= self.num_frames:
      raise ValueError(
          f"a clip of {self.clip_length} frames {max(self.frame_gaps)} apart does not fit in "
          f"num_frames={self.num_frames}"
      )
    probs = np.full(len(self.frame_gaps), 1.0 / len(self.frame_gaps))
    if gap_probs is not None:
      probs = np.asarray(gap_probs, np.float64)
      if probs.shape != (len(self.frame_gaps),) or np.any(probs < 0) or probs.sum() <= 0:
        raise ValueError(f"gap_probs {gap_probs!r} must be {len(self.frame_gaps)} weights >= 0")
      probs = probs / probs.sum()
    self.gap_probs = tuple(float(p) for p in probs)
    self.frame_interval = float(frame_interval)
    self.config = SceneConfig(**scene_kwargs)
    self.dynamics_options = VideoDynamics(
        background_speed=background_speed,
        background_detail=background_detail,
        scale_amplitude=scale_amplitude,
        illumination_amplitude=illumination_amplitude,
        colour_drift=colour_drift,
        noise_std=noise_std,
        camouflage=camouflage,
        flicker=flicker,
        shadows=shadows,
        deformation=deformation,
    )

  def __len__(self) -> int:
    return self.num_clips

  def __repr__(self) -> str:
    return (
        f"SyntheticClips(num_videos={self.num_videos}, num_clips={self.num_clips}, "
        f"clip_length={self.clip_length}, frame_gaps={self.frame_gaps}, config={self.config}, "
        f"dynamics={self.dynamics_options})"
    )

  def __getstate__(self):  # the frame cache stays in its process: workers start with their own
    state = self.__dict__.copy()
    state.pop("_frames", None)
    state.pop("_frames_lock", None)
    return state

  def frame(self, video: int, t: int) -> np.ndarray:
    """uint8 [H, W, 3]: frame `t` of video `video`, rendered once and kept while the cache has room
    (`FRAME_CACHE_BYTES`); rendering is a pure function of its arguments, so a kept frame is exact.
    """
    if "_frames" not in self.__dict__:
      self._frames, self._frames_bytes, self._frames_lock = {}, 0, threading.Lock()
    key = (video, t)
    image = self._frames.get(key)
    if image is None:
      image = render_scene(
          self.config.scene(video),
          time=float(t) * self.frame_interval,
          style=self.config.style,
          dynamics=self.dynamics(video),
      )["image"]
      image.setflags(write=False)
      with self._frames_lock:
        if self._frames_bytes + image.nbytes <= FRAME_CACHE_BYTES:
          self._frames[key] = image
          self._frames_bytes += image.nbytes
    return image

  def frame_indices(self, index: int) -> np.ndarray:
    """The video frames item `index` shows, int64 [clip_length]."""
    index = _check_index("SyntheticClips", index, self.num_clips)
    rng = np.random.default_rng([self.config.seed, 7, index])
    gap = int(rng.choice(self.frame_gaps, p=self.gap_probs))
    last_start = self.num_frames - 1 - gap * (self.clip_length - 1)
    start = int(rng.integers(0, last_start + 1))
    return start + gap * np.arange(self.clip_length, dtype=np.int64)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    video = int(index) % self.num_videos
    clip = np.stack([self.frame(video, int(t)) for t in self.frame_indices(index)])
    return dict(clip=clip, index=np.int64(index))
