"""Fully supervised segmentation (upper bound for the weakly/self-supervised methods).

COMMAND (embedded synthetic data, 2-core CPU, a few minutes):
  python launch.py --config=configs/supervised.py:synthetic --workdir=/tmp/jaxseg/supervised

COMMAND (PASCAL VOC 2012, SegmentationClassAug from SBD):
  python launch.py --config=configs/supervised.py:voc --config.data.root=/data/VOC2012 \
      --workdir=/tmp/jaxseg/supervised_voc

COMMAND (upper bound of the SEAM demo: its scenes, image size and eval split, pixel labels):
  python launch.py --config=configs/supervised.py:seam --workdir=runs/seam_supervised

Variants (`:arg`): synthetic (default) | voc | seam; `steps=N` overrides total steps;
`runlocal` makes a tiny smoke run; `reduced` (with synthetic: the CI budget of the demo's mIoU claim,
300 steps).
"""

import importlib.util
import os

from jaxseg.config import apply_common_args, parse_arg
from jaxseg.methods.supervised import default_config


def get_config(arg=None):
  arg = parse_arg(arg, variant="synthetic", steps=0, runlocal=False, reduced=False)
  config = default_config()
  if arg.variant in ("synthetic", "seam"):
    config.data.name = "synthetic"
    config.data.num_classes = 7
    config.train.batch_size = 16
    config.train.total_steps = 600
    config.train.log_every = 50
    config.train.checkpoint_every = 200
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 3e-3
    config.optimizer.weight_decay = 1e-4
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = 30
    if arg.variant == "seam":
      _seam_demo_data(config)
  elif arg.variant == "voc":
    config.data.name = "voc"
    config.data.num_classes = 21
    config.data.train_split = "train_aug"
    config.data.eval_split = "val"
    config.model.depth = 101
    config.model.width_multiplier = 1.0
    config.model.head_channels = 512
    config.augment.crop_size = (321, 321)
    config.augment.scale_range = (0.5, 1.5)
    config.evaluate.eval_size = (512, 512)
    config.evaluate.batch_size = 8
    config.train.batch_size = 16
    config.train.total_steps = 30000
    config.train.compute_dtype = "bfloat16"
    config.optimizer.name = "momentum"
    config.optimizer.learning_rate = 0.01
    config.optimizer.weight_decay = 5e-4
    config.optimizer.schedule = "poly"
    config.optimizer.lr_multipliers = ((r"^(params/)?head/", 10.0),)
  else:
    raise ValueError(f"unknown variant {arg.variant!r}: expected synthetic, voc or seam")
  if arg.reduced:
    _reduced(config, arg.variant)
  apply_common_args(config, arg)
  return config


def _reduced(config, variant):
  """The CI budget of the demo's mIoU claim (`jaxseg.tools.results` study `supervised_ci`): half the
  demo's steps, the same cosine schedule over them."""
  if variant != "synthetic":
    raise ValueError(
        "reduced is a budget of the synthetic demo: use configs/supervised.py:synthetic,reduced"
    )
  config.train.total_steps = 300


def _seam_demo_data(config):
  """The SEAM demo's data section (configs/seam.py:synthetic), crop and eval size: its upper bound."""
  # Read from the SEAM config itself so that the bound follows any change of the demo's scenes.
  spec = importlib.util.spec_from_file_location(
      "seam_config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "seam.py")
  )
  seam_config = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(seam_config)
  seam = seam_config.get_config("synthetic")
  config.data.update(seam.data.to_dict())
  config.augment.crop_size = tuple(seam.augment.crop_size)
  config.evaluate.eval_size = tuple(seam.data.synthetic.image_size)
