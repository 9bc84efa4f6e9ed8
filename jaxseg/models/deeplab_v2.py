"""DeepLab-v2 ResNet-101, multi-level, exactly as ADVENT / ESL (`advent/model/deeplabv2.py`), NHWC.

Network (variable names = ADVENT's state-dict names):
  conv1 7x7/2 pad 3 -> bn1 -> ReLU -> max-pool 3x3/2 pad 1 **ceil_mode** (65 -> 33 -> 17)
  layer1 (64 x3), layer2 (128 x4, stride 2), layer3 (256 x23, dilation 2), layer4 (512 x3, dilation 4):
    Caffe bottlenecks (stride on the first 1x1 conv); every block of a dilated stage uses the stage's dilation
    and the first block of layer3/layer4 always has a projection shortcut. Output stride 8.
  layer5 = ClassifierModule on layer3 (1024 ch) -> 'aux' logits   (only with `multi_level`)
  layer6 = ClassifierModule on layer4 (2048 ch) -> 'main' logits
  ClassifierModule: the **sum** of four 3x3 convs with bias, dilation = padding = 6, 12, 18, 24.

BatchNorm quirk of the official code (the default here, `frozen_bn=False, bn_affine_trainable=False`): every BN
has its affine parameters frozen (requires_grad False), but the model is trained in `train()` mode, so BN
normalises with per-batch statistics and keeps updating its running statistics (PyTorch momentum 0.1); eval
uses the running statistics. With batch size 1 per domain, this is what the published numbers were trained
with. `frozen_bn=True` gives the commonly intended alternative (running statistics always, no update);
`bn_affine_trainable=True` makes scale/bias trainable.

Input: BGR, 0-255 scale, ImageNet-mean subtracted (no std division) - see esl.md.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models import conv_lowering
from jaxseg.models.layers import BatchNorm, conv2d, max_pool_torch, scaled_channels
from jaxseg.models.resnet import Bottleneck, ResLayer

Dtype = Any

ASPP_DILATIONS = (6, 12, 18, 24)


class ClassifierModule(nn.Module):
  """Sum of 3x3 convs (bias, dilation = padding = d for d in `dilations`): [B,h,w,C] -> [B,h,w,classes].

  Submodules 'conv2d_list'/'0'..'3' (ADVENT's `layerN.conv2d_list.i`), each with an HWIO 'kernel'
  [3, 3, C, classes] and a 'bias'. Kernels ~ N(0, 0.01) as in ADVENT, biases 0. The sum is computed by
  `conv_lowering.dilated_conv_sum` (one GEMM and shifted adds on CPU, the convolutions elsewhere).
  """

  num_classes: int
  dilations: Sequence[int] = ASPP_DILATIONS
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    convs = _ConvList(self.num_classes, tuple(self.dilations), self.param_dtype, name="conv2d_list")
    kernels, biases = convs(x.shape[-1])
    cast = lambda arrays: [a.astype(self.dtype) for a in arrays]  # noqa: E731
    return conv_lowering.dilated_conv_sum(
        x.astype(self.dtype), cast(kernels), cast(biases), self.dilations
    )


class _ConvList(nn.Module):
  """The `nn.ModuleList` of ClassifierModule: one 3x3 conv's parameters per dilation, named '0', '1', ..."""

  num_classes: int
  dilations: tuple[int, ...]
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, in_channels: int) -> tuple[list[jax.Array], list[jax.Array]]:
    params = [
        _ConvParams(self.num_classes, in_channels, self.param_dtype, name=str(i))()
        for i in range(len(self.dilations))
    ]
    return [k for k, _ in params], [b for _, b in params]


class _ConvParams(nn.Module):
  """An `nn.Conv(features, (3, 3), use_bias=True)`'s variables ('kernel' HWIO, 'bias'), same init."""

  features: int
  in_channels: int
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self) -> tuple[jax.Array, jax.Array]:
    kernel = self.param(
        "kernel",
        nn.initializers.normal(0.01),
        (3, 3, self.in_channels, self.features),
        self.param_dtype,
    )
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), self.param_dtype)
    return kernel, bias


class DeepLabV2(nn.Module):
  """ADVENT's DeepLab-v2 ResNet-101 (multi-level). See the module docstring for the BatchNorm flags.

  Attributes:
    num_classes: logits per head (19 for GTA5 -> Cityscapes).
    multi_level: also compute the aux head (layer5) on layer3.
    width_multiplier: scales every backbone channel count (tiny CPU demos); 1.0 = official.
    depth_blocks: blocks per stage; (3, 4, 23, 3) is ResNet-101.
    frozen_bn: True = running statistics even in training (not the official behaviour).
    bn_affine_trainable: True = trainable BN scale/bias (official: frozen).
    dtype / param_dtype: compute and parameter dtypes.
  """

  num_classes: int = 19
  multi_level: bool = True
  width_multiplier: float = 1.0
  depth_blocks: Sequence[int] = (3, 4, 23, 3)
  frozen_bn: bool = False
  bn_affine_trainable: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
    """x: [B, H, W, 3] mean-subtracted BGR -> dict of NHWC maps at output stride 8.

    Keys: 'main' [B, h, w, classes] (layer6 on layer4), 'aux' (layer5 on layer3, if `multi_level`),
    and the backbone features 'stem', 'layer1'..'layer4'. h = ceil(ceil(ceil(H/2)/2)/2) as in ADVENT.
    """
    chex.assert_rank(x, 4)
    conv = functools.partial(conv2d, dtype=self.dtype, param_dtype=self.param_dtype)
    norm = functools.partial(
        BatchNorm,
        use_running_average=self.frozen_bn or not train,
        affine_trainable=self.bn_affine_trainable,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        axis_name=self.bn_axis_name,
    )
    width = functools.partial(scaled_channels, width_multiplier=self.width_multiplier)
    head = functools.partial(
        ClassifierModule, self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype
    )

    x = x.astype(self.dtype)
    x = conv(width(64), 7, stride=2, padding=3, name="conv1")(x)
    x = nn.relu(norm(name="bn1")(x))
    x = max_pool_torch(x, 3, 2, 1, ceil_mode=True)
    out = {"stem": x}
    stages = (
        ("layer1", 64, 1, 1),
        ("layer2", 128, 2, 1),
        ("layer3", 256, 1, 2),
        ("layer4", 512, 1, 4),
    )
    for (name, planes, stride, dilation), num_blocks in zip(stages, self.depth_blocks):
      x = ResLayer(
          Bottleneck,
          width(planes),
          num_blocks,
          stride=stride,
          dilation=dilation,
          first_dilation=dilation,
          force_downsample=dilation > 1,
          stride_on_1x1=True,
          conv=conv,
          norm=norm,
          name=name,
      )(x)
      out[name] = x
    if self.multi_level:
      out["aux"] = head(name="layer5")(out["layer3"])
    out["main"] = head(name="layer6")(out["layer4"])
    return out
