"""SEAM CAM inference: multi-scale + flip fusion, pseudo labels and the background-threshold sweep.

Follows the official `infer_SEAM.py` / `evaluation.py` (YudeWang/SEAM @ 3212261):

  * inputs (`voc12/data.py` VOC12ClsDatasetMSF): for each scale s in [0.5, 1.0, 1.5, 2.0] the RGB image is
    resized with PIL bicubic to (round(W s), round(H s)) (Python 3 round: half to even), normalised, and
    followed by its horizontal flip: 8 passes;
  * per pass (eval mode): the model's *second* output `cam_rv` (PCM-refined; the plain fc8 cam is not used),
    channel 0 dropped, bilinear upsample to the original size with align_corners=False (unlike the model's
    internal align_corners=True), times the 20-d image label, flipped passes flipped back;
  * fusion: the **sum** over passes, negatives set to 0, then per class
    sum[sum < min + 1e-5] = 0; norm = (sum - min - 1e-5) / (max - min + 1e-5).
    Quirk kept: with min > 0 the zeroed minimum pixels become -(min + 1e-5) / (max - min + 1e-5) (< 0, maybe
    far below); absent classes come out as exactly -1;
  * hard pseudo label: argmax over [constant bg score (default 0.26), the 20 normalised CAMs];
  * evaluation: 21-class IoU accumulated over all images (255 ignored, in predictions too), mIoU = plain
    mean over the 21 classes, a class absent from both ground truth and predictions counting as IoU 0;
    `--curve` sweeps the bg score t = 0.00, 0.01, ..., 0.59 on the saved present-class CAMs.

Batching: each scale's image and its flip run as one batch of 2 through `apply_fn` (eval mode makes the
samples independent), so a jitted `apply_fn` compiles once per input size.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxseg.evaluation.miou import confusion_matrix, segmentation_metrics
from jaxseg.models.resize import resize_bilinear

OFFICIAL_SCALES = (0.5, 1.0, 1.5, 2.0)
OFFICIAL_BG_THRESHOLD = 0.26
OFFICIAL_THRESHOLD_SWEEP = tuple(i / 100.0 for i in range(60))  # evaluation.py --curve
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ApplyFn = Callable[[Any, jax.Array], Mapping[str, jax.Array] | jax.Array]


def normalize_image(image: np.ndarray) -> np.ndarray:
  """uint8 RGB [H, W, 3] -> float32 [H, W, 3]: (x / 255 - mean) / std per channel (official `Normalize`)."""
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(
        f"normalize_image expects a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}"
    )
  out = np.empty(image.shape, np.float32)
  for c in range(3):
    out[..., c] = (image[..., c] / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
  return out


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
  """(round(H s), round(W s)) with Python's round (banker's rounding, as official)."""
  size = (int(round(height * scale)), int(round(width * scale)))
  if min(size) < 1:
    raise ValueError(f"scale {scale} shrinks a {height}x{width} image to nothing ({size})")
  return size


def _resize_bicubic(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """PIL bicubic resize to size = (H, W): uint8 RGB as one image, float per channel in mode 'F'."""
  h, w = size
  if image.dtype == np.uint8:
    return np.asarray(Image.fromarray(image).resize((w, h), resample=Image.BICUBIC))
  channels = [
      np.asarray(
          Image.fromarray(np.ascontiguousarray(image[..., c], np.float32), mode="F").resize(
              (w, h), resample=Image.BICUBIC
          )
      )
      for c in range(image.shape[-1])
  ]
  return np.stack(channels, axis=-1)


def multiscale_inputs(
    image: np.ndarray, scales: Sequence[float] = OFFICIAL_SCALES
) -> list[np.ndarray]:
  """Network inputs of the official multi-scale inference (no flips; `multiscale_cams` adds them).

  Args:
    image: uint8 RGB [H, W, 3] (official: resized with PIL bicubic, then normalised), or an already normalised
      float [H, W, 3] (resized channel by channel with PIL bicubic in float mode: no uint8 rounding/clipping,
      so not bit-identical to the uint8 path).
    scales: resize factors.
  Returns:
    float32 [round(H s), round(W s), 3] normalised images, one per scale.
  """
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"multiscale_inputs expects an RGB image [H, W, 3], got shape {image.shape}")
  if image.dtype != np.uint8 and not np.issubdtype(image.dtype, np.floating):
    raise ValueError(
        f"multiscale_inputs expects uint8 or normalised float pixels, got {image.dtype}"
    )
  out = []
  for s in scales:
    resized = _resize_bicubic(image, scaled_size(*image.shape[:2], s))
    out.append(normalize_image(resized) if image.dtype == np.uint8 else resized.astype(np.float32))
  return out


@functools.partial(jax.jit, static_argnames=("out_size",))
def _upsample_fg(cams: jax.Array, labels: jax.Array, out_size: tuple[int, int]) -> jax.Array:
  """[N, h, w, K + 1] -> float32 [N, K, H, W]: bg slot dropped, align_corners=False resize, times the label."""
  up = resize_bilinear(cams[..., 1:], out_size, align_corners=False) * labels.astype(jnp.float32)
  return jnp.transpose(up, (0, 3, 1, 2))


def pass_cams(
    apply_fn: ApplyFn,
    variables: Any,
    inputs: Iterable[np.ndarray],
    labels: np.ndarray,
    out_size: tuple[int, int],
    *,
    flip: bool = True,
    output: str = "cam_rv",
) -> np.ndarray:
  """The per-pass CAMs of the official inference, in pass order (scale 0, its flip, scale 1, ...).

  Args:
    apply_fn: (variables, images [N, h, w, 3]) -> dict of model outputs (or directly the [N, h, w, K + 1]
      map to use), eval mode, e.g. a jitted `lambda v, x: model.apply(v, x, train=False)`.
    variables: the model variables.
    inputs: normalised float [h, w, 3] images (`multiscale_inputs`).
    labels: [K] image-level label (multi-hot, K = 20 for VOC; used as a multiplier, as official).
    out_size: (H, W) of the original image.
    flip: add the horizontally flipped pass after each scale (official True).
    output: key of the model output used when apply_fn returns a dict: [N, h, w, K + 1] with channel 0 = bg
      slot (official 'cam_rv', the PCM-refined CAM; 'cam' for the plain CAM baseline).
  Returns:
    float32 [P, K, H, W], P = (2 if flip else 1) * number of inputs.
  """
  return pass_cams_multi(
      apply_fn, variables, inputs, labels, out_size, flip=flip, outputs=(output,)
  )[output]


def pass_cams_multi(
    apply_fn: ApplyFn,
    variables: Any,
    inputs: Iterable[np.ndarray],
    labels: np.ndarray,
    out_size: tuple[int, int],
    *,
    flip: bool = True,
    outputs: Sequence[str] = ("cam_rv",),
) -> dict[str, np.ndarray]:
  """`pass_cams` for several model outputs from one forward pass per input.

  The raw CAM and the PCM CAM come out of the same forward; running it once per output (as a loop over
  `pass_cams` would) doubles the inference time for identical numbers.
  Returns:
    {output: float32 [P, K, H, W]} for each name in `outputs` (see `pass_cams`).
  """
  labels = np.asarray(labels, np.float32)
  if labels.ndim != 1 or labels.shape[0] < 1:
    raise ValueError(
        f"labels must be a [K] foreground multi-hot vector (K = 20 for VOC), "
        f"got shape {labels.shape}"
    )
  out_size = (int(out_size[0]), int(out_size[1]))
  passes = {name: [] for name in outputs}
  for x in inputs:
    x = np.asarray(x, np.float32)
    if x.ndim != 3 or x.shape[-1] != 3:
      raise ValueError(f"pass_cams inputs must be [h, w, 3] normalised images, got shape {x.shape}")
    batch = np.stack([x, x[:, ::-1]]) if flip else x[None]
    result = apply_fn(variables, jnp.asarray(batch))
    for output in outputs:
      if isinstance(result, Mapping):
        if output not in result:
          raise ValueError(f"model outputs have no {output!r} (keys: {sorted(result)})")
        cams = result[output]
      else:
        cams = result
      expected = (batch.shape[0], *x.shape[:2], labels.shape[0] + 1)
      if cams.shape != expected:
        raise ValueError(
            f"model output {output!r} has shape {cams.shape}; expected {expected} "
            "(input size, bg slot + one channel per label entry)"
        )
      per_pass = np.asarray(_upsample_fg(cams, jnp.asarray(labels), out_size))
      passes[output].append(per_pass[0])
      if flip:
        # The second pass saw the mirrored image: mirror it back.
        passes[output].append(per_pass[1][..., ::-1])
  return {name: np.stack(p).astype(np.float32) for name, p in passes.items()}


def fuse_cams(passes: np.ndarray) -> np.ndarray:
  """Official fusion of per-pass CAMs: sum, clip at 0, per-class min-max with the 1e-5 quirks.

  Args:
    passes: float [P, K, H, W] (already upsampled, label-masked and un-flipped).
  Returns:
    float32 [K, H, W]: sum[sum < 0] = 0; sum[sum < min + 1e-5] = 0; (sum - min - 1e-5) / (max - min + 1e-5),
    with min/max per class taken after the clipping at 0 and before the second zeroing.
  """
  passes = np.asarray(passes, np.float32)
  if passes.ndim != 4:
    raise ValueError(f"fuse_cams expects per-pass CAMs [P, K, H, W], got shape {passes.shape}")
  total = np.sum(passes, axis=0)
  total[total < 0] = 0
  hi = np.max(total, axis=(1, 2), keepdims=True)
  lo = np.min(total, axis=(1, 2), keepdims=True)
  total[total < lo + 1e-5] = 0
  return ((total - lo - 1e-5) / (hi - lo + 1e-5)).astype(np.float32)


def multiscale_cams(
    apply_fn: ApplyFn,
    variables: Any,
    image: np.ndarray,
    labels: np.ndarray,
    *,
    scales: Sequence[float] = OFFICIAL_SCALES,
    flip: bool = True,
    output: str = "cam_rv",
) -> np.ndarray:
  """Official multi-scale + flip SEAM CAM for one image.

  Args:
    apply_fn, variables: see `pass_cams`.
    image: uint8 RGB [H, W, 3] (or normalised float, see `multiscale_inputs`).
    labels: [K] image-level label (K = 20 for VOC).
    scales, flip, output: official (0.5, 1.0, 1.5, 2.0), True, 'cam_rv'.
  Returns:
    float32 [K, H, W] fused, normalised CAM (`fuse_cams`); absent classes are -1 everywhere.
  """
  image = np.asarray(image)
  inputs = multiscale_inputs(image, scales)
  return fuse_cams(
      pass_cams(apply_fn, variables, inputs, labels, image.shape[:2], flip=flip, output=output)
  )


def multiscale_cams_multi(
    apply_fn: ApplyFn,
    variables: Any,
    image: np.ndarray,
    labels: np.ndarray,
    *,
    scales: Sequence[float] = OFFICIAL_SCALES,
    flip: bool = True,
    outputs: Sequence[str] = ("cam_rv", "cam"),
) -> dict[str, np.ndarray]:
  """`multiscale_cams` for several model outputs with one forward pass per input (same numbers).

  Returns:
    {output: float32 [K, H, W]} fused, normalised CAMs, one per name in `outputs`.
  """
  image = np.asarray(image)
  inputs = multiscale_inputs(image, scales)
  passes = pass_cams_multi(
      apply_fn, variables, inputs, labels, image.shape[:2], flip=flip, outputs=tuple(outputs)
  )
  return {name: fuse_cams(p) for name, p in passes.items()}


def present_classes(labels: np.ndarray) -> np.ndarray:
  """0-based foreground class ids with label > 1e-5 (the keys of the official saved cam dict)."""
  return np.nonzero(np.asarray(labels) > 1e-5)[0]


def pseudo_label(
    cams: np.ndarray | jax.Array,
    labels: np.ndarray | jax.Array,
    bg_threshold: float = OFFICIAL_BG_THRESHOLD,
) -> np.ndarray:
  """Hard pseudo label: argmax over [bg_threshold, CAM of each present class].

  Args:
    cams: [K, H, W] fused CAMs (`multiscale_cams`; K = 20 for VOC).
    labels: [K] image label; absent classes never win (as in both official paths: their saved value is -1,
      or 0 in the .npy evaluation where a bg score >= 0 comes first on ties).
    bg_threshold: constant background score (>= 0; official 0.26).
  Returns:
    uint8 [H, W]: 0 = background, c + 1 = foreground class c (strictly above the bg score to win).
  """
  if bg_threshold < 0:
    raise ValueError(
        f"bg_threshold must be >= 0 (the official .npy evaluation differs below 0), "
        f"got {bg_threshold}"
    )
  cams = jnp.asarray(cams, jnp.float32)
  labels = jnp.asarray(labels)
  chex.assert_rank(cams, 3)
  chex.assert_shape(labels, (cams.shape[0],))
  return np.asarray(_pseudo_labels(cams, labels, jnp.asarray([bg_threshold], jnp.float32))[0])


@jax.jit
def _pseudo_labels(cams: jax.Array, labels: jax.Array, thresholds: jax.Array) -> jax.Array:
  """[K, H, W], [K], [T] -> uint8 [T, H, W].

  Same as np.argmax over [t, cams of the present classes] (ties to the lower index, so bg wins a tie): the
  best present class wins where its score is strictly above t.
  """
  masked = jnp.where((labels > 1e-5)[:, None, None], cams, -jnp.inf)
  best, winner = jnp.max(masked, axis=0), jnp.argmax(masked, axis=0)
  preds = jnp.where(best[None] > thresholds[:, None, None], winner[None] + 1, 0)
  return preds.astype(jnp.uint8)


@functools.partial(jax.jit, static_argnames=("num_classes", "ignore_index"))
def _sweep_confusions(
    cams: jax.Array,
    labels: jax.Array,
    gt: jax.Array,
    thresholds: jax.Array,
    *,
    num_classes: int,
    ignore_index: int,
) -> jax.Array:
  """int32 [T, C, C] confusion matrices of one image's pseudo labels, one per threshold."""
  preds = _pseudo_labels(cams, labels, thresholds)
  return jax.vmap(lambda pred: confusion_matrix(gt, pred, num_classes, ignore_index))(preds)


