"""A tiny task for trainer tests: random-access source, augment and a small conv net."""

import flax.linen as nn
import grain
import numpy as np

from jaxseg.losses import softmax_cross_entropy_with_ignore
from jaxseg.train import loop
from jaxseg.train.config import trainer_config

NUM_CLASSES = 3


class ToySource:
  """Deterministic 16x16 images whose mask is a thresholded channel."""

  def __init__(self, n=64):
    self.n = n

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    rng = np.random.default_rng([5, i])
    image = rng.uniform(0, 1, (16, 16, 3)).astype(np.float32)
    mask = np.digitize(image[..., 0], [0.33, 0.66]).astype(np.int32)
    return {"image": image, "mask": mask}


class ToyAugment(grain.transforms.RandomMap):

  def random_map(self, element, rng):
    out = dict(element)
    if rng.uniform() < 0.5:
      out = {k: np.ascontiguousarray(v[:, ::-1]) for k, v in out.items()}
    return out


class ToyNet(nn.Module):
  width: int = 64

  @nn.compact
  def __call__(self, x, train):
    x = nn.Conv(self.width, (3, 3), name="conv1")(x)
    x = nn.BatchNorm(use_running_average=not train, name="bn")(x)
    x = nn.relu(x)
    x = nn.Dropout(0.1, deterministic=not train)(x)
    return nn.Conv(NUM_CLASSES, (1, 1), name="head")(x)


def toy_task(n=64, width=64):
  model = ToyNet(width)

  def init_fn(rng, batch):
    return model.init({"params": rng}, batch["image"], train=False)

  def loss_fn(params, model_state, batch, rng):
    logits, updates = model.apply(
        {"params": params, **model_state},
        batch["image"],
        train=True,
        rngs={"dropout": rng},
        mutable=["batch_stats"],
    )
    return softmax_cross_entropy_with_ignore(logits, batch["mask"]), ({}, updates)

  return loop.TrainTask(
      init_fn=init_fn, loss_fn=loss_fn, train_source=ToySource(n), augment=ToyAugment()
  )


def toy_config(**train):
  c = trainer_config()
  c.train.batch_size = 8
  c.train.total_steps = 6
  c.train.log_every = 2
  c.train.checkpoint_every = 2
  c.train.progress_bar = False
  c.optimizer.name = "momentum"
  c.optimizer.learning_rate = 0.05
  c.optimizer.schedule = "constant"
  c.train.update(train)
  return c
