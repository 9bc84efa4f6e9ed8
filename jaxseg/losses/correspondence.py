"""MAST's restricted attention: correspondence through local windows of memory frames (pure JAX).

Layouts are channels last. Memory frames lead: `keys`/`values` are [N, B, h, w, C] for N memory frames.

MAST (zlai0/MAST, `models/colorizer.py::Colorizer`): restricted attention. Each target location (i, j)
attends to a (2R+1)^2 window of every memory frame, centred at (i, j) (or at a soft-argmax offset for
far frames: the "ROI" path), with ONE softmax over the concatenation of all frames' windows, no
temperature and no normalisation of the features. Out-of-image window positions are zero-padded:
their feature is 0, so their logit is exactly 0 and they take part in the softmax (with value 0).

  window_logits      [B, h, w, N, (2R+1)^2] dot products (the `SpatialCorrelationSampler` output)
  window_values      [B, h, w, N, (2R+1)^2, V] values gathered in the same windows (`F.unfold`)
  local_propagate    [B, h, w, V] softmax-weighted sum over all N windows (optionally top-k)
  mast_colorize      MAST's `Colorizer.forward`, including the ROI path and its label-offset quirk

Memory: `local_propagate` never builds an HW x HW matrix nor an unfold of the features or values. The
logits are computed by a `lax.scan` over the (2R+1)^2 window shifts (each step slices the zero-padded
keys and takes a channel dot product), so the largest array is the logits [(2R+1)^2, N, B, h, w]
(O(B h w N (2R+1)^2)); the weighted sum over values is a second scan over shifts that accumulates into
[B, h, w, V]. Both scan bodies are rematerialised under `jax.checkpoint`, so the backward pass does not
store the per-shift slices either (without it, autodiff of a scan would keep every shifted copy of the
keys: the unfold this design avoids). R = 12 (625 shifts) is one scan of 625 iterations, not 625
unrolled ops, so it compiles in about the time R = 1 does.

Official quirks reproduced (each documented where it happens):
  * MAST ROI: the labels of every ROI frame are gathered with the offset of the LAST ROI frame
    (`roi_label_offset_quirk=True`); features use each frame's own offset.
  * MAST ROI: the ROI frames are the first ones of `ref_index` (the official counts them and uses the
    first `nsearch` frames); here this is checked instead of silently mis-assigned.

Training uses `local_propagate` (in `jaxseg.losses.reconstruction.mast_reconstruction_loss`),
test-time propagation (`jaxseg.methods.vos.propagation`) `mast_colorize`. CRW's walk loss is in
`jaxseg.losses.walk`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

# ------------------------------------------------------------------------------------------------
# Local windows (MAST)
# ------------------------------------------------------------------------------------------------


def window_offsets(radius: int, dilation: int = 1) -> np.ndarray:
  """int32 [(2R+1)^2, 2] window displacements (dy, dx) * dilation, row-major (dy outer, dx inner)."""
  r = np.arange(-radius, radius + 1)
  dy, dx = np.meshgrid(r, r, indexing="ij")
  return (np.stack([dy.ravel(), dx.ravel()], axis=-1) * dilation).astype(np.int32)


def _pad_spatial(x: jax.Array, pad: int) -> jax.Array:
  """Zero-pads the two spatial axes of [..., h, w, C]."""
  widths = [(0, 0)] * (x.ndim - 3) + [(pad, pad), (pad, pad), (0, 0)]
  return jnp.pad(x, widths)


def _check_windows(query: jax.Array, keys: jax.Array, radius: int, dilation: int) -> None:
  chex.assert_rank([query, keys], [4, 5])
  chex.assert_equal_shape([query, keys[0]])
  if radius < 0 or dilation < 1:
    raise ValueError(
        f"need radius >= 0 and dilation >= 1, got radius={radius}, dilation={dilation}"
    )


def _dot_channels(query: jax.Array, keys: jax.Array) -> jax.Array:
  """query [B, h, w, C] . keys [N, B, h, w, C] over C -> [N, B, h, w].

  A dot (not multiply-then-reduce): XLA's CPU backend runs a minor-axis reduction inside the shift scan
  ~8x slower than the same contraction as a dot; the sums differ only in fp32 rounding order."""
  return jnp.einsum("bhwc,nbhwc->nbhw", query, keys, precision=jax.lax.Precision.HIGHEST)


def _weighted_frames(probs: jax.Array, values: jax.Array) -> jax.Array:
  """sum_n probs [N, B, h, w] * values [N, B, h, w, V] -> [B, h, w, V]."""
  return jnp.einsum("nbhw,nbhwv->bhwv", probs, values, precision=jax.lax.Precision.HIGHEST)


def _shift_logits(query: jax.Array, keys: jax.Array, radius: int, dilation: int) -> jax.Array:
  """[S, N, B, h, w] logits, S = (2R+1)^2: a checkpointed scan over the window shifts."""
  n, b, h, w, c = keys.shape
  pad = radius * dilation
  keys_p = _pad_spatial(keys.astype(jnp.float32), pad)
  q = query.astype(jnp.float32)
  starts = jnp.asarray(window_offsets(radius, dilation) + pad)

  @functools.partial(jax.checkpoint, prevent_cse=False)
  def body(carry, start):
    k = jax.lax.dynamic_slice(keys_p, (0, 0, start[0], start[1], 0), (n, b, h, w, c))
    return carry, _dot_channels(q, k)

  _, logits = jax.lax.scan(body, None, starts)
  return logits


def _shift_weighted_sum(
    probs: jax.Array, values: jax.Array, radius: int, dilation: int
) -> jax.Array:
  """sum_{s, n} probs[s, n] * values[n] shifted by window s -> [B, h, w, V] (checkpointed scan)."""
  n, b, h, w, v = values.shape
  pad = radius * dilation
  vals_p = _pad_spatial(values.astype(jnp.float32), pad)
  starts = jnp.asarray(window_offsets(radius, dilation) + pad)

  @functools.partial(jax.checkpoint, prevent_cse=False)
  def body(acc, xs):
    p, start = xs
    val = jax.lax.dynamic_slice(vals_p, (0, 0, start[0], start[1], 0), (n, b, h, w, v))
    return acc + _weighted_frames(p, val), None

  out, _ = jax.lax.scan(body, jnp.zeros((b, h, w, v), jnp.float32), (probs, starts))
  return out


def window_logits(query: jax.Array, keys: jax.Array, radius: int, dilation: int = 1) -> jax.Array:
  """Dot products of each query location with a (2R+1)^2 window of each memory frame.

  out[b, i, j, n, s] = <query[b, i, j], keys[n, b, i + dy_s * d, j + dx_s * d]>, 0 where that position is
  outside the image; s enumerates (dy, dx) in [-R, R]^2 row-major (`window_offsets`). This equals
  `SpatialCorrelationSampler(kernel_size=1, patch_size=2R+1, dilation_patch=d)` whose output
  [b, dy, dx, i, j] is out[b, i, j, n].reshape(2R+1, 2R+1).

  Args:
    query: [B, h, w, C] target features.
    keys: [N, B, h, w, C] memory features.
    radius: R (static).
    dilation: window step d (static).
  Returns:
    float32 [B, h, w, N, (2R+1)^2].
  """
  _check_windows(query, keys, radius, dilation)
  return jnp.transpose(_shift_logits(query, keys, radius, dilation), (2, 3, 4, 1, 0))


def window_values(values: jax.Array, radius: int, dilation: int = 1) -> jax.Array:
  """Values gathered in the same windows as `window_logits` (zero outside the image; `F.unfold`).

  This materialises the unfold (O(h w N (2R+1)^2 V)); `local_propagate` does not use it.

  Args:
    values: [N, B, h, w, V].
  Returns:
    float32 [B, h, w, N, (2R+1)^2, V].
  """
  chex.assert_rank(values, 5)
  _, _, h, w, _ = values.shape
  pad = radius * dilation
  vals_p = _pad_spatial(values.astype(jnp.float32), pad)
  cols = [
      vals_p[:, :, pad + dy : pad + dy + h, pad + dx : pad + dx + w]
      for dy, dx in window_offsets(radius, dilation)
  ]
  return jnp.transpose(jnp.stack(cols, axis=0), (2, 3, 4, 1, 0, 5))


def _topk_window_sum(
    logits: jax.Array, values: jax.Array, radius: int, dilation: int, topk: int
) -> jax.Array:
  """Softmax over the top-k of the joint window logits [S, N, B, h, w]; gathers only k values."""
  s, n, b, h, w = logits.shape
  if not 1 <= topk <= s * n:
    raise ValueError(f"topk must be in [1, {s * n}], got {topk}")
  flat = jnp.transpose(logits, (2, 3, 4, 1, 0)).reshape(b, h, w, n * s)  # index = frame * S + shift
  top, idx = jax.lax.top_k(flat, topk)
  weights = jax.nn.softmax(top, axis=-1)
  pad = radius * dilation
  starts = jnp.asarray(window_offsets(radius, dilation) + pad)
  frame, shift = idx // s, idx % s
  rows = jnp.arange(h)[None, :, None, None] + starts[shift, 0]
  cols = jnp.arange(w)[None, None, :, None] + starts[shift, 1]
  batch = jnp.arange(b)[:, None, None, None]
  vals_p = _pad_spatial(values.astype(jnp.float32), pad)
  picked = vals_p[frame, batch, rows, cols]  # [B, h, w, k, V]
  return jnp.sum(weights[..., None] * picked, axis=-2)


def local_propagate(
    query: jax.Array,
    keys: jax.Array,
    values: jax.Array,
    radius: int,
    dilation: int = 1,
    *,
    topk: int | None = None,
    temperature: float = 1.0,
) -> jax.Array:
  """MAST's restricted attention: one softmax over the windows of all memory frames, then sum of values.

  out[b, i, j] = sum_{n, s} softmax_{n, s}(logit[b, i, j, n, s] / temperature) * values[n, b, i + dy_s d,
  j + dx_s d] with zero-padded keys and values (out-of-image positions: logit 0, value 0). MAST uses
  temperature 1 and no top-k.

  Args:
    query: [B, h, w, C] target features.
    keys: [N, B, h, w, C] memory features.
    values: [N, B, h, w, V] memory values (Lab channels, one-hot labels, ...), same grid as the keys.
    radius: R (static); window (2R+1)^2.
    dilation: window step (static).
    topk: if set, keep only the k largest logits per location (over all frames' windows, zero-padded
      positions included) and softmax over those: CRW-style sparsification on MAST's windows.
    temperature: logits are divided by it before the softmax.
  Returns:
    float32 [B, h, w, V].
  """
  _check_windows(query, keys, radius, dilation)
  chex.assert_rank(values, 5)
  chex.assert_equal_shape_prefix([keys, values], 4)
  logits = _shift_logits(query, keys, radius, dilation) / temperature
  if topk is not None:
    return _topk_window_sum(logits, values, radius, dilation, topk)
  probs = jax.nn.softmax(logits, axis=(0, 1))
  return _shift_weighted_sum(probs, values, radius, dilation)


def dense_local_propagate_reference(
    query: jax.Array, keys: jax.Array, values: jax.Array, radius: int, dilation: int = 1
) -> jax.Array:
  """Test reference for `local_propagate`: the full masked [HW, N, HW] affinity (O((hw)^2) memory).

  Window membership is a mask on the dense affinity; the (2R+1)^2 - (#in-image window positions)
  zero-padded positions of each frame are added analytically (logit 0, value 0).

  Args / returns: as `local_propagate` (no top-k, temperature 1).
  """
  b, h, w, c = query.shape
  n = keys.shape[0]
  hw = h * w
  q = query.reshape(b, hw, c).astype(jnp.float32)
  k = keys.reshape(n, b, hw, c).astype(jnp.float32)
  v = values.reshape(n, b, hw, -1).astype(jnp.float32)
  hi = jax.lax.Precision.HIGHEST
  logits = jnp.einsum("bqc,nbkc->bqnk", q, k, precision=hi)
  yy, xx = np.divmod(np.arange(hw), w)
  dy, dx = yy[None, :] - yy[:, None], xx[None, :] - xx[:, None]  # [query, key]
  reach = radius * dilation
  inside = (
      (np.abs(dy) <= reach) & (np.abs(dx) <= reach) & (dy % dilation == 0) & (dx % dilation == 0)
  )
  n_out = (2 * radius + 1) ** 2 - inside.sum(-1)  # zero-padded positions per frame, [hw]
  inside = jnp.asarray(inside)[None, :, None, :]
  masked = jnp.where(inside, logits, -jnp.inf)
  top = jnp.max(masked, axis=(2, 3))
  top = jnp.where(jnp.asarray(n_out)[None] > 0, jnp.maximum(top, 0.0), top)
  e = jnp.where(inside, jnp.exp(masked - top[..., None, None]), 0.0)
  denom = jnp.sum(e, axis=(2, 3)) + n * jnp.asarray(n_out)[None] * jnp.exp(-top)
  out = jnp.einsum("bqnk,nbkv->bqv", e, v, precision=hi) / denom[..., None]
  return out.reshape(b, h, w, -1)


# ------------------------------------------------------------------------------------------------
# MAST Colorizer (with the ROI path)
# ------------------------------------------------------------------------------------------------


def _grid_sample_zeros(
    image: jax.Array, x: jax.Array, y: jax.Array, align_corners: bool
) -> jax.Array:
  """`F.grid_sample(bilinear, zeros)` of image [B, h, w, C] at PIXEL positions x, y [B, h, w].

  The pixel positions go through MAST's normalisation (`normalize_meshgrid`: p / (size - 1) * 2 - 1) and
  PyTorch's unnormalisation (align_corners=True: (g + 1) * (size - 1) / 2; False: (g + 1) * size / 2
  - 0.5), in float32 as the official code does: with True this round-trips to p (up to rounding), with
  False it samples at p * size / (size - 1) - 0.5.
  """
  b, h, w, c = image.shape

  def source(p, size):
    g = p / float(size - 1) * 2.0 - 1.0
    if align_corners:
      return (g + 1.0) * (float(size - 1) / 2.0)
    return (g + 1.0) * (float(size) / 2.0) - 0.5

  sx, sy = source(x, w), source(y, h)
  x0, y0 = jnp.floor(sx), jnp.floor(sy)
  fx, fy = sx - x0, sy - y0
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
  flat = image.reshape(b, h * w, c)
  out = jnp.zeros((b, h, w, c), jnp.float32)
  for oy, ox, wgt in (
      (0, 0, (1.0 - fy) * (1.0 - fx)),
      (0, 1, (1.0 - fy) * fx),
      (1, 0, fy * (1.0 - fx)),
      (1, 1, fy * fx),
  ):
    xi, yi = x0 + ox, y0 + oy
    valid = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    idx = (jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1)).reshape(b, h * w, 1)
    tap = jnp.take_along_axis(flat, idx, axis=1).reshape(b, h, w, c)
    out = out + jnp.where(valid, wgt, 0.0)[..., None] * tap
  return out


def _roi_positions(offset: jax.Array, radius: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Pixel grid + offset ([..., h, w, 2] as (x, y)) and the window deltas [(2R+1)^2, 2] as (dx, dy)."""
  h, w = offset.shape[-3:-1]
  gy, gx = np.meshgrid(
      np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij"
  )
  base_x = jnp.asarray(gx) + offset[..., 0]  # (grid + offset) + delta: the official order
  base_y = jnp.asarray(gy) + offset[..., 1]
  deltas = jnp.asarray(window_offsets(radius)[:, ::-1].astype(np.float32))
  return base_x, base_y, deltas


