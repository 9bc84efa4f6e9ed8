"""Images/s the grain input pipeline delivers per method, by number of worker processes, vs the step's need.

The pipeline is the one training uses (`jaxseg.data.pipeline.train_dataset` + `make_iterator`: shuffle, random
map, batch, grain worker processes) with each method's real source type and augmentation at its paper
resolution. Real datasets are not on this machine, so the script writes a small dataset in the method's
standard on-disk layout first (JPEG images at VOC size 500x375 with XML annotations and PNG masks, rendered
from the synthetic scenes), so JPEG decoding, XML parsing and the augmentations are all paid for as in a real run.

  python benchmarks/input_pipeline.py                                   # seam and supervised (voc), workers 0,1,2
  python benchmarks/input_pipeline.py --method=seam --workers=0,2,4,8 --step-rate=120
  python benchmarks/input_pipeline.py --step-json=/tmp/seam_step.json   # need from benchmarks/train_step.py --json

`--step-rate` (images/s the train step consumes, e.g. from train_step.py on the GPU) gives the printed margin
pipeline / step; the target is >= 2x. Worker processes each take one CPU core: on a 2-core machine more than
1-2 workers only adds contention.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import jax
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
from jaxseg.data import pipeline  # noqa: E402
from jaxseg.data.readers.sources import VOC_CLASS_NAMES  # noqa: E402
from jaxseg.data.synthetic.sources import SyntheticScenes  # noqa: E402

VOC_SIZE = (375, 500)  # (H, W) of a typical VOC image


def write_voc_like(root: str, num_images: int, seed: int = 0) -> str:
  """A VOCdevkit/VOC2012 layout with `num_images` JPEGs, XML annotations, masks and split files."""
  voc = os.path.join(root, "VOCdevkit", "VOC2012")
  for d in (
      "JPEGImages",
      "SegmentationClass",
      "SegmentationClassAug",
      "Annotations",
      "ImageSets/Segmentation",
  ):
    os.makedirs(os.path.join(voc, d), exist_ok=True)
  scenes = SyntheticScenes(num_images, num_classes=6, image_size=VOC_SIZE, seed=seed)
  names = VOC_CLASS_NAMES[1:]
  ids = []
  for i in range(num_images):
    example = scenes[i]
    example_id = f"2007_{i:06d}"
    ids.append(example_id)
    Image.fromarray(example["image"]).save(
        os.path.join(voc, "JPEGImages", f"{example_id}.jpg"), quality=90
    )
    mask = Image.fromarray(example["mask"].astype(np.uint8), mode="L")
    mask.save(os.path.join(voc, "SegmentationClassAug", f"{example_id}.png"))
    mask.save(os.path.join(voc, "SegmentationClass", f"{example_id}.png"))
    objects = "".join(
        f"<object><name>{names[int(c) - 1]}</name><difficult>0</difficult></object>"
        for c in np.flatnonzero(example["labels"]) + 1
    )
    with open(os.path.join(voc, "Annotations", f"{example_id}.xml"), "w") as f:
      f.write(f"<annotation><filename>{example_id}.jpg</filename>{objects}</annotation>")
  for split in ("train_aug", "train", "val"):
    with open(os.path.join(voc, "ImageSets", "Segmentation", f"{split}.txt"), "w") as f:
      f.write("\n".join(ids) + "\n")
  return voc


def method_task(method: str, root: str, batch: int):
  """The method's own TrainTask (source + augmentation) on the VOC-layout root, paper variant."""
  if method == "seam":
    import seam as config_module
    from jaxseg.methods.seam import method as method_module
  elif method == "supervised":
    import supervised as config_module
    from jaxseg.methods.supervised import method as method_module
  else:
    raise SystemExit(
        f"--method={method}: that method has not landed in jaxseg yet (available: seam, supervised)"
    )
  config = config_module.get_config("voc")
  with config.unlocked():
    config.data.root = root
    config.train.batch_size = batch
    if "init" in config:
      config.init.weights = ""
  return config, method_module.make_task(config)


def images_per_s(task, config, batch: int, workers: int, batches: int) -> float:
  ds = pipeline.train_dataset(
      task.train_source, task.augment, seed=0, global_batch_size=batch, keys=task.keys
  )
  iterator = pipeline.make_iterator(ds, workers)
  next(iterator)  # start-up (worker processes, first decode) is not steady state
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  elapsed = time.perf_counter() - start
  del iterator
  return batches * batch / elapsed


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument(
      "--method", default="seam,supervised", help="comma-separated: seam, supervised"
  )
  parser.add_argument("--workers", default="0,1,2", help="comma-separated worker-process counts")
  parser.add_argument("--batch", type=int, default=8, help="per-host batch")
  parser.add_argument("--batches", type=int, default=10, help="timed batches per setting")
  parser.add_argument(
      "--images", type=int, default=64, help="images written to the VOC-layout folder"
  )
  parser.add_argument(
      "--step-rate", type=float, default=0.0, help="images/s the train step consumes"
  )
  parser.add_argument(
      "--step-json", default="", help="train_step.py --json output: takes the fastest row"
  )
  parser.add_argument("--json", default="", help="also write the results here")
  args = parser.parse_args(argv)
  step_rate = args.step_rate
  if args.step_json:
    with open(args.step_json) as f:
      step_rate = max(r["images_per_s"] for r in json.load(f)["rows"])
  results = {"device": jax.devices()[0].device_kind, "cpus": os.cpu_count(), "rows": []}
  print(
      f"# input pipeline | {os.cpu_count()} CPUs | batch {args.batch} | step needs "
      f"{step_rate:.1f} img/s"
      if step_rate
      else f"# input pipeline | {os.cpu_count()} CPUs | batch {args.batch}"
  )
  print(f"{'method':>10} {'workers':>7} {'img/s':>8} {'vs step':>8}")
  with tempfile.TemporaryDirectory() as tmp:
    root = write_voc_like(tmp, args.images)
    for method in args.method.split(","):
      config, task = method_task(method, root, args.batch)
      crop = tuple(config.augment.crop_size)
      for workers in (int(w) for w in args.workers.split(",")):
        rate = images_per_s(task, config, args.batch, workers, args.batches)
        row = dict(
            method=method,
            crop=crop,
            workers=workers,
            images_per_s=rate,
            margin=(rate / step_rate) if step_rate else None,
        )
        results["rows"].append(row)
        margin = f"{row['margin']:.2f}x" if step_rate else "-"
        print(
            f"{method:>10} {workers:7d} {rate:8.1f} {margin:>8}   (crop {crop[0]}x{crop[1]})",
            flush=True,
        )
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=2)
  return results


if __name__ == "__main__":
  main()
