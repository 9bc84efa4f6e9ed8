"""ADVENT's fully-convolutional domain discriminator (`advent/model/discriminator.py: get_fc_discriminator`).

Network (NHWC; variable names = the official `nn.Sequential` indices, so a PyTorch state dict maps by name):
  '0' conv 4x4/2 pad 1: C -> ndf        LeakyReLU(0.2)
  '2' conv 4x4/2 pad 1: ndf -> 2 ndf    LeakyReLU(0.2)
  '4' conv 4x4/2 pad 1: 2 ndf -> 4 ndf  LeakyReLU(0.2)
  '6' conv 4x4/2 pad 1: 4 ndf -> 8 ndf  LeakyReLU(0.2)
  '8' conv 4x4/2 pad 1: 8 ndf -> 1      (patch logits, no activation)
Every conv has a bias; there is no normalisation. Each conv maps a side s to floor(s / 2), so the output
is at 1/32 of the input (65x97 -> 2x3). AdvEnt feeds it the self-information map of the segmenter
(`jaxseg.losses.self_information_map`), BDL the softmax probabilities.

The official state dict (`model_*_D_main.pth`, or `d_main.` / `d_aux.` entries with the prefix stripped)
converts with `jaxseg.models.convert.convert_fc_discriminator`.
"""

from __future__ import annotations

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models.layers import conv2d

Dtype = Any

LEAKY_SLOPE = 0.2
# Index of each conv in the official nn.Sequential (the LeakyReLUs take the odd indices).
CONV_NAMES = ("0", "2", "4", "6", "8")

# PyTorch's default Conv2d weight init, kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in));
# ADVENT does not re-initialise its discriminators. (Biases start at 0 here: the shared conv helper has no
# bias initialiser, and PyTorch's U(+-1/sqrt(fan_in)) bias draw only matters for from-scratch runs.)
TORCH_DEFAULT_KERNEL_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class FCDiscriminator(nn.Module):
  """ADVENT `get_fc_discriminator(num_classes, ndf)`: [B, H, W, num_classes] -> patch logits [B, H/32, W/32, 1].

  Attributes:
    num_classes: input channels (the segmenter's classes; 19 for GTA5 -> Cityscapes).
    ndf: width of the first conv; the others are 2, 4, 8 times it (official default 64).
    dtype: compute dtype of the convs and activations (the output is in this dtype).
    param_dtype: dtype of the kernels and biases.
  """

  num_classes: int
  ndf: int = 64
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    chex.assert_rank(x, 4)
    if x.shape[-1] != self.num_classes:
      raise ValueError(
          f"FCDiscriminator(num_classes={self.num_classes}) got {x.shape[-1]} input channels "
          f"(input shape {x.shape}, expected NHWC)"
      )
    widths = (self.ndf, 2 * self.ndf, 4 * self.ndf, 8 * self.ndf, 1)
    x = x.astype(self.dtype)
    for index, (name, features) in enumerate(zip(CONV_NAMES, widths)):
      x = conv2d(
          features,
          4,
          stride=2,
          padding=1,
          use_bias=True,
          dtype=self.dtype,
          param_dtype=self.param_dtype,
          kernel_init=TORCH_DEFAULT_KERNEL_INIT,
          name=name,
      )(x)
      if index < len(CONV_NAMES) - 1:
        x = nn.leaky_relu(x, negative_slope=LEAKY_SLOPE)
    return x
