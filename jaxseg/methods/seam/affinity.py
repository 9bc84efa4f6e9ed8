"""AffinityNet stage of SEAM / psa: affinity labels from CAMs (numpy) and random-walk refinement (JAX).

Labels (official `infer_SEAM.py` l.31, l.92-112 and `voc12/data.py` VOC12AffDataset l.222-259,
ExtractAffinityLabelInRadius l.151-201; YudeWang/SEAM @ 3212261):
  1. Offline, per image: scores = [(1 - max_k cam_k)^alpha, cam_1..cam_K] for alpha in (4, 24) ("la" = low
     alpha, "ha" = high alpha), each refined by the dense CRF (`crf.dense_crf`, official settings) and stored as
     probabilities [K+1, H, W] (`crf_scores`). A low alpha gives a LARGE bg score (0 <= 1 - max <= 1), so la
     calls background generously and its foreground is confident; ha calls foreground generously and its
     background is confident.
  2. At training time the image and both score stacks are cropped/flipped together (zero-filled outside the
     image), the scores are block-averaged by the feature stride 8 (skimage `block_reduce(np.mean)`, zero padding
     at the bottom/right if the size is not a multiple), then `affinity_label_map`:
        label = argmax(la); label[argmax(la) == 0] = 255; label[argmax(ha) == 0] = 0;
        label[max over all la and ha scores < 1e-5] = 255     (no score: the crop's padding)
     i.e. confident fg from la, confident bg from ha, the rest ignored (255).
  3. `affinity_pair_labels`: for every official pair (jaxseg.models.affinitynet.pair_offsets):
        bg_pos = both labels 0;  fg_pos = equal labels, not 0, both valid (< 255);
        neg    = different labels, both valid.
NB the label values are indices into the image's own [bg, present classes] list; only equality matters.

Random walk (official `infer_aff.py` l.86-156, `network/resnet38_aff.py` l.64-77; defaults alpha=6, beta=8,
logt=6 at infer_aff.py l.59-62; psa itself uses alpha=16, logt=8):
  the image is zero-padded (in normalised space) at the bottom/right to a multiple of 8; the CAM stack
  [bg = (1 - max)^alpha, fg cams] is zero-padded likewise and average-pooled 8x8 to the feature grid (h, w);
  A = dense symmetric [hw, hw]: A[from, to] = A[to, from] = aff, diag 1, 0 elsewhere;  A = A^beta (elementwise);
  T = A / column sums;  T = T^(2^logt) by logt squarings;  cam_rw = cam [C, hw] @ T;
  bilinear upsample (align_corners=False) to the padded size, crop, argmax.
"""

from __future__ import annotations

import functools
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.methods.seam import crf as crf_lib
from jaxseg.models.affinitynet import (
    DEFAULT_RADIUS,
    check_grid,
    effective_radius,
    pair_indices,
    pair_offsets,
    pairwise_affinities,
)

# infer_SEAM.py l.31 (`crf_alpha = [4,24]`); psa's infer_cls.py uses 4 and 32.
LOW_ALPHA = 4.0
HIGH_ALPHA = 24.0
# infer_aff.py l.59-62.
RW_ALPHA = 6.0
RW_BETA = 8
RW_LOGT = 6
FEATURE_STRIDE = 8  # ResNet-38 output stride; imutils.AvgPool2d(8) in train_aff.py l.60
IGNORE_LABEL = 255
NO_SCORE_EPS = 1e-5  # voc12/data.py l.249


# --------------------------------------------------------------------------------------------------------------
# Labels (numpy; usable inside grain transforms).


def scores_with_background(fg_cams: np.ndarray, alpha: float) -> np.ndarray:
  """[bg, fg cams] with bg = (1 - max_k cam_k)^alpha.

  Args:
    fg_cams: float [K, H, W] normalised CAMs of the image's present classes (K >= 1, values ~ [0, 1]).
    alpha: the bg power (LOW_ALPHA / HIGH_ALPHA for the labels, RW_ALPHA for the random walk).
  Returns:
    float32 [K + 1, H, W], channel 0 = background.
  """
  fg_cams = np.asarray(fg_cams, np.float32)
  if fg_cams.ndim != 3 or fg_cams.shape[0] < 1:
    raise ValueError(f"fg_cams must be [K >= 1, H, W], got shape {fg_cams.shape}")
  bg = np.power(1.0 - np.max(fg_cams, axis=0, keepdims=True), alpha)
  return np.concatenate([bg, fg_cams], axis=0).astype(np.float32)


