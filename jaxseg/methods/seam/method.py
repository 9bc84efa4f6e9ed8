"""SEAM (Wang et al., CVPR 2020): config, model, the training stage and the trained CAM model.

Stages (config.stages):
  train     ResNet-38 + PCM on image-level labels: cls + ER + ECR over two views
            (`jaxseg.losses.seam.seam_loss`), or the plain CAM baseline (loss.name='cam').
  infer     multi-scale + flip CAMs for the eval split, pseudo masks, background-threshold sweep.
  affinity  AffinityNet on labels from the CAMs, random walk, refined pseudo masks.
  segment   random-walk pseudo masks of the training images -> DeepLab-v2 trained on them (own trainer
            section `config.segment`), scored on `segment.eval_split` with and without the dense CRF.
  evaluate  summary table (CAM / SEAM CAM / random walk mIoU), metrics.json and a picture grid.
"""

from __future__ import annotations

import functools
import os

import jax
import ml_collections

from jaxseg.data import datasets, transforms
from jaxseg.losses import seam as seam_losses
from jaxseg.losses.segmentation import upsample_logits
from jaxseg.models import affinitynet, convert
from jaxseg.models import seam as seam_model
from jaxseg.models.deeplab_v2 import DeepLabV2
from jaxseg.models.pretrained import weights_loader
from jaxseg.models.resnet38 import ResNet38
from jaxseg.train import loop
from jaxseg.train.config import compute_dtype, trainer_config, trainer_section
from jaxseg.train.inference import InferenceModel, image_init_fn, load_variables
from jaxseg.train.objectives import apply_model
from jaxseg.train.stages import train_stage

STAGES = ("train", "infer", "affinity", "segment", "evaluate")


# Keys of this config that may change between launches of one workdir without changing what is
# trained (data roots, post-training stages' settings); with the trainer's own
# (`jaxseg.train.config.resume_safe_keys`). A key ending in '.' covers its whole section.
# The segment stage's scoring keys only (what is trained from its pseudo masks is not resume-safe).
RESUME_SAFE_KEYS = datasets.resume_safe("data") + (
    "infer.",
    "evaluate.",
    "segment.eval_split",
    "segment.test_scales",
    "segment.test_flip",
)


def default_config() -> ml_collections.ConfigDict:
  """Every key SEAM reads (locked). Defaults are the official recipe (train_SEAM.py)."""
  c = trainer_config()
  c.method = "seam"
  c.stages = STAGES
  c.data = datasets.data_config()
  c.data.name = "voc"
  c.data.num_classes = 21  # fc8 outputs incl. the background slot
  c.data.train_split = "train_aug"
  c.data.eval_split = "train"  # CAM quality is measured on VOC train (1464 images)
  c.augment = ml_collections.ConfigDict(
      dict(
          resize_long=(448, 768),
          scale_range=None,
          crop_size=(448, 448),
          flip=True,
          color_jitter=(0.3, 0.3, 0.3, 0.1),
          image_fill="mean",
      )
  )  # pad = 0 after normalising
  c.normalize = ml_collections.ConfigDict(
      dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
  )
  # frozen_bn: official True (ImageNet statistics, frozen affine); False trains BatchNorm, which a
  # network trained from scratch (the synthetic demo, no ImageNet init) needs.
  c.model = ml_collections.ConfigDict(
      dict(width_multiplier=1.0, use_pcm=True, dropout=True, frozen_bn=True)
  )
  c.loss = ml_collections.ConfigDict(
      dict(
          name="seam",  # 'seam' (cls + ER + ECR + rvmin) | 'cam' (cls only, one view)
          view_scale=0.3,  # official second view: bilinear (align_corners=True) x0.3
          view_align_corners=True,  # official True; see `jaxseg.losses.seam.rescale_view`
          ecr_topk_fraction=0.2,
      )
  )
  # ResNet-38 ImageNet weights: MXNet `ilsvrc-cls_rna-a1_cls1000_ep-0001.params`, a SEAM/psa
  # `.pth`, or a `.msgpack` from `python -m jaxseg.tools.convert_weights`. '' = random init.
  c.init = ml_collections.ConfigDict(dict(weights=""))

  c.train.batch_size = 8
  c.train.total_steps = 10576  # 8 epochs of 10582 // 8 batches
  c.train.checkpoint_every = 1000
  c.train.log_every = 50
  o = c.optimizer
  o.name = "momentum"
  o.learning_rate = 0.01
  # QUIRK (tool/torchutils.py PolyOptimizer): weight_decay is passed as SGD's positional
  # momentum argument, so the effective momentum is 5e-4, not 0.9.
  o.momentum = 5e-4
  o.weight_decay = 5e-4
  o.schedule = "poly"
  o.poly_power = 0.9
  o.lr_multipliers = ((seam_model.FROM_SCRATCH_LAYERS, 10.0),)
  o.frozen = seam_model.NOT_TRAINING_LAYERS

  c.infer = ml_collections.ConfigDict(
      dict(
          scales=(0.5, 1.0, 1.5, 2.0),
          flip=True,
          bg_threshold=0.26,
          sweep=(
              0.0,
              0.6,
              0.01,
          ),  # background thresholds [start, stop) step, as evaluation.py --curve
          save_cams=True,
          save_masks=True,
      )
  )
  c.affinity = ml_collections.ConfigDict(
      dict(
          crf_alphas=(4.0, 24.0),
          rw_alpha=6.0,
          beta=8.0,
          logt=6,
          radius=5,
          crf_iterations=10,
          crop_size=(448, 448),
          num_images=0,
      )
  )  # training images whose CAMs label AffinityNet (0 = all)
  # AffinityNet's own complete trainer section (official train_aff.py: batch 8, 8 epochs, lr 0.01 with
  # the new layers at 10x, wd 5e-4, the same PolyOptimizer and its momentum quirk, same frozen blocks).
  c.affinity.update(
      trainer_section(batch_size=8, total_steps=10576, checkpoint_every=1000, log_every=50)
  )
  a = c.affinity.optimizer
  a.name, a.learning_rate, a.momentum, a.weight_decay = "momentum", 0.01, 5e-4, 5e-4
  a.schedule, a.poly_power = "poly", 0.9
  a.lr_multipliers = ((affinitynet.FROM_SCRATCH_LAYERS, affinitynet.FROM_SCRATCH_LR_MULTIPLIER),)
  a.frozen = affinitynet.NOT_TRAINING_LAYERS
  _segment_config(c)
  c.evaluate = ml_collections.ConfigDict(dict(num_pictures=8))
  c.lock()
  return c


