"""Speed and host memory of the ESL pseudo-label threshold pass over a whole target split.

The official ESL code keeps every pixel's entropy and label of the split in RAM (2 x 12.6 GB for
Cityscapes train at 1024 x 512) to sort them; jaxseg's `dataset_esl_thresholds` makes two passes of
per-class histograms and keeps O(classes x bins) numbers, whatever the split size. This benchmark feeds
the pass N prediction maps (random per-class entropies at the requested size; the network forward is
timed by benchmarks/train_step.py) and prints images/s, the peak Python-heap growth of the pass
(`tracemalloc`) and, for comparison, what holding all pixels would take, and checks that the thresholds
equal the in-memory official computation on a subset small enough to hold.

  python benchmarks/pseudo_labels.py                          # 500 images at 1024 x 512, 19 classes
  python benchmarks/pseudo_labels.py --images=50 --height=256 --width=512   # quick check
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from jaxseg.methods.uda import pseudo_labels as pl  # noqa: E402


def prediction_map(index: int, height: int, width: int, num_classes: int):
  """(entropy float32 [H, W] in [0, 1], argmax labels uint8 [H, W]) of image `index` (deterministic)."""
  rng = np.random.default_rng([0, index])
  labels = rng.integers(0, num_classes, (height // 16, width // 16)).astype(np.uint8)
  labels = np.repeat(np.repeat(labels, 16, 0), 16, 1)
  scale = (labels.astype(np.float32) + 1) / (num_classes + 1)
  entropy = (rng.random((height, width), dtype=np.float32) * scale).astype(np.float32)
  return entropy, labels


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--images", type=int, default=500)
  parser.add_argument("--height", type=int, default=512)
  parser.add_argument("--width", type=int, default=1024)
  parser.add_argument("--classes", type=int, default=19)
  parser.add_argument("--check-images", type=int, default=8, help="images for the in-memory check")
  args = parser.parse_args(argv)

  def share():
    for i in range(args.images):
      yield prediction_map(i, args.height, args.width, args.classes)

  tracemalloc.start()
  start = time.perf_counter()
  thresholds = pl.dataset_esl_thresholds(share, args.classes)
  seconds = time.perf_counter() - start
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  one_map = args.height * args.width * (4 + 1)  # float32 entropy + uint8 label per pixel
  all_pixels = args.images * args.height * args.width * (4 + 8)  # official: float32 + int64 arrays

  maps = [
      prediction_map(i, args.height, args.width, args.classes) for i in range(args.check_images)
  ]
  expected = pl.esl_thresholds(
      np.stack([m[0] for m in maps]), np.stack([m[1] for m in maps]), args.classes
  )
  got = pl.dataset_esl_thresholds(lambda: iter(maps), args.classes)
  exact = bool(np.array_equal(expected, got))

  row = dict(
      images=args.images,
      size=(args.height, args.width),
      images_per_s=args.images / seconds,
      seconds=seconds,
      peak_pass_mib=peak / 2**20,
      one_map_mib=one_map / 2**20,
      all_pixels_gib=all_pixels / 2**30,
      exact_vs_in_memory=exact,
      thresholds=thresholds.tolist(),
  )
  print(
      f"ESL threshold pass: {args.images} maps of {args.height}x{args.width}, {args.classes} classes "
      f"(two histogram passes)\n"
      f"  {row['images_per_s']:.1f} images/s ({seconds:.1f} s)\n"
      f"  peak heap growth of the pass {row['peak_pass_mib']:.1f} MiB "
      f"(one map {row['one_map_mib']:.1f} MiB; holding every pixel as the official code does: "
      f"{row['all_pixels_gib']:.1f} GiB)\n"
      f"  thresholds equal the in-memory computation on {args.check_images} images: {exact}"
  )
  return row


if __name__ == "__main__":
  main()
