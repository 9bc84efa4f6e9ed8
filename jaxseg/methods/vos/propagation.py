"""Semi-supervised propagation of the first frame's object masks through a video.

Three ways to predict frames 1..T-1 from the first frame's ids (0 background, 1..K objects):
  mast        MAST's memory (`benchmark.py --ref 0`): to predict frame i+1 the references are the
              long-term frames 0 and 5 (5 once i >= 5) and the last `short_term` frames i, i-2, i-4 (> 0),
              their *predicted* one-hot labels copied through `correspondence.mast_colorize` (R = 12;
              references more than `roi_gap` frames back go through the ROI path), the soft labels
              upsampled bilinearly to the image and arg-maxed.
  crw         CRW's memory (`code/test.py`): the first frame plus the `n_context` previous frames, keys
              within `crw_radius` feature cells (short-term frames only), top-k softmax at `temperature`
              (`crw_propagate`, below: the official inline loop of `code/test.py`, with its top-k
              logits (A + mask) / tau, mask -1e10, and its long-term frame indexing,
              `context_index_bank`).
  copy_first  every frame is the first frame's mask (the no-motion baseline).
Features come from any encoder: the trained one, or the raw Lab pixels pooled to the same grid (the
untrained baseline, `lab_pixel_features`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.losses import correspondence
from jaxseg.models import correspondence_encoders

# CRW's `MaskedAttention`: logits of keys beyond the spatial radius get this added.
CRW_MASKED_LOGIT = -1e10


def mast_reference_frames(i: int, long_term=(0, 5), short_term: int = 3, gap: int = 2) -> list[int]:
  """The frames MAST copies labels from to predict frame i + 1 (sorted, unique)."""
  refs = [f for f in long_term if f <= i]
  refs += [f for f in range(i, i - gap * short_term, -gap) if f > 0]
  return sorted(set(refs))


def one_hot_ids(ids: np.ndarray, num_classes: int) -> np.ndarray:
  """uint8 ids [..., H, W] -> float32 one-hot [..., H, W, num_classes]."""
  return np.eye(num_classes, dtype=np.float32)[np.minimum(ids, num_classes - 1)]


def padded_num_classes(num_objects: int) -> int:
  """Label channels of `propagate_mast`: background + objects, padded to a multiple of 4 so that videos
  with 1..3 objects share one compiled step; the padded channels stay 0 and never win the argmax (the
  real ones sum to > 0 everywhere)."""
  return -(-(num_objects + 1) // 4) * 4


def canonical_schedule(
    refs: list[int], current: int, roi_gap: int, max_dilation: int
) -> tuple[tuple[int, ...], int]:
  """(ref_index, current_ind) with the same per-reference behaviour in `mast_colorize` (local window,
  or ROI with dilation min(max_dilation, dt // roi_gap + 1)) but from a small set of values, so that
  the jitted step compiles once per memory *pattern*, not once per frame."""
  gaps = []
  for r in refs:
    dt = current - r
    if dt <= roi_gap:
      gaps.append((0, dt))
    else:
      gaps.append((min(max_dilation, dt // roi_gap + 1), dt))
  out, counts = [], {}
  for dil, _ in reversed(gaps):  # the latest reference first: it gets the smallest canonical gap
    k = counts.get(dil, 0)
    counts[dil] = k + 1
    if dil == 0:
      out.append(1 + k)
    else:
      out.append(max(roi_gap + 1, roi_gap * (dil - 1)) + k)
  canonical_current = 1000
  return tuple(canonical_current - g for g in reversed(out)), canonical_current


UPSAMPLINGS = ("official", "aligned")


def upsample_labels(soft: jax.Array, out_size: tuple[int, int], upsampling: str) -> jax.Array:
  """Soft labels [B, h, w, K] on the stride-s grid -> [B, H, W, K] (s = H / h), bilinear.

  official  `F.interpolate(mode='bilinear', align_corners=False)` (MAST's benchmark.py): cell i is
            taken to be centred on pixel s i + (s - 1) / 2.
  aligned   cell i is centred on pixel s i, where its label was read (`Colorizer.prep` picks
            `[::s, ::s]`) and where a stride-s encoder's output i is centred. The official upsampling
            places every propagated mask (s - 1) / 2 pixels right and down of where its labels were
            read (1.5 at stride 4) before the arg-max re-quantises it; this one maps a label grid back
            onto itself (tests/test_vos_upsampling.py).
  """
  b, h, w, k = soft.shape
  height, width = out_size
  if upsampling == "official":
    return jax.image.resize(soft, (b, height, width, k), "bilinear", antialias=False)
  if upsampling != "aligned":
    raise ValueError(f"upsampling={upsampling!r}: expected one of {UPSAMPLINGS}")
  # scale_and_translate maps input coordinate x (cell i spans [i, i + 1)) to x * scale + shift; the
  # centre i + 1/2 goes to s i + 1/2 (the centre of pixel s i) with shift = (1 - s) / 2.
  scale = jnp.array([height / h, width / w], jnp.float32)
  return jax.image.scale_and_translate(
      soft, (b, height, width, k), (1, 2), scale, 0.5 * (1.0 - scale), "linear", antialias=False
  )


@functools.partial(
    jax.jit,
    static_argnames=(
        "radius",
        "ref_index",
        "current",
        "roi_gap",
        "max_dil",
        "out_size",
        "upsampling",
    ),
)
def _mast_step(
    ref_feats,
    tar_feat,
    ref_labels,
    *,
    radius,
    ref_index,
    current,
    roi_gap,
    max_dil,
    out_size,
    upsampling="official",
):
  soft = correspondence.mast_colorize(
      ref_feats,
      tar_feat,
      ref_labels,
      radius=radius,
      ref_index=list(ref_index),
      current_ind=current,
      roi_gap=roi_gap,
      max_dilation=max_dil,
  )
  num_classes = soft.shape[-1]
  up = upsample_labels(soft, out_size, upsampling)
  ids = jnp.argmax(up[0], -1).astype(jnp.uint8)
  return ids, jax.nn.one_hot(ids, num_classes, dtype=jnp.float32)


def mast_step_for_frame(
    feature_shape: tuple[int, int, int],
    out_size: tuple[int, int],
    num_objects: int,
    cfg,
    target: int,
):
  """(step, abstract inputs) of the propagation step that predicts frame `target` of a video whose
  features are [h, w, C] = `feature_shape` and labels `out_size` (H, W): `jax.jit(step).lower(*inputs)`
  compiles it without a video (its memory and cost at that frame's memory pattern). A late frame (>= 17:
  long-term frames through the ROI path plus the recent frames) has the most references."""
  refs = mast_reference_frames(
      target - 1, tuple(cfg.long_term), int(cfg.short_term), int(cfg.short_gap)
  )
  ref_index, current = canonical_schedule(refs, target, int(cfg.roi_gap), int(cfg.max_dilation))
  h, w, c = (int(d) for d in feature_shape)
  step = functools.partial(
      _mast_step,
      radius=int(cfg.radius),
      ref_index=ref_index,
      current=current,
      roi_gap=int(cfg.roi_gap),
      max_dil=int(cfg.max_dilation),
      out_size=tuple(int(s) for s in out_size),
      upsampling=str(cfg.get("upsampling", "official")),
  )
  f32 = jnp.float32
  inputs = (
      jax.ShapeDtypeStruct((len(refs), 1, h, w, c), f32),
      jax.ShapeDtypeStruct((1, h, w, c), f32),
      jax.ShapeDtypeStruct((len(refs), 1, *out_size, padded_num_classes(num_objects)), f32),
  )
  return step, inputs


def propagate_mast(
    features: jax.Array,
    first_ids: np.ndarray,
    num_objects: int,
    cfg,
    query_features: jax.Array | None = None,
) -> np.ndarray:
  """features float32 [T, h, w, C] (stride 4), first_ids uint8 [H, W] -> predicted ids uint8 [T, H, W].

  `query_features` (default: `features`) are the target frames' side of the dot product, for affinities
  that are not symmetric (`lab_pixel_features`)."""
  if query_features is None:
    query_features = features
  num_frames = features.shape[0]
  num_classes = padded_num_classes(num_objects)
  # Full resolution one-hot labels; mast_colorize subsamples them [::4, ::4] (Colorizer.prep).
  labels = [jnp.asarray(one_hot_ids(first_ids, num_classes))]
  ids = [jnp.asarray(first_ids, jnp.uint8)]
  roi_gap, max_dil = int(cfg.roi_gap), int(cfg.max_dilation)
  for i in range(num_frames - 1):
    refs = mast_reference_frames(i, tuple(cfg.long_term), int(cfg.short_term), int(cfg.short_gap))
    ref_index, current = canonical_schedule(refs, i + 1, roi_gap, max_dil)
    pred, onehot = _mast_step(
        jnp.stack([features[r][None] for r in refs]),
        query_features[i + 1][None],
        jnp.stack([labels[r][None] for r in refs]),
        radius=int(cfg.radius),
        ref_index=ref_index,
        current=current,
        roi_gap=roi_gap,
        max_dil=max_dil,
        out_size=tuple(first_ids.shape),
        upsampling=str(cfg.get("upsampling", "official")),
    )
    ids.append(pred)
    labels.append(onehot)
  return np.asarray(jnp.stack(ids))


# ------------------------------------------------------------------------------------------------
# CRW: test-time label propagation (ajabri/videowalk `code/test.py`, `code/utils/test_utils.py`)
# ------------------------------------------------------------------------------------------------


def context_index_bank(
    num_frames: int, n_context: int, long_mem: Sequence[int] = (0,)
) -> np.ndarray:
  """Context frames of each target frame in the front-padded video (official `context_index_bank`).

  The video is padded with n_context copies of frame 0 in front, so target t (real frame t) sits at
  padded index t + n_context. Its context is, per long-term frame m: 0 if m = 0; else, as the official
  code indexes it, padded frame m + n_context + 1 (real frame m + 1, one past m) for targets
  t >= n_context + m + 1 (a threshold in padded units applied to target indices) and 0 before. Then the
  n_context previous padded frames t .. t + n_context - 1. Only long_mem = (0,) (the default and the
  README setting) is free of these off-by-ones.

  Args:
    num_frames: number of real frames (= target frames).
    n_context: short-term memory length (official `--videoLen`, 20).
    long_mem: long-term real frame indices (official `--long-mem`, [0]).
  Returns:
    int32 [num_frames, len(long_mem) + n_context].
  """
  cols = []
  for m in long_mem:
    if not 0 <= m < num_frames:
      raise ValueError(f"long-term frame {m} out of bounds for {num_frames} frames")
    idx = np.zeros(num_frames, np.int64)
    if m > 0:
      idx += m + n_context + 1
      idx[: n_context + m + 1] = 0
    cols.append(idx[:, None])
  cols.append(np.arange(n_context)[None, :] + np.arange(num_frames)[:, None])
  return np.concatenate(cols, axis=1).astype(np.int32)


def _neighbour_mask(coords_q: jax.Array, coords_k: jax.Array, radius: float) -> jax.Array:
  """[Q, K] float32: 0 where the Euclidean grid distance < radius, else -1e10."""
  d2 = jnp.sum(jnp.square(coords_q[:, None, :] - coords_k[None, :, :]), axis=-1)
  dist = jnp.sqrt(d2.astype(jnp.float32))
  return jnp.where(dist < radius, 0.0, CRW_MASKED_LOGIT).astype(jnp.float32)


def _grid_coords(h: int, w: int) -> np.ndarray:
  yy, xx = np.divmod(np.arange(h * w), w)
  return np.stack([yy, xx], axis=-1).astype(np.int32)


def spatial_neighbour_mask(h: int, w: int, radius: float) -> jax.Array:
  """CRW's `MaskedAttention` mask over a flattened h x w grid (row-major), added to the logits.

  Returns:
    float32 [h*w, h*w]: 0 where the distance between the two cells is < radius, -1e10 elsewhere
    (symmetric; the official [1, 1, hw, hw] array squeezed). Dense: tests and small maps only;
    `topk_affinity` builds the rows it needs per chunk.
  """
  coords = jnp.asarray(_grid_coords(h, w))
  return _neighbour_mask(coords, coords, radius)


def topk_affinity(
    query: jax.Array,
    keys: jax.Array,
    *,
    topk: int,
    temperature: float,
    radius: float | None = None,
    num_long: int = 1,
    chunk_size: int = 256,
) -> tuple[jax.Array, jax.Array]:
  """Top-k context affinities of one target frame (official `mem_efficient_batched_affinity`).

  logit[q, (n, p)] = (<keys[n, p], query[q]> + mask[p, q]) / tau with mask = -1e10 beyond `radius` for
  the short-term frames n >= num_long (0 for the long-term ones); the k largest per query pixel are
  kept and softmax-normalised. Query pixels are processed in chunks (`lax.map`), so memory is
  O(chunk_size * K * h * w), never (K h w) x (h w).

  Args:
    query: [h, w, C] target frame features.
    keys: [K, h, w, C] context frame features (long-term frames first).
    topk: k (official 10).
    temperature: tau (official 0.07; README 0.05).
    radius: spatial radius in feature cells (official 12); None: no restriction.
    num_long: number of leading unrestricted frames (len(long_mem)).
    chunk_size: query pixels per chunk.
  Returns:
    (weights float32 [h*w, k], indices int32 [h*w, k]): indices into the flattened (K, h*w) context
    axis, in descending logit order (`torch.topk`); official layout is the transpose [k, h*w].
  """
  chex.assert_rank([query, keys], [3, 4])
  chex.assert_equal_shape([query, keys[0]])
  h, w, c = query.shape
  n_ctx = keys.shape[0]
  hw = h * w
  if not 1 <= topk <= n_ctx * hw:
    raise ValueError(f"topk must be in [1, {n_ctx * hw}], got {topk}")
  chunk = min(chunk_size, hw)
  n_chunks = -(-hw // chunk)
  padded = n_chunks * chunk
  q = jnp.pad(query.reshape(hw, c).astype(jnp.float32), ((0, padded - hw), (0, 0)))
  k = keys.reshape(n_ctx, hw, c).astype(jnp.float32)
  coords = _grid_coords(h, w)
  coords_q = jnp.asarray(np.pad(coords, ((0, padded - hw), (0, 0))))
  coords_k = jnp.asarray(coords)
  short = (jnp.arange(n_ctx) >= num_long)[None, :, None]  # [1, K, 1]

  def one_chunk(xs):
    q_c, cq = xs
    a = jnp.einsum("npc,qc->qnp", k, q_c, precision=jax.lax.Precision.HIGHEST)
    if radius is not None:
      mask = _neighbour_mask(cq, coords_k, radius)  # [chunk, hw]
      a = a + jnp.where(short, mask[:, None, :], 0.0)
    a = a.reshape(chunk, n_ctx * hw) / temperature
    top, idx = jax.lax.top_k(a, topk)
    return jax.nn.softmax(top, axis=-1), idx.astype(jnp.int32)

  weights, idx = jax.lax.map(
      one_chunk, (q.reshape(n_chunks, chunk, c), coords_q.reshape(n_chunks, chunk, 2))
  )
  return weights.reshape(padded, topk)[:hw], idx.reshape(padded, topk)[:hw]


def _pad_video(x: jax.Array, n_context: int) -> jax.Array:
  """Front-pads [T, ...] with n_context copies of frame 0 (official `data/vos.py::make_paths`)."""
  return jnp.concatenate([jnp.repeat(x[:1], n_context, axis=0), x], axis=0)


def crw_propagation_affinities(
    feats: jax.Array,
    *,
    n_context: int = 20,
    topk: int = 10,
    radius: float | None = 12,
    temperature: float = 0.07,
    long_mem: Sequence[int] = (0,),
    l2_normalize: bool = True,
    chunk_size: int = 256,
) -> tuple[jax.Array, jax.Array, np.ndarray]:
  """Top-k weights and indices of every target frame of a video (official `test.py` affinity block).

  Args:
    feats: [T, h, w, C] per-frame feature maps of the real (unpadded) frames.
    n_context, topk, radius, temperature, long_mem: official test arguments (`--videoLen`, `--topk`,
      `--radius`, `--temperature`, `--long-mem`).
    l2_normalize: normalise each pixel's feature over C first (official unless `--no-l2`).
    chunk_size: query pixels per chunk in `topk_affinity`.
  Returns:
    (weights float32 [T, h*w, k], indices int32 [T, h*w, k], key_indices int32 [T, len(long_mem) +
    n_context]): indices point into the flattened (context frame, h*w) axis of each target's context.
  """
  chex.assert_rank(feats, 4)
  num_frames = feats.shape[0]
  x = feats.astype(jnp.float32)
  if l2_normalize:
    x = correspondence_encoders.l2_normalize(x)
  padded = _pad_video(x, n_context)
  key_idx = context_index_bank(num_frames, n_context, long_mem)

  def one_frame(t):
    keys = padded[jnp.asarray(key_idx)[t]]
    return topk_affinity(
        padded[t + n_context],
        keys,
        topk=topk,
        temperature=temperature,
        radius=radius,
        num_long=len(long_mem),
        chunk_size=chunk_size,
    )

  weights, idx = jax.lax.map(one_frame, jnp.arange(num_frames))
  return weights, idx, key_idx


def crw_propagate(
    feats: jax.Array,
    first_labels: jax.Array,
    *,
    n_context: int = 20,
    topk: int = 10,
    radius: float | None = 12,
    temperature: float = 0.07,
    long_mem: Sequence[int] = (0,),
    l2_normalize: bool = True,
    chunk_size: int = 256,
) -> jax.Array:
  """CRW test-time label propagation (the official inline loop of `code/test.py::test`).

  The label memory is front-padded like the features (n_context copies of the first frame's labels,
  zeros for the real frames); target t's soft labels are sum_k W[q, k] * memory[context(t)][I[q, k]],
  written back into the memory at t + n_context so later frames read predictions. Target 0 is the
  given first-frame labels (the official overwrites its prediction with them).

  Args:
    feats: [T, h, w, C] feature maps of the real frames (stride-8 encoder maps in CRW).
    first_labels: [h, w, L] soft / one-hot labels of frame 0 at feature resolution.
    n_context, topk, radius, temperature, long_mem, l2_normalize, chunk_size: as
      `crw_propagation_affinities`.
  Returns:
    float32 [T, h, w, L] soft labels (index 0 = first_labels).
  """
  chex.assert_rank([feats, first_labels], [4, 3])
  chex.assert_equal_shape_prefix([feats[0], first_labels], 2)
  num_frames, h, w, _ = feats.shape
  n_lbl = first_labels.shape[-1]
  weights, idx, key_idx = crw_propagation_affinities(
      feats,
      n_context=n_context,
      topk=topk,
      radius=radius,
      temperature=temperature,
      long_mem=long_mem,
      l2_normalize=l2_normalize,
      chunk_size=chunk_size,
  )
  first = first_labels.astype(jnp.float32)
  memory = jnp.concatenate(
      [jnp.repeat(first[None], n_context + 1, axis=0), jnp.zeros((num_frames - 1, h, w, n_lbl))],
      axis=0,
  )
  key_idx = jnp.asarray(key_idx)

  def step(mem, t):
    ctx = mem[key_idx[t]].reshape(-1, n_lbl)  # [K*hw, L]
    pred = jnp.sum(weights[t][..., None] * ctx[idx[t]], axis=1).reshape(h, w, n_lbl)
    return mem.at[t + n_context].set(pred), pred

  if num_frames == 1:
    return first[None]
  _, preds = jax.lax.scan(step, memory, jnp.arange(1, num_frames))
  return jnp.concatenate([first[None], preds], axis=0)


def propagate_crw(features: jax.Array, first_ids: np.ndarray, num_objects: int, cfg) -> np.ndarray:
  """features float32 [T, h, w, C] (L2-normalised per pixel), first_ids uint8 [H, W] -> ids [T, H, W]."""
  num_frames, h, w, _ = features.shape
  height, width = first_ids.shape
  # Labels at the feature grid: the id at each cell's centre pixel.
  ys = np.minimum((np.arange(h) + 0.5) * height / h, height - 1).astype(int)
  xs = np.minimum((np.arange(w) + 0.5) * width / w, width - 1).astype(int)
  first = one_hot_ids(first_ids[np.ix_(ys, xs)], num_objects + 1)
  soft = crw_propagate(
      features,
      jnp.asarray(first),
      n_context=int(cfg.n_context),
      topk=int(cfg.topk),
      radius=float(cfg.crw_radius),
      temperature=float(cfg.crw_temperature),
  )
  up = jax.image.resize(
      jnp.asarray(soft), (num_frames, height, width, num_objects + 1), "bilinear", antialias=False
  )
  ids = np.asarray(jnp.argmax(up, -1)).astype(np.uint8)
  ids[0] = first_ids
  return ids


def copy_first(num_frames: int, first_ids: np.ndarray) -> np.ndarray:
  return np.repeat(np.asarray(first_ids, np.uint8)[None], num_frames, axis=0)


def lab_pixel_features(
    lab_frames: np.ndarray, temperature: float, stride: int = 4
) -> tuple[jax.Array, jax.Array]:
  """The untrained baseline: (key features, query features) of the normalised Lab frames [T, H, W, 3]
  averaged over stride x stride cells (the stride-4 encoder's grid, ceil division) and augmented so that
  the colorizer's dot product is a colour distance: q' = [q, 1] / sqrt(tau), k' = [k, -|k|^2 / 2] /
  sqrt(tau) give q'.k' = -(|q - k|^2 - |q|^2) / (2 tau), i.e. a softmax over -|q - k|^2 / (2 tau) (the
  |q|^2 term is the same for every key of a query). Raw dot products of 3-d Lab vectors (logits within
  +-3) would give an almost uniform softmax over the window, which no one would call a baseline."""
  t, h, w, c = lab_frames.shape
  ph, pw = (-h) % stride, (-w) % stride
  x = np.pad(lab_frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
  x = x.reshape(t, (h + ph) // stride, stride, (w + pw) // stride, stride, c).mean(axis=(2, 4))
  scale = 1.0 / np.sqrt(temperature)
  ones = np.ones(x.shape[:-1] + (1,), x.dtype)
  keys = np.concatenate([x, -0.5 * np.sum(x * x, -1, keepdims=True)], -1) * scale
  queries = np.concatenate([x, ones], -1) * scale
  return jnp.asarray(keys, jnp.float32), jnp.asarray(queries, jnp.float32)
