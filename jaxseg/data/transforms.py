"""Joint image + mask transforms on numpy examples (run inside grain workers).

An example is a dict of numpy arrays:
  image       uint8 [H, W, 3] RGB (float32 after `normalize`)
  mask        uint8 [H, W] class ids, `ignore_index` (255) = not labelled
  other spatial keys, e.g. instances int32 [H, W], depth float32 [H, W],
  cam float32 [H, W, C]
  non-spatial keys, e.g. labels float32 [K], index int, id str,
  intrinsics [3, 3]: passed through untouched by every transform.

Every random transform is a pure function `fn(example, rng, **params) -> dict`
that draws its randomness once and applies it to every spatial key (same scale,
same crop window, same flip), so the image and its label maps stay aligned. The
input dict and its arrays are never modified.

Spatial keys are the arrays whose first two dims equal the image's (H, W),
except the names in `NON_SPATIAL_KEYS`; pass `spatial_keys=` to override.

Interpolation: the key `image` and floating-point maps are resampled bilinearly,
integer and bool maps (mask, instances, ...) with nearest neighbour.
Both use pixel centres at half-integers (`align_corners=False`). Bilinear
resampling is PIL's: when shrinking, the triangle filter is widened by the
scale factor (antialiasing), which equals
`jax.image.resize(x, shape, "linear", antialias=True)` and what
torchvision's `Resize` does on PIL images. Nearest neighbour takes source
pixel `floor((i + 0.5) * in_size / out_size)` for output pixel i (PIL's rule,
applied per axis in numpy, so any integer dtype and channel count works).
scipy.ndimage.zoom was ~10x slower than PIL on 512x512 RGB and cv2 is not
installed.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Sequence

import grain
import numpy as np
from PIL import Image

from jaxseg.data.errors import DataError

Example = dict[str, Any]

# torchvision/ImageNet statistics on the 0..1 scale (see `normalize`).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Never treated as spatial, even when a tiny image happens to match their shape.
NON_SPATIAL_KEYS = frozenset({"labels", "index", "id", "intrinsics"})

# ITU-R 601 luma weights, as in torchvision's rgb_to_grayscale.
_GRAY_WEIGHTS = np.array([0.2989, 0.587, 0.114], np.float32)


# ----------------------------------------------------------------------------
# Spatial keys and resampling.
# ----------------------------------------------------------------------------
def image_size(example: Mapping[str, Any]) -> tuple[int, int]:
  """(H, W) of `example['image']`."""
  if "image" not in example:
    raise DataError(f"example has no 'image' key (keys: {sorted(example)})")
  image = np.asarray(example["image"])
  if image.ndim != 3 or image.shape[-1] != 3:
    raise DataError(f"'image' must be [H, W, 3], got shape {image.shape}")
  return image.shape[0], image.shape[1]


def spatial_keys_of(example: Mapping[str, Any],
                    spatial_keys: Iterable[str] | None = None) -> tuple[str, ...]:
  """Keys transformed together with the image (always including 'image').

  With `spatial_keys` given, each must exist and share the image's (H, W).
  """
  h, w = image_size(example)
  if spatial_keys is None:
    keys = [k for k, v in example.items()
            if k not in NON_SPATIAL_KEYS and isinstance(v, np.ndarray)
            and v.ndim >= 2 and v.shape[:2] == (h, w)]
  else:
    keys = list(dict.fromkeys(["image", *spatial_keys]))
    for k in keys:
      if k not in example:
        raise DataError(f"spatial key {k!r} missing from example (keys: {sorted(example)})")
      shape = np.shape(example[k])
      if len(shape) < 2 or shape[:2] != (h, w):
        raise DataError(f"spatial key {k!r} has shape {shape}, expected ({h}, {w}, ...) "
                        "to match 'image'")
  return tuple(keys)


def _is_label_like(key: str, array: np.ndarray) -> bool:
  """Integer/bool maps hold ids: resample them with nearest neighbour."""
  return key != "image" and (np.issubdtype(array.dtype, np.integer) or array.dtype == bool)


def _nearest_indices(in_size: int, out_size: int) -> np.ndarray:
  centres = (np.arange(out_size) + 0.5) * (in_size / out_size)
  return np.minimum(np.floor(centres).astype(np.int64), in_size - 1)


def _resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  rows = _nearest_indices(array.shape[0], size[0])
  cols = _nearest_indices(array.shape[1], size[1])
  return array[rows[:, None], cols[None, :]]


def _resize_bilinear(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """PIL bilinear; uint8 RGB in one call, anything else per channel in mode 'F'."""
  pil_size = (size[1], size[0])  # PIL wants (width, height).
  if array.dtype == np.uint8 and array.ndim == 3 and array.shape[-1] == 3:
    return np.asarray(Image.fromarray(array, mode="RGB").resize(pil_size, Image.BILINEAR))
  out_dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else np.float32
  flat = array.reshape(array.shape[:2] + (-1,)).astype(np.float32, copy=False)
  channels = [
      np.asarray(Image.fromarray(np.ascontiguousarray(flat[..., c]), mode="F")
                 .resize(pil_size, Image.BILINEAR))
      for c in range(flat.shape[-1])
  ]
  out = np.stack(channels, axis=-1).reshape(size + array.shape[2:])
  if array.dtype == np.uint8:  # a uint8 image that is not 3-channel RGB.
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
  return out.astype(out_dtype, copy=False)


def resize_array(key: str, array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Resizes one [H, W, ...] array to `size` = (h, w) with the rule for `key`."""
  if tuple(array.shape[:2]) == tuple(size):
    return array
  if _is_label_like(key, array):
    return _resize_nearest(array, size)
  return _resize_bilinear(array, size)


