"""AffinityNet (Ahn & Kwak, CVPR 2018) on ResNet-38, as SEAM's `network/resnet38_aff.py` (= psa's), NHWC.

Network (official l.13-41), every conv 1x1 without bias, no dropout in the head:
  f8_3 = elu(f8_3(conv4))   512  -> 64    kaiming_normal (fan_in, std sqrt(2 / fan_in))
  f8_4 = elu(f8_4(conv5))   1024 -> 128   kaiming_normal
  f8_5 = elu(f8_5(conv6))   4096 -> 256   kaiming_normal
  features = elu(f9(concat[f8_3, f8_4, f8_5]))   448 -> 448, xavier_uniform gain 4
The backbone taps are NOT detached (unlike SEAM's PCM): the affinity loss trains the backbone too.
Head widths stay official whatever the backbone `width_multiplier` (the inputs follow the backbone width).

Pairwise affinities (official `forward`, l.43-62, pair layout from `tool/pyutils.py` `get_indices_of_pairs`
l.125-159): with r = radius, the offsets are (0, dx) for dx = 1..r-1, then (dy, dx) for dy = 1..r-1,
dx = -(r-1)..(r-1) with dx^2 + dy^2 < r^2 (34 offsets for r = 5). "From" pixels are the window
[0 : h-r+1, r-1 : w-r+1] of the feature grid (row-major); the "to" pixel of offset (dy, dx) is from + (dy, dx),
so every pair lies inside the grid. aff = exp(-mean_c |f_from - f_to|), laid out [P offsets, n_from].

Optimiser groups (official `from_scratch_layers`, `not_training`, l.24-26): f8_3, f8_4, f8_5 and f9 train at
10x the base learning rate; conv1a, b2, b2_1, b2_2 are frozen; every BatchNorm is frozen (the backbone keeps
them in 'batch_stats'). Variable names are the official state-dict names (flat: `b4_3.*`, `f8_5.*`, `f9.*`).
"""

from __future__ import annotations

import functools
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models.layers import conv2d
from jaxseg.models.resnet38 import ResNet38

Dtype = Any

DEFAULT_RADIUS = 5  # official `self.radius` (resnet38_aff.py l.29) and VOC12AffDataset radius=5 (train_aff.py l.43)
HEAD_WIDTHS = {"f8_3": 64, "f8_4": 128, "f8_5": 256}  # their concat (448) is f9's width
FEATURE_CHANNELS = sum(HEAD_WIDTHS.values())

# Regexes (re.search) on '/'-joined Flax parameter paths, e.g. 'params/f9/kernel'.
FROM_SCRATCH_LAYERS = r"(^|/)(f8_3|f8_4|f8_5|f9)/"  # 10x learning rate
NOT_TRAINING_LAYERS = r"(^|/)(conv1a|b2|b2_1|b2_2)/"  # frozen
FROM_SCRATCH_LR_MULTIPLIER = 10.0

# torch.nn.init.kaiming_normal_ (a=0: gain sqrt(2), fan_in, untruncated) and xavier_uniform_(gain=4).
KAIMING_NORMAL = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
XAVIER_UNIFORM_GAIN4 = nn.initializers.variance_scaling(16.0, "fan_avg", "uniform")


# --------------------------------------------------------------------------------------------------------------
# Pair layout (numpy, static).


def pair_offsets(radius: int = DEFAULT_RADIUS) -> tuple[tuple[int, int], ...]:
  """The official (dy, dx) search offsets in order (34 for radius 5): a forward half-disc, so each unordered
  pair of pixels appears once."""
  if radius < 2:
    raise ValueError(f"affinity radius must be >= 2 (radius 1 has no pairs), got {radius}")
  offsets = [(0, dx) for dx in range(1, radius)]
  offsets += [
      (dy, dx)
      for dy in range(1, radius)
      for dx in range(-radius + 1, radius)
      if dx * dx + dy * dy < radius * radius
  ]
  return tuple(offsets)


def check_grid(height: int, width: int, radius: int) -> None:
  """Raises ValueError when an (height, width) grid has no "from" pixel for `radius`."""
  if height - (radius - 1) < 1 or width - 2 * (radius - 1) < 1:
    raise ValueError(
        f"feature grid {height}x{width} too small for affinity radius {radius}: needs "
        f"height >= {radius} and width >= {2 * radius - 1} (see effective_radius)"
    )


def effective_radius(height: int, width: int, radius: int = DEFAULT_RADIUS) -> int:
  """Official radius for a feature grid (resnet38_aff.py l.47-48): shrunk to (min_edge - 1) // 2 when
  min_edge < 2 * radius + 1. Raises ValueError when that leaves no pair (min edge < 5)."""
  min_edge = min(height, width)
  r = (min_edge - 1) // 2 if min_edge < 2 * radius + 1 else radius
  if r < 2:
    raise ValueError(
        f"feature grid {height}x{width} too small for affinities (min edge {min_edge} < 5)"
    )
  return r


