"""DAVIS-2017 semi-supervised video object segmentation evaluation: J (region), F (boundary), J&F.

Same numbers as the official davis2017-evaluation (`davis2017/metrics.py`, `utils.py::db_statistics`,
`evaluation.py`; tested against its outputs in tests/test_davis_eval.py), in numpy + scipy, without OpenCV
or scikit-image:

  * J = |S n G| / |S u G| per frame and object; 1 when the union is empty.
  * F: one-pixel boundary maps (`boundary_map`, the official `_seg2bmap` with its last-row/column rule), each
    dilated by a disk of radius ceil(0.008 * image diagonal) (8 px at 480x854); precision / recall of the
    matched boundary pixels; F = 2PR / (P + R). Empty-boundary cases as the official code (P = R = 1 when
    both are empty, ...). The dilation is computed exactly as "Euclidean distance to the boundary <= r"
    (the disk is x^2 + y^2 <= r^2), which equals cv2.dilate with skimage's disk and is O(pixels).
  * Per object: mean, recall (fraction of frames > 0.5) and decay (mean of the first quarter of the frames
    minus the last quarter, the official bin indices, including their uint8 cast).
  * Global: every statistic averaged over all objects of all sequences (not per sequence);
    J&F-Mean = (J-Mean + F-Mean) / 2.
  * Semi-supervised protocol: the first and the last frame are not evaluated; void pixels (255) are ignored
    only in the sense that they count as background (the official code passes no void mask for this task);
    the number of objects of a sequence is the largest id in its first annotation; a result with fewer ids
    is zero-padded, a result with a larger id is an error.

Layout read (the official one): `<davis>/Annotations/<resolution>/<seq>/<frame>.png` (palette PNGs),
`<davis>/ImageSets/2017/<subset>.txt`, results `<results>/<seq>/<frame>.png` with the same frame names. Unlike
the official script, missing or unreadable files raise `DataError` naming the file (the official one prints and
calls sys.exit), and results are always recomputed (the official one silently reuses CSVs it finds in the results
folder).

  python -m jaxseg.evaluation.davis --davis=/data/DAVIS --results=/path/to/results [--subset=val]

A missing or bad file is reported in one or two lines naming it (exit status 1; 2 for a bad option);
`--verbose` shows the traceback.
"""

from __future__ import annotations

import argparse
import csv
import glob
import math
import os
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from jaxseg.data.errors import DataError
from jaxseg.data.readers.sources import decode_mask, read_split_file

GLOBAL_NAMES = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
BOUNDARY_THRESHOLD = 0.008  # fraction of the image diagonal
VOID = 255


def region_similarity(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
  """J (Jaccard index) of binary masks gt, pred: [..., H, W] -> [...] float64; 1 where the union is empty."""
  if gt.shape != pred.shape:
    raise ValueError(f"annotation {gt.shape} and segmentation {pred.shape} shapes differ")
  gt, pred = gt.astype(bool), pred.astype(bool)
  inter = np.sum(gt & pred, axis=(-2, -1))
  union = np.sum(gt | pred, axis=(-2, -1))
  with np.errstate(divide="ignore", invalid="ignore"):
    j = inter / union
  return np.where(union == 0, 1.0, j)


def boundary_map(seg: np.ndarray) -> np.ndarray:
  """One-pixel boundary of a binary mask [H, W] -> bool [H, W] (the official `_seg2bmap`, same size).

  A pixel is a boundary pixel when it differs from its east, south or south-east neighbour; the last row
  compares east only, the last column south only, and the bottom-right pixel is never a boundary.
  """
  seg = seg.astype(bool)
  east, south, south_east = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
  east[:, :-1] = seg[:, 1:]
  south[:-1, :] = seg[1:, :]
  south_east[:-1, :-1] = seg[1:, 1:]
  b = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
  b[-1, :] = seg[-1, :] ^ east[-1, :]
  b[:, -1] = seg[:, -1] ^ south[:, -1]
  b[-1, -1] = False
  return b


def _dilate(boundary: np.ndarray, radius: float) -> np.ndarray:
  """Binary dilation by the disk x^2 + y^2 <= radius^2 (skimage `disk`), as distance-to-boundary <= radius."""
  if not boundary.any():
    return np.zeros_like(boundary)
  return ndimage.distance_transform_edt(~boundary) <= radius


def boundary_measure(
    gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUNDARY_THRESHOLD
) -> np.ndarray:
  """F (boundary F-measure) of binary masks gt, pred: [H, W] or [T, H, W] -> float64 [] or [T]."""
  if gt.shape != pred.shape:
    raise ValueError(f"annotation {gt.shape} and segmentation {pred.shape} shapes differ")
  if gt.ndim == 3:
    return np.array([boundary_measure(g, p, bound_th) for g, p in zip(gt, pred)], dtype=np.float64)
  if gt.ndim != 2:
    raise ValueError(f"boundary_measure takes [H, W] or [T, H, W] masks, got shape {gt.shape}")
  radius = bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*gt.shape))
  pred_b, gt_b = boundary_map(pred), boundary_map(gt)
  n_pred, n_gt = int(pred_b.sum()), int(gt_b.sum())
  if n_pred == 0 and n_gt > 0:
    precision, recall = 1.0, 0.0
  elif n_pred > 0 and n_gt == 0:
    precision, recall = 0.0, 1.0
  elif n_pred == 0 and n_gt == 0:
    precision, recall = 1.0, 1.0
  else:
    precision = float(np.sum(pred_b & _dilate(gt_b, radius))) / n_pred
    recall = float(np.sum(gt_b & _dilate(pred_b, radius))) / n_gt
  if precision + recall == 0:
    return np.float64(0.0)
  return np.float64(2 * precision * recall / (precision + recall))


