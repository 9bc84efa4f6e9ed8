"""Building blocks shared by the backbones: PyTorch-exact convolution padding, BatchNorm and pooling.

Layouts: activations NHWC, convolution kernels HWIO. Every block here reproduces the PyTorch op it replaces
bit-for-bit in semantics (symmetric explicit padding, biased batch variance for normalisation, unbiased batch
variance for the running update), so converted official weights give the official outputs.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models import conv_lowering

Dtype = Any

# Name of the variable collection that holds non-trainable BatchNorm state. Frozen affine parameters
# (scale/bias with `affine_trainable=False`) also live here, so an optimiser built on 'params' never sees
# them: no update and no weight decay, like `requires_grad=False` parameters left out of a PyTorch optimiser.
BN_STATE = "batch_stats"


def scaled_channels(channels: int, width_multiplier: float) -> int:
  """Channel count after the width multiplier (at least 1); identity for `width_multiplier == 1`."""
  if width_multiplier <= 0:
    raise ValueError(f"width_multiplier must be > 0, got {width_multiplier}")
  return max(1, int(round(channels * width_multiplier)))


def conv2d(
    features: int,
    kernel: int,
    *,
    stride: int = 1,
    padding: int | None = None,
    dilation: int = 1,
    use_bias: bool = False,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    kernel_init: Any = nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
    name: str | None = None,
) -> nn.Conv:
  """A PyTorch-style `Conv2d` (NHWC in/out, HWIO kernel) with symmetric explicit padding.

  `padding=None` means PyTorch's usual `dilation * (kernel - 1) // 2`. Explicit padding matters: 'SAME'
  pads (0, 1) for even inputs with stride 2, which shifts every feature by half a pixel.
  """
  if padding is None:
    padding = dilation * (kernel - 1) // 2
  return nn.Conv(
      features,
      (kernel, kernel),
      strides=(stride, stride),
      padding=((padding, padding), (padding, padding)),
      kernel_dilation=(dilation, dilation),
      use_bias=use_bias,
      dtype=dtype,
      param_dtype=param_dtype,
      kernel_init=kernel_init,
      # Same arithmetic as lax's op; on CPU weight-heavy convs run as im2col + matmul (conv_lowering.py).
      conv_general_dilated=conv_lowering.conv_general_dilated,
      name=name,
  )


class BatchNorm(nn.Module):
  """PyTorch `BatchNorm2d` semantics over NHWC input (statistics over N, H, W).

  Variables: 'params' {'scale', 'bias'} (or in `BN_STATE` when `affine_trainable=False`), and `BN_STATE`
  {'mean', 'var'}. Names map onto PyTorch's weight/bias/running_mean/running_var.

  Attributes:
    use_running_average: normalise with the running statistics (PyTorch eval mode / frozen BN).
    momentum: Flax convention, `running = momentum * running + (1 - momentum) * batch`; 0.9 equals
      PyTorch's default momentum 0.1.
    epsilon: added to the variance (PyTorch default 1e-5).
    affine_trainable: False keeps scale/bias in `BN_STATE`, out of the optimiser's reach.
    dtype: output dtype. Statistics are computed in at least float32 (bf16 sums lose too much).
    param_dtype: dtype of scale/bias and the running statistics.
    axis_name: mapped axis to average batch statistics over under `pmap`/`shard_map` (not needed under
      `jit` with sharded global arrays, where the mean is already global).
  """

  use_running_average: bool
  momentum: float = 0.9
  epsilon: float = 1e-5
  affine_trainable: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [..., C] -> same shape, in `self.dtype`."""
    channels = x.shape[-1]
    affine_collection = "params" if self.affine_trainable else BN_STATE
    if self.affine_trainable:
      scale = self.param("scale", nn.initializers.ones, (channels,), self.param_dtype)
      bias = self.param("bias", nn.initializers.zeros, (channels,), self.param_dtype)
    else:
      scale = self.variable(
          affine_collection, "scale", jnp.ones, (channels,), self.param_dtype
      ).value
      bias = self.variable(
          affine_collection, "bias", jnp.zeros, (channels,), self.param_dtype
      ).value
    ra_mean = self.variable(BN_STATE, "mean", jnp.zeros, (channels,), self.param_dtype)
    ra_var = self.variable(BN_STATE, "var", jnp.ones, (channels,), self.param_dtype)

    stat_dtype = jnp.promote_types(
        jnp.float32, x.dtype
    )  # float64 stays float64 (x64 parity checks)
    x32 = x.astype(stat_dtype)
    if self.use_running_average:
      mean = ra_mean.value.astype(stat_dtype)
      var = ra_var.value.astype(stat_dtype)
    else:
      reduce_axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(x32, axis=reduce_axes)
      if self.axis_name is not None:
        mean = jax.lax.pmean(mean, self.axis_name)
      # Two-pass variance: E[x^2] - E[x]^2 cancels badly when |mean| >> std (e.g. 0-255 inputs).
      var = jnp.mean(jnp.square(x32 - mean), axis=reduce_axes)
      if self.axis_name is not None:
        var = jax.lax.pmean(var, self.axis_name)
      # PyTorch normalises with the biased variance but stores the unbiased one (n / (n - 1)).
      count = math.prod(x.shape[:-1])
      if self.axis_name is not None:
        count = count * jax.lax.psum(1, self.axis_name)
      if not self.is_initializing():
        unbiased = var * (count / max(count - 1, 1))
        m = self.momentum
        ra_mean.value = (m * ra_mean.value + (1 - m) * mean).astype(self.param_dtype)
        ra_var.value = (m * ra_var.value + (1 - m) * unbiased).astype(self.param_dtype)
    inv = jax.lax.rsqrt(var + self.epsilon) * scale.astype(stat_dtype)
    y = (x32 - mean) * inv + bias.astype(stat_dtype)
    return y.astype(self.dtype)


def max_pool_torch(
    x: jax.Array, window: int = 3, stride: int = 2, padding: int = 1, ceil_mode: bool = False
) -> jax.Array:
  """PyTorch `MaxPool2d(window, stride, padding, ceil_mode)` on NHWC input (padding never wins the max).

  With `ceil_mode` the output size is rounded up, except that the last window must start inside the
  input or the left padding (PyTorch's rule); the extra right padding is -inf.
  """

  def out_size(size: int) -> tuple[int, int]:
    span = size + 2 * padding - window
    n = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (n - 1) * stride >= size + padding:
      n -= 1
    extra = max((n - 1) * stride + window - (size + 2 * padding), 0)
    return n, extra

  _, extra_h = out_size(x.shape[1])
  _, extra_w = out_size(x.shape[2])
  return nn.max_pool(
      x,
      (window, window),
      strides=(stride, stride),
      padding=((padding, padding + extra_h), (padding, padding + extra_w)),
  )