def _sample_frames(images: jax.Array, x: jax.Array, y: jax.Array, align_corners: bool) -> jax.Array:
  """`_grid_sample_zeros` over [F, B, h, w, C] frames (frames folded into the batch)."""
  f, b, h, w, c = images.shape
  out = _grid_sample_zeros(
      images.reshape(f * b, h, w, c), x.reshape(f * b, h, w), y.reshape(f * b, h, w), align_corners
  )
  return out.reshape(f, b, h, w, c)


def _roi_logits(
    query: jax.Array, keys: jax.Array, offsets: jax.Array, radius: int, align_corners: bool
) -> jax.Array:
  """[S, F, B, h, w] logits against windows of keys [F, B, h, w, C] centred at pixel + offsets
  [F, B, h, w, 2] (bilinear reads); one checkpointed scan over the window shifts for all F frames.
  """
  base_x, base_y, deltas = _roi_positions(offsets, radius)
  q = query.astype(jnp.float32)
  k = keys.astype(jnp.float32)

  @functools.partial(jax.checkpoint, prevent_cse=False)
  def body(carry, delta):
    col = _sample_frames(k, base_x + delta[0], base_y + delta[1], align_corners)
    return carry, _dot_channels(q, col)

  _, logits = jax.lax.scan(body, None, deltas)
  return logits


