"""Fully supervised segmentation (upper bound for the weakly/self-supervised methods).

COMMAND (embedded synthetic data, 2-core CPU, a few minutes):
  python launch.py --config=configs/supervised.py:synthetic --workdir=/tmp/jaxseg/supervised

COMMAND (PASCAL VOC 2012, SegmentationClassAug from SBD):
  python launch.py --config=configs/supervised.py:voc --config.data.root=/data/VOC2012 \
      --workdir=/tmp/jaxseg/supervised_voc

Variants (`:arg`): synthetic (default) | voc; `steps=N` overrides total steps;
`runlocal` makes a tiny smoke run.
"""

from jaxseg.config import apply_common_args, parse_arg
from jaxseg.methods.supervised import default_config


def get_config(arg=None):
  arg = parse_arg(arg, variant="synthetic", steps=0, runlocal=False)
  config = default_config()
  if arg.variant == "synthetic":
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
    raise ValueError(f"unknown variant {arg.variant!r}: expected synthetic or voc")
  apply_common_args(config, arg)
  return config
