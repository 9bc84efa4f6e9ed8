"""Depth as free supervision (Lahoud & Ghanem, arXiv 2002.02200): HN-label pre-training, few-label
fine-tuning. Config, network and training tasks.

No official code exists; jaxseg's choices (see `jaxseg.depth.hn_labels` for the labels themselves):
  * network: ResNet + FCN head (`jaxseg.models.fcn.FCN`, the `supervised` method's network); the paper
    only says "a semantic segmentation network". Pre-training trains it on the HN classes (height bin x
    normal-angle bin, one softmax, ignore 255 where depth is missing); fine-tuning replaces the final
    1x1 classifier by one with the semantic classes (fresh init) and trains everything.
  * the comparison: fine-tuning from `random` init, from the `hn` pre-trained weights, or from
    `imagenet` weights (`init.imagenet`: torchvision ResNet weights converted with
    `python -m jaxseg.tools.convert_weights`), at equal budget (the `finetune` trainer section), for
    every fraction in `finetune.label_fractions` of the labelled training images.
"""

from __future__ import annotations

import functools

import jax
import ml_collections
import numpy as np

from jaxseg.data import transforms
from jaxseg.depth import default_hn_config, hn_num_classes
from jaxseg.errors import ConfigError
from jaxseg.models.fcn import FCN
from jaxseg.train import loop
from jaxseg.train.config import compute_dtype, stage_section, trainer_config, trainer_section
from jaxseg.train.objectives import segmentation_objective

ARMS = ("random", "hn", "imagenet")


NYU_FILE_KEYS = ("mat_path", "splits_path", "mapping40", "mapping13")  # where the files are


def _nyu_fields(**overrides) -> dict:
  from jaxseg.data.readers.prepared import tfds_fields

  fields = dict(
      # raw: read the .mat files below; tfds: the same examples from `python -m jaxseg.data.prepare
      # nyu_depth_v2` (tfds.data_dir; splits train / test).
      source="raw",
      tfds=tfds_fields("nyu_depth_v2"),
      mat_path="",
      splits_path="",
      mapping40="",
      mapping13="",
      classes=40,
  )
  fields.update(overrides)
  return fields


def _synthetic_section(**overrides) -> ml_collections.ConfigDict:
  fields = dict(num_train=400, num_eval=100, image_size=(64, 64), seed=0)
  fields.update(overrides)
  return ml_collections.ConfigDict(fields)


# Keys of this config that may change between launches of one workdir without changing what is
# trained (data roots, post-training stages' settings); with the trainer's own
# (`jaxseg.train.config.resume_safe_keys`). A key ending in '.' covers its whole section.
RESUME_SAFE_KEYS = (
    "pretrain_data.root",
    *(f"{s}.{k}" for s in ("pretrain_data", "data") for k in (*NYU_FILE_KEYS, "tfds.data_dir")),
    "evaluate.",
)


def default_config() -> ml_collections.ConfigDict:
  """Every key the `hn` method reads (locked). Defaults: NYU Depth v2 labelled set, 40 classes."""
  c = trainer_config()
  c.method = "hn"
  c.stages = ("hn_labels", "pretrain", "finetune", "evaluate")
  # Where the HN labels come from (depth only, no semantic labels read).
  c.pretrain_data = ml_collections.ConfigDict(
      dict(
          name="nyu",  # synthetic_indoor | nyu | rgbd
          root="",  # rgbd: folders of rgb/, depth/, intrinsics.txt
          depth_scale=1000.0,  # rgbd: depth PNG units per metre
          split="train",  # nyu: train | test | all
          synthetic=_synthetic_section(num_train=800),
          **_nyu_fields(),
      )
  )
  # The semantic task fine-tuned on few labels and evaluated.
  c.data = ml_collections.ConfigDict(
      dict(
          name="nyu",  # synthetic_indoor | nyu
          num_classes=40,
          ignore_index=255,
          train_split="train",
          eval_split="test",
          synthetic=_synthetic_section(seed=50_000),
          **_nyu_fields(),
      )
  )
  c.hn = default_hn_config()
  c.augment = ml_collections.ConfigDict(
      dict(scale_range=(0.75, 1.25), crop_size=(321, 321), flip=True, color_jitter=None)
  )
  c.normalize = ml_collections.ConfigDict(
      dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
  )
  c.model = ml_collections.ConfigDict(
      dict(depth=50, width_multiplier=1.0, output_stride=8, head_channels=512, dropout=0.1)
  )
  c.init = ml_collections.ConfigDict(dict(imagenet=""))
  # Pre-training: the top-level trainer section (DeepLab convention: SGD momentum, poly).
  c.train.update(batch_size=16, total_steps=40_000, checkpoint_every=2000, log_every=100)
  c.optimizer.update(
      name="momentum", learning_rate=0.01, weight_decay=1e-4, schedule="poly", poly_power=0.9
  )
  # Fine-tuning: its own complete trainer section, the same for every arm and fraction.
  c.finetune = trainer_section(
      batch_size=16, total_steps=20_000, checkpoint_every=2000, log_every=100
  )
  c.finetune.optimizer.update(
      name="momentum", learning_rate=0.01, weight_decay=1e-4, schedule="poly", poly_power=0.9
  )
  c.finetune.arms = ("random", "hn")  # + "imagenet" with init.imagenet
  c.finetune.label_fractions = (0.04, 0.2, 1.0)
  c.finetune.subset_seed = 0
  c.evaluate = ml_collections.ConfigDict(
      dict(batch_size=8, eval_size=(480, 640), num_pictures=6, checkpoint="latest")
  )
  c.lock()
  return c