def _roi_weighted_sum(
    probs: jax.Array, values: jax.Array, offsets: jax.Array, radius: int, align_corners: bool
) -> jax.Array:
  """sum_{s, f} probs[s, f] * values[f] read at pixel + offsets[f] + delta_s -> [B, h, w, V]."""
  base_x, base_y, deltas = _roi_positions(offsets, radius)
  vals = values.astype(jnp.float32)

  @functools.partial(jax.checkpoint, prevent_cse=False)
  def body(acc, xs):
    p, delta = xs
    col = _sample_frames(vals, base_x + delta[0], base_y + delta[1], align_corners)
    return acc + _weighted_frames(p, col), None

  out, _ = jax.lax.scan(body, jnp.zeros(values.shape[1:], jnp.float32), (probs, deltas))
  return out


def _soft_argmax_offsets(
    query: jax.Array, keys: jax.Array, radius: int, dilation: int
) -> jax.Array:
  """MAST's coarse search: softmax over a dilated (2R+1)^2 window, expected (dx, dy) * dilation.

  Args:
    query: [B, h, w, C]; keys: [F, B, h, w, C].
  Returns:
    float32 [F, B, h, w, 2] (x, y) pixel offsets.
  """
  logits = _shift_logits(query, keys, radius, dilation)  # [S, F, B, h, w]
  probs = jax.nn.softmax(logits, axis=0)
  deltas = jnp.asarray(window_offsets(radius)[:, ::-1].astype(np.float32))  # (dx, dy), undilated
  offset = jnp.einsum("sfbhw,sk->fbhwk", probs, deltas, precision=jax.lax.Precision.HIGHEST)
  return offset * float(dilation)


