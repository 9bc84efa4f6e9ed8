"""SEAM training losses (Wang et al., CVPR 2020), as the official `train_SEAM.py` step computes them. NHWC.

One step sees two views of each image: view 1 = the crop (img1, [B, H, W, 3]), view 2 = `transform(img1)`
(official: bilinear rescale by 0.3 with align_corners=True, [B, floor(0.3 H), floor(0.3 W), 3]). The network
(`jaxseg.models.seam.SEAMNet`) gives, per view, `cam` (raw fc8 logits) and `cam_rv` (PCM output), both
[B, h, w, 21] at that view's input size, channel 0 = background slot. With `lbl` = [1 (bg), 20 class bits]:

  cls_v   = multilabel_soft_margin_loss(GAP(cam_v)[:, 1:], labels)            (GAP of the upsampled raw cam)
  rvmin_v = adaptive_min_pooling_loss((cam_rv_v * lbl)[..., 1:])              (extra term, not in the paper)
  cam1_s  = transform(max_norm(cam_1)) * lbl,  cam_rv1_s = transform(max_norm(cam_rv_1)) * lbl
  cam2_s  = max_norm(cam_2) * lbl,             cam_rv2_s = max_norm(cam_rv_2) * lbl
  er      = mean |cam1_s[..., 1:] - cam2_s[..., 1:]|                          (L1, over all B*20*h*w)
  ecr1    = top-k mean |max_onehot(sg(with_bg(cam2_s))) - cam_rv1_s|          (k = int(21 h w 0.2) per sample)
  ecr2    = top-k mean |max_onehot(sg(with_bg(cam1_s))) - cam_rv2_s|
  total   = (cls_1 + cls_2) / 2 + (rvmin_1 + rvmin_2) / 2 + er + ecr1 + ecr2

Official quirks reproduced (each is marked where it happens):
  * every resize is bilinear with align_corners=True; the rescaled size is floor(size * scale);
  * classification logits are the GAP of the cam upsampled to the input size, not of the OS8 map;
  * `max_norm` subtracts the per-map minimum after a ReLU: relu(p - min - 1e-5) / (max - min + 1e-5);
  * ER includes the absent classes (zero in both views after the label mask), which dilutes it on purpose;
  * ECR targets keep the *value* of the per-pixel fg maximum (not 1.0), their bg channel is 1 - max fg of the
    normalised, label-masked plain CAM, and they are detached; the predicted bg is the max-normalised PCM bg
    channel (not 1 - max); the top-k runs per sample over all 21 channels; ecr1 + ecr2 are summed;
  * the adaptive min-pooling loss acts on the un-normalised PCM output and keeps the h*w//4 smallest
    per-pixel fg maxima;
  * gradients: the PCM input and its backbone features are detached inside the model, so ecr/rvmin train only
    f8_3, f8_4, f9, and cls/er train the backbone and fc8; fc8's bg row gets no gradient at all.

All functions are pure jnp on float32 NHWC arrays and jit/grad friendly (shapes are static).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import chex
import jax
import jax.numpy as jnp

from jaxseg.models.resize import resize_bilinear

OFFICIAL_SCALE = 0.3
OFFICIAL_ECR_TOPK_FRACTION = 0.2
MAX_NORM_EPS = 1e-5

Transform = Callable[[jax.Array], jax.Array]


def _check_labels(labels: jax.Array, num_classes: int | None = None) -> None:
  chex.assert_rank(labels, 2)
  if num_classes is not None and labels.shape[-1] != num_classes:
    raise ValueError(
        f"labels must be [B, {num_classes}] foreground multi-hot, got shape {labels.shape}"
    )


def multilabel_soft_margin_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """PyTorch `F.multilabel_soft_margin_loss` (reduction='mean', no weights).

  Args:
    logits: [B, K] scores.
    labels: [B, K] targets in {0, 1} (float).
  Returns:
    scalar: mean over B of -mean_k [y log sigmoid(x) + (1 - y) log sigmoid(-x)].
  """
  chex.assert_rank([logits, labels], 2)
  chex.assert_equal_shape([logits, labels])
  logits = logits.astype(jnp.float32)
  labels = labels.astype(jnp.float32)
  per_class = labels * jax.nn.log_sigmoid(logits) + (1.0 - labels) * jax.nn.log_sigmoid(-logits)
  return -jnp.mean(jnp.mean(per_class, axis=-1))


def global_average_pool(cam: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, C] spatial mean (official `adaptive_avg_pool2d(cam, 1)`)."""
  chex.assert_rank(cam, 4)
  return jnp.mean(cam.astype(jnp.float32), axis=(1, 2))