# The DeepLab-v2 head (ASPP classifier on layer4): new layers, 10x learning rate in the retrain recipe.
SEGMENTER_HEAD = r"(^|/)layer6/"


def _segment_config(c) -> None:
  """`config.segment`: the 'segment' stage (pseudo masks -> DeepLab-v2 -> mIoU with / without CRF).

  The SEAM paper retrains DeepLab (v2, ResNet-101 in the README's recipe) on its random-walk masks but
  gives no training settings in the code release. The settings here are those of the author's retrain
  recipe (YudeWang/semantic-segmentation-codebase `experiment/seamv1-pseudovoc/config.py`, notes
  seam.md 4.3: batch 10, 20k iterations, crop 448, scale 0.5-1.5, flip, lr 0.001 with the head at 10x,
  momentum 0.9, wd 5e-4, poly 0.9; test scales 0.5-1.75 + flip + CRF), applied to DeepLab-v2 ResNet-101
  (that recipe itself trains a DeepLab-v1 on ResNet-38). Choices where both are silent are marked.
  """
  c.segment = ml_collections.ConfigDict(
      dict(
          pseudo_masks="random_walk",  # random_walk (paper) | cam (the CAM at infer.bg_threshold)
          num_images=0,  # training images labelled and trained on (0 = the whole train split)
          eval_split="val",  # held-out split the segmenter is scored on (data.* split name)
          # Train augment: crop 448, scale 0.5-1.5, flip (recipe); no colour jitter (the recipe's HSV
          # jitter of 10 is not reproduced: choice).
          crop_size=(448, 448),
          scale_range=(0.5, 1.5),
          flip=True,
          color_jitter=None,
          # DeepLab-v2 ResNet-101 (jaxseg.models.deeplab_v2), main head only. BatchNorm statistics are
          # learned with batch 10 (choice: the recipe's codebase trains BN; ADVENT's frozen-affine BN
          # is the model's default), affine frozen as the official DeepLab-v2.
          width_multiplier=1.0,
          depth_blocks=(3, 4, 23, 3),
          frozen_bn=False,
          bn_affine_trainable=False,
          # ImageNet DeepLab-v2 weights as a .msgpack (`python -m jaxseg.tools.convert_weights --arch
          # deeplab_v2`); '' = random init. The images are fed RGB normalised by config.normalize.
          init_weights="",
          test_scales=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75),  # recipe: multi-scale + flip + CRF
          test_flip=True,
      )
  )
  c.segment.update(
      trainer_section(batch_size=10, total_steps=20000, checkpoint_every=2000, log_every=50)
  )
  o = c.segment.optimizer
  o.name, o.learning_rate, o.momentum, o.weight_decay = "momentum", 0.001, 0.9, 5e-4
  o.schedule, o.poly_power = "poly", 0.9
  o.lr_multipliers = ((SEGMENTER_HEAD, 10.0),)