def build_model(config, num_classes: int, section: str | None = None) -> FCN:
  """The FCN, computing in the dtype of trainer `section`'s stage (None: pretrain; 'finetune')."""
  m = config.model
  return FCN(
      num_classes=num_classes,
      depth=int(m.depth),
      width_multiplier=float(m.width_multiplier),
      output_stride=int(m.output_stride),
      head_channels=int(m.head_channels),
      dropout=float(m.dropout),
      dtype=compute_dtype(config, section),
  )


def example_batch(config, section: str | None = None) -> dict:
  b = int(stage_section(config, section).train.batch_size)
  h, w = config.augment.crop_size
  return dict(image=np.zeros((b, h, w, 3), np.float32), mask=np.zeros((b, h, w), np.int32))


def make_task(
    config, source, num_classes: int, init_weights=None, section: str | None = None
) -> loop.TrainTask:
  """A segmentation TrainTask over `source` (image + mask) with `num_classes` outputs, for the stage
  of trainer `section`."""
  model = build_model(config, num_classes, section)

  def init_fn(rng, batch):
    return model.init({"params": rng, "dropout": rng}, batch["image"], train=False)

  return loop.TrainTask(
      init_fn=init_fn,
      loss_fn=functools.partial(segmentation_objective, model, int(config.data.ignore_index)),
      train_source=source,
      augment=transforms.build_augment(transforms.segmentation_augment_spec(config)),
      keys=("image", "mask"),
      init_weights=init_weights,
  )


def num_hn_classes(config) -> int:
  return hn_num_classes(config.hn)


def transfer_init(pretrained: dict):
  """init_weights: every pre-trained tensor except the final classifier (a fresh one: the classes
  differ), BatchNorm statistics included."""

  def load(params, model_state):
    params = jax.tree_util.tree_map(np.asarray, params)
    src = pretrained["params"]
    out = dict(params)
    out["backbone"] = src["backbone"]
    head = dict(params["head"])
    for name, value in src["head"].items():
      if name != "classifier":
        head[name] = value
    out["head"] = head
    stats = pretrained.get("batch_stats")
    if stats is not None:
      model_state = {**model_state, "batch_stats": stats}
    return out, model_state

  return load


def imagenet_init(config, num_classes: int):
  """init_weights from converted torchvision ResNet weights (`init.imagenet`), backbone only."""
  if not config.init.imagenet:
    raise ConfigError(
        "finetune.arms has 'imagenet' but init.imagenet is empty\nhint: convert torchvision "
        "weights with `python -m jaxseg.tools.convert_weights` and pass --config.init.imagenet=FILE"
    )
  from jaxseg.models import convert

  def load(params, model_state):
    variables = convert.load_variables(str(config.init.imagenet))
    out = dict(params)
    out["backbone"] = variables["params"].get("backbone", variables["params"])
    stats = dict(model_state.get("batch_stats", {}))
    if "batch_stats" in variables:
      stats["backbone"] = variables["batch_stats"].get("backbone", variables["batch_stats"])
    return out, {**model_state, "batch_stats": stats}

  del num_classes
  return load


def check_arms(config) -> tuple[str, ...]:
  arms = tuple(config.finetune.arms)
  unknown = sorted(set(arms) - set(ARMS))
  if unknown:
    raise ConfigError(f"finetune.arms: unknown {unknown}; known: {ARMS}")
  return arms
