"""CRW's contrastive random walk loss (Jabri et al., NeurIPS 2020; ajabri/videowalk
`code/model.py::CRW`) and its patch sampler (`extract_patches`: the walk's nodes).

Pure functions on node embeddings q [B, T, N, C] (the official `q` [B, C, T, N] transposed to
(0, 2, 3, 1)): the frame-to-frame affinities, the row-stochastic transition matrices with edge
dropout, the palindrome walks A12_0 ... A12_i A21_i ... A21_0 (i = 1 .. T-2) and the cycle
cross-entropy against identity targets, with the official operation order.

Official quirks reproduced (each documented where it happens):
  * edge dropout: the forward matrix's dropout writes -1e20 into the shared affinity tensor in
    place, so the backward matrix A21 = softmax(A^T / tau) inherits the forward drops (transposed)
    on top of its own (`shared_dropout=True`).
  * loss: `nn.CrossEntropyLoss` is applied to log(P + 1e-20), i.e. log_softmax is applied once more.
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

CRW_EPS = 1e-20
CRW_DROPPED_LOGIT = -1e20


def crw_affinity(q_a: jax.Array, q_b: jax.Array) -> jax.Array:
  """Node affinities A[..., n, m] = <q_a[..., n, :], q_b[..., m, :]> (cosine for L2-normalised nodes).

  Args:
    q_a: [..., N, C]; q_b: [..., M, C] (same leading axes, e.g. [B, T-1]).
  Returns:
    float32 [..., N, M] (official `CRW.affinity`, einsum 'bctn,bctm->btnm').
  """
  chex.assert_equal_rank([q_a, q_b])
  return jnp.einsum(
      "...nc,...mc->...nm",
      q_a.astype(jnp.float32),
      q_b.astype(jnp.float32),
      precision=jax.lax.Precision.HIGHEST,
  )


def edge_dropout_mask(rng: jax.Array, shape: Sequence[int], rate: float) -> jax.Array:
  """bool mask of dropped edges (official: `torch.rand_like(A) < rate`)."""
  return jax.random.uniform(rng, tuple(shape)) < rate


def stochastic_matrix(
    affinity: jax.Array,
    temperature: float,
    *,
    edge_dropout: float = 0.0,
    rng: jax.Array | None = None,
    dropped: jax.Array | None = None,
) -> jax.Array:
  """Row-stochastic transition matrix softmax(A / tau) over the last axis (official `stoch_mat`).

  Edge dropout: entries whose mask is true are set to -1e20 before the softmax (a fully dropped row
  becomes uniform, as in the official code).

  Args:
    affinity: [..., N, M].
    temperature: tau (CRW default 0.07; the README trains with 0.05).
    edge_dropout: drop probability p; with p > 0 and no `dropped`, `rng` draws the mask.
    rng: PRNG key for the mask.
    dropped: explicit bool mask [..., N, M] (overrides edge_dropout / rng).
  Returns:
    float32 [..., N, M], rows sum to 1.
  """
  a = affinity.astype(jnp.float32)
  if dropped is None and edge_dropout > 0.0:
    if rng is None:
      raise ValueError("edge_dropout > 0 needs an rng key")
    dropped = edge_dropout_mask(rng, a.shape, edge_dropout)
  if dropped is not None:
    a = jnp.where(dropped, CRW_DROPPED_LOGIT, a)
  return jax.nn.softmax(a / temperature, axis=-1)


def walk_matrices(
    q: jax.Array,
    temperature: float,
    *,
    edge_dropout: float = 0.0,
    rng: jax.Array | None = None,
    shared_dropout: bool = True,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Affinities and forward / backward transition matrices between consecutive frames.

  Args:
    q: [B, T, N, C] node embeddings (L2-normalised over C in CRW).
    temperature: tau.
    edge_dropout: p; needs `rng` when > 0.
    rng: PRNG key.
    shared_dropout: reproduce the official aliasing: A12's dropout writes -1e20 into the affinity
      tensor in place, so A21 = softmax(A^T / tau) drops the transposed A12 edges too, on top of its own
      independent draw. False draws the two masks independently.
  Returns:
    (A [B, T-1, N, N], A12 [T-1, B, N, N], A21 [T-1, B, N, N]) float32, A12_t = softmax(A_t / tau),
    A21_t = softmax(A_t^T / tau).
  """
  chex.assert_rank(q, 4)
  a = crw_affinity(q[:, :-1], q[:, 1:])
  a = jnp.moveaxis(a, 1, 0)  # [T-1, B, N, N]
  at = jnp.swapaxes(a, -1, -2)
  if edge_dropout > 0.0:
    if rng is None:
      raise ValueError("edge_dropout > 0 needs an rng key")
    k12, k21 = jax.random.split(rng)
    drop12 = edge_dropout_mask(k12, a.shape, edge_dropout)
    drop21 = edge_dropout_mask(k21, a.shape, edge_dropout)
    if shared_dropout:
      drop21 = drop21 | jnp.swapaxes(drop12, -1, -2)
    a12 = stochastic_matrix(a, temperature, dropped=drop12)
    a21 = stochastic_matrix(at, temperature, dropped=drop21)
  else:
    a12 = stochastic_matrix(a, temperature)
    a21 = stochastic_matrix(at, temperature)
  return jnp.moveaxis(a, 0, 1), a12, a21