def _pad_to(x: np.ndarray, multiple: int, value) -> np.ndarray:
  """Pads the last two axes up to a multiple of `multiple` (fewer distinct shapes = fewer compilations)."""
  h, w = x.shape[-2:]
  pad = [(0, 0)] * (x.ndim - 2) + [(0, -h % multiple), (0, -w % multiple)]
  return np.pad(x, pad, constant_values=value)


def official_miou(confusion: np.ndarray) -> tuple[np.ndarray, float]:
  """Per-class IoU and mIoU as the official `evaluation.py` averages them.

  Uses `jaxseg.evaluation.miou.segmentation_metrics`, whose mean skips classes absent from both ground truth
  and predictions; the official mean counts them as IoU 0 (TP / (T + P - TP + 1e-10) = 0).
  Returns (iou float64 [C], miou).
  """
  iou = np.nan_to_num(segmentation_metrics(confusion)["iou"], nan=0.0)
  return iou, float(np.mean(iou))


def threshold_sweep(
    cams: Iterable[np.ndarray],
    labels: Iterable[np.ndarray],
    ground_truths: Iterable[np.ndarray],
    thresholds: Sequence[float] = OFFICIAL_THRESHOLD_SWEEP,
    *,
    num_classes: int | None = None,
    ignore_index: int = 255,
    pad_multiple: int = 64,
) -> dict[str, Any]:
  """mIoU of the CAM pseudo labels for each background threshold (official `evaluation.py --curve`).

  Args:
    cams: per image float [K, H, W] fused CAMs (K = 20 for VOC).
    labels: per image [K] image label.
    ground_truths: per image int [H, W] class ids (0 = bg, 1..K, `ignore_index` ignored).
    thresholds: bg scores to try (official 0.00 .. 0.59).
    num_classes: C = K + 1 (21 for VOC); None = taken from the CAMs. A mismatch raises.
    pad_multiple: images are padded (ground truth with `ignore_index`) to a multiple of this, so the jitted
      counting compiles once per size bucket rather than once per image size; padding is never counted.
  Returns:
    {'thresholds': float64 [T], 'miou': float64 [T], 'iou': float64 [T, K + 1], 'confusion': int64 [T, C, C],
     'best_threshold': float, 'best_miou': float}; the mIoU is the official (K + 1)-class mean
     (`official_miou`), accumulated over all images as the official evaluation does.
  """
  sweep = ThresholdSweep(
      thresholds, num_classes=num_classes, ignore_index=ignore_index, pad_multiple=pad_multiple
  )
  for cam, label, gt in zip(cams, labels, ground_truths, strict=True):
    sweep.add(cam, label, gt)
  return sweep.result()


