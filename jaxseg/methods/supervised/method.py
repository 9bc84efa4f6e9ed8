"""Supervised segmentation method: config, train task, evaluation stage."""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxseg.data import datasets, transforms
from jaxseg.evaluation.miou import iou_table
from jaxseg.evaluation.outputs import write_json
from jaxseg.evaluation.pictures import write_segmentation_grid
from jaxseg.evaluation.segmentation import dataset_scorer, training_evaluator
from jaxseg.models.fcn import FCN
from jaxseg.train import loop
from jaxseg.train import sharding as shd
from jaxseg.train.config import compute_dtype, trainer_config
from jaxseg.train.inference import InferenceModel, image_init_fn, load_variables
from jaxseg.train.objectives import segmentation_objective
from jaxseg.train.stages import run_stages, train_stage

STAGES = ("train", "evaluate")


# Keys of this config that may change between launches of one workdir without changing what is
# trained (data roots, post-training stages' settings); with the trainer's own
# (`jaxseg.train.config.resume_safe_keys`). A key ending in '.' covers its whole section.
RESUME_SAFE_KEYS = datasets.resume_safe("data") + ("evaluate.",)


def default_config() -> ml_collections.ConfigDict:
  """Every key the supervised method reads (locked: unknown keys are errors)."""
  c = trainer_config()
  c.method = "supervised"
  c.data = datasets.data_config()
  c.augment = ml_collections.ConfigDict(
      dict(
          scale_range=(0.75, 1.25),
          crop_size=(64, 64),
          flip=True,
          color_jitter=(0.2, 0.2, 0.2, 0.02),
      )
  )
  c.normalize = ml_collections.ConfigDict(
      dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
  )
  c.model = ml_collections.ConfigDict(
      dict(depth=18, width_multiplier=0.25, output_stride=8, head_channels=64, dropout=0.1)
  )
  c.evaluate = ml_collections.ConfigDict(
      dict(batch_size=16, eval_size=(64, 64), num_pictures=8, checkpoint="latest")
  )  # latest | best (kept by train.best_metric during training)
  c.lock()
  return c


def build_model(config) -> FCN:
  m = config.model
  return FCN(
      num_classes=config.data.num_classes,
      depth=m.depth,
      width_multiplier=m.width_multiplier,
      output_stride=m.output_stride,
      head_channels=m.head_channels,
      dropout=m.dropout,
      dtype=compute_dtype(config),
  )


def make_task(config) -> loop.TrainTask:
  model = build_model(config)
  ignore = config.data.ignore_index

  def init_fn(rng, batch):
    return model.init({"params": rng, "dropout": rng}, batch["image"], train=False)

  return loop.TrainTask(
      init_fn=init_fn,
      loss_fn=functools.partial(segmentation_objective, model, ignore),
      train_source=datasets.build_source(config.data, "train"),
      augment=transforms.build_augment(transforms.segmentation_augment_spec(config)),
      keys=("image", "mask"),
      make_evaluator=_evaluator(config),
  )


def train(config, workdir: str) -> None:
  train_stage(config, workdir, make_task(config))


def _scorer(config, batch_sharding):
  """(variables, keep_examples) -> ((metrics, examples), num_batches) over the eval split."""
  model = build_model(config)

  def predict(variables, batch):
    return jnp.argmax(model.apply(variables, batch["image"], train=False), axis=-1)

  return dataset_scorer(
      predict,
      datasets.build_source(config.data, "eval"),
      transforms.build_eval_transform(transforms.segmentation_eval_spec(config)),
      num_classes=config.data.num_classes,
      ignore_index=config.data.ignore_index,
      batch_size=int(config.evaluate.batch_size),
      batch_sharding=batch_sharding,
  )


def _evaluator(config):
  """`TrainTask.make_evaluator`: mIoU, pixel and mean accuracy of the eval split, during training."""
  return training_evaluator(lambda ts: _scorer(config, ts.batch_sharding), loop.variables_of)


def evaluate(config, workdir: str) -> dict:
  """mIoU on the eval split; writes metrics.json, the IoU table and a picture grid.

  Scores `config.evaluate.checkpoint`: 'latest', or 'best' (by `train.best_metric`).
  """
  model = load_inference_model(config, workdir, which=str(config.evaluate.checkpoint))
  (metrics, examples), num_batches = _scorer(config, shd.batch_sharding(model.mesh))(
      model.variables, keep_examples=int(config.evaluate.num_pictures)
  )
  names = datasets.class_names(config.data)
  table = iou_table(metrics, names)
  print(f"evaluation ({num_batches} batches of {config.evaluate.batch_size}):\n{table}", flush=True)
  if jax.process_index() == 0:
    summary = dict(
        miou=metrics["miou"],
        pixel_accuracy=metrics["pixel_accuracy"],
        mean_accuracy=metrics["mean_accuracy"],
        iou={n: (None if np.isnan(v) else float(v)) for n, v in zip(names, metrics["iou"])},
        step=model.step,
        checkpoint=str(config.evaluate.checkpoint),
    )
    write_json(os.path.join(workdir, "metrics.json"), summary)
    with open(os.path.join(workdir, "results.md"), "w") as f:
      f.write(table + "\n")
    if examples:
      path = write_segmentation_grid(
          os.path.join(workdir, "pictures", "predictions.png"),
          examples,
          config.normalize.mean,
          config.normalize.std,
          class_names=names,
      )
      print(f"pictures: {path}", flush=True)
  return metrics


def run(config, workdir: str) -> dict:
  """Runs `config.stages`; finished stages of an earlier launch in `workdir` are skipped."""
  return run_stages(config, workdir, {"train": train, "evaluate": evaluate}, method="supervised")


def load_inference_model(
    config, workdir: str, stage: str | None = None, which: str = "latest"
) -> InferenceModel:
  """The trained FCN of the 'train' stage: `predict(images) -> logits [B, H, W, C]`.

  Reads only the checkpoint's parameters and BatchNorm statistics (no data, no optimiser state).
  """
  if stage not in (None, "train"):
    raise ValueError(f"stage={stage!r}: the supervised method trains one stage, 'train'")
  model = build_model(config)
  h, w = config.augment.crop_size

  init_fn = image_init_fn(model, (h, w))

  variables, step, mesh = load_variables(workdir, init_fn, which=which)
  return InferenceModel(
      config=config,
      stage="train",
      step=step,
      variables=variables,
      apply_fn=lambda v, images: model.apply(v, images, train=False),
      mesh=mesh,
      class_names=tuple(datasets.class_names(config.data)),
  )
