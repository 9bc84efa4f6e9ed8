"""Domain adaptation with entropy (ADVENT, ESL): config, networks and the training objectives.

One train state holds three networks, each with its own optimiser group (`jaxseg.train.optimizer`):
  params['segmenter']   DeepLab-v2 (multi-level: 'aux' head on layer3, 'main' on layer4); SGD
                        momentum 0.9, wd 5e-4, lr 2.5e-4 (heads 10x), poly 0.9 (the default group)
  params['d_main'], params['d_aux']   ADVENT's fully-convolutional discriminators; Adam lr 1e-4,
                        betas (0.9, 0.99), same poly (group 'discriminators'; only AdvEnt trains them)

Each batch holds two named sources: 'source' (labelled, e.g. GTA5 1280x720) and 'target' (e.g.
Cityscapes 1024x512: unlabelled for AdvEnt / MinEnt, pseudo-labelled for self-training).

Objectives (`loss.name`), as the official `train_UDA.py` (notes/esl.md section 2):
  source_only  CE(main) + 0.1 CE(aux) on the source, logits upsampled (align_corners=True) to the label
  minent       + 0.001 / 0.0002 x entropy loss of the target main / aux predictions
  advent       + 0.001 / 0.0002 x bce(D(I_trg), source label) with D frozen, plus each D's loss on the
               detached source / target self-information maps (the official two optimiser steps
               become one step of one objective whose gradients are the same: D gets only the D loss,
               the segmenter only the rest)
  Self-training adds CE(main) + 0.1 CE(aux) on the target pseudo labels (`loss.target_ce`; ESL's
  plain CE, or entropy-weighted with `loss.entropy_weight_power` > 0).
BatchNorm follows the official `model.train()`: batch statistics, running statistics updated by the
source forward and then by the target forward (`model.frozen_bn=False`); affine parameters frozen.

Optimiser quirks of the official code, reproduced by default (every trainer section: the top-level
'adapt' one, `source_only`, `self_train`):
  optimizer.listing_multiplicity = ADVENT_LISTING_MULTIPLICITY: the official SGD group lists each
      backbone tensor 3x (Bottleneck convs) or 4x (downsample convs) and PyTorch applies the update
      once per listing, so each backbone tensor moves several times the nominal step. jaxseg
      reproduces PyTorch 2.x's arithmetic (the golden run's; the published numbers came from
      PyTorch 0.4, which also updates once per listing but shares one momentum buffer from the
      first step). `--config.optimizer.listing_multiplicity=()` gives the intended single update
      per step (the heads' and discriminators' update rules are the same either way).
  optimizer.decay_steps = 250000 (and the discriminators' group): the poly horizon is MAX_ITERS
      while training stops at EARLY_STOP = train.total_steps = 120000 (lr never reaches 0); 0 makes
      the schedule decay over train.total_steps.
Parity with two official `train_advent` iterations: tests/test_uda_trajectory.py.
"""

from __future__ import annotations

import dataclasses
import functools

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxseg.data import datasets, transforms
from jaxseg.errors import ConfigError
from jaxseg.losses import adversarial
from jaxseg.losses.entropy import entropy_loss, self_information_map
from jaxseg.losses.segmentation import (
    entropy_weighted_cross_entropy,
    upsample_logits,
    upsampled_cross_entropy,
)
from jaxseg.methods.uda import optimizer as advent_optimizer
from jaxseg.models.deeplab_v2 import DeepLabV2
from jaxseg.models.discriminator import FCDiscriminator
from jaxseg.train import loop
from jaxseg.train.config import compute_dtype, stage_section, trainer_config, trainer_section
from jaxseg.train.objectives import apply_model
from jaxseg.train.optimizer import optimizer_group