def palindrome_cycles(a12: jax.Array, a21: jax.Array) -> jax.Array:
  """Palindrome walk products A12_0 ... A12_i A21_i ... A21_0 for i = 1 .. T-2.

  The product is accumulated left to right ((A12_0 A12_1) ...) A21_0, the official `aar` order.

  Args:
    a12, a21: [T-1, B, N, N].
  Returns:
    float32 [T-2, B, N, N] (empty when T = 2).
  """
  chex.assert_rank([a12, a21], 4)
  chex.assert_equal_shape([a12, a21])
  hi = jax.lax.Precision.HIGHEST
  cycles = []
  for i in range(1, a12.shape[0]):
    chain = [a12[k] for k in range(i + 1)] + [a21[k] for k in range(i, -1, -1)]
    acc = chain[0]
    for m in chain[1:]:
      acc = jnp.matmul(acc, m, precision=hi)
    cycles.append(acc)
  if not cycles:
    return jnp.zeros((0,) + a12.shape[1:], jnp.float32)
  return jnp.stack(cycles)


def palindrome_walks(
    q: jax.Array,
    temperature: float,
    *,
    edge_dropout: float = 0.0,
    rng: jax.Array | None = None,
    shared_dropout: bool = True,
) -> jax.Array:
  """`palindrome_cycles(*walk_matrices(q, ...)[1:])`: [B, T, N, C] -> float32 [T-2, B, N, N]."""
  _, a12, a21 = walk_matrices(
      q, temperature, edge_dropout=edge_dropout, rng=rng, shared_dropout=shared_dropout
  )
  return palindrome_cycles(a12, a21)


def cycle_log_probs(cycles: jax.Array) -> jax.Array:
  """The official logits fed to the cross-entropy: log(P + 1e-20), same shape."""
  return jnp.log(cycles.astype(jnp.float32) + CRW_EPS)


def cycle_cross_entropy(cycles: jax.Array) -> jax.Array:
  """Per-cycle cross-entropy against identity targets (node n must return to n).

  `nn.CrossEntropyLoss` on logits log(P + 1e-20): it applies log_softmax to them once more (a no-op up
  to ~N * 1e-20 since the rows of P sum to 1), then averages -log p[n, n] over batch and nodes.

  Args:
    cycles: [K, B, N, N] cycle transition matrices.
  Returns:
    float32 [K].
  """
  chex.assert_rank(cycles, 4)
  logp = jax.nn.log_softmax(cycle_log_probs(cycles), axis=-1)
  diag = jnp.diagonal(logp, axis1=-2, axis2=-1)  # [K, B, N]
  return -jnp.mean(diag, axis=(1, 2))


