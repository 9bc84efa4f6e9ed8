"""3x3 convolutions by Winograd's minimal filtering F(2x2, 3x3): 16 multiplies per 2x2 output tile and
channel pair instead of 36.

For a 3x3, stride-1, undilated convolution with "same" zero padding (every 3x3 in the ResNets here), each
2x2 output tile is Y = A^T [(G g G^T) * (B^T d B)] A, d the 4x4 input tile around it and g the 3x3 kernel
(Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016). Summed over input channels,
the elementwise product becomes 16 matrix multiplies [tiles, C] @ [C, O]: 2.25x fewer FLOPs than the direct
convolution, plus linear input / output transforms that cost memory traffic only.

Backward (a custom VJP, not autodiff through the transforms): the input gradient is the same algorithm on
dy with the kernel rotated by 180 degrees and its channels swapped; the kernel gradient is
G^T [V^T (A dY A^T)] G, the 16 transformed input tiles V against the transformed output-gradient tiles.

Why: on XLA's CPU backend the convolution op runs 0.70-0.78x PyTorch / oneDNN on the MAST encoder's shapes
(`python benchmarks/backbones.py --only resnet18_os4 --size 128 128 --batch 4 --per-conv`), and that is
where the whole gap of its train step lies; with this algorithm the encoder's forward + backward takes
0.85x the time (862 vs 1015 ms per batch of 4 at 128², docs/benchmarks.md). Rounding differs from the direct convolution by ~1e-6 relative in
fp32 (the transforms add and halve; tests/test_winograd.py), so it is a config choice
(`train.conv_algorithm`), off by default, not a silent lowering. On GPUs and TPUs the platform's own
convolutions are faster: leave it off there.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# F(2x2, 3x3) (Lavin & Gray, eq. 7-8): input transform B^T, kernel transform G, output transform A^T.
B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)
# Channels below this on either side keep the direct convolution: its GEMMs are too thin to gain.
MIN_CHANNELS = 16


def supports(
    lhs_shape: Sequence[int],
    rhs_shape: Sequence[int],
    strides: Sequence[int],
    padding: Sequence[tuple[int, int]],
    dilation: Sequence[int],
) -> bool:
  """True for what `conv3x3` computes: NHWC x [N, H, W, C] with H, W even, HWIO kernel [3, 3, C, O],
  stride 1, dilation 1, padding ((1, 1), (1, 1)), C and O >= MIN_CHANNELS."""
  return (
      len(lhs_shape) == 4
      and tuple(rhs_shape[:2]) == (3, 3)
      and tuple(strides) == (1, 1)
      and tuple(dilation) == (1, 1)
      and tuple(tuple(p) for p in padding) == ((1, 1), (1, 1))
      and lhs_shape[1] % 2 == 0
      and lhs_shape[2] % 2 == 0
      and min(rhs_shape[2], rhs_shape[3]) >= MIN_CHANNELS
  )


def _combine(coefficients, terms):
  """sum_i coefficients[i] * terms[i], skipping zeros and multiplying by +-1 as adds / subtracts."""
  out = None
  for c, t in zip(coefficients, terms):
    if c == 0:
      continue
    t = t if c == 1 else (-t if c == -1 else t * jnp.asarray(c, t.dtype))
    out = t if out is None else out + t
  return out


def input_transform(x: jax.Array) -> jax.Array:
  """x [N, H, W, C] -> V [16, N*H/2*W/2, C]: B^T d B of every 4x4 tile d of the zero-padded x whose
  2x2 centre is an output tile (tiles overlap by 2), tile entries (a, b) row-major."""
  n, h, w, c = x.shape
  th, tw = h // 2, w // 2
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  d = [[xp[:, k : k + 2 * th : 2, j : j + 2 * tw : 2, :] for j in range(4)] for k in range(4)]
  rows = [[_combine(B_T[a], [d[k][j] for k in range(4)]) for j in range(4)] for a in range(4)]
  v = [_combine(B_T[b], rows[a]) for a in range(4) for b in range(4)]
  return jnp.stack(v).reshape(16, n * th * tw, c)


def output_transform(m: jax.Array, out_shape: Sequence[int]) -> jax.Array:
  """m [16, N*H/2*W/2, O] -> y [N, H, W, O]: A^T M A of every tile, the 2x2 results put in place."""
  n, h, w, o = out_shape
  th, tw = h // 2, w // 2
  m = m.reshape(4, 4, n, th, tw, o)
  cols = [[_combine(A_T[s], [m[a, b] for b in range(4)]) for s in range(2)] for a in range(4)]
  y = [[_combine(A_T[r], [cols[a][s] for a in range(4)]) for s in range(2)] for r in range(2)]
  y = jnp.stack([jnp.stack(row, axis=3) for row in y], axis=2)  # [N, th, 2, tw, 2, O]
  return y.reshape(n, h, w, o)


def output_transform_adjoint(dy: jax.Array) -> jax.Array:
  """The transpose of `output_transform`: dy [N, H, W, O] -> dM [16, N*H/2*W/2, O] = A dY A^T per tile."""
  n, h, w, o = dy.shape
  th, tw = h // 2, w // 2
  t = dy.reshape(n, th, 2, tw, 2, o)
  q = [[t[:, :, r, :, s, :] for s in range(2)] for r in range(2)]
  rows = [[_combine(A_T[:, a], [q[r][s] for r in range(2)]) for s in range(2)] for a in range(4)]
  dm = [_combine(A_T[:, b], rows[a]) for a in range(4) for b in range(4)]
  return jnp.stack(dm).reshape(16, n * th * tw, o)


def kernel_transform(kernel: jax.Array) -> jax.Array:
  """kernel [3, 3, C, O] -> U [16, C, O] = G g G^T per channel pair."""
  c, o = kernel.shape[2:]
  g = jnp.asarray(G, kernel.dtype)
  return jnp.einsum("ai,ijco,bj->abco", g, kernel, g).reshape(16, c, o)


def _accumulation(dtype):
  return jnp.float32 if jnp.finfo(dtype).bits < 32 else None


def _tile_products(v, u, precision):
  """[16, P, C] x [16, C, O] -> [16, P, O], in v's dtype (f32 accumulation for bf16)."""
  m = lax.dot_general(
      v,
      u,
      (((2,), (1,)), ((0,), (0,))),
      precision=precision,
      preferred_element_type=_accumulation(v.dtype),
  )
  return m.astype(v.dtype)