def mast_prepare_values(
    values: jax.Array, subsample: int = 4, num_classes: int | None = None
) -> jax.Array:
  """MAST's `Colorizer.prep`: strided pick `[::D, ::D]`, then one-hot labels (eval mode).

  Args:
    values: [N, B, H, W, V] float values, or label ids [N, B, H, W] / [N, B, H, W, 1] (any dtype; cast
      to int like `.long()`) when `num_classes` is given.
    subsample: D (MAST: 4, the feature stride).
    num_classes: if set, ids become one-hot [.., num_classes] (ids outside [0, C) give all-zero rows;
      the official `scatter_` would raise).
  Returns:
    float32 [N, B, ceil(H / D), ceil(W / D), V or num_classes].
  """
  if num_classes is not None:
    if values.ndim == 5:
      if values.shape[-1] != 1:
        raise ValueError(f"label ids must be [N, B, H, W] or [..., 1], got shape {values.shape}")
      values = values[..., 0]
    chex.assert_rank(values, 4)
    ids = values[:, :, ::subsample, ::subsample].astype(jnp.int32)
    return jax.nn.one_hot(ids, num_classes, dtype=jnp.float32)
  chex.assert_rank(values, 5)
  return values[:, :, ::subsample, ::subsample].astype(jnp.float32)


