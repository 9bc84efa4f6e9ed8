"""Class-wise pseudo labels for self-training: ESL's entropy rule and BDL's max-probability baseline.

Official code: valeoai/ESL `advent/domain_adaptation/esl_UDA.py: extract_labels, compute_entropy` and
liyunsheng13/BDL `SSL.py: main`. Both take the segmenter's main logits for every target training image,
softmax them, upsample the *probabilities* bilinearly (align_corners=True) to the label size, and per pixel
keep the argmax class. Then, over all images at once, per class c with n_c pixels predicted c:

  median_c = sort(values of those pixels)[round(0.5 n_c)]   (numpy round-half-to-even; 0 if n_c == 0)

  ESL:  values = normalised entropy E in [0, 1];  thr_c = max(median_c, 0.1)   pixel -> 255 if E > thr_c
  BDL:  values = max probability p;                thr_c = min(median_c, 0.9)   pixel -> 255 if p < thr_c

Pixels equal to their threshold are kept. Values are float32 (the official code computes them in float32
and stores them in float64 arrays); thresholds are float64 and every comparison is done in float64, as
the official numpy code does (0.1 and 0.9 are not float32 numbers, so a float32 comparison could differ).

Two ways to get the thresholds, with identical results:
  * `class_medians` - the official all-in-RAM formula (sorts every value; fine for tests and small sets).
  * the bounded-memory dataset pass (`dataset_class_medians`): two passes over the images. Each float32
    value is mapped to an order-preserving 32-bit key; the first pass counts, per class, the keys' upper
    16 bits (2**16 bins), which locates the bin holding rank round(0.5 n_c); the second pass counts the
    lower 16 bits of the keys inside that bin only, which pins down the exact value. Memory is two
    [C, 65536] int64 tables (10 MB for 19 classes) whatever the dataset size (the official code holds two
    float64 arrays of 3000 x 512 x 1024, 12.6 GB each), and the tables of several hosts simply add up.
Differences from the official ESL script (documented in shared/notes/esl.md): it computes the thresholds
in chunks of `MAX_MEDIAN_BATCH = 3000` images (Cityscapes train has 2975, so one chunk; past 3000 its tail
chunk would include zero-filled slots); here the thresholds are always over the whole set. NaN values
(the official entropy has no epsilon, so a probability that underflows to 0 gives NaN; jaxseg's
`normalized_entropy` takes 0 log 0 = 0 instead) are handled as numpy does: they sort last and are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.losses.entropy import normalized_entropy
from jaxseg.models.resize import resize_bilinear
from jaxseg.train.multihost import sum_over_processes

IGNORE_LABEL = 255
ESL_ENTROPY_FLOOR = 0.1  # ESL cfg.ESL.THRESHOLD
MAXPROB_CAP = 0.9  # BDL SSL.py `thres[thres > 0.9] = 0.9`

_LOW_BITS = 16
NUM_BINS = 1 << _LOW_BITS  # bins per class in each pass (upper / lower 16 bits of a 32-bit key)
_SIGN_BIT = np.uint32(0x80000000)


# ------------------------------------------------------------------------------------------------------------
# Per-image prediction maps (JAX).


def prediction_maps(logits: jax.Array, size: tuple[int, int] | None = None) -> dict[str, jax.Array]:
  """Argmax label, ESL entropy and max probability of segmenter logits, in the official order.

  Args:
    logits: float [B, h, w, C] main-head logits.
    size: (H, W) label size; the softmax probabilities (not the logits) are upsampled bilinearly with
      align_corners=True, as ESL's and BDL's `interp(softmax(pred))`. None keeps (h, w).
  Returns:
    {'label': int32 [B, H, W] argmax class (first one on ties, like np.argmax),
     'entropy': float32 [B, H, W] normalised entropy -(1 / ln C) sum_c p ln p,
     'maxprob': float32 [B, H, W] max_c p}.
  """
  chex.assert_rank(logits, 4)
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  if size is not None and tuple(size) != tuple(probs.shape[1:3]):
    probs = resize_bilinear(probs, size, align_corners=True)
  return {
      "label": jnp.argmax(probs, axis=-1).astype(jnp.int32),
      "entropy": normalized_entropy(probs),
      "maxprob": jnp.max(probs, axis=-1),
  }


# ------------------------------------------------------------------------------------------------------------
# Thresholds and labels, all values in RAM (the official formula).


def median_rank(count: int | np.ndarray) -> np.ndarray:
  """`int(np.round(0.5 * count))` in integer arithmetic: the index ESL / BDL take from the sorted values.

  Round-half-to-even makes it the upper median for even counts; for count = 2k + 1 it is k when k is
  even and k + 1 when k is odd. 0 for count 0.
  """
  count = np.asarray(count, np.int64)
  half = count // 2
  return half + (count % 2) * (half % 2)


def class_medians(values: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Official per-class order statistic: sort(values[labels == c])[round(0.5 n_c)], 0 for absent classes.

  Args:
    values: float [...] per-pixel entropy (ESL) or max probability (BDL), any layout.
    labels: int [...] same shape, predicted class per pixel; labels outside [0, num_classes) are skipped.
    num_classes: C.
  Returns:
    float64 [C] raw thresholds (before ESL's floor / BDL's cap).
  """
  values = np.asarray(values).reshape(-1)
  labels = np.asarray(labels).reshape(-1)
  if values.shape != labels.shape:
    raise ValueError(f"values and labels differ in size: {values.shape} vs {labels.shape}")
  out = np.zeros(num_classes, np.float64)
  for c in range(num_classes):
    x = np.sort(values[labels == c].astype(np.float64))  # NaN sorts last, as in the official code
    if x.size:
      out[c] = x[int(median_rank(x.size))]
  return out


