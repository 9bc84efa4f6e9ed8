"""Images/s the grain input pipeline delivers per method, by number of worker processes, vs the step's need.

The pipeline is the one training uses (`jaxseg.data.pipeline.train_dataset` + `make_iterator`: shuffle, random
map, batch, grain worker processes) with each method's real source type and augmentation at its paper
resolution. Real datasets are not on this machine, so the script writes a small dataset in the method's
standard on-disk layout first (JPEG images at VOC size 500x375 with XML annotations and PNG masks, rendered
from the synthetic scenes), so JPEG decoding, XML parsing and the augmentations are all paid for as in a real run.

  python benchmarks/input_pipeline.py                                   # seam and supervised (voc), workers 0,1,2
  python benchmarks/input_pipeline.py --method=seam --workers=0,2,4,8 --step-rate=120
  python benchmarks/input_pipeline.py --step-json=/tmp/seam_step.json   # need from benchmarks/train_step.py --json

Raw files vs a prepared TFDS dataset (`--source=raw,tfds`): writes a made-up Cityscapes layout
(`--images` PNGs of `--size`, default 2048x1024, with gtFine labelIds), prepares it with
`python -m jaxseg.data.prepare cityscapes`, and reads the train split through the training pipeline
(decode only, no augmentation) from each: examples/s per process and bytes read per example (the
process's read() bytes from /proc/self/io with 0 workers; file or record bytes otherwise).

  python benchmarks/input_pipeline.py --source=raw,tfds --images=500 --workers=0,2

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


CITYSCAPES_SIZE = (1024, 2048)  # (H, W)
_LABEL_IDS = np.array([7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33])


def write_cityscapes_like(
    root: str, num_images: int, size=CITYSCAPES_SIZE, seed: int = 0, splits=None
) -> str:
  """A Cityscapes layout (leftImg8bit + gtFine labelIds, 4 cities) of scene PNGs; `splits` {split:
  count} (default {'train': num_images})."""
  scenes = SyntheticScenes(min(num_images, 8), num_classes=6, image_size=size, seed=seed)
  scenes = [scenes[k] for k in range(len(scenes))]  # rendered once
  names = [(s, i) for s, n in (splits or {"train": num_images}).items() for i in range(n)]
  for i, (split, k) in enumerate(names):
    city = f"city{k % 4}"
    name = f"{city}_{i:06d}_000019"
    example = scenes[i % len(scenes)]
    # Every image differs (no two files compress alike): shift the scene and add mild noise.
    image = np.roll(example["image"], 17 * i, axis=1).astype(np.int16)
    image += np.random.default_rng(i).integers(-2, 3, image.shape, dtype=np.int16)
    labels = _LABEL_IDS[np.roll(example["mask"], 17 * i, axis=1).astype(np.int64) % 19]
    for folder, suffix, array in (
        ("leftImg8bit", "leftImg8bit", np.clip(image, 0, 255).astype(np.uint8)),
        ("gtFine", "gtFine_labelIds", labels.astype(np.uint8)),
    ):
      out = os.path.join(root, folder, split, city)
      os.makedirs(out, exist_ok=True)
      Image.fromarray(array).save(os.path.join(out, f"{name}_{suffix}.png"))
  return root


def _read_bytes() -> int:
  with open("/proc/self/io") as f:
    return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def source_rates(args) -> dict:
  """The --source benchmark (see the module doc)."""
  from jaxseg.data import datasets
  from jaxseg.data.prepare.__main__ import prepare

  h, w = _size(args.size)
  results = {"cpus": os.cpu_count(), "size": [h, w], "images": args.images, "rows": []}
  with tempfile.TemporaryDirectory(dir=args.tmp or None) as tmp:
    root = os.path.join(tmp, "cityscapes")
    start = time.perf_counter()
    write_cityscapes_like(root, args.images, (h, w))
    results["write_s"] = time.perf_counter() - start
    raw_bytes = sum(
        os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files
    )
    data_dir = os.path.join(tmp, "tfds")
    start = time.perf_counter()
    if "tfds" in args.source:
      prepare("cityscapes", root, data_dir)
    results["prepare_s"] = time.perf_counter() - start
    tfds_bytes = sum(
        os.path.getsize(os.path.join(d, f))
        for d, _, files in os.walk(data_dir)
        for f in files
        if ".array_record-" in f
    )
    results.update(raw_bytes=raw_bytes, tfds_bytes=tfds_bytes)
    print(
        f"# {args.images} made-up Cityscapes images {w}x{h}: raw {raw_bytes / 2**20:.0f} MiB "
        f"(written in {results['write_s']:.0f} s), prepared {tfds_bytes / 2**20:.0f} MiB "
        f"(prepare {results['prepare_s']:.0f} s) | {os.cpu_count()} CPUs | batch {args.batch}"
    )
    print(f"{'source':>6} {'workers':>7} {'examples/s':>10} {'MiB/example':>11}")
    for source in args.source.split(","):
      data = datasets.data_config()
      data.update(name="cityscapes", root=root, num_classes=19, train_split="train", source=source)
      data.tfds.data_dir = data_dir
      src = datasets.build_source(data, "train")
      per_example = (raw_bytes if source == "raw" else tfds_bytes) / args.images
      for workers in (int(w) for w in args.workers.split(",")):
        ds = pipeline.train_dataset(
            src, lambda e, rng: e, seed=0, global_batch_size=args.batch, keys=("image", "mask")
        )
        iterator = pipeline.make_iterator(ds, workers)
        next(iterator)
        before = _read_bytes()
        start = time.perf_counter()
        for _ in range(args.batches):
          next(iterator)
        elapsed = time.perf_counter() - start
        read = _read_bytes() - before
        del iterator
        n = args.batches * args.batch
        row = dict(
            source=source,
            workers=workers,
            examples_per_s=n / elapsed,
            bytes_per_example=read / n if workers == 0 else per_example,
            bytes_measured=workers == 0,
        )
        results["rows"].append(row)
        print(
            f"{source:>6} {workers:7d} {row['examples_per_s']:10.2f} "
            f"{row['bytes_per_example'] / 2**20:11.2f}" + ("" if workers == 0 else " (file bytes)"),
            flush=True,
        )
  return results


def _size(text: str) -> tuple[int, int]:
  """'2048x1024' (W x H) -> (H, W)."""
  w, h = (int(v) for v in text.lower().split("x"))
  return h, w


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
  parser.add_argument(
      "--source", default="", help="raw,tfds: made-up Cityscapes, raw files vs prepared TFDS"
  )
  parser.add_argument("--size", default="2048x1024", help="--source: image W x H")
  parser.add_argument("--tmp", default="", help="--source: folder for the made-up dataset")
  args = parser.parse_args(argv)
  if args.source:
    results = source_rates(args)
    if args.json:
      with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    return results
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