def statistics(per_frame: np.ndarray) -> tuple[float, float, float]:
  """(mean, recall, decay) of one object's per-frame values [T] (the official `db_statistics`).

  Decay bins are the official ones, `round(linspace(1, T, 5)) - 1` cast to uint8 (so wrong beyond 256
  frames, as there; DAVIS sequences have at most 104).
  """
  per_frame = np.asarray(per_frame, dtype=np.float64)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    mean = float(np.nanmean(per_frame))
    recall = float(np.nanmean(per_frame > 0.5))
  ids = (np.round(np.linspace(1, len(per_frame), 5) + 1e-10) - 1).astype(np.uint8)
  bins = [per_frame[ids[i] : ids[i + 1] + 1] for i in range(4)]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # empty / all-NaN bins give NaN, as there
    decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
  return mean, recall, decay


def split_objects(ids: np.ndarray, num_objects: int) -> np.ndarray:
  """Id maps [T, H, W] -> binary masks [num_objects, T, H, W] for ids 1..num_objects."""
  return ids[None] == np.arange(1, num_objects + 1, dtype=ids.dtype)[:, None, None, None]


def evaluate_sequence(
    gt_ids: np.ndarray, pred_ids: np.ndarray, *, name: str = "sequence"
) -> tuple[np.ndarray, np.ndarray]:
  """Per-object, per-frame J and F of one sequence (semi-supervised task).

  Args:
    gt_ids: [T, H, W] annotation ids of every frame (0 background, 1..K objects, 255 void -> background).
    pred_ids: [T, H, W] predicted ids of the same frames.
  Returns:
    (J, F), each [K, T - 2] float64: frames 1..T-2 (the first and the last frame are not evaluated).
  """
  if gt_ids.shape != pred_ids.shape:
    raise DataError(
        f"{name}: results {pred_ids.shape} and annotations {gt_ids.shape} differ in shape"
    )
  gt_ids = np.where(gt_ids == VOID, 0, gt_ids)
  num_objects = int(gt_ids[0].max())
  gt_ids, pred_ids = gt_ids[1:-1], pred_ids[1:-1]
  num_predicted = int(pred_ids.max()) if pred_ids.size else 0
  if num_predicted > num_objects:
    raise DataError(
        f"{name}: the results hold object id {num_predicted}, the first annotation has "
        f"only {num_objects} objects"
    )
  gt = split_objects(gt_ids, num_objects)
  pred = split_objects(
      pred_ids, num_objects
  )  # ids the results lack give empty masks (zero padding)
  j = region_similarity(gt, pred)
  f = (
      np.stack([boundary_measure(g, p) for g, p in zip(gt, pred)])
      if num_objects
      else np.zeros_like(j)
  )
  return j, f


def _annotation_frames(davis_root: str, seq: str, resolution: str) -> list[str]:
  folder = os.path.join(davis_root, "Annotations", resolution, seq)
  frames = sorted(glob.glob(os.path.join(folder, "*.png")))
  if not frames:
    raise DataError(f"{folder}: no annotation PNGs for sequence {seq!r}")
  return frames


def _read_ids(paths: Sequence[str]) -> np.ndarray:
  masks = [decode_mask(p) for p in paths]
  for p, m in zip(paths, masks):
    if m.shape != masks[0].shape:
      raise DataError(
          f"{p}: mask is {m.shape}, the sequence's first mask {paths[0]} is {masks[0].shape}"
      )
  return np.stack(masks)