def _check_size(size: Sequence[int], name: str) -> tuple[int, int]:
  if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
    raise ValueError(f"{name} must be two positive ints (h, w), got {size!r}")
  return int(size[0]), int(size[1])


def resize(example: Example, size: Sequence[int], *,
           spatial_keys: Iterable[str] | None = None) -> Example:
  """Deterministic resize of every spatial key to `size` = (h, w)."""
  size = _check_size(size, "size")
  keys = spatial_keys_of(example, spatial_keys)
  return {**example, **{k: resize_array(k, example[k], size) for k in keys}}


def random_scale(example: Example, rng: np.random.Generator,
                 scale_range: Sequence[float] = (0.5, 1.5), *,
                 spatial_keys: Iterable[str] | None = None) -> Example:
  """Resizes by one factor s ~ U[scale_range] (aspect kept, sides rounded)."""
  lo, hi = scale_range
  if not 0 < lo <= hi:
    raise ValueError(f"scale_range must satisfy 0 < lo <= hi, got {scale_range!r}")
  scale = rng.uniform(lo, hi)
  h, w = image_size(example)
  size = (max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5)))
  return resize(example, size, spatial_keys=spatial_keys)


def random_resize_long(example: Example, rng: np.random.Generator,
                       long_range: Sequence[int] = (448, 768), *,
                       spatial_keys: Iterable[str] | None = None) -> Example:
  """SEAM/PSA `RandomResizeLong`: long side ~ randint[lo, hi] (inclusive), aspect kept.

  The RGB image is resampled with PIL bicubic, as the official code does;
  other spatial keys follow `resize_array`'s rules. Short side = round(s * long / L).
  """
  lo, hi = int(long_range[0]), int(long_range[1])
  if not 0 < lo <= hi:
    raise ValueError(f"resize_long must satisfy 0 < lo <= hi, got {long_range!r}")
  target = int(rng.integers(lo, hi + 1))
  h, w = image_size(example)
  if w > h:
    size = (max(1, int(round(h * target / w))), target)
  else:
    size = (target, max(1, int(round(w * target / h))))
  out = dict(example)
  for key in spatial_keys_of(example, spatial_keys):
    array = example[key]
    if key == "image" and array.dtype == np.uint8 and array.ndim == 3 and array.shape[-1] == 3:
      out[key] = np.asarray(Image.fromarray(array, mode="RGB").resize((size[1], size[0]), Image.BICUBIC))
    else:
      out[key] = resize_array(key, array, size)
  return out