def build_segmenter(config) -> DeepLabV2:
  """The 'segment' stage's DeepLab-v2 (main head only), in its trainer section's dtype."""
  s = config.segment
  return DeepLabV2(
      num_classes=config.data.num_classes,
      multi_level=False,
      width_multiplier=float(s.width_multiplier),
      depth_blocks=tuple(s.depth_blocks),
      frozen_bn=bool(s.frozen_bn),
      bn_affine_trainable=bool(s.bn_affine_trainable),
      dtype=compute_dtype(config, "segment"),
  )


def build_model(config, use_pcm: bool | None = None) -> seam_model.SEAMNet:
  m = config.model
  return seam_model.SEAMNet(
      num_classes=config.data.num_classes,
      width_multiplier=m.width_multiplier,
      use_pcm=m.use_pcm if use_pcm is None else use_pcm,
      dropout=m.dropout,
      frozen_bn=m.frozen_bn,
      dtype=compute_dtype(config),
  )


def _augment_spec(config) -> dict:
  a = config.augment
  return dict(
      resize_long=tuple(a.resize_long) if a.resize_long else None,
      scale_range=tuple(a.scale_range) if a.scale_range else None,
      crop_size=tuple(a.crop_size),
      flip=bool(a.flip),
      color_jitter=tuple(a.color_jitter) if a.color_jitter else None,
      image_fill=a.image_fill,
      mean=tuple(config.normalize.mean),
      std=tuple(config.normalize.std),
      ignore_index=config.data.ignore_index,
  )


def read_backbone_weights(path: str, width_multiplier: float) -> dict:
  """ResNet-38 ImageNet weights (.params / .pth / .msgpack) as SEAMNet-named variables."""
  if path.endswith(".msgpack"):
    return convert.load_variables(path)
  backbone = ResNet38(width_multiplier=width_multiplier)
  if path.endswith(".params"):
    state_dict = convert.mxnet_resnet38_to_state_dict(convert.read_mxnet_params(path), source=path)
  else:
    state_dict = convert.read_torch_checkpoint(path)
  # A full SEAM/AffinityNet checkpoint also holds head tensors: only the backbone is taken.
  return convert.convert_resnet38(
      state_dict, backbone, source=path, ignore=[r"^(fc8|f8_3|f8_4|f8_5|f9)\."]
  )


def seam_train_loss(model: seam_model.SEAMNet, loss_cfg, params, model_state, batch, rng):
  """Official two-view SEAM objective (or the one-view CAM baseline) for one batch.

  batch: 'image' float32 [B, H, W, 3] normalised crops, 'labels' float32 [B, K-1].
  With frozen BatchNorm (official) `model_state` comes back unchanged; otherwise its
  running statistics are updated by both views in turn, as PyTorch's would be.
  """
  rng1, rng2 = jax.random.split(rng)
  images, labels = batch["image"], batch["labels"]

  def forward(model_state, x, dropout_rng):
    return apply_model(model, params, model_state, x, train=True, rng=dropout_rng)

  out1, model_state = forward(model_state, images, rng1)
  if loss_cfg.name == "cam":
    loss = seam_losses.cam_classification_loss(out1["cam"], labels)
    return loss, ({"cls": loss}, model_state)
  if loss_cfg.name != "seam":
    raise ValueError(f"config.loss.name={loss_cfg.name!r}: expected 'seam' or 'cam'")
  view = functools.partial(
      seam_losses.rescale_view,
      scale=float(loss_cfg.view_scale),
      align_corners=bool(loss_cfg.view_align_corners),
  )
  out2, model_state = forward(model_state, view(images), rng2)
  loss, terms = seam_losses.seam_loss(
      out1, out2, labels, transform=view, ecr_topk_fraction=float(loss_cfg.ecr_topk_fraction)
  )
  shown = {k: terms[k] for k in ("cls", "er", "ecr")}
  return loss, (shown, model_state)


def backbone_init(config):
  """The `TrainTask.init_weights` loading `config.init.weights` into the backbone (None: random init)."""
  if not config.init.weights:
    return None
  width = config.model.width_multiplier
  return weights_loader(config.init.weights, lambda path: read_backbone_weights(path, width))