def evaluate_davis(
    davis_root: str,
    results_dir: str,
    *,
    subset: str = "val",
    sequences: Sequence[str] | None = None,
    resolution: str = "480p",
    annotations: Callable[[str], tuple[list[str], np.ndarray]] | None = None,
) -> dict:
  """Evaluates a results folder against DAVIS-2017 annotations (semi-supervised task).

  `annotations(seq)` -> (annotation file names, ids uint8 [T, H, W]) replaces reading
  `<davis_root>/Annotations/<resolution>/<seq>/*.png` (e.g. a prepared davis2017 dataset; then
  `sequences` must be given and `davis_root` is only named in messages).

  Returns {'global': {name: value for GLOBAL_NAMES}, 'per_object': [{'sequence': 'seq_1', 'J-Mean', 'F-Mean',
  'J-Recall', 'J-Decay', 'F-Recall', 'F-Decay'}], 'per_frame': {seq: (J [K, T-2], F [K, T-2])}}.
  """
  if sequences is None:
    sequences = read_split_file(
        os.path.join(davis_root, "ImageSets", "2017", f"{subset}.txt"),
        hint="the DAVIS-2017 folder holds ImageSets/2017/{train,val}.txt",
    )
  rows, per_frame = [], {}
  for seq in sequences:
    if annotations is None:
      gt_paths = _annotation_frames(davis_root, seq, resolution)
      gt_ids = _read_ids(gt_paths)
    else:
      gt_paths, gt_ids = annotations(seq)
    res_paths = [os.path.join(results_dir, seq, os.path.basename(p)) for p in gt_paths]
    # The first and last frames are not evaluated, so their results may be absent.
    pred_ids = np.zeros_like(gt_ids)
    pred_ids[1:-1] = _read_ids(res_paths[1:-1])
    j, f = evaluate_sequence(gt_ids, pred_ids, name=os.path.join(results_dir, seq))
    per_frame[seq] = (j, f)
    for k in range(j.shape[0]):
      jm, jr, jd = statistics(j[k])
      fm, fr, fd = statistics(f[k])
      rows.append(
          {
              "sequence": f"{seq}_{k + 1}",
              "J&F-Mean": (jm + fm) / 2,
              "J-Mean": jm,
              "J-Recall": jr,
              "J-Decay": jd,
              "F-Mean": fm,
              "F-Recall": fr,
              "F-Decay": fd,
          }
      )
  if not rows:
    raise DataError(f"{davis_root}: no objects to evaluate in {list(sequences)}")
  means = {name: float(np.mean([r[name] for r in rows])) for name in GLOBAL_NAMES[1:]}
  means["J&F-Mean"] = (means["J-Mean"] + means["F-Mean"]) / 2
  return {
      "global": {name: means[name] for name in GLOBAL_NAMES},
      "per_object": rows,
      "per_frame": per_frame,
  }


def write_csvs(result: dict, out_dir: str, subset: str = "val") -> tuple[str, str]:
  """The official file names and columns: global_results-<subset>.csv, per-sequence_results-<subset>.csv."""
  os.makedirs(out_dir, exist_ok=True)
  global_path = os.path.join(out_dir, f"global_results-{subset}.csv")
  with open(global_path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(GLOBAL_NAMES)
    w.writerow([f"{result['global'][n]:.3f}" for n in GLOBAL_NAMES])
  seq_path = os.path.join(out_dir, f"per-sequence_results-{subset}.csv")
  with open(seq_path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["Sequence", "J-Mean", "F-Mean"])
    for r in result["per_object"]:
      w.writerow([r["sequence"], f"{r['J-Mean']:.3f}", f"{r['F-Mean']:.3f}"])
  return global_path, seq_path


def _require_dir(path: str, flag: str, hint: str) -> None:
  if not os.path.isdir(path):
    raise DataError(f"{flag} {path}: folder not found\nhint: {hint}")


def main(argv=None) -> dict:
  from jaxseg import cli

  parser = cli.ArgumentParser(
      prog="python -m jaxseg.evaluation.davis",
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("--davis", required=True, help="DAVIS-2017 root (Annotations/, ImageSets/)")
  parser.add_argument("--results", required=True, help="folder of <seq>/<frame>.png indexed PNGs")
  parser.add_argument("--subset", default="val")
  parser.add_argument("--resolution", default="480p")
  parser.add_argument("--out", default="", help="where to write the CSVs (default: --results)")
  parser.add_argument("--verbose", action="store_true", help="full traceback for known errors")
  args = parser.parse_args(argv)
  with cli.user_errors(args.verbose):
    _require_dir(
        args.davis, "--davis", "the DAVIS-2017 root holds Annotations/480p/ and ImageSets/2017/"
    )
    _require_dir(args.results, "--results", "one folder per sequence of <frame>.png index masks")
    result = evaluate_davis(
        args.davis, args.results, subset=args.subset, resolution=args.resolution
    )
    paths = write_csvs(result, args.out or args.results, args.subset)
  print(" ".join(f"{n}={result['global'][n]:.3f}" for n in GLOBAL_NAMES))
  print(f"written: {paths[0]}, {paths[1]}")
  return result


if __name__ == "__main__":
  main()