def floor_thresholds(raw: np.ndarray, floor: float = ESL_ENTROPY_FLOOR) -> np.ndarray:
  """ESL: `thres[thres < floor] = floor` (float64 [C]; NaN stays NaN)."""
  thresholds = np.array(raw, np.float64)
  thresholds[thresholds < floor] = floor
  return thresholds


def cap_thresholds(raw: np.ndarray, cap: float = MAXPROB_CAP) -> np.ndarray:
  """BDL: `thres[thres > cap] = cap` (float64 [C]; NaN stays NaN)."""
  thresholds = np.array(raw, np.float64)
  thresholds[thresholds > cap] = cap
  return thresholds


def esl_thresholds(
    entropy: np.ndarray, labels: np.ndarray, num_classes: int, floor: float = ESL_ENTROPY_FLOOR
) -> np.ndarray:
  """ESL's class-wise entropy thresholds over all given pixels: float64 [C] (absent class -> floor)."""
  return floor_thresholds(class_medians(entropy, labels, num_classes), floor)


def maxprob_thresholds(
    maxprob: np.ndarray, labels: np.ndarray, num_classes: int, cap: float = MAXPROB_CAP
) -> np.ndarray:
  """BDL's class-wise max-probability thresholds over all given pixels: float64 [C] (absent class -> 0)."""
  return cap_thresholds(class_medians(maxprob, labels, num_classes), cap)


def _reject_pixels(
    labels: np.ndarray, reject: Callable[[np.ndarray, np.ndarray], np.ndarray], values, thresholds
) -> np.ndarray:
  labels = np.asarray(labels)
  thresholds = np.asarray(thresholds, np.float64)
  valid = (labels >= 0) & (labels < thresholds.shape[0])
  pixel_threshold = thresholds[np.where(valid, labels, 0)]
  rejected = valid & reject(np.asarray(values).astype(np.float64), pixel_threshold)
  return np.where(rejected, IGNORE_LABEL, labels).astype(np.uint8)


def esl_pseudo_labels(
    labels: np.ndarray, entropy: np.ndarray, thresholds: np.ndarray
) -> np.ndarray:
  """ESL labels: the predicted class, 255 where entropy > its class's threshold (strict).

  Args:
    labels: int [...] predicted classes (e.g. [H, W] or [B, H, W]); values outside [0, C) pass through.
    entropy: float [...] same shape, normalised entropy.
    thresholds: float64 [C] (`esl_thresholds` / `dataset_esl_thresholds`).
  Returns:
    uint8 [...].
  """
  return _reject_pixels(labels, np.greater, entropy, thresholds)


def maxprob_pseudo_labels(
    labels: np.ndarray, maxprob: np.ndarray, thresholds: np.ndarray
) -> np.ndarray:
  """BDL labels: the predicted class, 255 where max probability < its class's threshold (strict).

  Args and result as `esl_pseudo_labels`, with `maxprob` float [...] and `maxprob_thresholds`.
  """
  return _reject_pixels(labels, np.less, maxprob, thresholds)