def max_norm(cam: jax.Array, eps: float = MAX_NORM_EPS) -> jax.Array:
  """Official `tool/visualization.max_norm` (4-D torch branch), per (sample, channel) map.

  Args:
    cam: [B, H, W, C].
  Returns:
    float32 [B, H, W, C]: p = relu(cam); relu(p - min_hw p - eps) / (max_hw p - min_hw p + eps), in [0, 1).
  """
  chex.assert_rank(cam, 4)
  p = jax.nn.relu(cam.astype(jnp.float32))
  # QUIRK: the minimum is subtracted after the ReLU, and eps sits inside the ReLU and in the denominator.
  lo = jnp.min(p, axis=(1, 2), keepdims=True)
  hi = jnp.max(p, axis=(1, 2), keepdims=True)
  return jax.nn.relu(p - lo - eps) / (hi - lo + eps)


def rescaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
  """PyTorch's output size for `F.interpolate(scale_factor=scale)`: floor(size * scale) per axis (448 -> 134)."""
  out = tuple(int(math.floor(float(s) * scale)) for s in size)
  if min(out) < 1:
    raise ValueError(f"rescaling {tuple(size)} by {scale} gives an empty map {out}")
  return out  # type: ignore[return-value]


def rescale_view(
    images: jax.Array, scale: float = OFFICIAL_SCALE, align_corners: bool = True
) -> jax.Array:
  """The official transform between SEAM's two views: bilinear rescale, align_corners=True.

  `F.interpolate(x, scale_factor=scale, mode='bilinear', align_corners=True)`: the output size is
  floor(size * scale) and, with align_corners=True, the sampling grid ignores `scale` (corner to corner).
  Used on the images (view 2 = rescale_view(view 1)) and on view 1's CAMs (to compare them with view 2's).
  Any [B, H, W, C] -> [B, H', W', C] function that maps view-1 maps onto view 2 can replace it in `seam_loss`.

  Args:
    images: [B, H, W, C] (images or CAMs).
    align_corners: official True. False samples at pixel centres instead: with True the four corner
      pixels of both views coincide exactly, which a network trained from scratch can exploit (it learns
      to satisfy ER/ECR with activations in the image corners; seen on the synthetic demo).
  Returns:
    float32 [B, floor(H scale), floor(W scale), C].
  """
  chex.assert_rank(images, 4)
  return resize_bilinear(
      images, rescaled_size(images.shape[1:3], scale), align_corners=align_corners
  )


def with_background(cam: jax.Array) -> jax.Array:
  """Channel 0 replaced by 1 - max over channels 1.. ([B, H, W, C] -> same); official train l.131-132."""
  chex.assert_rank(cam, 4)
  return cam.at[..., 0].set(1.0 - jnp.max(cam[..., 1:], axis=-1))


def max_onehot(cam: jax.Array) -> jax.Array:
  """Official `max_onehot`: in channels 1.. every value != the per-pixel max over 1.. becomes 0.

  The maximum keeps its *value* (not 1.0) and channel 0 is untouched. [B, H, W, C] -> same.
  """
  chex.assert_rank(cam, 4)
  fg = cam[..., 1:]
  fg = jnp.where(fg != jnp.max(fg, axis=-1, keepdims=True), 0.0, fg)
  return jnp.concatenate([cam[..., :1], fg], axis=-1)


def adaptive_min_pooling_loss(cam: jax.Array) -> jax.Array:
  """Official `adaptive_min_pooling_loss` (not in the paper; it shifts the best bg threshold).

  Args:
    cam: [B, H, W, C] (official: the label-masked fg channels of the un-normalised PCM output).
  Returns:
    scalar: per sample the k = H*W//4 smallest per-pixel channel maxima, relu, summed, / (k * B).
  """
  chex.assert_rank(cam, 4)
  b, h, w, _ = cam.shape
  k = h * w // 4  # QUIRK: the 25% *smallest* per-pixel maxima are pushed to <= 0 (sum / (k * B))
  if k < 1:
    raise ValueError(f"adaptive_min_pooling_loss needs at least 4 pixels, got {h}x{w}")
  per_pixel = jnp.max(cam.astype(jnp.float32), axis=-1).reshape(b, h * w)
  smallest = -jax.lax.top_k(-per_pixel, k)[0]
  return jnp.sum(jax.nn.relu(smallest)) / (k * b)


