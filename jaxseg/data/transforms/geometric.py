"""Geometric transforms (resize, scale, crop / pad, flip), each key handled by its kind.

Every random transform is a pure function `fn(example, rng, **params) -> dict` that draws its
randomness once and applies it to every key of a geometric kind (same scale, same window, same
flip for the image, its maps, every frame of a clip and the intrinsics), so they stay aligned.
The input dict and its arrays are never modified. How each kind is treated is in `kinds`.

Camera intrinsics use pixel-index coordinates: pixel (row r, column c) has its centre at
u = c, v = r, so a point (X, Y, Z) in the camera frame projects to u = fx X / Z + s Y / Z + cx,
v = fy Y / Z + cy, and pixel (r, c) with depth d back-projects to d K^-1 [c, r, 1]. (This is
`synthetic.scenes.Camera.intrinsics`'s convention.) Each transform moves pixel coordinates by an affine
map A and the intrinsics become K' = A K:
  resize (H, W) -> (H', W'), sx = W' / W, sy = H' / H, half-pixel centres as `resample` does:
    u' = (u + 0.5) sx - 0.5, so fx' = fx sx, cx' = (cx + 0.5) sx - 0.5 (and fy, cy with sy).
    With nearest sampling, output pixel (r', c') holds the depth d of source pixel
    (floor((r' + 0.5) / sy), floor((c' + 0.5) / sx)), and back-projecting it with K' gives
    d K^-1 [u, v, 1] at the continuous source point (u, v) = ((c' + 0.5) / sx - 0.5, ...) of the
    output pixel's centre: the source depth along the output pixel's ray.
  crop / pad: output pixel (r', c') shows source pixel (r' + oy, c' + ox) (oy, ox < 0 where the
    source is placed inside padding), so cx' = cx - ox, cy' = cy - oy and every 3D point stays.
  horizontal flip: u' = W - 1 - u. Mirroring an image is no rigid motion of the camera: it is
    the image of the mirrored world (X -> -X). K' = A K diag(-1, 1, 1) keeps fx > 0 (skew s
    changes sign) and mirrors cx' = W - 1 - cx, so back-projecting the flipped depth with K'
    gives the original point cloud with x negated (as the flipped normals have x negated).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from jaxseg.data.transforms import kinds as K
from jaxseg.data.transforms import resample

Example = K.Example


# ----------------------------------------------------------------------------
# Intrinsics.
# ----------------------------------------------------------------------------
def _apply_to_intrinsics(intrinsics: np.ndarray, a: np.ndarray, mirror: bool = False) -> np.ndarray:
  """K' = A K (diag(-1, 1, 1) if mirror) for [3, 3] K or [4] (fx, fy, cx, cy); layout kept."""
  intrinsics = np.asarray(intrinsics)
  dtype = np.result_type(intrinsics.dtype, np.float32)
  if intrinsics.shape == (4,):
    fx, fy, cx, cy = intrinsics.astype(np.float64)
    k = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
  else:
    k = intrinsics.astype(np.float64)
  k = a @ k
  if mirror:
    k = k @ np.diag([-1.0, 1.0, 1.0])
  if intrinsics.shape == (4,):
    return np.array([k[0, 0], k[1, 1], k[0, 2], k[1, 2]], dtype)
  return k.astype(dtype)


def scale_intrinsics(
    intrinsics: np.ndarray, in_size: Sequence[int], out_size: Sequence[int]
) -> np.ndarray:
  """Intrinsics after resizing the image from in_size = (H, W) to out_size = (H', W')."""
  sy, sx = out_size[0] / in_size[0], out_size[1] / in_size[1]
  a = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
  return _apply_to_intrinsics(intrinsics, a)


def shift_intrinsics(intrinsics: np.ndarray, dy: float, dx: float) -> np.ndarray:
  """Intrinsics after moving the image content by (dy, dx) pixels (crop: negative)."""
  return _apply_to_intrinsics(intrinsics, np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0, 0, 1.0]]))


def flip_intrinsics(intrinsics: np.ndarray, width: int) -> np.ndarray:
  """Intrinsics of the horizontally flipped image of `width` pixels (cx' = W - 1 - cx, fx > 0)."""
  a = np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
  return _apply_to_intrinsics(intrinsics, a, mirror=True)


# ----------------------------------------------------------------------------
# Resizing.
# ----------------------------------------------------------------------------
def _resize_frame(
    kind: str, array: np.ndarray, size: tuple[int, int], bicubic: bool = False
) -> np.ndarray:
  if kind == K.IMAGE:
    if bicubic and array.dtype == np.uint8 and array.ndim == 3 and array.shape[-1] == 3:
      return resample.resize_bicubic_rgb(array, size)
    return resample.resize_bilinear(array, size)
  if kind in (K.MASK, K.DEPTH):
    return resample.resize_nearest(array, size)
  if kind == K.NORMALS:
    return resample.resize_normals(array, size)
  if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:  # A map of ids.
    return resample.resize_nearest(array, size)
  return resample.resize_bilinear(array, size)


