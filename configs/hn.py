"""Depth as free supervision (Lahoud & Ghanem 2020): HN labels from depth, pre-training, few-label
fine-tuning; random init vs HN pre-training (vs ImageNet init) at equal fine-tuning budget.

COMMAND (NYU Depth v2 labelled set, 40 classes, 795 train / 654 test):
  python launch.py --config=configs/hn.py --workdir=runs/hn_nyu \
      --config.pretrain_data.mat_path=/data/nyu_depth_v2_labeled.mat \
      --config.pretrain_data.splits_path=/data/splits.mat \
      --config.data.mat_path=/data/nyu_depth_v2_labeled.mat --config.data.splits_path=/data/splits.mat \
      --config.data.mapping40=/data/classMapping40.mat
  (pre-training reads only depth; add `--config.finetune.arms='("random","hn","imagenet")'
  --config.init.imagenet=resnet50.msgpack` for the ImageNet column.)

COMMAND (embedded demo, 2-core CPU, minutes):
  python launch.py --config=configs/hn.py:synthetic --workdir=runs/hn
  synthetic indoor RGB-D rooms (tilted camera, Kinect-like holes and noise): HN labels -> pre-training
  -> fine-tuning with 1% and 5% of the labelled images from random init and from HN pre-training;
  prints the mIoU table, writes runs/hn/results.md and runs/hn/pictures/.

Variants (`:arg`): nyu (default) | synthetic; `steps=N` (pre-training steps); `runlocal`; `reduced` (with
synthetic: the CI budget of the HN > random init claim).
"""

from jaxseg.config import parse_arg
from jaxseg.methods.hn import default_config


def get_config(arg=None):
  arg = parse_arg(arg, variant="nyu", steps=0, runlocal=False, reduced=False)
  config = default_config()
  if arg.variant == "synthetic" or arg.runlocal:
    _synthetic(config)
  elif arg.variant != "nyu":
    raise ValueError(f"unknown variant {arg.variant!r}: expected nyu or synthetic")
  if arg.reduced:
    _reduced(config)
  if arg.steps:
    config.train.total_steps = arg.steps
  if arg.runlocal:
    config.pretrain_data.synthetic.num_train = 16
    config.data.synthetic.update(num_train=16, num_eval=8)
    config.train.update(total_steps=4, log_every=2, checkpoint_every=2)
    config.finetune.train.update(total_steps=2, log_every=1, checkpoint_every=2)
    config.finetune.label_fractions = (0.25,)
    config.evaluate.num_pictures = 2
  return config


def _reduced(config):
  """The CI budget of the demo's claim (`jaxseg.tools.results` study `hn_ci`): 300 rooms of HN labels,
  120 pre-training steps, 80 fine-tuning steps with 5% (20) of the labelled rooms (1% is 4 images: too
  few for a stable margin), 40 eval rooms, no pictures."""
  config.pretrain_data.synthetic.num_train = 300
  config.train.total_steps = 120
  config.finetune.train.total_steps = 80
  config.finetune.label_fractions = (0.05,)
  config.data.synthetic.num_eval = 40
  config.evaluate.num_pictures = 0


def _synthetic(config):
  """Synthetic indoor rooms for both HN pre-training (depth only) and the semantic task (floor, wall,
  furniture, object, ceiling)."""
  for section, seed in ((config.pretrain_data, 0), (config.data, 50_000)):
    section.name = "synthetic_indoor"
    section.synthetic.update(image_size=(64, 64), seed=seed)
  config.pretrain_data.synthetic.num_train = 800
  config.data.synthetic.update(num_train=400, num_eval=100)
  config.data.num_classes = 5
  # 64 x 64 images: HHA's windows (3 and 10 px at 640 x 480) span too much of the room; radius 2 and
  # gravity from the same normals are ~10x more precise here (tests/test_depth_geometry.py).
  config.hn.update(normal_radius=2, gravity_normal_radius=0)
  config.augment.update(
      crop_size=(64, 64), scale_range=(0.75, 1.25), color_jitter=(0.2, 0.2, 0.2, 0.02)
  )
  config.model.update(depth=18, width_multiplier=0.25, head_channels=64)
  config.evaluate.update(eval_size=(64, 64), batch_size=16)
  config.train.update(batch_size=16, total_steps=600, log_every=100, checkpoint_every=300)
  config.finetune.train.update(batch_size=16, total_steps=300, log_every=100, checkpoint_every=300)
  for opt in (config.optimizer, config.finetune.optimizer):
    # From scratch on 64 x 64 images: AdamW with a short warm-up converges in a few hundred steps.
    opt.update(
        name="adamw", learning_rate=3e-3, weight_decay=1e-4, schedule="cosine", warmup_steps=30
    )
  config.finetune.label_fractions = (0.01, 0.05)  # 4 and 20 of the 400 labelled training rooms