def crf_scores(
    image: np.ndarray, fg_cams: np.ndarray, alpha: float, **crf_kwargs: Any
) -> np.ndarray:
  """Official `_crf_with_alpha` (infer_SEAM.py l.92-104): dense CRF on `scores_with_background`.

  Args:
    image: uint8 [H, W, 3] RGB.
    fg_cams: float [K, H, W] normalised CAMs of the present classes.
    alpha: LOW_ALPHA (la) or HIGH_ALPHA (ha).
    **crf_kwargs: forwarded to `crf.dense_crf` (defaults = official settings).
  Returns:
    float32 [K + 1, H, W] CRF marginals, channel 0 = background.
  """
  return crf_lib.dense_crf(image, scores_with_background(fg_cams, alpha), **crf_kwargs)


def block_mean(x: np.ndarray, stride: int) -> np.ndarray:
  """[H, W, C] -> float32 [ceil(H/s), ceil(W/s), C]: mean over s x s blocks, zero padding at the bottom/right
  (skimage `block_reduce(x, (s, s, 1), np.mean)`, the official `imutils.AvgPool2d`)."""
  x = np.asarray(x, np.float32)
  if x.ndim != 3:
    raise ValueError(f"block_mean expects [H, W, C], got shape {x.shape}")
  h, w, c = x.shape
  hp, wp = -(-h // stride) * stride, -(-w // stride) * stride
  x = np.pad(x, ((0, hp - h), (0, wp - w), (0, 0)))
  return x.reshape(hp // stride, stride, wp // stride, stride, c).mean(axis=(1, 3))


def affinity_label_map(
    la_scores: np.ndarray, ha_scores: np.ndarray, *, stride: int = FEATURE_STRIDE
) -> np.ndarray:
  """Feature-resolution label map from the la / ha CRF scores (VOC12AffDataset l.249-256).

  Args:
    la_scores, ha_scores: float [H, W, K+1] CHANNELS-LAST (as the official dataset stacks them for the joint
      crop), channel 0 = background, after any crop/flip (zeros where the crop padded).
    stride: block size of the score averaging (8). stride=1 skips it.
  Returns:
    uint8 [ceil(H/stride), ceil(W/stride)]: 0 = confident bg, k = confident fg (k-th score channel),
    255 = ignored.
  """
  la_scores = np.asarray(la_scores, np.float32)
  ha_scores = np.asarray(ha_scores, np.float32)
  if la_scores.ndim != 3 or la_scores.shape != ha_scores.shape:
    raise ValueError(
        f"la_scores and ha_scores must be equal-shaped [H, W, K+1]; got {la_scores.shape} and "
        f"{ha_scores.shape}"
    )
  if la_scores.shape[-1] < 2 or la_scores.shape[-1] > IGNORE_LABEL:
    raise ValueError(
        f"score stacks need 2..255 channels (bg + present classes), got {la_scores.shape[-1]}"
    )
  if stride < 1:
    raise ValueError(f"stride must be >= 1, got {stride}")
  if stride > 1:
    la_scores, ha_scores = block_mean(la_scores, stride), block_mean(ha_scores, stride)
  no_score = np.maximum(la_scores.max(axis=-1), ha_scores.max(axis=-1)) < NO_SCORE_EPS
  la = np.argmax(la_scores, axis=-1).astype(np.uint8)
  ha = np.argmax(ha_scores, axis=-1).astype(np.uint8)
  label = la.copy()
  label[la == 0] = IGNORE_LABEL
  label[ha == 0] = 0
  label[no_score] = IGNORE_LABEL
  return label


def affinity_pair_labels(
    label_map: np.ndarray, radius: int = DEFAULT_RADIUS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Official ExtractAffinityLabelInRadius (voc12/data.py l.151-201) on a feature-resolution label map.

  Args:
    label_map: int [h, w] labels, 0 = bg, 255 = ignored (`affinity_label_map`).
    radius: pair radius (5).
  Returns:
    (bg_pos, fg_pos, neg), each float32 {0, 1} [P, n_from] in the layout of
    `jaxseg.models.affinitynet.pairwise_affinities` (P offsets x row-major "from" window).
  """
  label_map = np.asarray(label_map)
  if label_map.ndim != 2 or not np.issubdtype(label_map.dtype, np.integer):
    raise ValueError(
        f"label_map must be an integer [h, w] map, got shape {label_map.shape} "
        f"dtype {label_map.dtype}"
    )
  h, w = label_map.shape
  from_idx, to_idx = pair_indices(h, w, radius)
  flat = label_map.reshape(-1)
  lab_from = flat[from_idx][None, :]
  lab_to = flat[to_idx]
  valid = (lab_from < IGNORE_LABEL) & (lab_to < IGNORE_LABEL)
  same = lab_from == lab_to
  bg_pos = same & (lab_from == 0)
  fg_pos = same & (lab_from != 0) & valid
  neg = ~same & valid
  return bg_pos.astype(np.float32), fg_pos.astype(np.float32), neg.astype(np.float32)


def affinity_targets(
    la_scores: np.ndarray,
    ha_scores: np.ndarray,
    *,
    stride: int = FEATURE_STRIDE,
    radius: int = DEFAULT_RADIUS,
) -> dict[str, np.ndarray]:
  """`affinity_label_map` then `affinity_pair_labels`: {'aff_label_map' uint8 [h, w], 'aff_bg_pos',
  'aff_fg_pos', 'aff_neg' float32 [P, n_from]} for one cropped example (channels-last score stacks).
  """
  label_map = affinity_label_map(la_scores, ha_scores, stride=stride)
  bg_pos, fg_pos, neg = affinity_pair_labels(label_map, radius)
  return {"aff_label_map": label_map, "aff_bg_pos": bg_pos, "aff_fg_pos": fg_pos, "aff_neg": neg}


# --------------------------------------------------------------------------------------------------------------
# Random walk (JAX).

_HIGHEST = (
    jax.lax.Precision.HIGHEST
)  # T^64 amplifies TF32/bf16 matmul error; torch fp32 matmuls are exact fp32


def affinity_matrix(affinities: jax.Array, height: int, width: int, radius: int) -> jax.Array:
  """Dense symmetric affinity matrix (official `to_dense=True`).

  Args:
    affinities: float [P, n_from] pair affinities of one image for `radius` on an (height, width) grid.
  Returns:
    float32 [hw, hw]: A[from, to] = A[to, from] = aff, A[i, i] = 1, 0 for pixels farther apart.
  """
  from_idx, to_idx = pair_indices(height, width, radius)
  chex.assert_shape(affinities, to_idx.shape)
  n = height * width
  rows = np.broadcast_to(from_idx[None, :], to_idx.shape).reshape(-1)
  cols = to_idx.reshape(-1)
  values = affinities.astype(jnp.float32).reshape(-1)
  a = jnp.eye(n, dtype=jnp.float32)
  # The offsets form a forward half-disc, so (from, to) and (to, from) never collide: set == the official
  # sparse-to-dense sum.
  a = a.at[rows, cols].set(values, unique_indices=True)
  return a.at[cols, rows].set(values, unique_indices=True)


def transition_matrix(
    aff_mat: jax.Array, *, beta: float = RW_BETA, logt: int = RW_LOGT
) -> jax.Array:
  """T^(2^logt) with T = A^beta / column sums (official infer_aff.py l.105-109).

  Args:
    aff_mat: float [N, N] dense affinities (`affinity_matrix`).
  Returns:
    float32 [N, N]; columns of T sum to 1, so cam @ T mixes each target pixel's incoming walks.
  """
  chex.assert_rank(aff_mat, 2)
  a = jnp.power(aff_mat.astype(jnp.float32), beta)
  t = a / jnp.sum(a, axis=0, keepdims=True)
  for _ in range(logt):
    t = jnp.matmul(t, t, precision=_HIGHEST)
  return t


def _grid_affinities(
    affinities_or_features: jax.Array, height: int, width: int, radius: int
) -> jax.Array:
  """[P, n_from] affinities at the official radius for the grid, from affinities or features [h, w, D]."""
  r = effective_radius(height, width, radius)
  x = affinities_or_features
  if x.ndim == 3:
    if x.shape[:2] != (height, width):
      raise ValueError(f"affinity features {x.shape} do not match the CAM grid {(height, width)}")
    return pairwise_affinities(x[None], r)[0]
  if x.ndim == 2:
    check_grid(height, width, r)
    expected = (len(pair_offsets(r)), (height - r + 1) * (width - 2 * r + 2))
    if x.shape != expected:
      raise ValueError(
          f"affinities {x.shape} do not match a {height}x{width} grid at radius {r} "
          f"(expected {expected}; the official radius for this grid is effective_radius)"
      )
    return x
  raise ValueError(
      f"expected affinities [P, n_from] or affinity features [h, w, D], got shape {x.shape}"
  )


@functools.partial(jax.jit, static_argnames=("beta", "logt", "radius", "by_squaring"))
def random_walk(
    cams: jax.Array,
    affinities_or_features: jax.Array,
    *,
    beta: float = RW_BETA,
    logt: int = RW_LOGT,
    radius: int = DEFAULT_RADIUS,
    by_squaring: bool = True,
) -> jax.Array:
  """Propagates CAMs on the feature grid with the AffinityNet transition matrix (official infer_aff.py).

  Args:
    cams: float [C, h, w] scores on the feature grid (usually [bg, fg cams], pooled; see `refine_cams`).
    affinities_or_features: float [P, n_from] affinities (`pairwise_affinities(...)[i]` computed at
      `effective_radius(h, w, radius)`), or float [h, w, D] AffinityNet features of the same image.
    beta: affinity power (8). logt: number of squarings (6 -> 64 steps). radius: nominal pair radius (5),
      shrunk by `effective_radius` for small grids as the official model does.
    by_squaring: True = official T^(2^logt) by squaring (O(N^3)); False = 2^logt products cam @ T
      (O(2^logt C N^2), the same value up to rounding; cheaper on CPU).
  Returns:
    float32 [C, h, w] propagated scores.
  """
  chex.assert_rank(cams, 3)
  c, h, w = cams.shape
  aff = _grid_affinities(affinities_or_features, h, w, radius)
  a = affinity_matrix(aff, h, w, effective_radius(h, w, radius))
  cam_vec = cams.astype(jnp.float32).reshape(c, h * w)
  if by_squaring:
    out = jnp.matmul(cam_vec, transition_matrix(a, beta=beta, logt=logt), precision=_HIGHEST)
  else:
    a = jnp.power(a, beta)
    t = a / jnp.sum(a, axis=0, keepdims=True)
    out = jax.lax.fori_loop(0, 2**logt, lambda _, v: jnp.matmul(v, t, precision=_HIGHEST), cam_vec)
  return out.reshape(c, h, w)


def padded_size(height: int, width: int, stride: int = FEATURE_STRIDE) -> tuple[int, int]:
  """(H, W) rounded up to multiples of `stride`: the official inference pads the image to this size."""
  return -(-height // stride) * stride, -(-width // stride) * stride


def pad_images(images: jax.Array, stride: int = FEATURE_STRIDE) -> jax.Array:
  """Zero-pads normalised images [B, H, W, 3] at the bottom/right to multiples of `stride` (infer_aff l.87-90)."""
  chex.assert_rank(images, 4)
  hp, wp = padded_size(images.shape[1], images.shape[2], stride)
  return jnp.pad(images, ((0, 0), (0, hp - images.shape[1]), (0, wp - images.shape[2]), (0, 0)))


def refine_cams(
    fg_cams: jax.Array,
    affinities_or_features: jax.Array,
    *,
    alpha: float = RW_ALPHA,
    beta: float = RW_BETA,
    logt: int = RW_LOGT,
    radius: int = DEFAULT_RADIUS,
    stride: int = FEATURE_STRIDE,
    by_squaring: bool = True,
) -> jax.Array:
  """Full official random-walk refinement of one image's CAMs (infer_aff.py l.86-154).

  Args:
    fg_cams: float [K, H, W] normalised CAMs at image resolution (the SEAM `out_cam` maps; either only the
      present classes or all 20 with zeros for absent ones, as official).
    affinities_or_features: AffinityNet output for the image zero-padded to `padded_size(H, W)`
      (`pad_images`): features [h, w, D] or affinities [P, n_from], h = padded H / stride.
    alpha: bg power (6); beta, logt, radius, by_squaring: see `random_walk`.
  Returns:
    float32 [K + 1, H, W] refined scores, channel 0 = bg; `argmax(axis=0)` is the pseudo mask
    (0 = bg, k = the k-th fg channel).
  """
  chex.assert_rank(fg_cams, 3)
  k, hh, ww = fg_cams.shape
  if k < 1:
    raise ValueError(f"fg_cams must have at least one class channel, got shape {fg_cams.shape}")
  hp, wp = padded_size(hh, ww, stride)
  fg = fg_cams.astype(jnp.float32)
  cams = jnp.concatenate([jnp.power(1.0 - jnp.max(fg, axis=0, keepdims=True), alpha), fg], axis=0)
  cams = jnp.pad(cams, ((0, 0), (0, hp - hh), (0, wp - ww)))
  pooled = cams.reshape(k + 1, hp // stride, stride, wp // stride, stride).mean(axis=(2, 4))
  walked = random_walk(
      pooled, affinities_or_features, beta=beta, logt=logt, radius=radius, by_squaring=by_squaring
  )
  # Upsampling with half-pixel centres: jax.image.resize 'linear' equals torch bilinear align_corners=False
  # here (both clamp at the borders; no antialiasing when enlarging).
  up = jax.image.resize(walked, (k + 1, hp, wp), method="linear")
  return up[:, :hh, :ww]


def pseudo_mask(refined: jax.Array) -> jax.Array:
  """int32 [H, W] argmax over channel 0 (bg) .. K of `refine_cams` output."""
  chex.assert_rank(refined, 3)
  return jnp.argmax(refined, axis=0).astype(jnp.int32)
