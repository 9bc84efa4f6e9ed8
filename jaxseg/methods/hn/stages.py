"""HN stages: compute HN labels from depth, pre-train on them, fine-tune with few labels, evaluate.

Workdir layout:
  hn_labels/<id>.png            HN label of every pre-training image (palette PNG, 255 = no depth);
                                written atomically, a relaunch computes only the missing ones
  hn_labels/summary.json        class frequencies, gravity of the first images
  pretrain/                     the HN network's checkpoints, metrics, trainer_config.json
  finetune/<arm>_<pct>/         one fine-tuning run per arm (random | hn | imagenet) and label fraction
  metrics.json, results.md      mIoU of every fine-tuning run (rows: label fraction, columns: arm)
  pictures/hn_labels.png        RGB | depth | height bins | angle bins | HN labels
  pictures/predictions.png      RGB | ground truth | prediction of each arm (smallest fraction)
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxseg.data import datasets, transforms
from jaxseg.data.palette import colorize
from jaxseg.depth import hn_labels as compute_hn_labels
from jaxseg.depth.hn_labels import HNParams
from jaxseg.evaluation.outputs import read_json, write_json, write_palette_png
from jaxseg.evaluation.pictures import legend_entries, write_image_grid
from jaxseg.evaluation.segmentation import dataset_scorer
from jaxseg.methods.hn import data, method
from jaxseg.train import multihost
from jaxseg.train import sharding as shd
from jaxseg.train.inference import InferenceModel, image_init_fn, load_variables
from jaxseg.train.stages import train_stage


def _label_dir(workdir: str) -> str:
  return os.path.join(workdir, "hn_labels")


def _labeller(config):
  params = HNParams.from_config(config.hn)
  return jax.jit(lambda d, k: compute_hn_labels(d, k, params))


def precomputed_hn_labels(config, source) -> bool:
  """True if `source` (a prepared `nyu_depth_v2/hn`) stores HN labels made with `config.hn`."""
  if not hasattr(source, "metadata"):
    return False
  stored = source.metadata().get("hn_params")
  return stored is not None and stored == json.loads(json.dumps(config.hn.to_dict()))


def hn_labels(config, workdir: str) -> dict:
  """HN labels of every pre-training image from its depth and intrinsics (no semantic labels read);
  taken from the prepared dataset when it stores them with the same settings (`nyu_depth_v2/hn`)."""
  source = data.depth_source(config)
  labeller = _labeller(config)
  precomputed = precomputed_hn_labels(config, source)
  if precomputed:
    print("HN labels: read from the prepared dataset (same config.hn)", flush=True)
  num_classes = method.num_hn_classes(config)
  counts = np.zeros(num_classes + 1, np.int64)  # last bin: ignored pixels
  gravities = []
  written = 0
  for i in multihost.host_pass(len(source), "HN labels"):
    example = source[i]
    path = os.path.join(_label_dir(workdir), f"{data.example_name(example, i)}.png")
    if os.path.exists(path):
      labels = np.asarray(Image.open(path))
    elif precomputed:
      labels = np.asarray(example["hn_labels"], np.uint8)
      write_palette_png(path, labels)
      written += 1
    else:
      depth = np.asarray(example["depth"], np.float32)[None]
      intrinsics = np.asarray(example["intrinsics"], np.float32)[None]
      out, aux = labeller(depth, intrinsics)
      labels = np.asarray(out[0]).astype(np.uint8)
      write_palette_png(path, labels)
      written += 1
      if len(gravities) < 8:
        gravities.append(np.asarray(aux["gravity"][0]).tolist())
    counts += np.bincount(np.minimum(labels.ravel(), num_classes), minlength=num_classes + 1)
  counts = multihost.sum_over_processes(counts)
  multihost.sync("hn_labels")
  total = max(int(counts.sum()), 1)
  summary = {
      "num_images": len(source),
      "num_classes": num_classes,
      "class_fraction": (counts[:-1] / total).tolist(),
      "ignored_fraction": float(counts[-1] / total),
      "gravity_examples": gravities,
  }
  if multihost.is_main_process():
    write_json(os.path.join(_label_dir(workdir), "summary.json"), summary)
    print(
        f"HN labels: {len(source)} images ({written} computed now), {num_classes} classes, "
        f"{100 * summary['ignored_fraction']:.1f}% of pixels without depth",
        flush=True,
    )
    print(f"pictures: {_label_pictures(config, workdir, source)}", flush=True)
  return {"num_images": len(source)}


def _label_pictures(config, workdir: str, source) -> str:
  labeller = _labeller(config)
  ignore = int(config.hn.ignore_index)
  rows, label_maps = [], []
  for i in range(min(4, len(source))):
    ex = source[i]
    depth = np.asarray(ex["depth"], np.float32)
    _, aux = labeller(depth[None], np.asarray(ex["intrinsics"], np.float32)[None])
    far = max(float(depth.max()), 1e-6)
    grey = (255 * (1 - np.clip(depth / far, 0, 1)) * (depth > 0)).astype(np.uint8)
    tiles = [np.asarray(ex["image"]), np.repeat(grey[..., None], 3, -1)]
    for key in ("height_bins", "angle_bins"):
      tiles.append(colorize(np.asarray(aux[key][0]).clip(0, 255).astype(np.uint8)))
    labels = np.asarray(jnp.where(aux["valid"][0], _combined(aux, config), ignore))
    tiles.append(colorize(labels.astype(np.uint8)))
    rows.append(tiles)
    label_maps.append(labels.astype(np.uint8))
  titles = ["RGB", "depth", "height bins", "angle bins", "HN labels"]
  num_angle = len(tuple(config.hn.angle_edges)) + 1
  names = [f"h{c // num_angle} a{c % num_angle}" for c in range(method.num_hn_classes(config))]
  return write_image_grid(
      os.path.join(workdir, "pictures", "hn_labels.png"),
      rows,
      titles,
      legend=legend_entries(label_maps, names),
      notes=[
          "HN label h<i> a<j>: height bin i above the floor x bin j of the normal's angle to gravity "
          "(the height / angle columns show the bin numbers in the same palette); depth: near "
          "white, far grey, black = no depth; ignore: no depth (Kinect-like holes), so no label"
      ],
  )


def _combined(aux, config):
  num_angle = len(tuple(config.hn.angle_edges)) + 1
  return aux["height_bins"][0] * num_angle + aux["angle_bins"][0]


def _pretrain_task(config, workdir: str):
  source = data.ImageMaskSource(data.depth_source(config), _label_dir(workdir))
  return method.make_task(config, source, method.num_hn_classes(config))


def pretrain(config, workdir: str) -> None:
  """Trains the network to predict the HN labels from RGB (top-level trainer section)."""
  train_stage(config, workdir, _pretrain_task(config, workdir), subdir="pretrain")


def run_name(arm: str, fraction: float) -> str:
  return f"{arm}_{100 * fraction:g}pct"


def finetune_runs(config):
  return [(a, float(f)) for f in config.finetune.label_fractions for a in method.check_arms(config)]


def _finetune_task(config, workdir: str, arm: str, fraction: float, pretrained=None):
  train = data.semantic_source(config, "train")
  indices = data.labelled_subset(len(train), fraction, int(config.finetune.subset_seed))
  batch = int(config.finetune.train.batch_size)
  subset = data.Subset(data.ImageMaskSource(train), indices, repeats=-(-batch // len(indices)))
  num_classes = int(config.data.num_classes)
  init = None
  if arm == "hn" and pretrained is not None:
    init = method.transfer_init(pretrained)
  elif arm == "imagenet":
    init = method.imagenet_init(config, num_classes)
  task = method.make_task(config, subset, num_classes, init_weights=init, section="finetune")
  return task, len(indices)


def load_run(config, workdir: str, run: str, which: str = "latest") -> InferenceModel:
  """A trained network of the workdir: 'pretrain' (the HN-label network) or a fine-tuning run
  ('<arm>_<percent>pct'), from its checkpoint's parameters and BatchNorm statistics alone."""
  if run == "pretrain":
    section, num_classes, stage_dir = None, method.num_hn_classes(config), "pretrain"
  else:
    section, num_classes = "finetune", int(config.data.num_classes)
    stage_dir = os.path.join("finetune", run)
  model = method.build_model(config, num_classes, section)
  h, w = config.augment.crop_size

  init_fn = image_init_fn(model, (h, w))

  variables, step, mesh = load_variables(os.path.join(workdir, stage_dir), init_fn, which=which)
  return InferenceModel(
      config=config,
      stage=run,
      step=step,
      variables=variables,
      apply_fn=lambda v, images: model.apply(v, images, train=False),
      mesh=mesh,
      class_names=None if run == "pretrain" else tuple(datasets.class_names(config.data)),
  )