HEADS = (
    r"^segmenter/(layer5|layer6)/"  # the classifier heads: 10x learning rate (get_10x_lr_params)
)
DISCRIMINATORS = r"^d_(main|aux)/"
# Official ADVENT lists each backbone tensor in the segmenter's 1x SGD group once per ancestor module
# (`get_1x_lr_params_no_scale` yields `j.parameters()` for every module j of layer1-4): conv1 once,
# each Bottleneck conv 3x (layerN, layerN.i, layerN.i.convK), each downsample conv 4x; the heads
# (`get_10x_lr_params`) once. PyTorch 2.x SGD updates a tensor once per listing (golden README
# section 6), so the published numbers come from these multiplicities: the paper default of
# `optimizer.listing_multiplicity` (see `jaxseg.methods.uda.optimizer`).
ADVENT_LISTING_MULTIPLICITY = (
    (r"^segmenter/layer[1-4]/\d+/downsample/", 4),
    (r"^segmenter/layer[1-4]/\d+/conv\d/", 3),
)
# Official poly horizon (MAX_ITERS); training stops earlier, at EARLY_STOP = train.total_steps.
ADVENT_MAX_ITERS = 250000
OBJECTIVES = ("source_only", "minent", "advent")


def _official_optimizer(section: ml_collections.ConfigDict) -> None:
  """ADVENT's optimisers (domain_adaptation/config.py) in a trainer section, in place."""
  o = section.optimizer
  o.update(
      name=advent_optimizer.NAME,
      learning_rate=2.5e-4,
      momentum=0.9,
      weight_decay=5e-4,
      schedule="poly",
      poly_power=0.9,
      decay_steps=ADVENT_MAX_ITERS,
      lr_multipliers=((HEADS, 10.0),),
      listing_multiplicity=ADVENT_LISTING_MULTIPLICITY,
  )
  o.groups.discriminators = optimizer_group(
      DISCRIMINATORS,
      name="adam",
      learning_rate=1e-4,
      b1=0.9,
      b2=0.99,
      weight_decay=0.0,
      schedule="poly",
      poly_power=0.9,
      decay_steps=ADVENT_MAX_ITERS,
  )


def _data_section(name: str, train_split: str, eval_split: str) -> ml_collections.ConfigDict:
  d = datasets.data_config()
  d.update(name=name, train_split=train_split, eval_split=eval_split, num_classes=19)
  return d


# Keys of this config that may change between launches of one workdir without changing what is
# trained (data roots, post-training stages' settings); with the trainer's own
# (`jaxseg.train.config.resume_safe_keys`). A key ending in '.' covers its whole section.
RESUME_SAFE_KEYS = datasets.resume_safe("source_data", "target_data") + (
    "pseudo_labels.",
    "evaluate.",
)