def pair_indices(
    height: int, width: int, radius: int = DEFAULT_RADIUS
) -> tuple[np.ndarray, np.ndarray]:
  """Flat (row-major) indices of the pairs, as `get_indices_of_pairs`.

  Returns:
    (from_idx int64 [n_from], to_idx int64 [P, n_from]) with n_from = (h - r + 1) * (w - 2r + 2).
  """
  check_grid(height, width, radius)
  rf = radius - 1
  full = np.arange(height * width, dtype=np.int64).reshape(height, width)
  ch, cw = height - rf, width - 2 * rf
  from_idx = full[:ch, rf : rf + cw].reshape(-1)
  to_idx = np.stack(
      [full[dy : dy + ch, rf + dx : rf + dx + cw].reshape(-1) for dy, dx in pair_offsets(radius)]
  )
  return from_idx, to_idx


def pairwise_affinities(features: jax.Array, radius: int = DEFAULT_RADIUS) -> jax.Array:
  """aff = exp(-mean_c |f_from - f_to|) for every official pair (static slices, no gather).

  Args:
    features: [B, h, w, C] AffinityNet features (any float dtype; computed in float32).
    radius: pair radius; the grid must hold it (`check_grid`; use `effective_radius` for arbitrary sizes).
  Returns:
    float32 [B, P, n_from], P = len(pair_offsets(radius)), "from" pixels row-major over
    [0 : h-r+1, r-1 : w-r+1] (the layout of the official `aff` and of the affinity labels).
  """
  chex.assert_rank(features, 4)
  b, h, w, _ = features.shape
  check_grid(h, w, radius)
  rf = radius - 1
  ch, cw = h - rf, w - 2 * rf
  f = features.astype(jnp.float32)
  f_from = f[:, :ch, rf : rf + cw]
  affs = [
      jnp.exp(-jnp.mean(jnp.abs(f[:, dy : dy + ch, rf + dx : rf + dx + cw] - f_from), axis=-1))
      for dy, dx in pair_offsets(radius)
  ]
  return jnp.stack(affs, axis=1).reshape(b, len(affs), ch * cw)


# --------------------------------------------------------------------------------------------------------------
# Modules.


class AffinityHead(nn.Module):
  """f8_3 / f8_4 / f8_5 / f9 with ELUs on ResNet-38 taps (see module docstring). Flat variable names when
  applied through `AffinityNet`."""

  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: dict[str, jax.Array]) -> jax.Array:
    """features: ResNet38 taps 'conv4', 'conv5', 'conv6' ([B, h, w, *]) -> float32 [B, h, w, 448]."""
    conv = functools.partial(
        conv2d, kernel=1, padding=0, dtype=self.dtype, param_dtype=self.param_dtype
    )
    branches = [
        nn.elu(conv(HEAD_WIDTHS[name], kernel_init=KAIMING_NORMAL, name=name)(features[tap]))
        for name, tap in (("f8_3", "conv4"), ("f8_4", "conv5"), ("f8_5", "conv6"))
    ]
    x = jnp.concatenate(branches, axis=-1)
    x = nn.elu(conv(FEATURE_CHANNELS, kernel_init=XAVIER_UNIFORM_GAIN4, name="f9")(x))
    return x.astype(jnp.float32)


class AffinityNet(nn.Module):
  """ResNet-38 + AffinityNet head (`network/resnet38_aff.Net`), NHWC.

  Attributes:
    width_multiplier: ResNet-38 channel scale (1.0 official; e.g. 0.125 for CPU demos).
    dropout: the backbone's b6/b7 Dropout2d when `train` (official True: `model.train()` keeps them on;
      training then needs a 'dropout' rng).
    frozen_bn: running statistics and frozen affine BatchNorm (official True); False = batch statistics
      and trainable scale/bias, for training from scratch (synthetic demos).
    dtype / param_dtype: compute and parameter dtypes; the output features are float32.
  """

  width_multiplier: float = 1.0
  dropout: bool = True
  frozen_bn: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool) -> jax.Array:
    """images: [B, H, W, 3] ImageNet-normalised RGB -> float32 features [B, ceil(H/8), ceil(W/8), 448].

    Affinities: `pairwise_affinities(features, radius)`; the random walk (jaxseg.methods.seam.affinity)
    takes either.
    """
    chex.assert_rank(images, 4)
    if images.shape[-1] != 3:
      raise ValueError(
          f"AffinityNet expects NHWC RGB images [B, H, W, 3], got shape {images.shape}"
      )
    backbone = ResNet38(
        width_multiplier=self.width_multiplier,
        dropout=self.dropout,
        dtype=self.dtype,
        frozen_bn=self.frozen_bn,
        bn_affine_trainable=not self.frozen_bn,
        param_dtype=self.param_dtype,
        name="backbone",
    )
    head = AffinityHead(dtype=self.dtype, param_dtype=self.param_dtype, name="head")
    # Official state-dict names are flat (`b4_3.*`, `f9.*`): both submodules live in this module's scope.
    nn.share_scope(self, backbone)
    nn.share_scope(self, head)
    return head(backbone(images, train))