def load_pretrained(config, workdir: str) -> dict:
  return jax.device_get(load_run(config, workdir, "pretrain").variables)


def finetune(config, workdir: str) -> None:
  """One fine-tuning run per (arm, label fraction), all with the `finetune` trainer section."""
  pretrained = None
  if "hn" in method.check_arms(config):
    pretrained = load_pretrained(config, workdir)
  for arm, fraction in finetune_runs(config):
    task, count = _finetune_task(config, workdir, arm, fraction, pretrained)
    name = run_name(arm, fraction)
    print(f"fine-tuning {name}: {count} labelled images", flush=True)
    run_dir = os.path.join(workdir, "finetune", name)
    if multihost.is_main_process():  # evaluation reports it without reading the training split
      write_json(os.path.join(run_dir, "labelled.json"), dict(labelled_images=count))
    train_stage(config, workdir, task, section="finetune", subdir=os.path.join("finetune", name))


def _scorer(config, batch_sharding, apply_fn):
  def predict(variables, batch):
    return jnp.argmax(apply_fn(variables, batch["image"]), axis=-1)

  return dataset_scorer(
      predict,
      data.ImageMaskSource(data.semantic_source(config, "eval")),
      transforms.build_eval_transform(transforms.segmentation_eval_spec(config)),
      num_classes=int(config.data.num_classes),
      ignore_index=int(config.data.ignore_index),
      batch_size=int(config.evaluate.batch_size),
      batch_sharding=batch_sharding,
  )


