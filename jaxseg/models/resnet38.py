"""ResNet-38 ("resnet38d", Wu et al. 2016 model A1) exactly as SEAM's `network/resnet38d.py`, NHWC.

Pre-activation wide residual network, output stride 8, every conv without bias. Variable names are SEAM's
state-dict names (`b4_3.bn_branch2b1.running_var`, `b6.conv_branch2b2.weight`, `bn7.weight`, ...).

  conv1a 3x3 3->64
  b2, b2_1, b2_2        ResBlock 64->128->128, stride 2 in b2                      OS 2
  b3, b3_1, b3_2        ResBlock 128->256->256, stride 2 in b3                     OS 4
  b4, b4_1 .. b4_5      ResBlock 256->512->512, stride 2 in b4                     OS 8
  b5, b5_1, b5_2        ResBlock 512->512->1024, dilation 2 (b5's first 3x3: 1)
  b6                    ResBlock_bot 1024->(512, 1024)->2048, dilation 4, Dropout2d 0.3
  b7                    ResBlock_bot 2048->(1024, 2048)->4096, dilation 4, Dropout2d 0.5
  bn7 + ReLU            -> conv6

ResBlock:      a = relu(bn_branch2a(x)); shortcut = conv_branch1(a) if the shape changes else x (raw x);
               out = shortcut + conv_branch2b1(relu(bn_branch2b1(conv_branch2a(a))))
ResBlock_bot:  a = relu(bn_branch2a(x)); shortcut = conv_branch1(a) (always);
               b = conv_branch2a(a) [1x1]; b = conv_branch2b1(drop(relu(bn_branch2b1(b)))) [3x3];
               out = shortcut + conv_branch2b2(drop(relu(bn_branch2b2(b)))) [1x1]

Feature taps (SEAM's `forward_as_dict`, names shifted by one block): 'conv3' = relu(bn) input of b4
(256 ch, OS 4), 'conv4' = that of b5 (512 ch, OS 8, SEAM's f8_3 input), 'conv5' = that of b6 (1024 ch, f8_4
input), 'conv6' = relu(bn7(b7 output)) (4096 ch).

Official training mode: every BatchNorm stays in eval mode with frozen affine parameters (the defaults
`frozen_bn=True, bn_affine_trainable=False`), while the Dropout2d layers are active: `train=True` needs a
'dropout' rng. SEAM also freezes conv1a and b2* (an optimiser concern, not handled here).
Input: RGB / 255, ImageNet mean/std normalised.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models.layers import BatchNorm, conv2d, scaled_channels

Dtype = Any


class ResBlock(nn.Module):
  """SEAM's ResBlock (two 3x3 convs, pre-activation). Returns (out, relu(bn_branch2a(x)))."""

  mid_channels: int
  out_channels: int
  stride: int = 1
  first_dilation: int = 1
  dilation: int = 1
  conv: Callable[..., nn.Module] = conv2d
  norm: Callable[..., nn.Module] = functools.partial(BatchNorm, use_running_average=True)

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    same_shape = x.shape[-1] == self.out_channels and self.stride == 1
    a = nn.relu(self.norm(name="bn_branch2a")(x))
    shortcut = (
        x
        if same_shape
        else self.conv(self.out_channels, 1, stride=self.stride, padding=0, name="conv_branch1")(a)
    )
    b = self.conv(
        self.mid_channels, 3, stride=self.stride, dilation=self.first_dilation, name="conv_branch2a"
    )(a)
    b = nn.relu(self.norm(name="bn_branch2b1")(b))
    b = self.conv(self.out_channels, 3, dilation=self.dilation, name="conv_branch2b1")(b)
    return shortcut + b, a