def default_config() -> ml_collections.ConfigDict:
  """Every key the `uda` method reads (locked). Defaults: ADVENT's AdvEnt recipe, GTA5 -> Cityscapes."""
  c = trainer_config()
  c.method = "uda"
  c.stages = ("adapt", "evaluate")
  c.source_data = _data_section("gta5", "all", "all")
  c.target_data = _data_section("cityscapes", "train", "val")
  # Official: no augmentation, full images resized (GTA5 1280x720, Cityscapes 1024x512, as (H, W) here).
  c.input = ml_collections.ConfigDict(
      dict(
          source_size=(720, 1280),
          target_size=(512, 1024),
          flip=False,
          # ADVENT's loaders resize images with PIL bicubic (`_load_img`) and labels with nearest.
          image_resize="bicubic",  # bicubic | bilinear
          # ADVENT feeds BGR minus the Caffe mean on the 0..255 scale; on jaxseg's RGB 0..1 images that is
          # mean = the BGR mean reversed / 255, std = 1 / 255 (the channel order belongs to the weights).
          mean=(122.67891434 / 255, 116.66876762 / 255, 104.00698793 / 255),
          std=(1 / 255, 1 / 255, 1 / 255),
      )
  )
  c.model = ml_collections.ConfigDict(
      dict(
          width_multiplier=1.0,
          depth_blocks=(3, 4, 23, 3),
          frozen_bn=False,  # official: batch statistics in training (model.train())
          discriminator_width=64,  # ndf
      )
  )
  c.loss = ml_collections.ConfigDict(
      dict(
          name="advent",  # source_only | minent | advent
          seg_main=1.0,
          seg_aux=0.1,
          adv_main=0.001,
          adv_aux=0.0002,
          ent_main=0.001,
          ent_aux=0.0002,
          entropy_weight_power=0.0,  # > 0: entropy-weighted target CE in self-training (0 = ESL's plain CE)
      )
  )
  # ImageNet DeepLab-v2 weights converted with `python -m jaxseg.tools.convert_weights --arch
  # deeplab_v2` ('' = random init).
  # The official DeepLab-v2 ImageNet weights come from Caffe and take BGR images; jaxseg feeds RGB, so
  # with weights_bgr=True the first conv's input channels are reversed when the weights are loaded:
  # the network computes on an RGB image what the official one computes on the same image in BGR.
  c.init = ml_collections.ConfigDict(dict(weights="", weights_bgr=True))
  # Main training stage ('adapt'): the top-level trainer section. Official: batch 1 + 1, MAX_ITERS
  # 250000 for the poly schedule, EARLY_STOP 120000.
  c.train.update(batch_size=1, total_steps=120000, checkpoint_every=2000, log_every=100)
  _official_optimizer(c)
  # The source-only baseline ('source_only' stage): its own complete trainer section.
  c.source_only = trainer_section(
      batch_size=1, total_steps=120000, checkpoint_every=2000, log_every=100
  )
  _official_optimizer(c.source_only)
  c.pseudo_labels = ml_collections.ConfigDict(
      dict(
          kind="esl",  # esl (entropy, floor 0.1) | maxprob (BDL, cap 0.9)
          checkpoint="latest",  # latest | best: the 'adapt' model that labels the target train set
          batch_size=1,
      )
  )
  # Self-training ('self_train'): its own complete trainer section (ESL: from the ImageNet init again,
  # source CE + target pseudo-label CE + AdvEnt's adversarial terms).
  c.self_train = trainer_section(
      batch_size=1, total_steps=120000, checkpoint_every=2000, log_every=100
  )
  _official_optimizer(c.self_train)
  c.self_train.objective = (
      "advent"  # what is added to the pseudo-label CE: source_only | minent | advent
  )
  c.evaluate = ml_collections.ConfigDict(
      dict(batch_size=1, checkpoint="latest", num_pictures=4, label_size=(1024, 2048))
  )
  c.lock()
  return c


def build_networks(config, section: str | None = None):
  """(DeepLab-v2 segmenter, FC discriminator), computing in the dtype of the trainer `section`'s
  stage (None: the top-level 'adapt' stage)."""
  m = config.model
  dtype = compute_dtype(config, section)
  segmenter = DeepLabV2(
      num_classes=config.target_data.num_classes,
      multi_level=True,
      width_multiplier=float(m.width_multiplier),
      depth_blocks=tuple(m.depth_blocks),
      frozen_bn=bool(m.frozen_bn),
      dtype=dtype,
  )
  disc = FCDiscriminator(
      num_classes=config.target_data.num_classes, ndf=int(m.discriminator_width), dtype=dtype
  )
  return segmenter, disc


def resize_image_and_mask(example: dict, size, bicubic: bool) -> dict:
  """Resizes 'image' (PIL bicubic as ADVENT's `_load_img`, or bilinear) and 'mask' (nearest) to
  `size` = (H, W); other keys untouched."""
  out = dict(example)
  out["image"] = transforms.resize_array(
      "image", np.asarray(example["image"]), tuple(size), "image", bicubic=bicubic
  )
  if "mask" in example:
    out["mask"] = transforms.resize_array("mask", np.asarray(example["mask"]), tuple(size), "mask")
  return out


@dataclasses.dataclass(frozen=True)
class FixedSize(grain.transforms.RandomMap):
  """Resize to one size (+ optional flip) and normalise: the official 'resize the full image' input."""

  size: tuple[int, int]
  flip: bool
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  keys: tuple[str, ...]
  bicubic: bool = True

  def random_map(self, element, rng):
    ex = {k: element[k] for k in self.keys if k in element}
    ex = resize_image_and_mask(ex, self.size, self.bicubic)
    if self.flip:
      ex = transforms.random_flip(ex, rng, 0.5)
    ex = transforms.normalize(ex, self.mean, self.std)
    out = {"image": ex["image"].astype(np.float32)}
    if "mask" in ex:
      out["mask"] = np.asarray(ex["mask"], np.int32)
    return out


