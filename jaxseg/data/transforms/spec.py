"""grain transforms built from config dicts: `build_augment` and `build_eval_transform`.

Both take an optional `kinds` entry, {key: kind} (see `kinds`), passed to every transform, e.g.
{"disparity": "depth", "rgb_right": "image", "pose": "other"}; keys not in it get their kind
from `kinds.DEFAULT_KINDS` or by inference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import numpy as np

from jaxseg.data.transforms import kinds as K
from jaxseg.data.transforms.geometric import (
    center_crop,
    check_size,
    random_crop,
    random_flip,
    random_resize_long,
    random_scale,
    resize,
)
from jaxseg.data.transforms.photometric import IMAGENET_MEAN, IMAGENET_STD, color_jitter, normalize

Example = K.Example

_AUGMENT_KEYS = frozenset(
    {
        "scale_range",
        "resize_long",
        "crop_size",
        "flip",
        "color_jitter",
        "normalize",
        "mean",
        "std",
        "ignore_index",
        "image_fill",
        "spatial_keys",
        "kinds",
    }
)
_EVAL_KEYS = frozenset(
    {
        "resize",
        "crop_size",
        "normalize",
        "mean",
        "std",
        "ignore_index",
        "image_fill",
        "spatial_keys",
        "kinds",
    }
)


def _spec_dict(spec: Any, allowed: frozenset[str], what: str) -> dict[str, Any]:
  if hasattr(spec, "to_dict"):  # ml_collections.ConfigDict.
    spec = spec.to_dict()
  spec = dict(spec or {})
  unknown = sorted(set(spec) - allowed)
  if unknown:
    raise ValueError(f"unknown {what} spec keys {unknown}; allowed: {sorted(allowed)}")
  return spec


def _opt_tuple(value: Any, name: str, length: int) -> tuple | None:
  if value is None:
    return None
  value = tuple(value)
  if len(value) != length:
    raise ValueError(f"spec {name!r} must have {length} values, got {value!r}")
  return value


def _fill_value(image_fill: Any, mean: Sequence[float]) -> Any:
  """'mean' pads with the normalisation mean colour, i.e. 0 after `normalize` (as SEAM)."""
  if isinstance(image_fill, str):
    if image_fill != "mean":
      raise ValueError(
          f"spec 'image_fill' must be a number, 3 numbers or 'mean', got {image_fill!r}"
      )
    return tuple(255.0 * m for m in mean)
  return image_fill


def _finish(
    example: Example, normalize_image: bool, mean, std, kinds: Mapping[str, str] | None
) -> Example:
  if normalize_image:
    example = normalize(example, mean, std, kinds=kinds)
  for key in K.keys_of_kind(example, (K.MASK, K.CLIP_MASK), kinds):
    example[key] = example[key].astype(np.int32)
  return example


@dataclasses.dataclass(frozen=True)
class _OutputSpec:
  """What the train and eval transforms share: padding, normalisation, spatial keys, key kinds.

  `kinds` is stored as sorted (key, kind) pairs so the frozen transform stays hashable.
  """

  normalize: bool = True
  mean: tuple[float, float, float] = IMAGENET_MEAN
  std: tuple[float, float, float] = IMAGENET_STD
  ignore_index: int = 255
  image_fill: Any = 0
  spatial_keys: tuple[str, ...] | None = None
  kinds: tuple[tuple[str, str], ...] | None = None

  def _kinds(self) -> dict[str, str] | None:
    return None if self.kinds is None else dict(self.kinds)


@dataclasses.dataclass(frozen=True)
class SegmentationAugment(_OutputSpec, grain.transforms.RandomMap):
  """Train-time augment: random_resize_long -> random_scale -> random_flip -> color_jitter -> random_crop -> normalize.

  The order follows SEAM (jitter before the crop, so padding is not jittered).
  Output: image float32 [h, w, 3] normalised (uint8 if normalize=False),
  mask int32 [h, w], every dense key (clips too) crop_size so batches stack,
  intrinsics moved with the image. Each step draws once for all keys and frames.
  Build it with `build_augment`.
  """

  scale_range: tuple[float, float] | None = (0.5, 1.5)
  resize_long: tuple[int, int] | None = None
  crop_size: tuple[int, int] | None = None
  flip_prob: float = 0.5
  color_jitter: tuple[float, float, float, float] | None = None

  def random_map(self, element: Example, rng: np.random.Generator) -> Example:
    kw = dict(spatial_keys=self.spatial_keys, kinds=self._kinds())
    ex = dict(element)
    if self.resize_long is not None:
      ex = random_resize_long(ex, rng, self.resize_long, **kw)
    if self.scale_range is not None:
      ex = random_scale(ex, rng, self.scale_range, **kw)
    if self.flip_prob > 0:
      ex = random_flip(ex, rng, self.flip_prob, **kw)
    if self.color_jitter is not None:
      ex = color_jitter(ex, rng, *self.color_jitter, kinds=kw["kinds"])
    if self.crop_size is not None:
      ex = random_crop(
          ex,
          rng,
          self.crop_size,
          self.ignore_index,
          fill=_fill_value(self.image_fill, self.mean),
          **kw,
      )
    return _finish(ex, self.normalize, self.mean, self.std, kw["kinds"])

  def __call__(self, element: Example, rng: np.random.Generator) -> Example:
    return self.random_map(element, rng)


@dataclasses.dataclass(frozen=True)
class SegmentationEvalTransform(_OutputSpec, grain.transforms.Map):
  """Eval transform: optional resize -> optional center_crop -> normalize; mask -> int32."""

  resize: tuple[int, int] | None = None
  crop_size: tuple[int, int] | None = None

  def map(self, element: Example) -> Example:
    kw = dict(spatial_keys=self.spatial_keys, kinds=self._kinds())
    ex = dict(element)
    if self.resize is not None:
      ex = resize(ex, self.resize, **kw)
    if self.crop_size is not None:
      ex = center_crop(
          ex, self.crop_size, self.ignore_index, fill=_fill_value(self.image_fill, self.mean), **kw
      )
    return _finish(ex, self.normalize, self.mean, self.std, kw["kinds"])

  def __call__(self, element: Example) -> Example:
    return self.map(element)


def _common(spec: dict[str, Any]) -> dict[str, Any]:
  mean = _opt_tuple(spec.get("mean", IMAGENET_MEAN), "mean", 3)
  std = _opt_tuple(spec.get("std", IMAGENET_STD), "std", 3)
  normalize({"image": np.zeros((1, 1, 3), np.uint8)}, mean, std)  # Fail now, not in a worker.
  keys = spec.get("spatial_keys")
  image_fill = spec.get("image_fill", 0)
  _fill_value(image_fill, mean)
  kinds = spec.get("kinds")
  kinds = None if kinds is None else tuple(sorted(K.check_kinds(kinds).items()))
  return dict(
      normalize=bool(spec.get("normalize", True)),
      mean=mean,
      std=std,
      ignore_index=int(spec.get("ignore_index", 255)),
      image_fill=tuple(image_fill) if isinstance(image_fill, (list, tuple)) else image_fill,
      spatial_keys=None if keys is None else tuple(keys),
      kinds=kinds,
  )


def build_augment(spec: Mapping[str, Any]) -> SegmentationAugment:
  """Train augment from a config dict (or ConfigDict).

  Keys (all optional): resize_long (lo, hi) | None = None (SEAM's random
  long-side resize, applied first); scale_range (lo, hi) | None = (0.5, 1.5);
  crop_size (h, w) | None (None = no crop; batches then need equal sizes);
  flip: bool or probability (True = 0.5); color_jitter: (brightness,
  contrast, saturation, hue) | None; normalize: bool = True; mean, std on the
  0..1 scale (ImageNet); ignore_index = 255; image_fill: pad value of the image
  (number, 3 numbers, or 'mean' = 0 after normalisation); spatial_keys; kinds:
  {key: kind} declarations (see `kinds`). Unknown keys are a ValueError.
  """
  spec = _spec_dict(spec, _AUGMENT_KEYS, "augment")
  scale_range = _opt_tuple(spec.get("scale_range", (0.5, 1.5)), "scale_range", 2)
  if scale_range is not None and not 0 < scale_range[0] <= scale_range[1]:
    raise ValueError(f"spec 'scale_range' must satisfy 0 < lo <= hi, got {scale_range}")
  crop_size = _opt_tuple(spec.get("crop_size"), "crop_size", 2)
  if crop_size is not None:
    crop_size = check_size(crop_size, "spec 'crop_size'")
  flip = spec.get("flip", True)
  flip_prob = (0.5 if flip else 0.0) if isinstance(flip, bool) else float(flip)
  if not 0.0 <= flip_prob <= 1.0:
    raise ValueError(f"spec 'flip' must be a bool or a probability, got {flip!r}")
  jitter = _opt_tuple(spec.get("color_jitter"), "color_jitter", 4)
  if jitter is not None:  # Check the values now rather than in a worker.
    color_jitter({"image": np.zeros((1, 1, 3), np.uint8)}, np.random.default_rng(0), *jitter)
  resize_long = _opt_tuple(spec.get("resize_long"), "resize_long", 2)
  if resize_long is not None and not 0 < resize_long[0] <= resize_long[1]:
    raise ValueError(f"spec 'resize_long' must satisfy 0 < lo <= hi, got {resize_long}")
  return SegmentationAugment(
      scale_range=scale_range,
      resize_long=resize_long,
      crop_size=crop_size,
      flip_prob=flip_prob,
      color_jitter=jitter,
      **_common(spec),
  )


def build_eval_transform(spec: Mapping[str, Any]) -> SegmentationEvalTransform:
  """Eval transform from a config dict (or ConfigDict).

  Keys (all optional): resize (h, w) | None; crop_size (h, w) | None (center
  crop with padding); normalize, mean, std, ignore_index, image_fill,
  spatial_keys, kinds as in `build_augment`. Unknown keys are a ValueError.
  """
  spec = _spec_dict(spec, _EVAL_KEYS, "eval transform")
  size = _opt_tuple(spec.get("resize"), "resize", 2)
  crop_size = _opt_tuple(spec.get("crop_size"), "crop_size", 2)
  return SegmentationEvalTransform(
      resize=None if size is None else check_size(size, "spec 'resize'"),
      crop_size=None if crop_size is None else check_size(crop_size, "spec 'crop_size'"),
      **_common(spec),
  )


def segmentation_augment_spec(config) -> dict[str, Any]:
  """The segmentation train augment of a config's `augment` / `normalize` / `data.ignore_index`
  sections (supervised training, HN pre-training and fine-tuning)."""
  a = config.augment
  return dict(
      scale_range=tuple(a.scale_range),
      crop_size=tuple(a.crop_size),
      flip=bool(a.flip),
      color_jitter=tuple(a.color_jitter) if a.color_jitter else None,
      mean=tuple(config.normalize.mean),
      std=tuple(config.normalize.std),
      ignore_index=config.data.ignore_index,
  )


def segmentation_eval_spec(config) -> dict[str, Any]:
  """The eval transform of a config's `evaluate.eval_size` / `normalize` / `data.ignore_index`."""
  # Pad/centre-crop to one size so eval batches stack (padding is ignore_index).
  return dict(
      crop_size=tuple(config.evaluate.eval_size),
      mean=tuple(config.normalize.mean),
      std=tuple(config.normalize.std),
      ignore_index=config.data.ignore_index,
  )