def make_task(config) -> loop.TrainTask:
  if config.loss.name == "seam" and not config.model.use_pcm:
    raise ValueError(
        "config.loss.name='seam' needs config.model.use_pcm=True (ECR uses the PCM output)"
    )
  model = build_model(config)

  def init_fn(rng, batch):
    return model.init({"params": rng, "dropout": rng}, batch["image"], train=False)

  return loop.TrainTask(
      init_fn=init_fn,
      loss_fn=functools.partial(seam_train_loss, model, config.loss),
      train_source=datasets.build_source(config.data, "train", with_labels=True, with_masks=False),
      augment=transforms.build_augment(_augment_spec(config)),
      keys=("image", "labels"),
      init_weights=backbone_init(config),
  )


def train(config, workdir: str) -> None:
  """The 'train' stage: the top-level trainer section, checkpoints in the workdir itself."""
  train_stage(config, workdir, make_task(config))


def load_inference_model(
    config, workdir: str, stage: str | None = None, which: str = "latest"
) -> InferenceModel:
  """A trained SEAM network, from its checkpoint's parameters and BatchNorm statistics alone.

  stage 'segment': the DeepLab-v2 segmenter; `predict(images)` -> logits [B, h, w, K + 1] at output
  stride 8 (`masks` = their argmax), channel 0 background. stage 'train': the SEAMNet;
  `predict(images)` -> CAM logits [B, h, w, K + 1] (PCM-refined `cam_rv` when the model has PCM,
  else `cam`; channel 0 the background slot, as the official network). None: 'segment' when that
  stage has been trained in `workdir`, else 'train'.
  """
  if stage is None:
    trained = os.path.isdir(os.path.join(workdir, "segment", "checkpoints"))
    stage = "segment" if trained else "train"
  if stage == "segment":
    return _load_segmenter(config, workdir, which)
  if stage != "train":
    raise ValueError(
        f"stage={stage!r}: SEAM's trained networks come from the 'train' and 'segment' stages"
    )
  model = build_model(config)
  h, w = config.augment.crop_size

  init_fn = image_init_fn(model, (h, w))

  def cam_logits(variables, images):
    out = model.apply(variables, images, train=False)
    return out["cam_rv"] if "cam_rv" in out else out["cam"]

  variables, step, mesh = load_variables(workdir, init_fn, which=which)
  return InferenceModel(
      config,
      "train",
      step,
      variables,
      cam_logits,
      mesh,
      kind="cam",
      class_names=class_names(config),
  )


def class_names(config) -> tuple[str, ...]:
  """Names of the network's K + 1 outputs: 'background' (the bg slot), then the K image-level classes."""
  return tuple(datasets.class_names(config.data))


def _load_segmenter(config, workdir: str, which: str) -> InferenceModel:
  model = build_segmenter(config)
  h, w = config.segment.crop_size

  init_fn = image_init_fn(model, (h, w))

  def logits(variables, images):
    return model.apply(variables, images, train=False)["main"]

  stage_dir = os.path.join(workdir, "segment")
  variables, step, mesh = load_variables(stage_dir, init_fn, which=which)
  # As the segment stage scores it: logits upsampled align_corners=True (`segment_stage.score`).
  return InferenceModel(
      config,
      "segment",
      step,
      variables,
      logits,
      mesh,
      class_names=class_names(config),
      resize_logits=upsample_logits,
  )


def configured_cams(config, cam_apply, cam_variables, image, labels):
  """float32 [K, H, W] fused multi-scale CAMs of one image with its labels, at the config's
  `infer.scales` / `infer.flip`, from the PCM output when the model has one (as the infer stage)."""
  from jaxseg.methods.seam import cam_inference

  return cam_inference.multiscale_cams(
      cam_apply,
      cam_variables,
      image,
      labels,
      scales=tuple(config.infer.scales),
      flip=bool(config.infer.flip),
      output="cam_rv" if config.model.use_pcm else "cam",
  )


def load_cam_model(config, workdir: str):
  """(apply, variables): the trained SEAMNet's jitted eval-mode forward returning its output dict
  ('cam', 'cam_rv', ...), restored as `load_inference_model`."""
  model = build_model(config)
  apply = jax.jit(lambda variables, images: model.apply(variables, images, train=False))
  return apply, load_inference_model(config, workdir, stage="train").variables


def example_batch(config) -> dict:
  import numpy as np

  h, w = config.augment.crop_size
  b = config.train.batch_size
  return dict(
      image=np.zeros((b, h, w, 3), np.float32),
      labels=np.zeros((b, config.data.num_classes - 1), np.float32),
  )