def uses_bicubic(config) -> bool:
  if config.input.image_resize not in ("bicubic", "bilinear"):
    raise ConfigError(
        f"input.image_resize={config.input.image_resize!r}: expected bicubic or bilinear"
    )
  return config.input.image_resize == "bicubic"


def input_transform(config, size, with_mask: bool) -> FixedSize:
  i = config.input
  keys = ("image", "mask") if with_mask else ("image",)
  return FixedSize(
      tuple(size), bool(i.flip), tuple(i.mean), tuple(i.std), keys, bicubic=uses_bicubic(config)
  )


def segment(segmenter, params, model_state, images, train: bool):
  """DeepLab-v2 forward: ({'main', 'aux'} logits [B, h, w, C], new model_state)."""
  return apply_model(segmenter, params, model_state, images, train=train)


def uda_loss(
    segmenter, disc, loss_cfg, objective: str, params, model_state, batch, rng, *, pseudo=False
):
  """The official per-iteration objective of `objective` (+ target pseudo-label CE if `pseudo`).

  batch: {'source': {'image' [B, Hs, Ws, 3], 'mask' int [B, Hs, Ws]},
          'target': {'image' [B, Ht, Wt, 3] (+ 'mask' pseudo labels when `pseudo`)}}.
  Returns (loss, (terms, model_state)).
  """
  del rng
  if objective not in OBJECTIVES:
    raise ValueError(f"loss objective {objective!r}: expected one of {OBJECTIVES}")
  src, trg = batch["source"], batch["target"]
  seg_params = params["segmenter"]
  out_src, model_state = segment(segmenter, seg_params, model_state, src["image"], train=True)
  terms = {}
  src_size, trg_size = src["image"].shape[1:3], trg["image"].shape[1:3]
  for head in ("main", "aux"):
    terms[f"seg_src_{head}"] = upsampled_cross_entropy(out_src[head], src["mask"])
  total = loss_cfg.seg_main * terms["seg_src_main"] + loss_cfg.seg_aux * terms["seg_src_aux"]
  if objective == "source_only" and not pseudo:
    return total, (terms, model_state)
  out_trg, model_state = segment(segmenter, seg_params, model_state, trg["image"], train=True)
  if pseudo:
    for head, weight in (("main", loss_cfg.seg_main), ("aux", loss_cfg.seg_aux)):
      ce = entropy_weighted_cross_entropy(
          out_trg[head], trg["mask"], power=float(loss_cfg.entropy_weight_power)
      )
      terms[f"seg_trg_{head}"] = ce
      total = total + weight * ce
  probs_trg = {
      h: jax.nn.softmax(upsample_logits(out_trg[h], trg_size), -1)
      for h in out_trg
      if h in ("main", "aux")
  }
  if objective == "minent":
    for head, weight in (("main", loss_cfg.ent_main), ("aux", loss_cfg.ent_aux)):
      terms[f"ent_trg_{head}"] = entropy_loss(probs_trg[head])
      total = total + weight * terms[f"ent_trg_{head}"]
  elif objective == "advent":
    for head, weight in (("main", loss_cfg.adv_main), ("aux", loss_cfg.adv_aux)):
      d_params = params[f"d_{head}"]
      info_trg = self_information_map(probs_trg[head])
      frozen_d = jax.lax.stop_gradient(d_params)
      adv = adversarial.adversarial_generator_loss(disc.apply({"params": frozen_d}, info_trg))
      probs_src = jax.nn.softmax(upsample_logits(out_src[head], src_size), -1)
      info_src = jax.lax.stop_gradient(self_information_map(probs_src))
      d_src = disc.apply({"params": d_params}, info_src)
      d_trg = disc.apply({"params": d_params}, jax.lax.stop_gradient(info_trg))
      terms[f"adv_trg_{head}"] = adv
      # The logged halves are the two ADVENT backward passes' losses; under jit each BCE is computed
      # once, shared with the golden-tested `discriminator_loss` that the total runs.
      halves = adversarial.discriminator_loss_terms(d_src, d_trg)
      terms[f"d_src_{head}"], terms[f"d_trg_{head}"] = halves["source"], halves["target"]
      total = total + weight * adv + adversarial.discriminator_loss(d_src, d_trg)
  return total, (terms, model_state)


