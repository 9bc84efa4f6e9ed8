"""CAM smoothing: test-time augmentation (aug smooth) and eigen smoothing.

Augmentation smoothing follows pytorch-grad-cam's `aug_smooth=True` (ttach
HorizontalFlip x Multiply(0.9, 1, 1.1)): each augmented input gets a full CAM
(normalised per pass), the CAM is flipped back, and the passes are averaged
without renormalising (so the result's max can be < 1). Multipliers scale
the network input (the normalised image), as ttach's Multiply does.
Optional spatial scales (not in the library; multi-scale CAM inference as in
SEAM / IRN) resize the input bilinearly, and the pass's CAM back.

Eigen smoothing replaces the channel sum of the weighted activations by
their projection on the first principal component
(`postprocess.first_component_projection`).
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxseg.cam import targets as targets_lib
from jaxseg.cam.postprocess import first_component_projection, resize_bilinear

DEFAULT_FLIPS = (False, True)
DEFAULT_MULTIPLIERS = (0.9, 1.0, 1.1)
DEFAULT_SCALES = (1.0,)

__all__ = [
    "augmentation_smooth",
    "first_component_projection",
    "DEFAULT_FLIPS",
    "DEFAULT_MULTIPLIERS",
    "DEFAULT_SCALES",
]


def augmentation_smooth(
    cam_fn: Callable[[jax.Array, targets_lib.Target], jax.Array],
    images: jax.Array,
    target: targets_lib.Target,
    *,
    flips: Sequence[bool] = DEFAULT_FLIPS,
    multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
    scales: Sequence[float] = DEFAULT_SCALES,
) -> jax.Array:
  """Mean CAM over flip x scale x multiplier augmentations.

  Args:
    cam_fn: (images [B, H, W, C], target) -> CAMs [B, H, W] (any H, W).
    images: [B, H, W, C] network input.
    target: one target per image; segmentation masks are flipped with the
      image (a segmentation target cannot be combined with scales != 1).
    flips: horizontal flip or not, per pass (outer loop, as ttach).
    multipliers: input multipliers (inner loop).
    scales: spatial resize factors of the input (1.0 = as is).
  Returns:
    [B, H, W] mean of the de-augmented CAMs.
  """
  if not flips or not multipliers or not scales:
    raise ValueError("aug smoothing needs at least one flip, scale and multiplier.")
  if any(s <= 0 for s in scales):
    raise ValueError(f"aug scales must be > 0, got {tuple(scales)}.")
  if isinstance(target, targets_lib.SegmentationTarget) and any(s != 1 for s in scales):
    raise ValueError(
        "scales != 1 change the segmentation output size; the "
        "SegmentationTarget masks would not fit."
    )
  size = images.shape[1:3]
  cams = []
  for flip in flips:
    flipped_target = targets_lib.flip_target_lr(target) if flip else target
    for scale in scales:
      scaled_size = tuple(max(1, round(n * scale)) for n in size)
      for multiplier in multipliers:
        x = images * jnp.asarray(multiplier, images.dtype)
        if flip:
          x = jnp.flip(x, axis=2)
        if scaled_size != size:
          x = resize_bilinear(x, scaled_size).astype(images.dtype)
        cam = cam_fn(x, flipped_target)
        if scaled_size != size:
          cam = resize_bilinear(cam, size)
        cams.append(jnp.flip(cam, axis=2) if flip else cam)
  return jnp.mean(jnp.stack(cams), axis=0)