class ThresholdSweep:
  """Accumulates `threshold_sweep` one image at a time (several CAM outputs in one pass over the data).

  `add(cam [K, H, W], label [K], gt [H, W])` per image, then `result()`: the dict `threshold_sweep` returns.
  """

  def __init__(
      self,
      thresholds: Sequence[float] = OFFICIAL_THRESHOLD_SWEEP,
      *,
      num_classes: int | None = None,
      ignore_index: int = 255,
      pad_multiple: int = 64,
  ):
    thr = np.asarray(thresholds, np.float32)
    if thr.ndim != 1 or thr.shape[0] == 0 or np.any(thr < 0):
      raise ValueError(f"thresholds must be a non-empty list of values >= 0, got {thresholds}")
    self.thresholds = thresholds
    self.num_classes = num_classes
    self.ignore_index = ignore_index
    self.pad_multiple = pad_multiple
    self._thr = thr
    self._total = None
    self._count = 0

  def add(self, cam: np.ndarray, label: np.ndarray, gt: np.ndarray) -> None:
    index = self._count
    cam, label, gt = np.asarray(cam, np.float32), np.asarray(label, np.float32), np.asarray(gt)
    if cam.ndim != 3 or gt.shape != cam.shape[1:] or label.shape != cam.shape[:1]:
      raise ValueError(
          f"image {index}: cams {cam.shape}, label {label.shape} and ground truth {gt.shape} do "
          "not match (expected [K, H, W], [K] and [H, W])"
      )
    if self.num_classes is None:
      self.num_classes = cam.shape[0] + 1
    if cam.shape[0] + 1 != self.num_classes:
      raise ValueError(
          f"image {index}: {cam.shape[0]} CAM channels, expected num_classes - 1 = "
          f"{self.num_classes - 1}"
      )
    counts = _sweep_confusions(
        jnp.asarray(_pad_to(cam, self.pad_multiple, 0.0)),
        jnp.asarray(label),
        jnp.asarray(_pad_to(gt.astype(np.int32), self.pad_multiple, self.ignore_index)),
        jnp.asarray(self._thr),
        num_classes=self.num_classes,
        ignore_index=self.ignore_index,
    )
    counts = np.asarray(counts, np.int64)
    self._total = counts if self._total is None else self._total + counts
    self._count += 1

  def result(self) -> dict[str, Any]:
    if self._total is None:
      raise ValueError("threshold_sweep got no images")
    total = self._total
    ious, mious = zip(*(official_miou(c) for c in total))
    mious = np.asarray(mious)
    best = int(np.argmax(mious))
    return {
        "thresholds": np.asarray(self.thresholds, np.float64),
        "miou": mious,
        "iou": np.stack(ious),
        "confusion": total,
        "best_threshold": float(np.asarray(self.thresholds)[best]),
        "best_miou": float(mious[best]),
    }