def init_variables(config, rng, batch, section: str | None = None):
  segmenter, disc = build_networks(config, section)
  r1, r2, r3 = jax.random.split(rng, 3)
  seg_vars = segmenter.init(r1, batch["source"]["image"], train=False)
  seg_params = seg_vars.pop("params")
  # Fully convolutional: the parameters do not depend on the map size, so a fixed 64x64 map (five
  # stride-2 convs need at least 32 px) initialises them whatever the input sizes.
  info = jnp.zeros((1, 64, 64, config.target_data.num_classes))
  params = {
      "segmenter": seg_params,
      "d_main": disc.init(r2, info)["params"],
      "d_aux": disc.init(r3, info)["params"],
  }
  return {"params": params, **seg_vars}


def example_batch(config, section=None) -> dict:
  tcfg = stage_section(config, section).train
  b = int(tcfg.batch_size)
  hs, ws = config.input.source_size
  ht, wt = config.input.target_size
  return {
      "source": {
          "image": np.zeros((b, hs, ws, 3), np.float32),
          "mask": np.zeros((b, hs, ws), np.int32),
      },
      "target": {
          "image": np.zeros((b, ht, wt, 3), np.float32),
          "mask": np.zeros((b, ht, wt), np.int32),
      },
  }


def make_task(
    config, *, section=None, target_source=None, objective=None, make_evaluator=None
) -> loop.TrainTask:
  """The TrainTask of a training stage.

  Args:
    section: the stage's trainer section (None: the top level); its `train` keys (compute dtype)
      shape the networks.
    target_source: the target's training source; None = the unlabelled target train split (then the
      batch has no target 'mask'); a pseudo-labelled source adds the target CE.
    objective: `loss.name` by default; the self-training stage passes `self_train.objective`.
  """
  segmenter, disc = build_networks(config, section)
  pseudo = target_source is not None
  objective = objective or config.loss.name
  if target_source is None:
    target_source = datasets.build_source(config.target_data, "train")
  source = loop.DataSource(
      datasets.build_source(config.source_data, "train"),
      input_transform(config, config.input.source_size, True),
      keys=("image", "mask"),
  )
  target = loop.DataSource(
      target_source,
      input_transform(config, config.input.target_size, pseudo),
      keys=("image", "mask") if pseudo else ("image",),
  )
  loss_fn = functools.partial(uda_loss, segmenter, disc, config.loss, objective, pseudo=pseudo)

  def init_fn(rng, batch):
    return init_variables(config, rng, batch, section)

  return loop.TrainTask(
      init_fn=init_fn,
      loss_fn=loss_fn,
      sources={"source": source, "target": target},
      init_weights=_imagenet_init(config),
      make_evaluator=make_evaluator,
  )


def bgr_to_rgb_input(variables: dict) -> dict:
  """DeepLab-v2 variables for BGR input -> the same network for RGB input (conv1's kernel [7, 7, 3, 64]
  with its input channels reversed)."""
  params = dict(variables["params"])
  conv1 = dict(params["conv1"])
  conv1["kernel"] = np.asarray(conv1["kernel"])[:, :, ::-1, :]
  params["conv1"] = conv1
  return {**variables, "params": params}


def _imagenet_init(config):
  if not config.init.weights:
    return None
  from jaxseg.models import convert

  def load(params, model_state):
    variables = convert.load_variables(config.init.weights)
    if config.init.weights_bgr:
      variables = bgr_to_rgb_input(variables)
    seg = dict(params["segmenter"])
    for k, v in variables["params"].items():
      if k in seg and k not in ("layer5", "layer6"):  # the official init skips the heads
        seg[k] = v
    stats = {**model_state.get("batch_stats", {}), **variables.get("batch_stats", {})}
    return {**params, "segmenter": seg}, {**model_state, "batch_stats": stats}

  return load