def equivariant_regularization(cam1_s: jax.Array, cam2_s: jax.Array) -> jax.Array:
  """ER: mean |cam1_s - cam2_s| over the fg channels 1.. (L1, as official; absent classes included).

  Args:
    cam1_s: [B, h, w, C] view-1 CAM, max-normalised, transformed to view 2, label-masked.
    cam2_s: [B, h, w, C] view-2 CAM, max-normalised, label-masked.
  Returns:
    scalar.
  """
  chex.assert_rank([cam1_s, cam2_s], 4)
  chex.assert_equal_shape([cam1_s, cam2_s])
  # QUIRK: L1 (the L2 line is commented out officially), a plain mean that counts the absent classes' zeros.
  return jnp.mean(jnp.abs(cam1_s[..., 1:] - cam2_s[..., 1:]))


def ecr_error_map(cam_other_s: jax.Array, cam_rv_s: jax.Array) -> jax.Array:
  """|max_onehot(sg(with_background(cam_other_s))) - cam_rv_s| over all channels ([B, h, w, C] -> same).

  `cam_other_s` is the other view's max-normalised, label-masked plain CAM (its bg channel is replaced by
  1 - max fg and it is detached); `cam_rv_s` is this view's max-normalised, label-masked PCM output whose bg
  channel stays the propagated bg (official: not replaced).
  """
  chex.assert_equal_shape([cam_other_s, cam_rv_s])
  # QUIRK: the target keeps the max value (not 1.0); its bg is 1 - max fg while the prediction's bg channel is
  # the max-normalised PCM bg, not replaced. (Officially max_onehot writes in place into cam.detach(), which
  # only changes what gets logged.)
  target = max_onehot(jax.lax.stop_gradient(with_background(cam_other_s)))
  return jnp.abs(target - cam_rv_s)


def topk_mean(errors: jax.Array, fraction: float = OFFICIAL_ECR_TOPK_FRACTION) -> jax.Array:
  """Per-sample online hard example mining: mean of the k largest of the B x (h*w*C) errors.

  k = int(C * h * w * fraction) per sample (official int(21*hs*ws*0.2), 75415 for 134x134); the mean is over
  all B * k selected values. errors: [B, h, w, C] -> scalar.
  """
  chex.assert_rank(errors, 4)
  b, h, w, c = errors.shape
  k = int(c * h * w * fraction)  # QUIRK: official int(21*hs*ws*0.2), truncation of a float product
  if not 1 <= k <= c * h * w:
    raise ValueError(f"top-k fraction {fraction} gives k={k} for {c}x{h}x{w} elements")
  return jnp.mean(jax.lax.top_k(errors.reshape(b, -1).astype(jnp.float32), k)[0])


def equivariant_cross_regularization(
    cam1_s: jax.Array,
    cam2_s: jax.Array,
    cam_rv1_s: jax.Array,
    cam_rv2_s: jax.Array,
    *,
    topk_fraction: float = OFFICIAL_ECR_TOPK_FRACTION,
) -> tuple[jax.Array, jax.Array]:
  """ECR both ways: (top-k mean |target(cam2_s) - cam_rv1_s|, top-k mean |target(cam1_s) - cam_rv2_s|).

  All inputs [B, h, w, C] in view-2 space, max-normalised and label-masked (see `prepare_views`). The official
  total adds the two (not their mean).
  """
  chex.assert_equal_shape([cam1_s, cam2_s, cam_rv1_s, cam_rv2_s])
  return (
      topk_mean(ecr_error_map(cam2_s, cam_rv1_s), topk_fraction),
      topk_mean(ecr_error_map(cam1_s, cam_rv2_s), topk_fraction),
  )


def label_mask(labels: jax.Array) -> jax.Array:
  """[B, 20] foreground multi-hot -> [B, 1, 1, 21] with the bg slot set to 1 (always "present")."""
  _check_labels(labels)
  labels = labels.astype(jnp.float32)
  return jnp.concatenate([jnp.ones_like(labels[:, :1]), labels], axis=-1)[:, None, None, :]