def mast_colorize(
    ref_feats: jax.Array,
    tar_feats: jax.Array,
    ref_values: jax.Array,
    *,
    radius: int,
    ref_index: Sequence[int],
    current_ind: int,
    subsample: int = 4,
    roi_gap: int = 15,
    max_dilation: int = 4,
    roi_radius: int = 12,
    align_corners: bool = True,
    num_classes: int | None = None,
    roi_label_offset_quirk: bool = True,
) -> jax.Array:
  """MAST's `Colorizer.forward`: restricted attention over memory frames, local or ROI windows.

  Frame n with current_ind - ref_index[n] <= roi_gap uses the window centred at the same location.
  Farther frames use the ROI path: a coarse search over a (2 roi_radius + 1)^2 window with dilation
  min(max_dilation, dt // roi_gap + 1) gives a soft-argmax offset (softmax over the window, expected
  (dx, dy) times the dilation), and the (2R+1)^2 window centred at location + offset is read from the
  features and from the values by bilinear sampling (`grid_sample`, zeros outside). All frames' window
  logits then share one softmax; the output is the weighted sum of the window values.

  Official quirk (`roi_label_offset_quirk=True`, the default): the values of EVERY ROI frame are
  gathered with the offset of the LAST ROI frame (`offset0` leaks out of the search loop), while the
  features use each frame's own offset. False uses each frame's own offset for both.

  Args:
    ref_feats: [N, B, h, w, C] memory features (MAST: 64-d, stride 4).
    tar_feats: [B, h, w, C] target features.
    ref_values: [N, B, H, W, V] values at image resolution, or label ids with `num_classes`; they are
      subsampled `[::subsample, ::subsample]` (must land on h x w), see `mast_prepare_values`.
    radius: R (MAST: 6 in training, 12 at test).
    ref_index: frame index of each memory frame (static); the ROI frames must come first (ascending
      order does this), as the official code assumes.
    current_ind: frame index of the target (static).
    subsample: D = 4.
    roi_gap: `dil_int` = 15.
    max_dilation: 4 (the official cap).
    roi_radius: the coarse search radius, 12.
    align_corners: `grid_sample` convention of the ROI gather. True is PyTorch 1.1's behaviour, which
      MAST was written for (matches its (size - 1) normalisation); False is the modern default.
    num_classes: one-hot the label ids to this many classes (MAST eval: 7); None for float values.
    roi_label_offset_quirk: see above.
  Returns:
    float32 [B, h, w, V] (V = num_classes for labels).
  """
  chex.assert_rank([ref_feats, tar_feats], [5, 4])
  chex.assert_equal_shape([ref_feats[0], tar_feats])
  n_ref = ref_feats.shape[0]
  if len(ref_index) != n_ref:
    raise ValueError(f"ref_index has {len(ref_index)} entries for {n_ref} memory frames")
  values = mast_prepare_values(ref_values, subsample, num_classes)
  _, b, h, w, _ = ref_feats.shape
  if values.shape[:4] != (n_ref, b, h, w):
    raise ValueError(
        f"values subsampled by {subsample} are {values.shape[:4]}, features are {(n_ref, b, h, w)}"
    )
  far = [current_ind - int(r) > roi_gap for r in ref_index]
  n_roi = sum(far)
  if any(far[n_roi:]) or not all(far[:n_roi]):
    raise ValueError(
        f"the ROI frames (current_ind - ref_index > {roi_gap}) must come first, got ref_index="
        f"{list(ref_index)}, current_ind={current_ind}"
    )
  if n_roi and (h < 2 or w < 2):
    raise ValueError("the ROI path needs feature maps of at least 2 x 2")

  logits = []
  if n_roi:
    # Coarse search, one scan per distinct dilation (frames in ref_index order).
    dilations = [
        min(max_dilation, (current_ind - int(r)) // roi_gap + 1) for r in ref_index[:n_roi]
    ]
    offsets = [None] * n_roi
    for d in sorted(set(dilations)):
      group = [n for n in range(n_roi) if dilations[n] == d]
      found = _soft_argmax_offsets(tar_feats, ref_feats[np.asarray(group)], roi_radius, d)
      for i, n in enumerate(group):
        offsets[n] = found[i]
    offsets = jnp.stack(offsets)  # [N_roi, B, h, w, 2]
    logits.append(_roi_logits(tar_feats, ref_feats[:n_roi], offsets, radius, align_corners))
  if n_roi < n_ref:
    logits.append(_shift_logits(tar_feats, ref_feats[n_roi:], radius, 1))  # [S, N_local, B, h, w]
  probs = jax.nn.softmax(jnp.concatenate(logits, axis=1), axis=(0, 1))  # [S, N, B, h, w]

  out = jnp.zeros((b, h, w, values.shape[-1]), jnp.float32)
  if n_roi:
    if roi_label_offset_quirk:  # the official `offset0` of the last ROI frame, for every ROI frame
      offsets = jnp.broadcast_to(offsets[-1], offsets.shape)
    out = out + _roi_weighted_sum(probs[:, :n_roi], values[:n_roi], offsets, radius, align_corners)
  if n_roi < n_ref:
    out = out + _shift_weighted_sum(probs[:, n_roi:], values[n_roi:], radius, 1)
  return out
