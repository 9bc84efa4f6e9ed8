"""Toy multi-network, multi-source tasks for the trainer's extension points.

`python tests/toy_multi.py WORKDIR` runs a two-stage method (train a two-source,
two-optimiser toy; then 'report') through `run_stages`, as launch.py would;
JAXSEG_TOY_KILL_IN_REPORT=1 makes the 'report' stage SIGKILL its own process.
"""

import os
import signal
import sys
import time

import flax.linen as nn
import grain
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxseg.train import loop  # noqa: E402
from jaxseg.train.config import trainer_config  # noqa: E402
from jaxseg.train.optimizer import optimizer_group  # noqa: E402


class ImageSource:
  """Deterministic images of one size (a domain); `labelled` adds a mask."""

  def __init__(self, n, size, offset, labelled):
    self.n, self.size, self.offset, self.labelled = n, size, offset, labelled

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    rng = np.random.default_rng([self.offset, i])
    image = rng.uniform(0, 1, (*self.size, 3)).astype(np.float32)
    out = {"image": image, "index": np.int32(i)}
    if self.labelled:
      out["mask"] = (image[..., 0] > 0.5).astype(np.int32)
    return out


class FlipAugment(grain.transforms.RandomMap):

  def __init__(self, delay=0.0):
    self.delay = delay

  def random_map(self, element, rng):
    if self.delay:
      time.sleep(self.delay)  # Slows the toy run so a test can kill it mid-way.
    out = dict(element)
    if rng.uniform() < 0.5:
      out = {
          k: (np.ascontiguousarray(v[:, ::-1]) if np.ndim(v) >= 2 else v) for k, v in out.items()
      }
    return out


class Segmenter(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3), name="conv")(x))
    return nn.Conv(2, (1, 1), name="head")(x)


class Discriminator(nn.Module):

  @nn.compact
  def __call__(self, p):
    return nn.Conv(1, (3, 3), name="conv")(p).mean(axis=(1, 2, 3))


def two_network_task(delay=0.0, n=96):
  """A segmenter on 'source' (labelled 12x16, batch train.batch_size) and a discriminator telling its target (8x8, batch 8) outputs apart."""
  seg, disc = Segmenter(), Discriminator()

  def init_fn(rng, batch):
    x = batch["source"]["image"]
    return {
        "params": {
            "segmenter": seg.init(rng, x)["params"],
            "discriminator": disc.init(rng, jnp.zeros(x.shape[:-1] + (2,)))["params"],
        }
    }

  def loss_fn(params, model_state, batch, rng):
    del rng
    ls = seg.apply({"params": params["segmenter"]}, batch["source"]["image"])
    lt = seg.apply({"params": params["segmenter"]}, batch["target"]["image"])
    onehot = nn.one_hot(batch["source"]["mask"], 2)
    seg_loss = -jnp.mean(jnp.sum(onehot * nn.log_softmax(ls), -1))
    d = lambda p, x: disc.apply({"params": p}, nn.softmax(x))  # noqa: E731
    frozen_d = jax_stop(params["discriminator"])
    adv = jnp.mean(nn.softplus(-d(frozen_d, lt)))  # fool D: target looks like source (label 1)
    d_loss = 0.5 * (
        jnp.mean(nn.softplus(-d(params["discriminator"], jax_stop(ls))))
        + jnp.mean(nn.softplus(d(params["discriminator"], jax_stop(lt))))
    )
    total = seg_loss + 0.01 * adv + d_loss
    return total, ({"seg": seg_loss, "adv": adv, "disc": d_loss}, model_state)

  return loop.TrainTask(
      init_fn=init_fn,
      loss_fn=loss_fn,
      sources={
          "source": loop.DataSource(
              ImageSource(n, (12, 16), 1, True), FlipAugment(delay), keys=("image", "mask", "index")
          ),
          "target": loop.DataSource(
              ImageSource(n // 2, (8, 8), 2, False),
              FlipAugment(delay),
              keys=("image", "index"),
              batch_size=8,
          ),
      },
  )


def example_batch():
  """Zeros shaped like one global two-source batch (for `loop.setup` / `loop.load_state`)."""
  return {
      "source": {
          "image": np.zeros((16, 12, 16, 3), np.float32),
          "mask": np.zeros((16, 12, 16), np.int32),
          "index": np.zeros((16,), np.int32),
      },
      "target": {"image": np.zeros((8, 8, 8, 3), np.float32), "index": np.zeros((8,), np.int32)},
  }


def main_config():
  config = two_network_config(
      total_steps=40, checkpoint_every=4, log_every=4, async_checkpoint=False
  )
  with config.unlocked():
    config.stages = ("train", "report")
  return config


def jax_stop(x):
  import jax

  return jax.tree.map(jax.lax.stop_gradient, x)


def two_network_config(**train):
  """Segmenter: SGD momentum 0.9, poly; discriminator: Adam betas (0.9, 0.99), poly (ADVENT's)."""
  c = trainer_config()
  c.train.update(batch_size=16, total_steps=6, log_every=2, checkpoint_every=2, progress_bar=False)
  c.train.update(train)
  c.optimizer.update(
      name="momentum", learning_rate=0.05, momentum=0.9, weight_decay=5e-4, schedule="poly"
  )
  with c.unlocked():
    c.optimizer.groups.discriminator = optimizer_group(
        r"^discriminator/",
        name="adam",
        learning_rate=1e-3,
        b1=0.9,
        b2=0.99,
        weight_decay=0.0,
        schedule="poly",
    )
  return c


def main(workdir):
  from jaxseg.evaluation.outputs import write_json
  from jaxseg.train.stages import run_stages, train_stage

  config = main_config()

  def train(config, workdir):
    train_stage(config, workdir, two_network_task(delay=0.004))

  def report(config, workdir):
    if os.environ.get("JAXSEG_TOY_KILL_IN_REPORT") == "1":
      os.kill(os.getpid(), signal.SIGKILL)
    write_json(os.path.join(workdir, "report.json"), {"ok": True})
    return {"ok": True}

  from jaxseg import cli

  with cli.user_errors():  # As launch.py: a SIGTERM'd run exits 0 after its checkpoint.
    run_stages(config, workdir, {"train": train, "report": report}, method="toy")


if __name__ == "__main__":
  main(sys.argv[1])