def resize_array(
    key: str,
    array: np.ndarray,
    size: tuple[int, int],
    kind: str | None = None,
    *,
    bicubic: bool = False,
) -> np.ndarray:
  """Resizes one dense array to `size` = (h, w) with the rule of its kind.

  Args:
    key: the array's key, to look its kind up in `kinds.DEFAULT_KINDS` when `kind` is None
      (an unlisted key is a `map`).
    array: [H, W, ...], or [T, H, W, ...] for a clip kind.
    size: (h, w).
    kind: the key's kind.
    bicubic: resample uint8 RGB images (and clip frames) with PIL bicubic instead of bilinear.
  """
  kind = kind or K.declared_kind(key) or K.MAP
  lead = 1 if K.is_clip(kind) else 0
  if tuple(array.shape[lead : lead + 2]) == tuple(size):
    return array
  frame = K.frame_kind(kind)
  if not lead:
    return _resize_frame(frame, array, size, bicubic)
  if not len(array):
    return np.empty((0, *size, *array.shape[3:]), array.dtype)
  return np.stack([_resize_frame(frame, a, size, bicubic) for a in array])


def check_size(size: Sequence[int], name: str) -> tuple[int, int]:
  if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
    raise ValueError(f"{name} must be two positive ints (h, w), got {size!r}")
  return int(size[0]), int(size[1])


def _resize_to(
    example: Example, size: tuple[int, int], resolved: Mapping[str, str], bicubic: bool = False
) -> Example:
  in_size = K.image_size(example, resolved)
  out = dict(example)
  for key, kind in resolved.items():
    if kind in K.DENSE_KINDS:
      out[key] = resize_array(key, example[key], size, kind, bicubic=bicubic)
    elif kind == K.INTRINSICS and in_size != size:
      out[key] = scale_intrinsics(example[key], in_size, size)
  return out


def resize(
    example: Example,
    size: Sequence[int],
    *,
    spatial_keys: Iterable[str] | None = None,
    kinds: Mapping[str, str] | None = None,
) -> Example:
  """Deterministic resize of every dense key to `size` = (h, w); intrinsics scaled to match."""
  size = check_size(size, "size")
  return _resize_to(example, size, K.resolve_kinds(example, kinds, spatial_keys))


def random_scale(
    example: Example,
    rng: np.random.Generator,
    scale_range: Sequence[float] = (0.5, 1.5),
    *,
    spatial_keys: Iterable[str] | None = None,
    kinds: Mapping[str, str] | None = None,
) -> Example:
  """Resizes by one factor s ~ U[scale_range] (aspect kept, sides rounded).

  Intrinsics scale by the realised size ratios W' / W and H' / H, not by s, so they match the
  rounded sides exactly.
  """
  lo, hi = scale_range
  if not 0 < lo <= hi:
    raise ValueError(f"scale_range must satisfy 0 < lo <= hi, got {scale_range!r}")
  scale = rng.uniform(lo, hi)
  resolved = K.resolve_kinds(example, kinds, spatial_keys)
  h, w = K.image_size(example, resolved)
  size = (max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5)))
  return _resize_to(example, size, resolved)


def random_resize_long(
    example: Example,
    rng: np.random.Generator,
    long_range: Sequence[int] = (448, 768),
    *,
    spatial_keys: Iterable[str] | None = None,
    kinds: Mapping[str, str] | None = None,
) -> Example:
  """SEAM/PSA `RandomResizeLong`: long side ~ randint[lo, hi] (inclusive), aspect kept.

  uint8 RGB images (and clip frames) are resampled with PIL bicubic, as the official code
  does; other keys follow their kind. Short side = round(s * long / L).
  """
  lo, hi = int(long_range[0]), int(long_range[1])
  if not 0 < lo <= hi:
    raise ValueError(f"resize_long must satisfy 0 < lo <= hi, got {long_range!r}")
  target = int(rng.integers(lo, hi + 1))
  resolved = K.resolve_kinds(example, kinds, spatial_keys)
  h, w = K.image_size(example, resolved)
  if w > h:
    size = (max(1, int(round(h * target / w))), target)
  else:
    size = (target, max(1, int(round(w * target / h))))
  return _resize_to(example, size, resolved, bicubic=True)


# ----------------------------------------------------------------------------
# Cropping and padding.
# ----------------------------------------------------------------------------
def _pad_value(
    key: str,
    kind: str,
    array: np.ndarray,
    ignore_index: int,
    fill: Any,
    pad_values: Mapping[str, Any] | None,
) -> Any:
  if pad_values and key in pad_values:
    return pad_values[key]
  kind = K.frame_kind(kind)
  if kind == K.MASK:
    return ignore_index
  if kind == K.IMAGE:
    fill = np.asarray(fill, np.float64)
    if fill.ndim and fill.shape != (array.shape[-1],):
      raise ValueError(f"fill must be a scalar or one value per image channel, got {fill}")
    return fill
  return 0  # depth and normals: 0 = invalid; other maps: 0 as SEAM pads its score maps.


