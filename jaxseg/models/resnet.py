"""ResNet-18/34/50/101 (torchvision layout) as a Flax Linen module, NHWC, with dilated output strides.

Variable names map one-to-one onto torchvision's state dict: the Flax path ('layer1', '0', 'downsample', '0',
'kernel') is torchvision's `layer1.0.downsample.0.weight` (kernel HWIO <-> weight OIHW; BatchNorm
scale/bias/mean/var <-> weight/bias/running_mean/running_var). `jaxseg.models.convert` relies on this.

Output stride (OS) is reduced like torchvision's `replace_stride_with_dilation`: the stride of a stage becomes 1
and later convolutions are dilated instead. OS 4 additionally drops the stem max-pool (as MAST's video encoder
does). `dilate=False` replaces strides by 1 without dilation (CRW's `modify()` for video).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models import conv_lowering
from jaxseg.models.layers import BatchNorm, conv2d, max_pool_torch, scaled_channels

Dtype = Any

STAGE_DEPTHS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
}
STAGE_NAMES = ("layer1", "layer2", "layer3", "layer4")


class Downsample(nn.Module):
  """Projection shortcut `downsample = Sequential(conv1x1(stride), BN)`: submodules named '0' and '1'."""

  features: int
  stride: int
  conv: Callable[..., nn.Module]
  norm: Callable[..., nn.Module]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.conv(self.features, 1, stride=self.stride, padding=0, name="0")(x)
    return self.norm(name="1")(x)


class BasicBlock(nn.Module):
  """Two 3x3 convs (torchvision BasicBlock). Out channels = planes.

  conv1 carries the stride and `first_dilation`, conv2 `dilation` (torchvision itself refuses dilation in
  BasicBlock; this is the usual extension, e.g. timm's).
  """

  planes: int
  stride: int = 1
  dilation: int = 1
  first_dilation: int = 1
  downsample: bool = False
  stride_on_1x1: bool = False  # unused; keeps the block signatures interchangeable
  conv: Callable[..., nn.Module] = conv2d
  norm: Callable[..., nn.Module] = functools.partial(BatchNorm, use_running_average=True)
  expansion: ClassVar[int] = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    shortcut = x
    y = self.conv(self.planes, 3, stride=self.stride, dilation=self.first_dilation, name="conv1")(x)
    y = nn.relu(self.norm(name="bn1")(y))
    y = self.conv(self.planes, 3, dilation=self.dilation, name="conv2")(y)
    y = self.norm(name="bn2")(y)
    if self.downsample:
      shortcut = Downsample(self.planes, self.stride, self.conv, self.norm, name="downsample")(x)
    return nn.relu(y + shortcut)


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (dilated) -> 1x1 bottleneck. Out channels = 4 * planes.

  The stride sits on the 3x3 conv (torchvision, "ResNet v1.5") or on the first 1x1 conv
  (`stride_on_1x1=True`: the original Caffe ResNet used by DeepLab-v2). `first_dilation` is unused: the
  single 3x3 conv gets `dilation`.
  """

  planes: int
  stride: int = 1
  dilation: int = 1
  first_dilation: int = 1
  downsample: bool = False
  stride_on_1x1: bool = False
  conv: Callable[..., nn.Module] = conv2d
  norm: Callable[..., nn.Module] = functools.partial(BatchNorm, use_running_average=True)
  expansion: ClassVar[int] = 4

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    stride_1x1, stride_3x3 = (self.stride, 1) if self.stride_on_1x1 else (1, self.stride)
    y = self.conv(self.planes, 1, stride=stride_1x1, padding=0, name="conv1")(x)
    y = nn.relu(self.norm(name="bn1")(y))
    y = self.conv(self.planes, 3, stride=stride_3x3, dilation=self.dilation, name="conv2")(y)
    y = nn.relu(self.norm(name="bn2")(y))
    y = self.conv(self.planes * self.expansion, 1, padding=0, name="conv3")(y)
    y = self.norm(name="bn3")(y)
    shortcut = x
    if self.downsample:
      shortcut = Downsample(
          self.planes * self.expansion, self.stride, self.conv, self.norm, name="downsample"
      )(x)
    # Materialised once: see conv_lowering.fusion_boundary (XLA:CPU recomputes residual chains).
    return conv_lowering.relu_fusion_boundary(y + shortcut)


class ResLayer(nn.Module):
  """One stage: `num_blocks` blocks named '0', '1', ...; block 0 carries the stride and the shortcut.

  Block 0 gets `first_dilation` (torchvision passes the previous stage's dilation there), the others
  `dilation`. A projection shortcut is made when the stride or channel count changes, or when
  `force_downsample` (DeepLab-v2 also adds one on its dilated stages).
  """

  block: type[nn.Module]
  planes: int
  num_blocks: int
  stride: int = 1
  dilation: int = 1
  first_dilation: int = 1
  force_downsample: bool = False
  stride_on_1x1: bool = False
  conv: Callable[..., nn.Module] = conv2d
  norm: Callable[..., nn.Module] = functools.partial(BatchNorm, use_running_average=True)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    out_channels = self.planes * self.block.expansion
    needs_projection = self.stride != 1 or x.shape[-1] != out_channels or self.force_downsample
    common = dict(
        planes=self.planes, stride_on_1x1=self.stride_on_1x1, conv=self.conv, norm=self.norm
    )
    if self.block is Bottleneck:
      first = dict(dilation=self.first_dilation, first_dilation=self.first_dilation)
    else:
      first = dict(dilation=self.dilation, first_dilation=self.first_dilation)
    x = self.block(stride=self.stride, downsample=needs_projection, name="0", **first, **common)(x)
    for i in range(1, self.num_blocks):
      x = self.block(dilation=self.dilation, first_dilation=self.dilation, name=str(i), **common)(x)
    return x


def stage_plan(output_stride: int, dilate: bool = True) -> tuple[bool, list[tuple[int, int, int]]]:
  """(keep_max_pool, [(stride, first_dilation, dilation)] for layer1..layer4) for an output stride.

  OS 32/16/8 follow torchvision's `replace_stride_with_dilation` ([F,F,F] / [F,F,T] / [F,T,T]); OS 4
  also drops the stem max-pool. With `dilate=False`, replaced strides become 1 and dilations stay 1.
  """
  replaced = {
      32: (False, False, False),
      16: (False, False, True),
      8: (False, True, True),
      4: (False, True, True),
  }
  if output_stride not in replaced:
    raise ValueError(f"output_stride must be one of 32, 16, 8, 4; got {output_stride}")
  plan = [(1, 1, 1)]
  current = 1
  for stride, replace in zip((2, 2, 2), replaced[output_stride]):
    previous = current
    if replace:
      if dilate:
        current *= stride
      stride = 1
    plan.append((stride, previous, current))
  return output_stride != 4, plan


class ResNet(nn.Module):
  """torchvision-compatible ResNet backbone returning named stage features.

  Attributes:
    depth: 18, 34 (BasicBlock) or 50, 101 (Bottleneck).
    width_multiplier: scales every channel count (0.25 for tiny CPU demos); 1.0 = torchvision.
    output_stride: 32, 16, 8 or 4 (see `stage_plan`).
    frozen_bn: always use the running statistics, also when `train=True` (no statistics update).
    bn_affine_trainable: False moves BatchNorm scale/bias into the 'batch_stats' collection so the
      optimiser never updates (or weight-decays) them.
    dilate: False = strides replaced by 1 without dilation (CRW-style) instead of dilated convs.
    stage_widths: planes of layer1..layer4 before expansion (MAST's encoder uses (64, 128, 256, 256)).
    dtype: computation dtype (e.g. bfloat16); params keep `param_dtype`. BatchNorm statistics are float32.
  """

  depth: int
  width_multiplier: float = 1.0
  output_stride: int = 32
  frozen_bn: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  bn_affine_trainable: bool = True
  dilate: bool = True
  stage_widths: Sequence[int] = (64, 128, 256, 512)
  bn_momentum: float = 0.9
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
    """x: [B, H, W, C] float images -> {'stem', 'layer1', ..., 'layer4'}: NHWC feature maps.

    'stem' is taken after the max-pool (after the ReLU at OS 4); stride 4 (2 at OS 4), 64 * width ch.
    """
    if self.depth not in STAGE_DEPTHS:
      raise ValueError(f"depth must be one of {sorted(STAGE_DEPTHS)}; got {self.depth}")
    chex.assert_rank(x, 4)
    keep_max_pool, plan = stage_plan(self.output_stride, self.dilate)
    block = BasicBlock if self.depth < 50 else Bottleneck
    conv = functools.partial(conv2d, dtype=self.dtype, param_dtype=self.param_dtype)
    norm = functools.partial(
        BatchNorm,
        use_running_average=self.frozen_bn or not train,
        momentum=self.bn_momentum,
        affine_trainable=self.bn_affine_trainable,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        axis_name=self.bn_axis_name,
    )

    width = functools.partial(scaled_channels, width_multiplier=self.width_multiplier)
    x = x.astype(self.dtype)
    x = conv(width(64), 7, stride=2, padding=3, name="conv1")(x)
    x = nn.relu(norm(name="bn1")(x))
    if keep_max_pool:
      x = max_pool_torch(x, 3, 2, 1)
    features = {"stem": x}
    for name, planes, num_blocks, (stride, first_dilation, dilation) in zip(
        STAGE_NAMES, self.stage_widths, STAGE_DEPTHS[self.depth], plan
    ):
      x = ResLayer(
          block,
          width(planes),
          num_blocks,
          stride=stride,
          dilation=dilation,
          first_dilation=first_dilation,
          conv=conv,
          norm=norm,
          name=name,
      )(x)
      features[name] = x
    return features


def out_channels(
    depth: int, width_multiplier: float = 1.0, stage_widths: Sequence[int] = (64, 128, 256, 512)
) -> dict[str, int]:
  """Channel count of each feature returned by `ResNet` (without running it)."""
  expansion = 1 if depth < 50 else 4
  out = {"stem": scaled_channels(64, width_multiplier)}
  for name, planes in zip(STAGE_NAMES, stage_widths):
    out[name] = scaled_channels(planes, width_multiplier) * expansion
  return out
