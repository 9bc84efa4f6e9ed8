"""CAM post-processing as pytorch-grad-cam 1.5.5 does it, in jnp (jit-able).

Per layer:   cam = relu(cam); per image cam -= min; cam /= (1e-7 + max);
             resize to the input (H, W) with cv2-style bilinear (half-pixel
             centres, edge clamp, no antialiasing).
Per layers:  stack -> relu -> mean over layers -> min-max again (no resize).
So the final map is min-max normalised twice, even for one layer.
"""

import functools

import jax
import jax.numpy as jnp

from jaxseg.models import resize

MINMAX_EPS = 1e-7


@functools.partial(jax.jit, static_argnames=("size", "align_corners"))
def resize_bilinear(
    x: jax.Array, size: tuple[int, int], *, align_corners: bool = False
) -> jax.Array:
  """Bilinear resize of x [B, h, w, ...] to [B, H, W, ...] (size = (H, W)); identity at the same size."""
  if x.shape[1:3] == tuple(size):
    return x
  return resize.resize_bilinear(x, size, align_corners=align_corners)


@jax.jit
def minmax_normalize(cam: jax.Array) -> jax.Array:
  """Per image: (cam - min) / (1e-7 + max(cam - min)); cam [B, H, W]."""
  cam = cam - jnp.min(cam, axis=(1, 2), keepdims=True)
  return cam / (MINMAX_EPS + jnp.max(cam, axis=(1, 2), keepdims=True))


@functools.partial(jax.jit, static_argnames="size")
def scale_cam(cam: jax.Array, size: tuple[int, int] | None = None) -> jax.Array:
  """Min-max per image, then resize: [B, h, w] -> [B, H, W] (no ReLU)."""
  cam = minmax_normalize(cam)
  return cam if size is None else resize_bilinear(cam, size)


@functools.partial(jax.jit, static_argnames="size")
def layer_cam_to_image(raw_cam: jax.Array, size: tuple[int, int]) -> jax.Array:
  """One layer's raw map [B, h, w] -> relu -> min-max -> [B, H, W]."""
  return scale_cam(jax.nn.relu(raw_cam), size)


@jax.jit
def aggregate_layers(layer_cams: jax.Array) -> jax.Array:
  """[L, B, H, W] per-layer maps -> relu -> mean over layers -> min-max [B, H, W]."""
  return minmax_normalize(jnp.mean(jax.nn.relu(layer_cams), axis=0))


@functools.partial(jax.jit, static_argnames="sign")
def first_component_projection(x: jax.Array, sign: str = "activation") -> jax.Array:
  """Projection of x [B, h, w, K] on its first principal component -> [B, h, w].

  Per image the (h*w, K) matrix is centred over pixels, and projected on the
  first right singular vector (pytorch-grad-cam's get_2d_projection). NaNs
  count as 0. The SVD's sign is arbitrary (LAPACK's choice differs between
  libraries and devices), so it is fixed by `sign`:
    "activation": positively correlated with the channel sum of x (the
      component points where the weighted activations are high; default);
    "max_abs":    the largest |value| is positive (SegEigenCAM's rule);
    "none":       whatever the SVD returns.
  """
  b, h, w, k = x.shape
  flat = jnp.nan_to_num(x.reshape(b, h * w, k).astype(jnp.float32))
  centred = flat - jnp.mean(flat, axis=1, keepdims=True)
  _, _, vt = jnp.linalg.svd(centred, full_matrices=False)
  projection = jnp.einsum("bpk,bk->bp", centred, vt[:, 0, :], precision=jax.lax.Precision.HIGHEST)
  if sign == "activation":
    reference = jnp.sum(flat, axis=2)
    reference = reference - jnp.mean(reference, axis=1, keepdims=True)
    flip = jnp.sum(projection * reference, axis=1) < 0
  elif sign == "max_abs":
    flip = jnp.abs(jnp.min(projection, axis=1)) > jnp.abs(jnp.max(projection, axis=1))
  elif sign == "none":
    flip = jnp.zeros((b,), bool)
  else:
    raise ValueError(f"eigen sign must be 'activation', 'max_abs' or 'none', got {sign!r}.")
  projection = jnp.where(flip[:, None], -projection, projection)
  return projection.reshape(b, h, w)