def evaluate(config, workdir: str) -> dict:
  """mIoU of every fine-tuning run on the eval split; metrics.json, results.md, pictures."""
  results, examples_by_arm = {}, {}
  smallest = min(float(f) for f in config.finetune.label_fractions)
  for arm, fraction in finetune_runs(config):
    name = run_name(arm, fraction)
    run_dir = os.path.join(workdir, "finetune", name)
    if not os.path.isdir(os.path.join(run_dir, "checkpoints")):
      print(f"evaluate: {name} has not been trained (run the 'finetune' stage)", flush=True)
      continue
    model = load_run(config, workdir, name, str(config.evaluate.checkpoint))
    info = os.path.join(run_dir, "labelled.json")
    if os.path.exists(info):
      count = read_json(info)["labelled_images"]
    else:  # a run fine-tuned before labelled.json was written: count the subset again
      count = _finetune_task(config, workdir, arm, fraction)[1]
    keep = int(config.evaluate.num_pictures) if fraction == smallest else 0
    (metrics, examples), _ = _scorer(config, shd.batch_sharding(model.mesh), model.apply_fn)(
        model.variables, keep_examples=keep
    )
    results[name] = {
        "arm": arm,
        "label_fraction": fraction,
        "labelled_images": count,
        "miou": float(metrics["miou"]),
        "pixel_accuracy": float(metrics["pixel_accuracy"]),
        "mean_accuracy": float(metrics["mean_accuracy"]),
    }
    if examples:
      examples_by_arm[arm] = examples
  table = results_table(results, method.check_arms(config))
  print(table, flush=True)
  if multihost.is_main_process():
    write_json(os.path.join(workdir, "metrics.json"), results)
    with open(os.path.join(workdir, "results.md"), "w") as f:
      f.write(table + "\n")
    if examples_by_arm:
      print(f"pictures: {_prediction_pictures(config, workdir, examples_by_arm)}", flush=True)
  return {k: v["miou"] for k, v in results.items()}


def results_table(results: dict, arms) -> str:
  """Markdown: one row per label fraction, one column per arm (mIoU %)."""
  fractions = sorted({r["label_fraction"] for r in results.values()})
  lines = [
      "| labelled images | " + " | ".join(f"{a} init" for a in arms) + " |",
      "|---|" + "---|" * len(arms),
  ]
  for f in fractions:
    cells, count = [], None
    for a in arms:
      r = results.get(run_name(a, f))
      cells.append("-" if r is None else f"{100 * r['miou']:.1f}")
      count = r["labelled_images"] if r is not None else count
    lines.append(f"| {100 * f:g}% ({count}) | " + " | ".join(cells) + " |")
  return "mIoU (%) after fine-tuning:\n" + "\n".join(lines)


def _prediction_pictures(config, workdir: str, examples_by_arm: dict) -> str:
  mean = np.asarray(config.normalize.mean, np.float32)
  std = np.asarray(config.normalize.std, np.float32)
  arms = list(examples_by_arm)
  first = examples_by_arm[arms[0]]
  rows = []
  for i in range(len(first)):
    image = first[i]["image"] * std + mean
    tiles = [
        (255 * np.clip(image, 0, 1)).astype(np.uint8),
        colorize(first[i]["mask"].astype(np.uint8)),
    ]
    for arm in arms:
      tiles.append(colorize(examples_by_arm[arm][i]["pred"].astype(np.uint8)))
    rows.append(tiles)
  titles = ["RGB", "ground truth"] + [f"{a} init" for a in arms]
  fraction = min(float(f) for f in config.finetune.label_fractions)
  train_size = len(data.semantic_source(config, "train"))
  count = len(data.labelled_subset(train_size, fraction, int(config.finetune.subset_seed)))
  masks = [t for e in examples_by_arm.values() for x in e for t in (x["mask"], x["pred"])]
  return write_image_grid(
      os.path.join(workdir, "pictures", "predictions.png"),
      rows,
      titles,
      header=f"fine-tuned with {100 * fraction:g}% of the labelled images ({count} of "
      f"{train_size}); held-out rooms",
      legend=legend_entries(
          [np.asarray(m).astype(np.uint8) for m in masks], datasets.class_names(config.data)
      ),
      notes=["ignore: pixels without a semantic label in the ground truth"],
  )


STAGE_FNS = {
    "hn_labels": hn_labels,
    "pretrain": pretrain,
    "finetune": finetune,
    "evaluate": evaluate,
}
