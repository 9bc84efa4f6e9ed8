"""Fully supervised segmentation network: ResNet backbone + FCN head (NHWC).

Used by the `supervised` method (the upper-bound row every weakly or
self-supervised demo compares against) and for fine-tuning pre-trained
backbones.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models.layers import BatchNorm, conv2d
from jaxseg.models.resize import resize_bilinear
from jaxseg.models.resnet import ResNet


class FCNHead(nn.Module):
  """conv3x3 -> BN -> ReLU -> dropout -> conv1x1 (class logits)."""

  num_classes: int
  channels: int = 128
  dropout: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = conv2d(self.channels, 3, dtype=self.dtype, name="conv")(x)
    x = nn.relu(BatchNorm(use_running_average=not train, dtype=self.dtype, name="bn")(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return conv2d(self.num_classes, 1, use_bias=True, dtype=self.dtype, name="classifier")(x)


class FCN(nn.Module):
  """ResNet + FCN head on the last stage, logits upsampled to the input size.

  __call__(images [B, H, W, 3] float normalised, train) -> logits float32 [B, H, W, num_classes].
  """

  num_classes: int
  depth: int = 18
  width_multiplier: float = 1.0
  output_stride: int = 8
  head_channels: int = 128
  dropout: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool) -> jax.Array:
    features = ResNet(
        depth=self.depth,
        width_multiplier=self.width_multiplier,
        output_stride=self.output_stride,
        dtype=self.dtype,
        name="backbone",
    )(images, train)
    logits = FCNHead(
        self.num_classes, self.head_channels, self.dropout, dtype=self.dtype, name="head"
    )(features["layer4"], train)
    return resize_bilinear(logits, images.shape[1:3], align_corners=False)