# ------------------------------------------------------------------------------------------------------------
# Bounded-memory dataset pass: exact order statistics from two histogram passes.


def float32_order_keys(values: np.ndarray) -> np.ndarray:
  """uint32 keys with key(a) < key(b) iff a < b for float32 values (flattened).

  -0.0 is folded into +0.0 and every NaN into one positive NaN, whose key is above +inf (numpy sorts NaN
  last). Inputs must be float32 or narrower, so that every value has an exact float32 key.
  """
  values = np.asarray(values)
  if values.dtype.kind != "f" or values.dtype.itemsize > 4:
    raise TypeError(
        f"order keys need float32 (or narrower) values, got {values.dtype}: a wider value could not "
        "be binned exactly (the official values are float32)"
    )
  values = values.astype(np.float32).reshape(-1) + np.float32(0.0)  # -0.0 + 0.0 = +0.0
  values = np.where(np.isnan(values), np.float32(np.nan), values)
  bits = values.view(np.uint32)
  # Positive floats order like their bit patterns: set the sign bit to put them above the negatives.
  # Negative floats order reversed: flip every bit.
  return np.where((bits & _SIGN_BIT) != 0, ~bits, bits | _SIGN_BIT)


def float32_from_order_keys(keys: np.ndarray) -> np.ndarray:
  """Inverse of `float32_order_keys`: uint32 keys -> float32 values."""
  keys = np.asarray(keys, np.uint32)
  bits = np.where((keys & _SIGN_BIT) != 0, keys ^ _SIGN_BIT, ~keys)
  return bits.astype(np.uint32).view(np.float32)


def _class_keys(values: np.ndarray, labels: np.ndarray, num_classes: int):
  """(keys uint32 [N], labels int64 [N]) of the pixels whose label is a class in [0, num_classes)."""
  keys = float32_order_keys(values)
  labels = np.asarray(labels).reshape(-1).astype(np.int64)
  if keys.shape != labels.shape:
    raise ValueError(f"values and labels differ in size: {keys.shape} vs {labels.shape}")
  keep = (labels >= 0) & (labels < num_classes)
  return keys[keep], labels[keep]


