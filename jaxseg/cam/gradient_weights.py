"""Channel weights [B, K] of CAM and the gradient-averaging methods.

Grad-CAM, Grad-CAM++ and XGrad-CAM weight channel k of A [B, h, w, K] by a
reduction of the gradient g = dy/dA; CAM by the final Dense kernel. The
pixel-wise gradient methods (HiResCAM, LayerCAM, ...) are one-liners in
registry.py; the formulas are listed in methods.py.
"""

from typing import Any

import jax
import jax.numpy as jnp

from jaxseg.cam import targets as targets_lib
from jaxseg.cam.layer_inputs import LayerInputs


def gradcam_weights(acts: jax.Array, grads: jax.Array) -> jax.Array:
  """Grad-CAM: spatial mean of the gradient. [B, h, w, K] x2 -> [B, K]."""
  return jnp.mean(grads, axis=(1, 2))


def gradcam_plusplus_weights(acts: jax.Array, grads: jax.Array) -> jax.Array:
  """Grad-CAM++ (closed form for y = exp(S)). [B, h, w, K] x2 -> [B, K]."""
  grads_2 = grads**2
  grads_3 = grads_2 * grads
  sum_acts = jnp.sum(acts, axis=(1, 2), keepdims=True)
  alpha = grads_2 / (2 * grads_2 + sum_acts * grads_3 + 1e-6)
  alpha = jnp.where(grads != 0, alpha, 0.0)
  return jnp.sum(jax.nn.relu(grads) * alpha, axis=(1, 2))


def xgradcam_weights(acts: jax.Array, grads: jax.Array) -> jax.Array:
  """XGrad-CAM: activation-weighted gradient sum. [B, h, w, K] x2 -> [B, K]."""
  sum_acts = jnp.sum(acts, axis=(1, 2), keepdims=True)
  return jnp.sum(grads * acts / (sum_acts + 1e-7), axis=(1, 2))


def fc_weights(inputs: LayerInputs, fc_kernel: Any) -> jax.Array:
  """CAM weights [B, K]: the Dense kernel column of each image's class.

  Only meaningful when the layer is the one globally average-pooled into
  that Dense (CAM's definition); only the channel count is checked.

  Args:
    inputs: the layer's inputs (activations [B, h, w, K], target, output).
    fc_kernel: the final Dense kernel [K, num_classes], or None (an error).
  Returns:
    [B, K] weights; NaN for a class id outside the kernel.
  """
  if fc_kernel is None:
    raise ValueError(
        "method 'cam' needs the final linear layer: pass fc_layer='<module "
        "path of the Dense after global average pooling>' or fc_kernel "
        "[K, num_classes]."
    )
  kernel = jnp.asarray(fc_kernel)
  k = inputs.activations.shape[-1]
  if kernel.ndim != 2 or kernel.shape[0] != k:
    raise ValueError(
        f"CAM fc_kernel has shape {kernel.shape}; expected [K={k}, "
        "num_classes] (HWIO-style Dense kernel, K = channels of the layer)."
    )
  class_ids = targets_lib.class_ids_of(inputs.target, inputs.output)
  return jnp.take(kernel.T, class_ids, axis=0, mode="fill", fill_value=jnp.nan)