def predicted_labels(apply_fn: ApplyFn, variables: Any, image: np.ndarray) -> np.ndarray:
  """float32 [K] multi-hot of the classes the network itself finds in an unlabelled image.

  The classifier training optimises: GAP of the full-resolution raw CAM ('cam'), foreground channels,
  positive logit (sigmoid > 0.5), on the image at scale 1.
  """
  x = normalize_image(np.asarray(image)) if np.asarray(image).dtype == np.uint8 else image
  out = apply_fn(variables, jnp.asarray(np.asarray(x, np.float32)[None]))
  scores = np.asarray(jnp.mean(out["cam"].astype(jnp.float32), axis=(1, 2)))[0, 1:]
  return (scores > 0).astype(np.float32)


def predict_cam_mask(
    apply_fn: ApplyFn,
    variables: Any,
    image: np.ndarray,
    *,
    scales: Sequence[float] = OFFICIAL_SCALES,
    flip: bool = True,
    bg_threshold: float = OFFICIAL_BG_THRESHOLD,
    output: str = "cam_rv",
    labels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """A SEAM network's mask of an image without ground-truth labels (the official inference needs them).

  Args:
    apply_fn: (variables, images) -> the model's output dict ('cam', `output`), eval mode.
    image: uint8 RGB [H, W, 3].
    labels: [K] image-level classes to use; None = `predicted_labels` (the network's own classifier).
  Returns:
    (uint8 [H, W] mask: 0 = background, c + 1 = class c; float32 [K] the classes used).
  """
  image = np.asarray(image)
  if labels is None:
    labels = predicted_labels(apply_fn, variables, image)
  labels = np.asarray(labels, np.float32)
  if not labels.any():  # nothing found: official `pseudo_label` would still need one class
    return np.zeros(image.shape[:2], np.uint8), labels
  cams = multiscale_cams(
      apply_fn, variables, image, labels, scales=scales, flip=flip, output=output
  )
  return pseudo_label(cams, labels, bg_threshold), labels