def first_pass_histogram(values: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Per-class counts of the keys' upper 16 bits for one image (or batch): int64 [C, 65536].

  Sum it over every image (and host) of the set; `locate_median_bins` then picks the bin of each median.
  """
  keys, labels = _class_keys(values, labels, num_classes)
  flat = labels * NUM_BINS + (keys >> _LOW_BITS).astype(np.int64)
  return np.bincount(flat, minlength=num_classes * NUM_BINS).reshape(num_classes, NUM_BINS)


def locate_median_bins(first_histogram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """From the summed first-pass histogram: (bin int64 [C], rank within that bin int64 [C]).

  bin is the upper-16-bit bin that holds sorted index `median_rank(n_c)`; -1 for an absent class.
  """
  first_histogram = np.asarray(first_histogram, np.int64)
  counts = first_histogram.sum(axis=1)
  ranks = median_rank(counts)
  cumulative = np.cumsum(first_histogram, axis=1)
  bins = (cumulative <= ranks[:, None]).sum(
      axis=1
  )  # first bin whose running count exceeds the rank
  before = np.where(
      bins > 0, np.take_along_axis(cumulative, np.maximum(bins - 1, 0)[:, None], 1)[:, 0], 0
  )
  present = counts > 0
  return np.where(present, bins, -1), np.where(present, ranks - before, 0)


def second_pass_histogram(
    values: np.ndarray, labels: np.ndarray, num_classes: int, bins: np.ndarray
) -> np.ndarray:
  """Per-class counts of the lower 16 bits of the keys that fall in their class's median bin: int64 [C, 65536].

  Args:
    values, labels: one image (or batch), as in `first_pass_histogram`.
    bins: int [C] from `locate_median_bins` (of the first-pass histogram summed over the whole set).
  """
  keys, labels = _class_keys(values, labels, num_classes)
  inside = (keys >> _LOW_BITS).astype(np.int64) == np.asarray(bins, np.int64)[labels]
  flat = labels[inside] * NUM_BINS + (keys[inside] & (NUM_BINS - 1)).astype(np.int64)
  return np.bincount(flat, minlength=num_classes * NUM_BINS).reshape(num_classes, NUM_BINS)


def medians_from_histograms(
    first_histogram: np.ndarray, second_histogram: np.ndarray
) -> np.ndarray:
  """Exact `class_medians` from the two summed histograms: float64 [C], 0 for absent classes.

  Raises ValueError when the passes saw different data (the second pass's count in a class's median bin
  differs from the first's, e.g. a non-deterministic model or a different image list).
  """
  first_histogram = np.asarray(first_histogram, np.int64)
  second_histogram = np.asarray(second_histogram, np.int64)
  bins, rank_in_bin = locate_median_bins(first_histogram)
  present = bins >= 0
  expected = np.where(
      present, np.take_along_axis(first_histogram, np.maximum(bins, 0)[:, None], 1)[:, 0], 0
  )
  found = second_histogram.sum(axis=1)
  if not np.array_equal(expected, found):
    bad = np.flatnonzero(expected != found).tolist()
    raise ValueError(
        f"the two pseudo-label passes disagree for classes {bad}: {expected[bad].tolist()} values in "
        f"the median bin in pass 1, {found[bad].tolist()} in pass 2 (the predictions must not change "
        "between passes)"
    )
  low = (np.cumsum(second_histogram, axis=1) <= rank_in_bin[:, None]).sum(axis=1)
  keys = (np.maximum(bins, 0).astype(np.uint64) << _LOW_BITS) | low.astype(np.uint64)
  medians = float32_from_order_keys(keys.astype(np.uint32)).astype(np.float64)
  return np.where(present, medians, 0.0)


def merge_counts(
    counts: np.ndarray, sum_fn: Callable[[np.ndarray], np.ndarray] = sum_over_processes
) -> np.ndarray:
  """Sum of int64 count tables over hosts, exact past 2**31.

  `sum_over_processes` goes through JAX arrays, which are 32-bit unless x64 is on; so the counts travel
  as four 16-bit limbs in int32 (exact for up to 32768 hosts) and are reassembled in int64.
  """
  counts = np.asarray(counts, np.int64)
  if np.any(counts < 0):
    raise ValueError("counts must be non-negative")
  limbs = np.stack([(counts >> (16 * i)) & 0xFFFF for i in range(4)]).astype(np.int32)
  summed = np.asarray(sum_fn(limbs)).astype(np.int64)
  return sum(summed[i] << (16 * i) for i in range(4))


def dataset_class_medians(
    iterate_share: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]],
    num_classes: int,
    *,
    sum_fn: Callable[[np.ndarray], np.ndarray] = sum_over_processes,
) -> np.ndarray:
  """`class_medians` over a whole dataset in bounded memory, sharded over hosts: float64 [C].

  Args:
    iterate_share: called once per pass (twice); yields (values, labels) for this process's share of
      the images (e.g. `jaxseg.train.multihost.process_indices(num_images)`), values float32 and labels
      int of one shape ([H, W] or a batch). Both passes must yield the same values.
    num_classes: C.
    sum_fn: sums a host array over processes (the default is exact for one or many processes).
  Returns:
    float64 [C], bit-identical to `class_medians` on all the values at once.
  """
  first = np.zeros((num_classes, NUM_BINS), np.int64)
  for values, labels in iterate_share():
    first += first_pass_histogram(values, labels, num_classes)
  first = merge_counts(first, sum_fn)
  bins, _ = locate_median_bins(first)
  second = np.zeros((num_classes, NUM_BINS), np.int64)
  for values, labels in iterate_share():
    second += second_pass_histogram(values, labels, num_classes, bins)
  second = merge_counts(second, sum_fn)
  return medians_from_histograms(first, second)


def dataset_esl_thresholds(
    iterate_share: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]],
    num_classes: int,
    floor: float = ESL_ENTROPY_FLOOR,
    **kwargs,
) -> np.ndarray:
  """`esl_thresholds` over a dataset (yield (entropy, labels)): float64 [C]."""
  return floor_thresholds(dataset_class_medians(iterate_share, num_classes, **kwargs), floor)


def dataset_maxprob_thresholds(
    iterate_share: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]],
    num_classes: int,
    cap: float = MAXPROB_CAP,
    **kwargs,
) -> np.ndarray:
  """`maxprob_thresholds` over a dataset (yield (maxprob, labels)): float64 [C]."""
  return cap_thresholds(dataset_class_medians(iterate_share, num_classes, **kwargs), cap)
