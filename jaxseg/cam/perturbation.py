"""Perturbation methods: Score-CAM and Ablation-CAM channel weights [B, K].

Both run one forward pass of the whole batch per channel of A [B, h, w, K]
(masked inputs, resp. an ablated layer output), `chunk_size` channels at once.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxseg.cam import postprocess
from jaxseg.cam.layer_inputs import LayerInputs

ABLATION_OFFSET = 1e7
SCORECAM_EPS = 1e-8


def _map_channels(
    fn: Callable[[jax.Array], jax.Array], xs: jax.Array, chunk_size: int
) -> jax.Array:
  """lax.map of fn over the leading axis of xs, vmapped in chunks."""
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
  return jax.lax.map(fn, xs, batch_size=min(chunk_size, xs.shape[0]))


def scorecam_weights(inputs: LayerInputs, chunk_size: int) -> jax.Array:
  """Score-CAM: softmax over channels of y(x * upsampled, min-maxed A_k). [B, K].

  Each channel needs a forward pass of the whole batch; `chunk_size` channels
  run at once (chunk_size * B images in memory).
  """
  size = inputs.images.shape[1:3]
  per_channel = jnp.moveaxis(inputs.activations, -1, 0)  # [K, B, h, w]

  def channel_score(act: jax.Array) -> jax.Array:  # [B, h, w] -> [B]
    mask = postprocess.resize_bilinear(act, size, align_corners=True)
    low = jnp.min(mask, axis=(1, 2), keepdims=True)
    high = jnp.max(mask, axis=(1, 2), keepdims=True)
    mask = (mask - low) / (high - low + SCORECAM_EPS)
    return inputs.score_images(inputs.images * mask[..., None].astype(inputs.images.dtype))

  scores = _map_channels(channel_score, per_channel, chunk_size)  # [K, B]
  return jax.nn.softmax(scores.T, axis=-1)


def ablation_weights(inputs: LayerInputs, chunk_size: int) -> jax.Array:
  """Ablation-CAM: relative score drop when channel k is ablated. [B, K].

  The ablated value is 0 where the image's minimum activation is 0 (post-ReLU
  layers), else min - 1e7 (pytorch-grad-cam; its in-place loop lowers this by
  a further 1e7 per channel within a batch, which changes nothing after a
  following ReLU and is not reproduced).
  """
  acts = inputs.activations
  lowest = jnp.min(acts, axis=(1, 2, 3), keepdims=True)  # [B, 1, 1, 1]
  value = jnp.where(lowest == 0, 0.0, lowest - ABLATION_OFFSET).astype(acts.dtype)
  channel_ids = jnp.arange(acts.shape[-1])

  def ablated_score(k: jax.Array) -> jax.Array:  # () -> [B]
    return inputs.score_activations(jnp.where(channel_ids == k, value, acts))

  ablated = _map_channels(ablated_score, channel_ids, chunk_size).T  # [B, K]
  original = inputs.scores[:, None]
  return (original - ablated) / original
