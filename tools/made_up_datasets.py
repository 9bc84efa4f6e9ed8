"""Writes small made-up copies of every dataset jaxseg prepares, in their standard layouts.

  python tools/made_up_datasets.py --out=/tmp/made_up

  <out>/VOCdevkit/VOC2012   8 VOC-layout JPEGs (500x375) + masks + XML (benchmarks/input_pipeline.py)
  <out>/GTA5                8 PNGs (256x128) + label-id PNGs
  <out>/Cityscapes          leftImg8bit + gtFine labelIds, train (8) and val (4), 256x128
  <out>/nyu                 nyu_depth_v2_labeled.mat (6 images, 480x640, MATLAB v7.3), splits.mat,
                            classMapping40.mat, class13Mapping.mat (the writers of tests/test_rgbd_sources.py)
  <out>/DAVIS               4 synthetic videos of 12 frames as DAVIS-2017 train and val
                            (jaxseg.methods.vos.data.write_synthetic_davis)
  <out>/DAVIS/JPEGImages/480p   the folder of video folders for video_frames

Then `python -m jaxseg.data.prepare <name> --root=<folder> --data_dir=<out>/tfds` (README "Datasets").
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import scipy.io
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "benchmarks"), os.path.join(ROOT, "tests")]

import input_pipeline  # noqa: E402  (benchmarks/)
from test_rgbd_sources import MAP13, MAP40, _data, _nyu_arrays, _write_v73  # noqa: E402

from jaxseg.data.synthetic.sources import SyntheticScenes  # noqa: E402

DRIVING_SIZE = (128, 256)  # (H, W)


def write_gta5(root: str, count: int = 8) -> None:
  scenes = SyntheticScenes(count, num_classes=6, image_size=DRIVING_SIZE, seed=7)
  for d in ("images", "labels"):
    os.makedirs(os.path.join(root, d), exist_ok=True)
  for i in range(count):
    example = scenes[i]
    ids = input_pipeline._LABEL_IDS[example["mask"].astype(np.int64) % 19].astype(np.uint8)
    Image.fromarray(example["image"]).save(os.path.join(root, "images", f"{i + 1:05d}.png"))
    Image.fromarray(ids, mode="L").save(os.path.join(root, "labels", f"{i + 1:05d}.png"))


def write_nyu(root: str) -> None:
  os.makedirs(root, exist_ok=True)
  _write_v73(os.path.join(root, "nyu_depth_v2_labeled.mat"), _nyu_arrays(*_data(480, 640, 6)))
  scipy.io.savemat(os.path.join(root, "classMapping40.mat"), {"mapClass": MAP40[None] * 1.0})
  names = np.array([f"c{i}" for i in range(13)], dtype=object)[None]
  scipy.io.savemat(
      os.path.join(root, "class13Mapping.mat"),
      {"classMapping13": {"labelsForClass13": MAP13[None], "className": names}},
  )
  scipy.io.savemat(
      os.path.join(root, "splits.mat"), {"trainNdxs": [[1], [2], [3], [4]], "testNdxs": [[5], [6]]}
  )


def write_davis(root: str) -> None:
  from jaxseg.methods.vos import data, method

  d = method.default_config().eval_data
  d.synthetic.update(num_videos=4, num_frames=12, image_size=(64, 96))
  for split in ("train", "val"):
    data.write_synthetic_davis(root, d, split, "480p")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True)
  args = parser.parse_args(argv)
  out = args.out
  input_pipeline.write_voc_like(out, 8)
  write_gta5(os.path.join(out, "GTA5"))
  input_pipeline.write_cityscapes_like(
      os.path.join(out, "Cityscapes"), 8, DRIVING_SIZE, splits={"train": 8, "val": 4}
  )
  write_nyu(os.path.join(out, "nyu"))
  write_davis(os.path.join(out, "DAVIS"))
  print(f"made-up datasets in {out}: VOCdevkit/VOC2012 GTA5 Cityscapes nyu DAVIS")


if __name__ == "__main__":
  main()
