"""Semi-supervised propagation of the first frame's object masks through a video.

Three ways to predict frames 1..T-1 from the first frame's ids (0 background, 1..K objects):
  mast        MAST's memory (`benchmark.py --ref 0`): to predict frame i+1 the references are the
              long-term frames 0 and 5 (5 once i >= 5) and the last `short_term` frames i, i-2, i-4 (> 0),
              their *predicted* one-hot labels copied through `correspondence.mast_colorize` (R = 12;
              references more than `roi_gap` frames back go through the ROI path), the soft labels
              upsampled bilinearly to the image and arg-maxed.
  crw         CRW's memory (`code/test.py`): the first frame plus the `n_context` previous frames, keys
              within `crw_radius` feature cells (short-term frames only), top-k softmax at `temperature`
              (`correspondence.crw_propagate`).
  copy_first  every frame is the first frame's mask (the no-motion baseline).
Features come from any encoder: the trained one, or the raw Lab pixels pooled to the same grid (the
untrained baseline, `lab_pixel_features`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.losses import correspondence


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


def propagate_crw(features: jax.Array, first_ids: np.ndarray, num_objects: int, cfg) -> np.ndarray:
  """features float32 [T, h, w, C] (L2-normalised per pixel), first_ids uint8 [H, W] -> ids [T, H, W]."""
  num_frames, h, w, _ = features.shape
  height, width = first_ids.shape
  # Labels at the feature grid: the id at each cell's centre pixel.
  ys = np.minimum((np.arange(h) + 0.5) * height / h, height - 1).astype(int)
  xs = np.minimum((np.arange(w) + 0.5) * width / w, width - 1).astype(int)
  first = one_hot_ids(first_ids[np.ix_(ys, xs)], num_objects + 1)
  soft = correspondence.crw_propagate(
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
