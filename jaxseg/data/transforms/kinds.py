"""Key kinds: what each entry of an example is, and so how a geometric transform must treat it.

Every key of an example dict has a *kind* (a string):

  kind        layout                         resize                    pad value       h-flip
  image       [H, W, C] (RGB: C = 3)         bilinear (PIL, antialias)  `fill`          mirror
  mask        [H, W] integer class ids       nearest                   ignore_index    mirror
  depth       [H, W] float, 0 = invalid      nearest                   0 (invalid)     mirror
  normals     [H, W, 3] unit vectors, 0 =    bilinear + renormalise,   0 (invalid)     mirror, x -> -x
              invalid (camera frame)         zero stays zero
  map         [H, W, ...] any dense map      nearest if integer/bool,  0               mirror
                                             else bilinear
  intrinsics  [3, 3] K or [4] (fx, fy,       K' = A K (see             cx, cy shift    cx' = W - 1 - cx
              cx, cy)                        `geometric`)
  clip        [T, H, W, C] frames            the image rule per frame  `fill`          mirror
  clip_mask, clip_depth, clip_normals, clip_map: [T, H, W, ...], the frame kind's rule per frame
  other       anything                       passed through untouched

A transform draws its randomness once per example, so every frame of a clip gets the same scale,
window and flip as the image and its maps (and colour jitter draws one set of factors per example).

Depth is resampled with nearest neighbour on purpose: interpolating across a depth edge invents
points floating between the foreground and the background surface, and interpolating next to an
invalid pixel (0) drags valid depths towards the camera. Nearest only ever returns measured values,
so invalid depth (0) stays 0 and padding with 0 marks the new pixels invalid.

Which kind a key has, first match wins:
  1. `kinds`, a {key: kind} mapping given by the caller (a transform argument or the spec's
     `kinds` entry), e.g. {"disparity": "depth", "rgb_right": "image", "pose": "other"}.
  2. `DEFAULT_KINDS`, by key name.
  3. Inference for other keys: non-arrays and arrays with ndim < 2 are `other` (scalars, ids,
     label vectors); an array with shape[:2] == (H, W) of the image is a `map` (as before kinds
     existed); one with shape[1:3] == (H, W) and ndim >= 3 a `clip_map`. Any other array with
     ndim >= 2 is a DataError: it may be a map at another resolution, which must not silently
     skip the transform; declare its kind (`other` to pass it through).
A key of a dense kind (image, mask, depth, normals, map, clip*) must match the image's (H, W).

`spatial_keys` (the older interface) lists the dense keys to transform besides the image; other
dense keys then pass through untouched. Intrinsics always follow the image, since they describe it.
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from jaxseg.data.errors import DataError

Example = dict[str, Any]

IMAGE, MASK, DEPTH, NORMALS, MAP = "image", "mask", "depth", "normals", "map"
INTRINSICS, CLIP, OTHER = "intrinsics", "clip", "other"
CLIP_MASK, CLIP_DEPTH, CLIP_NORMALS, CLIP_MAP = (
    "clip_mask",
    "clip_depth",
    "clip_normals",
    "clip_map",
)

# A clip kind -> the kind of each of its frames.
_FRAME_KIND = {
    CLIP: IMAGE,
    CLIP_MASK: MASK,
    CLIP_DEPTH: DEPTH,
    CLIP_NORMALS: NORMALS,
    CLIP_MAP: MAP,
}
DENSE_KINDS = frozenset({IMAGE, MASK, DEPTH, NORMALS, MAP, *_FRAME_KIND})
KINDS = frozenset({*DENSE_KINDS, INTRINSICS, OTHER})

DEFAULT_KINDS: Mapping[str, str] = types.MappingProxyType(
    {
        "image": IMAGE,
        "mask": MASK,
        "depth": DEPTH,
        "normals": NORMALS,
        "intrinsics": INTRINSICS,
        "clip": CLIP,
        "frames": CLIP,
        "masks": CLIP_MASK,
        "depths": CLIP_DEPTH,
        "labels": OTHER,
        "frame_labels": OTHER,
        "index": OTHER,
        "id": OTHER,
        "times": OTHER,
        # DAVIS sequences (jaxseg.data.readers.davis): the first annotation, the PNG palette, which frames
        # have an annotation.
        "first_mask": MASK,
        "palette": OTHER,
        "annotated": OTHER,
    }
)

# Keys never resampled, even when a tiny image happens to match their shape.
NON_SPATIAL_KEYS = frozenset(k for k, v in DEFAULT_KINDS.items() if v not in DENSE_KINDS)


def is_clip(kind: str) -> bool:
  """Whether arrays of `kind` carry a leading time axis [T, H, W, ...]."""
  return kind in _FRAME_KIND


def frame_kind(kind: str) -> str:
  """The kind of one frame of a clip kind (`kind` itself otherwise)."""
  return _FRAME_KIND.get(kind, kind)


def check_kinds(kinds: Mapping[str, str] | None) -> dict[str, str]:
  """Validates a {key: kind} mapping; raises ValueError naming an unknown kind."""
  if hasattr(kinds, "to_dict"):  # ml_collections.ConfigDict.
    kinds = kinds.to_dict()
  out = {str(k): v for k, v in dict(kinds or {}).items()}
  bad = {k: v for k, v in out.items() if v not in KINDS}
  if bad:
    raise ValueError(f"unknown key kinds {bad}; known kinds: {sorted(KINDS)}")
  return out


def declared_kind(key: str, kinds: Mapping[str, str] | None = None) -> str | None:
  """The kind of `key` from `kinds`, else `DEFAULT_KINDS`, else None (to be inferred)."""
  if kinds and key in kinds:
    return kinds[key]
  return DEFAULT_KINDS.get(key)


def keys_of_kind(
    example: Mapping[str, Any], wanted: Iterable[str], kinds: Mapping[str, str] | None = None
) -> tuple[str, ...]:
  """Keys of `example` declared (explicitly or by name) as one of the `wanted` kinds."""
  wanted = frozenset(wanted)
  return tuple(k for k in example if declared_kind(k, kinds) in wanted)


def image_size(
    example: Mapping[str, Any], kinds: Mapping[str, str] | None = None
) -> tuple[int, int]:
  """(H, W) every dense key must share.

  Taken from `example['image']` ([H, W, 3]); without one, from the first key declared `image`
  ([H, W, C]) or `clip` ([T, H, W, C]), so clip-only examples work too.
  """
  if "image" in example and declared_kind("image", kinds) == IMAGE:
    image = np.asarray(example["image"])
    if image.ndim != 3 or image.shape[-1] != 3:
      raise DataError(f"'image' must be [H, W, 3], got shape {image.shape}")
    return image.shape[0], image.shape[1]
  for key in keys_of_kind(example, (IMAGE, CLIP), kinds):
    shape = np.shape(example[key])
    lead = 1 if is_clip(declared_kind(key, kinds)) else 0
    if len(shape) != lead + 3:
      raise DataError(
          f"{key!r} of kind {declared_kind(key, kinds)!r} must be "
          f"[{'T, ' * lead}H, W, C], got shape {shape}"
      )
    return shape[lead], shape[lead + 1]
  raise DataError(f"example has no 'image' key (keys: {sorted(example)})")


def _infer(key: str, value: Any, size: tuple[int, int]) -> str:
  if not isinstance(value, np.ndarray) or value.ndim < 2:
    return OTHER
  if value.shape[:2] == size:
    return MAP
  if value.ndim >= 3 and value.shape[1:3] == size:
    return CLIP_MAP
  raise DataError(
      f"key {key!r} has shape {value.shape}, which does not match the image size {size}, and no "
      f"declared kind; declare it, e.g. kinds={{{key!r}: 'other'}} to pass it through "
      f"(kinds: {sorted(KINDS)})"
  )


def _check_layout(key: str, kind: str, value: Any, size: tuple[int, int]) -> None:
  shape = np.shape(value)
  if kind == INTRINSICS:
    if shape not in ((3, 3), (4,)):
      raise DataError(f"intrinsics {key!r} must be [3, 3] K or [4] (fx, fy, cx, cy), got {shape}")
    return
  if kind not in DENSE_KINDS:
    return
  lead = 1 if is_clip(kind) else 0
  if len(shape) < lead + 2 or tuple(shape[lead : lead + 2]) != size:
    expected = ("T, " if lead else "") + f"{size[0]}, {size[1]}, ..."
    raise DataError(
        f"key {key!r} of kind {kind!r} has shape {shape}, expected ({expected}) to match 'image'"
    )
  if frame_kind(kind) == NORMALS and shape[-1] != 3:
    raise DataError(f"key {key!r} of kind {kind!r} must end in 3 components, got {shape}")


def resolve_kinds(
    example: Mapping[str, Any],
    kinds: Mapping[str, str] | None = None,
    spatial_keys: Iterable[str] | None = None,
) -> dict[str, str]:
  """{key: kind} for every key of `example`, checked against the image size.

  Args:
    example: the example dict.
    kinds: explicit {key: kind}; overrides `DEFAULT_KINDS` and inference.
    spatial_keys: if given, only 'image' and these dense keys are transformed; each must exist
      and be of a dense kind. Other dense keys resolve to `other`.

  Returns:
    A dict in the example's key order.

  Raises:
    DataError: a dense key whose (H, W) differs from the image's, malformed intrinsics, or an
      undeclared array that is neither clearly spatial nor clearly not.
  """
  kinds = check_kinds(kinds)
  size = image_size(example, kinds)
  if spatial_keys is not None:
    chosen = list(dict.fromkeys([*(["image"] if "image" in example else []), *spatial_keys]))
    for key in chosen:
      if key not in example:
        raise DataError(f"spatial key {key!r} missing from example (keys: {sorted(example)})")
  out = {}
  for key, value in example.items():
    kind = declared_kind(key, kinds)
    if kind is None:
      kind = OTHER if spatial_keys is not None and key not in chosen else _infer(key, value, size)
    if spatial_keys is not None and kind in DENSE_KINDS and key not in chosen:
      kind = OTHER  # The caller's list is the whole set of dense keys to transform.
    if spatial_keys is not None and key in chosen and kind not in DENSE_KINDS:
      shape = np.shape(value)
      raise DataError(
          f"spatial key {key!r} has shape {shape} and kind {kind!r}; expected a dense "
          f"map ({size[0]}, {size[1]}, ...) to match 'image'"
      )
    _check_layout(key, kind, value, size)
    out[key] = kind
  return out


def spatial_keys_of(
    example: Mapping[str, Any],
    spatial_keys: Iterable[str] | None = None,
    kinds: Mapping[str, str] | None = None,
) -> tuple[str, ...]:
  """The dense keys (every kind but intrinsics and other) transformed together with the image."""
  resolved = resolve_kinds(example, kinds, spatial_keys)
  return tuple(k for k, kind in resolved.items() if kind in DENSE_KINDS)


# ----------------------------------------------------------------------------
# Validation.
# ----------------------------------------------------------------------------
def validate_example(
    example: Mapping[str, Any], num_classes: int, ignore_index: int = 255, source: str = "example"
) -> Mapping[str, Any]:
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
    raise DataError(
        f"{source}: mask has values outside [0, {num_classes}) and != ignore "
        f"{ignore_index}: [{shown}]"
    )
  return example
