"""MAST's photometric reconstruction loss (Lai et al., CVPR 2020; zlai0/MAST). Pure, NHWC.

The target frame's dropped Lab channel is reconstructed from the reference frames' clean channel
through MAST's restricted attention (`jaxseg.losses.correspondence.local_propagate`:
`models/colorizer.py` without the ROI path, which training never takes), then compared with the
clean target channel as `main.py::compute_lphoto` does:

  values = ref_values[:, :, ::s, ::s]                  (`Colorizer.prep`: strided pick, s = H / h)
  out    = local_propagate(tar_feats, ref_feats, values, R)                  [B, h, w, V]
  out_up = bilinear(out, (H, W)), align_corners=False  (`F.interpolate(mode='bilinear')`)
  loss   = smooth_l1(20 out_up, 20 target)             (`F.smooth_l1_loss`, beta 1, mean)

The encoder forward, MAST's channel dropout of the inputs (`dropout2d_lab`) and the choice of the
channel are the method's (`jaxseg.methods.vos.method.mast_photometric_loss`).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jaxseg.losses.correspondence import local_propagate

MAST_HUBER_SCALE = 20.0  # compute_lphoto: smooth_l1_loss(outputs * 20, target * 20)


def smooth_l1_loss(prediction: jax.Array, target: jax.Array, beta: float = 1.0) -> jax.Array:
  """Mean smooth-L1 (Huber) loss, PyTorch `F.smooth_l1_loss(reduction='mean')`.

  Args:
    prediction, target: float arrays of one shape (any rank).
    beta: the quadratic-to-linear switch point (PyTorch default 1).
  Returns:
    scalar: mean of 0.5 d^2 / beta where d = |prediction - target| < beta, else d - beta / 2.
  """
  chex.assert_equal_shape([prediction, target])
  diff = jnp.abs(prediction - target)
  return jnp.mean(jnp.where(diff < beta, 0.5 * diff**2 / beta, diff - 0.5 * beta))


def _upsample_bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """[B, h, w, C] -> [B, H, W, C], PyTorch `F.interpolate(mode='bilinear', align_corners=False)`."""
  return jax.image.resize(x, (x.shape[0], *size, x.shape[-1]), "bilinear", antialias=False)


def mast_reconstruction_loss(
    tar_feats: jax.Array,
    ref_feats: jax.Array,
    ref_values: jax.Array,
    target: jax.Array,
    *,
    radius: int,
    huber_scale: float = MAST_HUBER_SCALE,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """MAST's `compute_lphoto` on the colorizer's output: smooth-L1 of the reconstructed target values.

  Args:
    tar_feats: float [B, h, w, C] target-frame features (MAST: 64-d, stride 4).
    ref_feats: float [N, B, h, w, C] reference-frame features.
    ref_values: float [N, B, H, W, V] reference values at image resolution (MAST: the clean Lab
      channel dropped from the inputs, V = 1); picked [::s, ::s], s = H // h, onto the features.
    target: float [B, H, W, V] the target frame's clean values.
    radius: attention window radius R (static; MAST trains with 6).
    huber_scale: both sides are scaled by it before the smooth-L1 (MAST: 20).
  Returns:
    (loss float32 scalar, aux): aux 'out' [B, h, w, V] (the colorizer output), 'out_up'
    [B, H, W, V] (upsampled), 'err_map' [B, H, W] (sum over V of |out_up - target|, the official
    `err_maps`).
  """
  chex.assert_rank([tar_feats, ref_feats, ref_values, target], [4, 5, 5, 4])
  chex.assert_equal_shape([ref_feats[0], tar_feats])
  chex.assert_equal_shape([ref_values[0], target])
  height, width = target.shape[1:3]
  stride = height // tar_feats.shape[1]
  out = local_propagate(tar_feats, ref_feats, ref_values[:, :, ::stride, ::stride], radius=radius)
  out_up = _upsample_bilinear(out, (height, width))
  loss = smooth_l1_loss(out_up * huber_scale, target * huber_scale)
  aux = dict(out=out, out_up=out_up, err_map=jnp.sum(jnp.abs(out_up - target), axis=-1))
  return loss, aux
