"""Faithfulness metrics for CAMs (pytorch-grad-cam's `metrics`), batched and jit-able.

Every metric perturbs the network input with the CAM and compares target
scores (usually `ClassSoftmax`) before and after:

  confidence_change     score(x * cam) - score(x)          (CamMultImageConfidenceChange)
  drop_in_confidence    max(-change, 0)                    (DropInConfidence)
  increase_in_confidence  1[change > 0]                    (IncreaseInConfidence)
  average_drop          100 * mean_b max(y - o, 0) / y     (Grad-CAM++ paper, %)
  increase_rate         100 * mean_b 1[o > y]              (Grad-CAM++ paper, %)
  road                  score(impute(x, kept)) - score(x)  (ROAD, Rong et al. 2022)

ROAD removes the pixels above (MoRF) / below (LeRF) the p-th percentile of
the CAM and fills them by noisy linear imputation: each removed pixel is the
weighted mean of its 8 neighbours (1/6 direct, 1/12 diagonal; neighbours
outside the image dropped), a sparse SPD system solved here with
Jacobi-preconditioned conjugate gradients (the library uses scipy spsolve in
float64; the float32 solutions agree to ~1e-5).
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.cam import targets as targets_lib

DEFAULT_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
# Neighbour weights of the linear imputer, as a 3x3 stencil (centre 0).
_NEIGHBOUR_WEIGHTS = np.array(
    [[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]], np.float32
)


def _check(images: jax.Array, cams: jax.Array) -> None:
  if images.ndim != 4 or cams.shape != images.shape[:3]:
    raise ValueError(
        f"images must be [B, H, W, C] and cams [B, H, W]; got {images.shape} " f"and {cams.shape}."
    )


def _scores(apply_fn, variables, images, targets) -> jax.Array:
  target = targets_lib.make_target(targets, images.shape[0])
  return targets_lib.score(target, apply_fn(variables, images), images.shape[0])


def confidence_change(
    apply_fn, variables, images: jax.Array, cams: jax.Array, targets: targets_lib.TargetLike = None
) -> jax.Array:
  """score(images * cam) - score(images), [B]; cams [B, H, W] in [0, 1]."""
  _check(images, cams)
  target = targets_lib.make_target(targets, images.shape[0])
  before = _scores(apply_fn, variables, images, target)
  after = _scores(apply_fn, variables, images * cams[..., None], target)
  return after - before


def drop_in_confidence(apply_fn, variables, images, cams, targets=None) -> jax.Array:
  """max(score(x) - score(x * cam), 0), [B] (lower is better)."""
  return jax.nn.relu(-confidence_change(apply_fn, variables, images, cams, targets))


def increase_in_confidence(apply_fn, variables, images, cams, targets=None) -> jax.Array:
  """1.0 where score(x * cam) > score(x), else 0.0, [B] (higher is better)."""
  change = confidence_change(apply_fn, variables, images, cams, targets)
  return (change > 0).astype(jnp.float32)


def average_drop(apply_fn, variables, images, cams, targets=None) -> jax.Array:
  """Average drop in % (Chattopadhyay et al.): 100 * mean max(y - o, 0) / y."""
  _check(images, cams)
  target = targets_lib.make_target(targets, images.shape[0])
  before = _scores(apply_fn, variables, images, target)
  after = _scores(apply_fn, variables, images * cams[..., None], target)
  return 100 * jnp.mean(jax.nn.relu(before - after) / before)


def increase_rate(apply_fn, variables, images, cams, targets=None) -> jax.Array:
  """% of images whose score rises when multiplied by the CAM."""
  return 100 * jnp.mean(increase_in_confidence(apply_fn, variables, images, cams, targets))


# --- ROAD --------------------------------------------------------------------


def _neighbour_sum(x: jax.Array) -> jax.Array:
  """Weighted sum of the 8 neighbours, zero outside: x [N, H, W]."""
  h, w = x.shape[1:]
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1)))
  total = jnp.zeros_like(x)
  for dy in range(3):
    for dx in range(3):
      weight = float(_NEIGHBOUR_WEIGHTS[dy, dx])
      if weight:
        total = total + weight * padded[:, dy : dy + h, dx : dx + w]
  return total


@functools.partial(jax.jit, static_argnames=("noise", "tol", "maxiter"))
def impute_linear(
    images: jax.Array,
    keep: jax.Array,
    *,
    noise: float = 0.0,
    rng: jax.Array | None = None,
    tol: float = 1e-6,
    maxiter: int | None = None,
) -> jax.Array:
  """Fills the removed pixels by (noisy) linear imputation.

  Args:
    images: [B, H, W, C] network input.
    keep: [B, H, W] bool, True for the pixels that are kept.
    noise: std of the Gaussian noise added to the imputed pixels (ROAD uses
      0.01); needs `rng` when > 0.
    rng: jax PRNG key.
    tol / maxiter: conjugate-gradient stopping rule (relative residual).
  Returns:
    [B, H, W, C]: kept pixels unchanged, removed pixels = the solution.
  """
  if keep.shape != images.shape[:3]:
    raise ValueError(f"keep {keep.shape} must be images' [B, H, W] " f"{images.shape[:3]}.")
  b, h, w, c = images.shape
  x = jnp.moveaxis(images.astype(jnp.float32), -1, 1).reshape(b * c, h, w)
  kept = jnp.repeat(keep.astype(jnp.float32), c, axis=0)  # [B*C, H, W]
  removed = 1.0 - kept
  # Sum of the weights of the in-image neighbours of each pixel.
  weight_sum = _neighbour_sum(jnp.ones((1, h, w), jnp.float32))
  diagonal = removed * weight_sum + kept

  def operator(v):  # SPD: (S - W) on removed pixels, identity on kept ones.
    return removed * (weight_sum * v - _neighbour_sum(removed * v)) + kept * v

  rhs = removed * _neighbour_sum(kept * x)
  solution, _ = jax.scipy.sparse.linalg.cg(
      operator, rhs, x0=jnp.zeros_like(rhs), tol=tol, maxiter=maxiter, M=lambda v: v / diagonal
  )
  if noise:
    if rng is None:
      raise ValueError("impute_linear with noise > 0 needs rng.")
    solution = solution + noise * jax.random.normal(rng, solution.shape)
  filled = kept * x + removed * solution
  return jnp.moveaxis(filled.reshape(b, c, h, w), 1, -1).astype(images.dtype)


def road_keep_mask(cams: jax.Array, percentile: float, most_relevant_first: bool) -> jax.Array:
  """[B, H, W] bool pixels kept by ROAD at a percentile of each CAM.

  MoRF keeps cam < percentile_p(cam), i.e. removes the (100 - p) % most
  relevant pixels; LeRF does the same on 1 - cam (removes the least
  relevant ones). As pytorch-grad-cam's RemoveMost/LeastRelevantFirst.
  """
  values = cams if most_relevant_first else 1.0 - cams
  threshold = jnp.percentile(values, percentile, axis=(1, 2), keepdims=True)
  return values < threshold


def road(
    apply_fn,
    variables,
    images: jax.Array,
    cams: jax.Array,
    targets: targets_lib.TargetLike = None,
    *,
    percentile: float = 80,
    most_relevant_first: bool = True,
    noise: float = 0.0,
    rng: jax.Array | None = None,
    return_images: bool = False,
):
  """ROAD score change at one percentile, [B] (score(imputed) - score(x)).

  most_relevant_first=True is ROADMostRelevantFirst (lower is better),
  False is ROADLeastRelevantFirst (higher is better). The library's
  `noise=0.01` default makes its numbers depend on torch's RNG; noise=0
  gives the deterministic variant. With return_images, also the imputed
  inputs [B, H, W, C].
  """
  _check(images, cams)
  target = targets_lib.make_target(targets, images.shape[0])
  keep = road_keep_mask(cams, percentile, most_relevant_first)
  imputed = impute_linear(images, keep, noise=noise, rng=rng)
  change = _scores(apply_fn, variables, imputed, target) - _scores(
      apply_fn, variables, images, target
  )
  return (change, imputed) if return_images else change


def road_average(
    apply_fn,
    variables,
    images,
    cams,
    targets=None,
    *,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    most_relevant_first: bool = True,
    noise: float = 0.0,
    rng: jax.Array | None = None,
) -> jax.Array:
  """Mean ROAD score change over percentiles, [B]."""
  rngs = jax.random.split(rng, len(percentiles)) if rng is not None else [None] * len(percentiles)
  changes = [
      road(
          apply_fn,
          variables,
          images,
          cams,
          targets,
          percentile=p,
          most_relevant_first=most_relevant_first,
          noise=noise,
          rng=r,
      )
      for p, r in zip(percentiles, rngs)
  ]
  return jnp.mean(jnp.stack(changes), axis=0)


def road_combined(
    apply_fn,
    variables,
    images,
    cams,
    targets=None,
    *,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    noise: float = 0.0,
    rng: jax.Array | None = None,
) -> jax.Array:
  """(LeRF average - MoRF average) / 2, [B] (higher is better)."""
  rng_lerf, rng_morf = jax.random.split(rng) if rng is not None else (None, None)
  average = functools.partial(
      road_average, apply_fn, variables, images, cams, targets, percentiles=percentiles, noise=noise
  )
  return (
      average(most_relevant_first=False, rng=rng_lerf)
      - average(most_relevant_first=True, rng=rng_morf)
  ) / 2
