"""Encoders of the self-supervised correspondence methods (method `vos`): MAST's and CRW's ResNet-18s.

MastEncoder (zlai0/MAST `models/submodule.py::ResNet18` + `models/mast.py::post_convolution`):
  conv1 7x7 stride 2 (no max-pool), layer1 64 / layer2 128 (stride 2) / layer3 256 / layer4 256 (stride
  1, no dilation), two BasicBlocks each, then a 3x3 conv 256 -> 64 with bias: 64-d features at output
  stride 4, no normalisation. Input: normalised Lab [B, H, W, 3] (`jaxseg.data.lab.mast_lab_input`).
  Official state dicts convert with `jaxseg.models.convert.convert_mast_encoder`.

CrwEncoder (ajabri/videowalk `code/resnet.py`, `code/utils/__init__.py::make_encoder`): torchvision
  ResNet-18 with layer3 and layer4 at stride 1 (no dilation): output stride 8. For the walk, each patch is
  encoded, averaged over space and embedded by `selfsim_fc` (Linear 512 -> 128) then L2-normalised; for
  label propagation the per-pixel map of layer3 (the official `--remove-layers ['layer4']`), L2-normalised
  over channels. Deviation: the official `scratch` encoder uses reflect padding in its convs; jaxseg's
  ResNet zero-pads (documented in configs/vos.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxseg.models.layers import conv2d
from jaxseg.models.resnet import ResNet

MAST_STAGE_WIDTHS = (64, 128, 256, 256)


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||, eps) along `axis` (torch.nn.functional.normalize)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
  return x / jnp.maximum(norm, eps)


class MastEncoder(nn.Module):
  """Lab frames [B, H, W, 3] -> features float32 [B, H/4, W/4, feature_dim] (MAST).

  feature_temperature: 0 (MAST) leaves the features unnormalised; tau > 0 L2-normalises them and scales
  by 1 / sqrt(tau), so every affinity (a dot product, in training and in propagation) is cosine / tau.
  """

  width_multiplier: float = 1.0
  feature_dim: int = 64
  dtype: jnp.dtype = jnp.float32
  feature_temperature: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    feats = ResNet(
        18,
        width_multiplier=self.width_multiplier,
        output_stride=4,
        dilate=False,
        stage_widths=MAST_STAGE_WIDTHS,
        dtype=self.dtype,
        name="feature_extraction",
    )(x, train)["layer4"]
    out = conv2d(
        self.feature_dim,
        3,
        use_bias=True,
        dtype=self.dtype,
        kernel_init=nn.initializers.lecun_normal(),
        name="post_convolution",
    )(feats)
    out = out.astype(jnp.float32)
    if self.feature_temperature > 0:
      out = l2_normalize(out) / jnp.sqrt(jnp.float32(self.feature_temperature))
    return out


class CrwEncoder(nn.Module):
  """CRW's encoder. `__call__(x, train)` -> {'map': [B, H/8, W/8, C] per-pixel features of
  `map_layer`, L2-normalised over channels; 'embedding': [B, embed_dim] spatially averaged layer4
  features through `selfsim_fc`, L2-normalised} (the embedding is what the walk uses on patches)."""

  width_multiplier: float = 1.0
  embed_dim: int = 128
  map_layer: str = "layer3"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
    feats = ResNet(
        18,
        width_multiplier=self.width_multiplier,
        output_stride=8,
        dilate=False,
        dtype=self.dtype,
        name="encoder",
    )(x, train)
    pooled = jnp.mean(feats["layer4"].astype(jnp.float32), axis=(1, 2))
    embedding = nn.Dense(self.embed_dim, dtype=jnp.float32, name="selfsim_fc")(pooled)
    return {
        "map": l2_normalize(feats[self.map_layer].astype(jnp.float32)),
        "embedding": l2_normalize(embedding),
    }