def crw_walk_loss(
    q: jax.Array,
    temperature: float,
    *,
    edge_dropout: float = 0.0,
    rng: jax.Array | None = None,
    shared_dropout: bool = True,
) -> tuple[jax.Array, jax.Array]:
  """CRW's contrastive random walk loss (official `CRW.forward` from "Compute walks" on).

  Args:
    q: [B, T, N, C] node embeddings (official `q` [B, C, T, N] transposed to (0, 2, 3, 1)).
    temperature: tau.
    edge_dropout: p (official `--dropout`); needs `rng` when > 0.
    rng: PRNG key.
    shared_dropout: see `walk_matrices`.
  Returns:
    (loss, xents): loss = mean of the T-2 per-cycle cross-entropies (0 when T = 2, as the official
    sum([0]) / max(1, 0)); xents float32 [T-2], xents[i - 1] is the official `xent cyc r{i}`.
  """
  cycles = palindrome_walks(
      q, temperature, edge_dropout=edge_dropout, rng=rng, shared_dropout=shared_dropout
  )
  xents = cycle_cross_entropy(cycles)
  loss = jnp.sum(xents) / max(1, xents.shape[0])
  return loss, xents


# CRW's nodes: the patch grid of every frame, each patch with its own random resized crop (the
# official `utils/augs.py` patch transform, done on device inside the step).


def patch_boxes(size: int, patch: int, stride: int) -> np.ndarray:
  """Top-left corners of CRW's patch grid along one side (`augs.patch_grid`)."""
  return np.arange(0, size - patch + 1, stride)


def extract_patches(
    frames: jax.Array, patch: int, stride: int, scale: tuple[float, float], rng: jax.Array
) -> jax.Array:
  """CRW nodes: [B, T, H, W, C] -> [B, T, N, patch, patch, C], N = grid cells; every patch gets its own
  random resized crop (area fraction in `scale`, aspect kept) resampled back to patch x patch."""
  b, t, h, w, c = frames.shape
  ys, xs = patch_boxes(h, patch, stride), patch_boxes(w, patch, stride)
  n = len(ys) * len(xs)
  corners = np.stack(np.meshgrid(ys, xs, indexing="ij"), -1).reshape(n, 2)
  k1, k2, k3 = jax.random.split(rng, 3)
  area = jax.random.uniform(k1, (b, t, n), minval=scale[0], maxval=scale[1])
  side = jnp.sqrt(area) * patch  # crop side in pixels
  off_y = jax.random.uniform(k2, (b, t, n)) * (patch - side)
  off_x = jax.random.uniform(k3, (b, t, n)) * (patch - side)
  grid = (jnp.arange(patch, dtype=jnp.float32) + 0.5) / patch  # sample centres in [0, 1]
  yy = corners[None, None, :, 0, None] + off_y[..., None] + grid * side[..., None] - 0.5
  xx = corners[None, None, :, 1, None] + off_x[..., None] + grid * side[..., None] - 0.5

  def sample(img, y, x):  # img [H, W, C]; y, x [patch]
    yg, xg = jnp.meshgrid(y, x, indexing="ij")
    return jnp.stack(
        [
            jax.scipy.ndimage.map_coordinates(img[..., ch], [yg, xg], order=1, mode="nearest")
            for ch in range(c)
        ],
        -1,
    )

  per_patch = jax.vmap(sample, in_axes=(None, 0, 0))  # over patches
  per_frame = jax.vmap(per_patch, in_axes=(0, 0, 0))  # over frames
  per_clip = jax.vmap(per_frame, in_axes=(0, 0, 0))  # over the batch
  return per_clip(frames, yy, xx)