# ----------------------------------------------------------------------------
# Cropping and padding.
# ----------------------------------------------------------------------------
def _pad_value(key: str, array: np.ndarray, ignore_index: int, fill: Any,
               pad_values: Mapping[str, Any] | None) -> Any:
  if pad_values and key in pad_values:
    return pad_values[key]
  if key == "mask":
    return ignore_index
  if key == "image":
    fill = np.asarray(fill, np.float64)
    if fill.ndim and fill.shape != (array.shape[-1],):
      raise ValueError(f"fill must be a scalar or one value per image channel, got {fill}")
    return fill
  return 0


def _window(example: Example, keys: Sequence[str], crop_size: tuple[int, int],
            src: tuple[int, int], dst: tuple[int, int], ignore_index: int, fill: Any,
            pad_values: Mapping[str, Any] | None) -> Example:
  """Copies the window at `src` (per axis) of every key into a fresh canvas at `dst`.

  Per axis exactly one of src/dst is non-zero: the image is larger (crop at
  src) or smaller (placed at dst in a canvas of pad values) than the crop.
  """
  h, w = image_size(example)
  ch, cw = crop_size
  n_h, n_w = min(h, ch), min(w, cw)
  out = dict(example)
  for k in keys:
    a = example[k]
    if (h, w) == (ch, cw):
      continue
    value = np.asarray(_pad_value(k, a, ignore_index, fill, pad_values))
    if not np.issubdtype(a.dtype, np.floating):
      value = np.rint(value)
    canvas = np.empty((ch, cw) + a.shape[2:], a.dtype)
    canvas[...] = value.astype(a.dtype)
    canvas[dst[0]:dst[0] + n_h, dst[1]:dst[1] + n_w] = (
        a[src[0]:src[0] + n_h, src[1]:src[1] + n_w])
    out[k] = canvas
  return out


def random_crop(example: Example, rng: np.random.Generator, crop_size: Sequence[int],
                ignore_index: int = 255, *, fill: Any = 0,
                pad_values: Mapping[str, Any] | None = None,
                spatial_keys: Iterable[str] | None = None) -> Example:
  """A random (h, w) = crop_size window of every spatial key.

  A side shorter than the crop is padded: the image is placed at a uniformly
  random offset inside a canvas filled with `fill` (image), `ignore_index`
  (mask) or 0 (everything else), as SEAM/psa's `RandomCrop` does; override
  per key with `pad_values`. A longer side is cropped at a uniform offset.
  """
  ch, cw = _check_size(crop_size, "crop_size")
  keys = spatial_keys_of(example, spatial_keys)
  h, w = image_size(example)
  off_h = int(rng.integers(0, abs(h - ch) + 1))
  off_w = int(rng.integers(0, abs(w - cw) + 1))
  src = (off_h if h > ch else 0, off_w if w > cw else 0)
  dst = (off_h if h < ch else 0, off_w if w < cw else 0)
  return _window(example, keys, (ch, cw), src, dst, ignore_index, fill, pad_values)