def prepare_views(
    out1: Mapping[str, jax.Array],
    out2: Mapping[str, jax.Array],
    labels: jax.Array,
    transform: Transform = rescale_view,
) -> dict[str, jax.Array]:
  """The view-2-space maps ER and ECR compare (official names `cam1`, `cam_rv1`, `cam2`, `cam_rv2` after l.123).

  Args:
    out1, out2: model outputs of view 1 and view 2 with 'cam' and 'cam_rv' [B, h_v, w_v, C].
    labels: [B, C - 1] foreground multi-hot.
    transform: maps view-1 maps onto view 2 (the same function that made view 2 from view 1).
  Returns:
    {'cam1_s', 'cam_rv1_s', 'cam2_s', 'cam_rv2_s'}: float32 [B, h_2, w_2, C]; channel 0 is the max-normalised
    bg channel of each map (before ECR replaces it in the plain CAMs).
  """
  for name, out in (("out1", out1), ("out2", out2)):
    for key in ("cam", "cam_rv"):
      if key not in out:
        raise ValueError(
            f"seam loss: {name} has no {key!r} (keys {sorted(out)}); SEAM needs a model with "
            "use_pcm=True (use `cam_classification_loss` for the plain CAM baseline)"
        )
  _check_labels(labels, out1["cam"].shape[-1] - 1)
  for name, out in (("out1", out1), ("out2", out2)):
    if out["cam"].shape[0] != labels.shape[0]:
      raise ValueError(
          f"seam loss: labels batch {labels.shape[0]} != {name} batch {out['cam'].shape[0]}"
      )
  lbl = label_mask(labels)
  maps = {
      "cam1_s": transform(max_norm(out1["cam"])) * lbl,
      "cam_rv1_s": transform(max_norm(out1["cam_rv"])) * lbl,
      "cam2_s": max_norm(out2["cam"]) * lbl,
      "cam_rv2_s": max_norm(out2["cam_rv"]) * lbl,
  }
  chex.assert_equal_shape(list(maps.values()))
  return maps


def cam_classification_loss(cam: jax.Array, labels: jax.Array) -> jax.Array:
  """Multi-label soft-margin loss on GAP(cam)[:, 1:] (cam [B, H, W, C] raw logits, labels [B, C - 1])."""
  chex.assert_rank(cam, 4)
  _check_labels(labels, cam.shape[-1] - 1)
  # QUIRK: GAP of the full-resolution (align_corners=True upsampled) raw cam, not of the OS8 logits.
  return multilabel_soft_margin_loss(global_average_pool(cam)[:, 1:], labels)


def seam_loss(
    out1: Mapping[str, jax.Array],
    out2: Mapping[str, jax.Array],
    labels: jax.Array,
    *,
    transform: Transform = rescale_view,
    ecr_topk_fraction: float = OFFICIAL_ECR_TOPK_FRACTION,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The official SEAM objective for one batch (train_SEAM.py l.104-142), all weights 1.

  Args:
    out1: model outputs for view 1 (img1 [B, H, W, 3]): 'cam', 'cam_rv' [B, H, W, C].
    out2: model outputs for view 2 (img2 = transform(img1)): 'cam', 'cam_rv' [B, H2, W2, C].
    labels: [B, C - 1] foreground multi-hot (float or bool); the bg slot is added here.
    transform: view-1 -> view-2 map transform (default: the official 0.3 rescale, `rescale_view`).
    ecr_topk_fraction: share of each sample's C*H2*W2 ECR errors that is averaged (official 0.2).
  Returns:
    (total, terms): total = (cls1 + cls2)/2 + (rvmin1 + rvmin2)/2 + er + ecr1 + ecr2; terms has every scalar:
    'cls1', 'cls2', 'rvmin1', 'rvmin2', 'er', 'ecr1', 'ecr2', 'ecr' (= ecr1 + ecr2), 'cls' (official
    `loss_cls` = (cls1 + cls2)/2 + (rvmin1 + rvmin2)/2) and 'total'.
  """
  maps = prepare_views(out1, out2, labels, transform)
  lbl = label_mask(labels)
  terms = {
      "cls1": cam_classification_loss(out1["cam"], labels),
      "cls2": cam_classification_loss(out2["cam"], labels),
      # On the label-masked, un-normalised PCM output, at each view's own resolution.
      "rvmin1": adaptive_min_pooling_loss((out1["cam_rv"] * lbl)[..., 1:]),
      "rvmin2": adaptive_min_pooling_loss((out2["cam_rv"] * lbl)[..., 1:]),
      "er": equivariant_regularization(maps["cam1_s"], maps["cam2_s"]),
  }
  terms["ecr1"], terms["ecr2"] = equivariant_cross_regularization(
      maps["cam1_s"],
      maps["cam2_s"],
      maps["cam_rv1_s"],
      maps["cam_rv2_s"],
      topk_fraction=ecr_topk_fraction,
  )
  terms["ecr"] = terms["ecr1"] + terms["ecr2"]  # QUIRK: summed, while cls and rvmin are averaged
  terms["cls"] = (terms["cls1"] + terms["cls2"]) / 2 + (terms["rvmin1"] + terms["rvmin2"]) / 2
  terms["total"] = terms["cls"] + terms["er"] + terms["ecr"]
  return terms["total"], terms
