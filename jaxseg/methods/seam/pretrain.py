"""Backbone pre-training for runs without ImageNet weights: the synthetic demo's stand-in for ImageNet init.

The paper's recipe starts SEAM (and the CAM baseline) from an ImageNet-trained ResNet-38. Trained from scratch
on the synthetic scenes, the multi-label GAP classifier leaves some classes *dead*: their logit settles at the
class prior for every image (AUC ~0.5, the same CAM inside and outside the objects) and never recovers, and
which classes die depends on the seed. Measured on 96 px scenes, 200-600 steps, AdamW: 2 of 6 classes dead for
seeds 0, 1 and 2, also with 10x / 1x head learning rates, lr 5e-3 and SGD. A SEAM-vs-CAM comparison is then
decided by which classes happened to die, not by the method.

ImageNet pre-training is single-label classification with a softmax, which trains every class. This stage
does the same on the synthetic generator: one object per image (scenes disjoint from the train and eval
splits), softmax cross-entropy on the spatial max of the class map (fc8 on conv6), then saves the backbone
variables (not fc8, which SEAM trains from scratch as official) to `<workdir>/pretrain/backbone.msgpack`.
`config.init.weights = 'pretrain'` makes the train and affinity stages start from that file.
"""
from __future__ import annotations

import copy
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxseg.data import synthetic, transforms
from jaxseg.models import convert
from jaxseg.train import loop

PRETRAIN_WEIGHTS = "pretrain"  # config.init.weights value that selects this stage's output
PRETRAIN_SEED = 2_000_003      # the train split uses seed 0 and eval 1_000_003: disjoint scenes
HEAD_LAYERS = ("fc8", "f8_3", "f8_4", "f9")


def weights_path(workdir: str) -> str:
  return os.path.join(workdir, "pretrain", "backbone.msgpack")


def resolve_init_weights(config, workdir: str | None) -> str:
  """The weights file `config.init.weights` names ('' = random init; 'pretrain' = this stage's output).

  Without a workdir (rebuilding a task only to restore its checkpoint) 'pretrain' resolves to '' since the
  checkpoint overwrites the initial weights anyway.
  """
  weights = str(config.init.weights)
  if weights != PRETRAIN_WEIGHTS:
    return weights
  if workdir is None:
    return ""
  path = weights_path(workdir)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: config.init.weights='pretrain' needs the 'pretrain' stage "
                            f"(config.stages) to run first in this workdir")
  return path


def pretrain_config(config):
  """Trainer config of the pre-training run: SEAM's, with the `pretrain` section's budget and optimiser."""
  p = config.pretrain
  c = copy.deepcopy(config)
  with c.unlocked():
    c.train.batch_size = int(p.batch_size)
    c.train.total_steps = int(p.total_steps)
    c.optimizer.learning_rate = float(p.learning_rate)
    c.optimizer.lr_multipliers = ()
    c.optimizer.frozen = ""
  return c


def single_object_source(config) -> synthetic.SyntheticScenes:
  if config.data.name != "synthetic":
    raise ValueError("the 'pretrain' stage generates single-object synthetic scenes: it needs "
                     f"config.data.name='synthetic', got {config.data.name!r} (use ImageNet weights "
                     "via config.init.weights for real data)")
  s = config.data.synthetic
  return synthetic.SyntheticScenes(int(config.pretrain.num_images), num_classes=config.data.num_classes - 1,
                                   image_size=tuple(s.image_size), seed=PRETRAIN_SEED, min_objects=1,
                                   max_objects=1, style=s.style)


def softmax_classification_loss(cam: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Softmax cross-entropy of the spatial max of cam[..., 1:] against single-object labels.

  Max pooling (not SEAM's GAP) because the objects cover ~4-9 % of a synthetic scene: with GAP the object's
  evidence is diluted ~20x and 300 steps leave two similar classes merged (measured: red disc and magenta
  star, 100 % confused); the max puts the whole gradient on the object. Only the backbone is kept.

  Args:
    cam: float [B, H, W, C] class-map logits (channel 0 = background slot, unused).
    labels: float [B, C - 1] image labels; rows with exactly one class count, others (object hidden by the
      crop) are skipped.
  Returns:
    (mean loss over counted rows, accuracy over counted rows), float32 scalars.
  """
  logits = jnp.max(cam[..., 1:].astype(jnp.float32), axis=(1, 2))
  valid = (jnp.sum(labels, axis=-1) == 1).astype(jnp.float32)
  target = jnp.argmax(labels, axis=-1)
  per_image = optax.softmax_cross_entropy_with_integer_labels(logits, target)
  count = jnp.maximum(jnp.sum(valid), 1.0)
  accuracy = jnp.sum(valid * (jnp.argmax(logits, axis=-1) == target)) / count
  return jnp.sum(per_image * valid) / count, accuracy


def make_task(config) -> loop.TrainTask:
  from jaxseg.methods.seam import method  # pylint: disable=import-outside-toplevel
  model = method.build_model(config, use_pcm=False)

  def init_fn(rng, batch):
    return model.init({"params": rng, "dropout": rng}, batch["image"], train=False)

  def loss_fn(params, model_state, batch, rng):
    variables = {"params": params, **model_state}
    if model.frozen_bn:
      out = model.apply(variables, batch["image"], train=True, rngs={"dropout": rng})
    else:
      out, model_state = model.apply(variables, batch["image"], train=True, rngs={"dropout": rng},
                                     mutable=["batch_stats"])
    loss, accuracy = softmax_classification_loss(out["cam"], batch["labels"])
    return loss, ({"accuracy": accuracy}, model_state)

  return loop.TrainTask(init_fn=init_fn, loss_fn=loss_fn, train_source=single_object_source(config),
                        augment=transforms.build_augment(method.augment_spec(config)),
                        keys=("image", "labels"))


def run(config, workdir: str) -> str:
  """Trains (or resumes) the classifier, writes the backbone variables; returns their path."""
  pc = pretrain_config(config)
  state = loop.train(pc, os.path.join(workdir, "pretrain"), make_task(pc))
  variables = jax.device_get({"params": state["params"], **state["model_state"]})
  backbone = {collection: {name: tree for name, tree in trees.items() if name not in HEAD_LAYERS}
              for collection, trees in variables.items()}
  path = weights_path(workdir)
  if jax.process_index() == 0:
    tmp = path + ".tmp"
    convert.save_variables(tmp, jax.tree.map(np.asarray, backbone))
    os.replace(tmp, path)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices("seam_pretrain_weights")
  return path