def _forward(x, kernel, precision):
  u = kernel_transform(kernel.astype(x.dtype))
  m = _tile_products(input_transform(x), u, precision)
  return output_transform(m, (*x.shape[:3], kernel.shape[-1]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv3x3(x: jax.Array, kernel: jax.Array, precision=None) -> jax.Array:
  """x [N, H, W, C] (H, W even), kernel [3, 3, C, O] (HWIO) -> [N, H, W, O]: the 3x3 convolution with
  stride 1 and zero padding 1 (lax.conv_general_dilated's values to fp32 rounding), in x's dtype."""
  return _forward(x, kernel, precision)


def _conv3x3_fwd(x, kernel, precision):
  return _forward(x, kernel, precision), (x, kernel)


def _conv3x3_bwd(precision, residuals, dy):
  x, kernel = residuals
  dy = dy.astype(x.dtype)
  # Input gradient: the correlation of dy with the kernel rotated 180 degrees, in / out swapped.
  dx = _forward(dy, jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2), precision)
  dm = output_transform_adjoint(dy)
  du = lax.dot_general(
      input_transform(x),
      dm,
      (((1,), (1,)), ((0,), (0,))),
      precision=precision,
      preferred_element_type=_accumulation(x.dtype),
  )  # [16, C, O]
  c, o = kernel.shape[2:]
  g = jnp.asarray(G, du.dtype)
  dk = jnp.einsum("ai,abco,bj->ijco", g, du.reshape(4, 4, c, o), g)
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)