class ResBlockBot(nn.Module):
  """SEAM's ResBlock_bot (1x1 -> 3x3 -> 1x1 with channel dropout). Returns (out, relu(bn_branch2a(x)))."""

  out_channels: int
  dilation: int = 1
  dropout: float = 0.0
  conv: Callable[..., nn.Module] = conv2d
  norm: Callable[..., nn.Module] = functools.partial(BatchNorm, use_running_average=True)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    # Dropout2d: whole channels per sample, so the mask is broadcast over H and W (NHWC axes 1, 2).
    drop = nn.Dropout(self.dropout, broadcast_dims=(1, 2), deterministic=not train)
    a = nn.relu(self.norm(name="bn_branch2a")(x))
    shortcut = self.conv(self.out_channels, 1, padding=0, name="conv_branch1")(a)
    b = self.conv(self.out_channels // 4, 1, padding=0, name="conv_branch2a")(a)
    b = drop(nn.relu(self.norm(name="bn_branch2b1")(b)))
    b = self.conv(self.out_channels // 2, 3, dilation=self.dilation, name="conv_branch2b1")(b)
    b = drop(nn.relu(self.norm(name="bn_branch2b2")(b)))
    b = self.conv(self.out_channels, 1, padding=0, name="conv_branch2b2")(b)
    return shortcut + b, a


class ResNet38(nn.Module):
  """SEAM's resnet38d backbone.

  Attributes:
    width_multiplier: scales every channel count (e.g. 0.125 for CPU demos); 1.0 = official.
    frozen_bn: running statistics always (official); False = batch statistics when `train`.
    bn_affine_trainable: official False (scale/bias kept in 'batch_stats', out of the optimiser).
    dropout: whether the b6/b7 Dropout2d (0.3 / 0.5) are applied when `train` (official True).
    dtype / param_dtype: compute and parameter dtypes.
  """

  width_multiplier: float = 1.0
  frozen_bn: bool = True
  bn_affine_trainable: bool = False
  dropout: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
    """x: [B, H, W, 3] normalised RGB -> {'conv3', 'conv4', 'conv5', 'conv6'} NHWC maps.

    'conv3' has stride 4, the others stride 8 (sizes ceil(H/8): 3x3 stride-2 convs pad 1 symmetrically).
    """
    chex.assert_rank(x, 4)
    w = functools.partial(scaled_channels, width_multiplier=self.width_multiplier)
    conv = functools.partial(conv2d, dtype=self.dtype, param_dtype=self.param_dtype)
    norm = functools.partial(
        BatchNorm,
        use_running_average=self.frozen_bn or not train,
        affine_trainable=self.bn_affine_trainable,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
    )
    block = functools.partial(ResBlock, conv=conv, norm=norm)

    x = conv(w(64), 3, name="conv1a")(x.astype(self.dtype))
    for name, stride in (("b2", 2), ("b2_1", 1), ("b2_2", 1)):
      x, _ = block(w(128), w(128), stride=stride, name=name)(x)
    for name, stride in (("b3", 2), ("b3_1", 1), ("b3_2", 1)):
      x, _ = block(w(256), w(256), stride=stride, name=name)(x)
    x, conv3 = block(w(512), w(512), stride=2, name="b4")(x)
    for i in range(1, 6):
      x, _ = block(w(512), w(512), name=f"b4_{i}")(x)
    x, conv4 = block(w(512), w(1024), first_dilation=1, dilation=2, name="b5")(x)
    for name in ("b5_1", "b5_2"):
      x, _ = block(w(512), w(1024), first_dilation=2, dilation=2, name=name)(x)
    rate6, rate7 = (0.3, 0.5) if self.dropout else (0.0, 0.0)
    x, conv5 = ResBlockBot(w(2048), dilation=4, dropout=rate6, conv=conv, norm=norm, name="b6")(
        x, train
    )
    x, _ = ResBlockBot(w(4096), dilation=4, dropout=rate7, conv=conv, norm=norm, name="b7")(
        x, train
    )
    conv6 = nn.relu(norm(name="bn7")(x))
    return {"conv3": conv3, "conv4": conv4, "conv5": conv5, "conv6": conv6}


OUT_CHANNELS = {"conv3": 256, "conv4": 512, "conv5": 1024, "conv6": 4096}