def _window(
    example: Example,
    resolved: Mapping[str, str],
    crop_size: tuple[int, int],
    src: tuple[int, int],
    dst: tuple[int, int],
    ignore_index: int,
    fill: Any,
    pad_values: Mapping[str, Any] | None,
) -> Example:
  """Copies the window at `src` (per axis) of every key into a fresh canvas at `dst`.

  Per axis exactly one of src/dst is non-zero: the image is larger (crop at
  src) or smaller (placed at dst in a canvas of pad values) than the crop.
  """
  h, w = K.image_size(example, resolved)
  ch, cw = crop_size
  n_h, n_w = min(h, ch), min(w, cw)
  out = dict(example)
  if (h, w) == (ch, cw):
    return out
  for k, kind in resolved.items():
    a = example[k]
    if kind == K.INTRINSICS:
      out[k] = shift_intrinsics(a, dst[0] - src[0], dst[1] - src[1])
    if kind not in K.DENSE_KINDS:
      continue
    value = np.asarray(_pad_value(k, kind, a, ignore_index, fill, pad_values))
    if not np.issubdtype(a.dtype, np.floating):
      value = np.rint(value)
    t = (slice(None),) if K.is_clip(kind) else ()  # Same window for every frame.
    canvas = np.empty(a.shape[: len(t)] + (ch, cw) + a.shape[len(t) + 2 :], a.dtype)
    canvas[...] = value.astype(a.dtype)
    canvas[t + (slice(dst[0], dst[0] + n_h), slice(dst[1], dst[1] + n_w))] = a[
        t + (slice(src[0], src[0] + n_h), slice(src[1], src[1] + n_w))
    ]
    out[k] = canvas
  return out


def random_crop(
    example: Example,
    rng: np.random.Generator,
    crop_size: Sequence[int],
    ignore_index: int = 255,
    *,
    fill: Any = 0,
    pad_values: Mapping[str, Any] | None = None,
    spatial_keys: Iterable[str] | None = None,
    kinds: Mapping[str, str] | None = None,
) -> Example:
  """A random (h, w) = crop_size window of every dense key; intrinsics shifted to match.

  A side shorter than the crop is padded: the image is placed at a uniformly
  random offset inside a canvas filled with `fill` (image, clip), `ignore_index`
  (mask) or 0 (depth, normals, maps), as SEAM/psa's `RandomCrop` does; override
  per key with `pad_values`. A longer side is cropped at a uniform offset.
  """
  ch, cw = check_size(crop_size, "crop_size")
  resolved = K.resolve_kinds(example, kinds, spatial_keys)
  h, w = K.image_size(example, resolved)
  off_h = int(rng.integers(0, abs(h - ch) + 1))
  off_w = int(rng.integers(0, abs(w - cw) + 1))
  src = (off_h if h > ch else 0, off_w if w > cw else 0)
  dst = (off_h if h < ch else 0, off_w if w < cw else 0)
  return _window(example, resolved, (ch, cw), src, dst, ignore_index, fill, pad_values)


def center_crop(
    example: Example,
    crop_size: Sequence[int],
    ignore_index: int = 255,
    *,
    fill: Any = 0,
    pad_values: Mapping[str, Any] | None = None,
    spatial_keys: Iterable[str] | None = None,
    kinds: Mapping[str, str] | None = None,
) -> Example:
  """The central crop_size window; short sides are padded equally on both ends."""
  ch, cw = check_size(crop_size, "crop_size")
  resolved = K.resolve_kinds(example, kinds, spatial_keys)
  h, w = K.image_size(example, resolved)
  src = (max(h - ch, 0) // 2, max(w - cw, 0) // 2)
  dst = (max(ch - h, 0) // 2, max(cw - w, 0) // 2)
  return _window(example, resolved, (ch, cw), src, dst, ignore_index, fill, pad_values)


# ----------------------------------------------------------------------------
# Flipping.
# ----------------------------------------------------------------------------
def _flip_dense(kind: str, array: np.ndarray) -> np.ndarray:
  out = np.ascontiguousarray(np.flip(array, axis=2 if K.is_clip(kind) else 1))
  if K.frame_kind(kind) == K.NORMALS:
    # The mirrored scene has x negated; 0.0 - x (not -x) keeps invalid normals +0.0.
    out[..., 0] = 0.0 - out[..., 0]
  return out


def random_flip(
    example: Example,
    rng: np.random.Generator,
    prob: float = 0.5,
    *,
    spatial_keys: Iterable[str] | None = None,
    kinds: Mapping[str, str] | None = None,
) -> Example:
  """Horizontal flip of every dense key with probability `prob`.

  Normals get their x component negated and intrinsics cx' = W - 1 - cx (fx stays positive):
  the flipped example is a consistent view of the mirrored scene (see the module docstring).
  """
  resolved = K.resolve_kinds(example, kinds, spatial_keys)
  if rng.random() >= prob:
    return dict(example)
  width = K.image_size(example, resolved)[1]
  out = dict(example)
  for key, kind in resolved.items():
    if kind in K.DENSE_KINDS:
      out[key] = _flip_dense(kind, example[key])
    elif kind == K.INTRINSICS:
      out[key] = flip_intrinsics(example[key], width)
  return out