def center_crop(example: Example, crop_size: Sequence[int], ignore_index: int = 255, *,
                fill: Any = 0, pad_values: Mapping[str, Any] | None = None,
                spatial_keys: Iterable[str] | None = None) -> Example:
  """The central crop_size window; short sides are padded equally on both ends."""
  ch, cw = _check_size(crop_size, "crop_size")
  keys = spatial_keys_of(example, spatial_keys)
  h, w = image_size(example)
  src = (max(h - ch, 0) // 2, max(w - cw, 0) // 2)
  dst = (max(ch - h, 0) // 2, max(cw - w, 0) // 2)
  return _window(example, keys, (ch, cw), src, dst, ignore_index, fill, pad_values)


def random_flip(example: Example, rng: np.random.Generator, prob: float = 0.5, *,
                spatial_keys: Iterable[str] | None = None) -> Example:
  """Horizontal flip of every spatial key with probability `prob`.

  Non-spatial keys (e.g. `intrinsics`) are not adjusted.
  """
  keys = spatial_keys_of(example, spatial_keys)
  if rng.random() >= prob:
    return dict(example)
  return {**example, **{k: np.ascontiguousarray(example[k][:, ::-1]) for k in keys}}


# ----------------------------------------------------------------------------
# Photometric transforms (image only).
# ----------------------------------------------------------------------------
def _blend(image: np.ndarray, other: np.ndarray | float, factor: float) -> np.ndarray:
  return np.clip(factor * image + (1.0 - factor) * other, 0.0, 255.0)


def _grayscale(image: np.ndarray) -> np.ndarray:
  return image @ _GRAY_WEIGHTS


def adjust_brightness(image: np.ndarray, factor: float) -> np.ndarray:
  """float [H, W, 3] on 0..255: blend with black (factor 0 = black, 1 = same)."""
  return _blend(image, 0.0, factor)


def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
  """Blend with the mean grey level of the whole image (factor 0 = flat grey)."""
  return _blend(image, float(_grayscale(image).mean()), factor)


def adjust_saturation(image: np.ndarray, factor: float) -> np.ndarray:
  """Blend with the per-pixel grey image (factor 0 = greyscale)."""
  return _blend(image, _grayscale(image)[..., None], factor)


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
  """[..., 3] RGB in [0, 1] -> HSV in [0, 1] (hue as a fraction of a turn)."""
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  maxc = np.maximum(np.maximum(r, g), b)  # not rgb.max(-1): reducing a length-3 axis is ~5x slower
  minc = np.minimum(np.minimum(r, g), b)
  delta = maxc - minc
  safe = np.where(delta > 0, delta, 1.0)
  s = np.where(maxc > 0, delta / np.where(maxc > 0, maxc, 1.0), 0.0)
  rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
  h = np.where(r == maxc, bc - gc, np.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc))
  h = np.where(delta > 0, (h / 6.0) % 1.0, 0.0)
  return np.stack([h, s, maxc], axis=-1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
  """Inverse of `rgb_to_hsv`.

  Channel n in (r, g, b) = v - v s clip(min(k, 4 - k), 0, 1) with k = (n' + 6 h) mod 6, n' = 5, 3, 1: the
  six-sector formula without per-pixel branching (about 3x faster than selecting sectors).
  """
  h6 = hsv[..., 0] * 6.0
  vs = hsv[..., 2] * hsv[..., 1]
  out = np.empty(hsv.shape, np.result_type(hsv.dtype, np.float32))
  for channel, offset in enumerate((5.0, 3.0, 1.0)):
    k = np.mod(h6 + offset, 6.0)
    out[..., channel] = hsv[..., 2] - vs * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
  return out


def adjust_hue(image: np.ndarray, hue_shift: float) -> np.ndarray:
  """Rotates hue by `hue_shift` turns, in [-0.5, 0.5]."""
  hsv = rgb_to_hsv(image / 255.0)
  hsv[..., 0] = (hsv[..., 0] + hue_shift) % 1.0
  return hsv_to_rgb(hsv) * 255.0


def _jitter_range(value: float | Sequence[float], name: str, center: float,
                  bound: tuple[float, float]) -> tuple[float, float] | None:
  """torchvision ColorJitter's parameter rule: v -> [center - v, center + v] clipped."""
  if isinstance(value, (int, float)):
    if value < 0:
      raise ValueError(f"color_jitter {name} must be >= 0, got {value}")
    lo, hi = center - value, center + value
    if name == "hue" and not bound[0] <= lo <= hi <= bound[1]:
      raise ValueError(f"color_jitter hue must be in [0, 0.5], got {value}")
    lo, hi = max(lo, bound[0]), min(hi, bound[1])
  else:
    lo, hi = (float(v) for v in value)
    if not bound[0] <= lo <= hi <= bound[1]:
      raise ValueError(f"color_jitter {name} range {value!r} must lie within {bound}")
  return None if lo == hi == center else (lo, hi)


def color_jitter(example: Example, rng: np.random.Generator,
                 brightness: float | Sequence[float] = 0.0,
                 contrast: float | Sequence[float] = 0.0,
                 saturation: float | Sequence[float] = 0.0,
                 hue: float | Sequence[float] = 0.0) -> Example:
  """torchvision `ColorJitter` on `example['image']` (uint8 [H, W, 3]); other keys untouched.

  Factors are drawn as torchvision does: brightness/contrast/saturation
  b ~ U[max(0, 1 - b), 1 + b], hue shift ~ U[-hue, hue] (hue <= 0.5); a
  (lo, hi) pair gives the range directly. The four ops run in a random
  order, in float32 on the 0..255 scale with clipping after each op, and the
  result is rounded back to uint8.
  """
  image = example["image"]
  if image.dtype != np.uint8:
    raise DataError(f"color_jitter expects a uint8 image, got {image.dtype} (apply it before normalize)")
  ranges = [
      _jitter_range(brightness, "brightness", 1.0, (0.0, np.inf)),
      _jitter_range(contrast, "contrast", 1.0, (0.0, np.inf)),
      _jitter_range(saturation, "saturation", 1.0, (0.0, np.inf)),
      _jitter_range(hue, "hue", 0.0, (-0.5, 0.5)),
  ]
  ops = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
  order = rng.permutation(4)
  factors = [None if r is None else rng.uniform(*r) for r in ranges]
  out = image.astype(np.float32)
  for i in order:
    if factors[i] is not None:
      out = ops[i](out, factors[i])
  return {**example, "image": np.clip(np.rint(out), 0, 255).astype(np.uint8)}


def normalize(example: Example, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> Example:
  """uint8 image -> float32 (image / 255 - mean) / std.

  `mean` and `std` are on the **0..1 scale** (torchvision convention, ImageNet
  defaults), as in SEAM's `Normalize`.
  """
  image = example["image"]
  if image.dtype != np.uint8:
    raise DataError(f"normalize expects a uint8 image, got {image.dtype} (normalized twice?)")
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)
  if mean.shape != (3,) or std.shape != (3,) or np.any(std <= 0):
    raise ValueError(f"mean/std must be 3 values with std > 0, got mean={mean}, std={std}")
  if np.any(mean > 1.0) or np.any(std > 1.0):
    raise ValueError(f"mean/std must be on the 0..1 scale (e.g. {IMAGENET_MEAN}), got "
                     f"mean={mean.tolist()}, std={std.tolist()}; divide 0..255 values by 255")
  out = (image.astype(np.float32) * (1.0 / 255.0) - mean) / std
  return {**example, "image": out.astype(np.float32)}


# ----------------------------------------------------------------------------
# Validation.
# ----------------------------------------------------------------------------
def validate_example(example: Mapping[str, Any], num_classes: int, ignore_index: int = 255,
                     source: str = "example") -> Mapping[str, Any]:
  """Checks image [H, W, 3] uint8, mask [H, W] integer with ids in [0, C) or ignore.

  Returns the example unchanged; raises `DataError` naming `source` (a file or
  dataset index) and listing the offending values.
  """
  if "image" not in example:
    raise DataError(f"{source}: example has no 'image' (keys: {sorted(example)})")
  image = np.asarray(example["image"])
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise DataError(f"{source}: image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
  if "mask" not in example:
    return example
  mask = np.asarray(example["mask"])
  if mask.shape != image.shape[:2]:
    raise DataError(f"{source}: mask shape {mask.shape} != image size {image.shape[:2]}")
  if not np.issubdtype(mask.dtype, np.integer):
    raise DataError(f"{source}: mask must hold integer class ids, got dtype {mask.dtype}")
  values = np.unique(mask)
  bad = values[((values < 0) | (values >= num_classes)) & (values != ignore_index)]
  if bad.size:
    shown = ", ".join(str(v) for v in bad[:20]) + (", ..." if bad.size > 20 else "")
    raise DataError(f"{source}: mask has values outside [0, {num_classes}) and != ignore "
                    f"{ignore_index}: [{shown}]")
  return example


# ----------------------------------------------------------------------------
# grain transforms built from config dicts.
# ----------------------------------------------------------------------------
_AUGMENT_KEYS = frozenset({"scale_range", "resize_long", "crop_size", "flip", "color_jitter", "normalize",
                           "mean", "std", "ignore_index", "image_fill", "spatial_keys"})
_EVAL_KEYS = frozenset({"resize", "crop_size", "normalize", "mean", "std", "ignore_index",
                        "image_fill", "spatial_keys"})


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
      raise ValueError(f"spec 'image_fill' must be a number, 3 numbers or 'mean', got {image_fill!r}")
    return tuple(255.0 * m for m in mean)
  return image_fill


def _finish(example: Example, normalize_image: bool, mean, std) -> Example:
  if normalize_image:
    example = normalize(example, mean, std)
  if "mask" in example:
    example["mask"] = example["mask"].astype(np.int32)
  return example


@dataclasses.dataclass(frozen=True)
class _OutputSpec:
  """What the train and eval transforms share: padding, normalisation and the spatial keys."""
  normalize: bool = True
  mean: tuple[float, float, float] = IMAGENET_MEAN
  std: tuple[float, float, float] = IMAGENET_STD
  ignore_index: int = 255
  image_fill: Any = 0
  spatial_keys: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True)
class SegmentationAugment(_OutputSpec, grain.transforms.RandomMap):
  """Train-time augment: random_resize_long -> random_scale -> random_flip -> color_jitter -> random_crop -> normalize.

  The order follows SEAM (jitter before the crop, so padding is not jittered).
  Output: image float32 [h, w, 3] normalised (uint8 if normalize=False),
  mask int32 [h, w], every spatial key crop_size so batches stack.
  Build it with `build_augment`.
  """
  scale_range: tuple[float, float] | None = (0.5, 1.5)
  resize_long: tuple[int, int] | None = None
  crop_size: tuple[int, int] | None = None
  flip_prob: float = 0.5
  color_jitter: tuple[float, float, float, float] | None = None

  def random_map(self, element: Example, rng: np.random.Generator) -> Example:
    keys = self.spatial_keys
    ex = dict(element)
    if self.resize_long is not None:
      ex = random_resize_long(ex, rng, self.resize_long, spatial_keys=keys)
    if self.scale_range is not None:
      ex = random_scale(ex, rng, self.scale_range, spatial_keys=keys)
    if self.flip_prob > 0:
      ex = random_flip(ex, rng, self.flip_prob, spatial_keys=keys)
    if self.color_jitter is not None:
      ex = color_jitter(ex, rng, *self.color_jitter)
    if self.crop_size is not None:
      ex = random_crop(ex, rng, self.crop_size, self.ignore_index,
                       fill=_fill_value(self.image_fill, self.mean), spatial_keys=keys)
    return _finish(ex, self.normalize, self.mean, self.std)

  def __call__(self, element: Example, rng: np.random.Generator) -> Example:
    return self.random_map(element, rng)


@dataclasses.dataclass(frozen=True)
class SegmentationEvalTransform(_OutputSpec, grain.transforms.Map):
  """Eval transform: optional resize -> optional center_crop -> normalize; mask -> int32."""
  resize: tuple[int, int] | None = None
  crop_size: tuple[int, int] | None = None

  def map(self, element: Example) -> Example:
    ex = dict(element)
    if self.resize is not None:
      ex = resize(ex, self.resize, spatial_keys=self.spatial_keys)
    if self.crop_size is not None:
      ex = center_crop(ex, self.crop_size, self.ignore_index,
                       fill=_fill_value(self.image_fill, self.mean),
                       spatial_keys=self.spatial_keys)
    return _finish(ex, self.normalize, self.mean, self.std)

  def __call__(self, element: Example) -> Example:
    return self.map(element)


def _common(spec: dict[str, Any]) -> dict[str, Any]:
  mean = _opt_tuple(spec.get("mean", IMAGENET_MEAN), "mean", 3)
  std = _opt_tuple(spec.get("std", IMAGENET_STD), "std", 3)
  normalize({"image": np.zeros((1, 1, 3), np.uint8)}, mean, std)  # Fail now, not in a worker.
  keys = spec.get("spatial_keys")
  image_fill = spec.get("image_fill", 0)
  _fill_value(image_fill, mean)
  return dict(normalize=bool(spec.get("normalize", True)), mean=mean, std=std,
              ignore_index=int(spec.get("ignore_index", 255)),
              image_fill=tuple(image_fill) if isinstance(image_fill, (list, tuple)) else image_fill,
              spatial_keys=None if keys is None else tuple(keys))


def build_augment(spec: Mapping[str, Any]) -> SegmentationAugment:
  """Train augment from a config dict (or ConfigDict).

  Keys (all optional): resize_long (lo, hi) | None = None (SEAM's random
  long-side resize, applied first); scale_range (lo, hi) | None = (0.5, 1.5);
  crop_size (h, w) | None (None = no crop; batches then need equal sizes);
  flip: bool or probability (True = 0.5); color_jitter: (brightness,
  contrast, saturation, hue) | None; normalize: bool = True; mean, std on the
  0..1 scale (ImageNet); ignore_index = 255; image_fill: pad value of the image
  (number, 3 numbers, or 'mean' = 0 after normalisation); spatial_keys.
  Unknown keys are a ValueError.
  """
  spec = _spec_dict(spec, _AUGMENT_KEYS, "augment")
  scale_range = _opt_tuple(spec.get("scale_range", (0.5, 1.5)), "scale_range", 2)
  if scale_range is not None and not 0 < scale_range[0] <= scale_range[1]:
    raise ValueError(f"spec 'scale_range' must satisfy 0 < lo <= hi, got {scale_range}")
  crop_size = _opt_tuple(spec.get("crop_size"), "crop_size", 2)
  if crop_size is not None:
    crop_size = _check_size(crop_size, "spec 'crop_size'")
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
  return SegmentationAugment(scale_range=scale_range, resize_long=resize_long,
                             crop_size=crop_size, flip_prob=flip_prob,
                             color_jitter=jitter, **_common(spec))


def build_eval_transform(spec: Mapping[str, Any]) -> SegmentationEvalTransform:
  """Eval transform from a config dict (or ConfigDict).

  Keys (all optional): resize (h, w) | None; crop_size (h, w) | None (center
  crop with padding); normalize, mean, std, ignore_index, image_fill,
  spatial_keys as in `build_augment`. Unknown keys are a ValueError.
  """
  spec = _spec_dict(spec, _EVAL_KEYS, "eval transform")
  size = _opt_tuple(spec.get("resize"), "resize", 2)
  crop_size = _opt_tuple(spec.get("crop_size"), "crop_size", 2)
  return SegmentationEvalTransform(
      resize=None if size is None else _check_size(size, "spec 'resize'"),
      crop_size=None if crop_size is None else _check_size(crop_size, "spec 'crop_size'"),
      **_common(spec))
