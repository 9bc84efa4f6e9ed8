"""FullGrad: bias-gradient maps of every Conv / BatchNorm plus the input-gradient map.

Unlike the other methods it has no target layer: the map is
sum over biases of |bias * g| + |x * dy/dx|, each channel min-maxed and
resized to the input before the sum (pytorch-grad-cam 1.5.5).
"""

import functools

import jax
import jax.numpy as jnp

from jaxseg.cam import activations as act_lib
from jaxseg.cam import postprocess
from jaxseg.cam import targets as targets_lib


def fullgrad_cam(apply_fn, variables, images: jax.Array, target: targets_lib.Target) -> jax.Array:
  """FullGrad [B, H, W]: per (image, channel) min-max + resize, summed.

  Args:
    apply_fn: apply_fn(variables, images) -> logits (a Flax Linen apply).
    variables: the model variables.
    images: [B, H, W, C] float network input.
    target: the target whose score y [B] the maps explain.
  Returns:
    [B, H, W] maps, min-max normalised per image.
  """
  batch, height, width, _ = images.shape
  score_fn = functools.partial(targets_lib.score, target, batch_size=batch)
  result = act_lib.bias_activations_and_gradients(apply_fn, variables, images, score_fn)

  def per_channel_maps(x):  # [B, h, w, K] >= 0 -> [B, H, W] summed channels
    k = x.shape[-1]
    per_channel = jnp.moveaxis(x, -1, 1).reshape(batch * k, *x.shape[1:3])
    scaled = postprocess.scale_cam(per_channel, (height, width))
    return jnp.sum(scaled.reshape(batch, k, height, width), axis=1)

  total = per_channel_maps(jnp.abs(result.input_gradient * images))
  for name, grads in result.gradients.items():
    if grads.ndim != 4:
      continue  # FullGrad uses the 2-D conv / norm layers only.
    total = total + per_channel_maps(jnp.abs(result.biases[name] * grads))
  return postprocess.minmax_normalize(total)
