"""Self-supervised correspondence for video object segmentation: config, encoders, objectives.

Two recipes (`config.recipe`), one train state holding one encoder:
  mast  MAST (Lai et al., CVPR 2020; zlai0/MAST `main.py`, `models/mast.py`): reconstruct the last
        frame's Lab colour from the earlier frames through the restricted affinity softmax. Each step
        one of the channels a, b (picked at random) is zeroed in every frame's input and the input is
        scaled by 3 / 2 (`dropout2d_lab`); the values copied through the affinity are the *clean*
        frames' dropped channel subsampled [::4, ::4]; the output is upsampled (bilinear,
        align_corners=False) and the loss is smooth-L1 (Huber, beta 1) of 20 x output vs 20 x target.
        The encoder runs once per frame (BatchNorm statistics per frame, as the official loop).
  crw   Contrastive random walk (Jabri et al., NeurIPS 2020; ajabri/videowalk `code/model.py`): every
        frame is cut into a grid of patches (each with its own random resized crop), each patch is
        embedded (`CrwEncoder.embedding`), and the walk along the palindrome clip must return to the
        node it started from (cycle cross-entropy, temperature, edge dropout).

Inputs: clips [B, T, H, W, 3] from a clip source (synthetic videos, a folder of videos, DAVIS frames),
one geometric augmentation for the whole clip (`input.scale_range`, `input.flip`; the official MAST
loader only resizes to 256 x 256).
"""

from __future__ import annotations

import dataclasses
import functools

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxseg.data import lab, transforms
from jaxseg.data.readers.prepared import tfds_fields
from jaxseg.errors import ConfigError
from jaxseg.losses import reconstruction, walk
from jaxseg.models.correspondence_encoders import CrwEncoder, MastEncoder
from jaxseg.train import loop
from jaxseg.train.config import compute_dtype, trainer_config
from jaxseg.train.objectives import apply_model

RECIPES = ("mast", "crw")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# MAST's lr halvings (`adjust_lr`): after 0.4M, 0.6M, 0.8M, 1.0M training samples.
MAST_LR_SAMPLE_BOUNDARIES = (400_000, 600_000, 800_000, 1_000_000)


def mast_step_boundaries(batch_size: int) -> tuple[float, ...]:
  """MAST's sample-count boundaries as optimiser steps (lr drops once step * batch > boundary)."""
  return tuple(b / batch_size for b in MAST_LR_SAMPLE_BOUNDARIES)


# Keys of this config that may change between launches of one workdir without changing what is
# trained (data roots, post-training stages' settings); with the trainer's own
# (`jaxseg.train.config.resume_safe_keys`). A key ending in '.' covers its whole section.
RESUME_SAFE_KEYS = (
    "train_data.root",
    "train_data.tfds.data_dir",
    "eval_data.",
    "propagate.",
    "evaluate.",
)


def default_config() -> ml_collections.ConfigDict:
  """Every key the `vos` method reads (locked). Defaults: MAST on YouTube-VOS frames, DAVIS-2017 val."""
  c = trainer_config()
  c.method = "vos"
  c.recipe = "mast"  # mast | crw
  c.stages = ("train", "propagate", "evaluate")
  # Training clips (no labels): synthetic | videos (a folder of frame folders: YouTube-VOS
  # train/JPEGImages, Kinetics frames) | davis (the DAVIS frames of `train_data.split`).
  c.train_data = ml_collections.ConfigDict(
      dict(
          name="videos",
          root="",
          split="train",  # davis only
          frame_gaps=(2, 5, 8),  # MAST: the interval between the two frames of a sample
          gap_probs=(0.4, 0.4, 0.2),
          num_clips=0,  # synthetic: clips per epoch (0 = 50 per video)
          synthetic=_synthetic_section(),
          # raw: read the frame folders; tfds: the same clips from `python -m jaxseg.data.prepare
          # video_frames --root=<the folder of video folders>` (tfds.data_dir).
          source="raw",
          tfds=tfds_fields("video_frames"),
      )
  )
  # Sequences whose first-frame masks are propagated and scored: davis | synthetic (written to a
  # DAVIS-layout folder in the workdir, so both go through the same reader and evaluator).
  c.eval_data = ml_collections.ConfigDict(
      dict(
          name="davis",
          root="",
          split="val",
          resolution="480p",
          max_sequences=0,  # 0 = all
          synthetic=_synthetic_section(seed=90_000, num_videos=8),
          # raw: read `root`; tfds: sequences and annotations from `python -m jaxseg.data.prepare
          # davis2017` (480p) in tfds.data_dir.
          source="raw",
          tfds=tfds_fields("davis2017"),
      )
  )
  c.input = ml_collections.ConfigDict(
      dict(
          clip_length=2,  # MAST: 1 reference + 1 target; CRW: 4 (README command)
          image_size=(256, 256),  # (H, W) after the clip augmentation
          scale_range=(
              1.0,
              1.0,
          ),  # random scale before the crop; (1, 1) + crop = the official resize
          flip=False,
      )
  )
  c.model = ml_collections.ConfigDict(
      dict(
          width_multiplier=1.0,
          feature_dim=64,
          embed_dim=128,
          map_layer="layer3",
          # MAST's features are unnormalised (0). tau > 0: L2-normalised, affinities cosine / tau.
          feature_temperature=0.0,
      )
  )
  c.loss = ml_collections.ConfigDict(
      dict(
          radius=6,  # MAST training window (2R+1)^2 = 13 x 13
          huber_scale=20.0,
          temperature=0.07,  # CRW (its README command uses 0.05)
          edge_dropout=0.1,
          patch_size=64,  # CRW nodes: 64 x 64 patches with stride 32 of a 256 x 256 frame (7 x 7)
          patch_stride=32,
          patch_scale=(0.7, 0.9),  # each patch's own RandomResizedCrop scale range
      )
  )
  # MAST: Adam 1e-3 (0.9, 0.999), no weight decay, batch 12, lr halved at 0.4M/0.6M/0.8M/1M samples.
  c.train.update(batch_size=12, total_steps=100_000, checkpoint_every=2000, log_every=100)
  c.optimizer.update(
      name="adam",
      learning_rate=1e-3,
      b1=0.9,
      b2=0.999,
      weight_decay=0.0,
      schedule="step",
      step_boundaries=mast_step_boundaries(12),
      step_factor=0.5,
  )
  c.propagate = ml_collections.ConfigDict(
      dict(
          checkpoint="latest",
          methods=("model", "copy_first", "lab_pixels"),  # the trained model and two baselines
          # MAST memory (benchmark.py, --ref 0): long-term frames 0 and 5, the 3 latest predictions
          # 2 frames apart; R = 12 at test; frames > 15 back through the ROI path.
          radius=12,
          long_term=(0, 5),
          short_term=3,
          short_gap=2,
          roi_gap=15,
          max_dilation=4,
          # Soft labels back to the image: official (benchmark.py's bilinear, align_corners=False:
          # every propagated frame shifts 1.5 px right and down) | aligned (no shift), see
          # propagation.upsample_labels.
          upsampling="official",
          # CRW memory (test.py): first frame + 20 previous, radius 12, top-10, temperature 0.07.
          n_context=20,
          topk=10,
          crw_radius=12.0,
          crw_temperature=0.07,
          # lab_pixels baseline: MAST's memory over -|Lab difference|^2 / (2 tau) of the normalised Lab
          # pixels pooled to the stride-4 grid (see propagation.lab_pixel_features).
          pixel_temperature=0.01,
          num_pictures=2,
      )
  )
  c.evaluate = ml_collections.ConfigDict(dict(methods=("model", "copy_first", "lab_pixels")))
  c.lock()
  return c


def _synthetic_section(seed: int = 0, num_videos: int = 64) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
      dict(
          num_videos=num_videos,
          num_frames=24,
          image_size=(64, 64),
          seed=seed,
          min_objects=1,
          max_objects=3,
          object_scale=1.4,
          style="default",
          frame_interval=1.0,
          # Video dynamics (synthetic.VideoDynamics; 0 = off): background pan (fraction of the width per
          # frame) and extra colour texture, objects' scale oscillation, global brightness and white-balance
          # drift (log-gain amplitudes), sensor noise std (< 0: the style's, 0.02).
          background_speed=0.0,
          background_detail=0.0,
          scale_amplitude=0.0,
          illumination_amplitude=0.0,
          colour_drift=0.0,
          noise_std=-1.0,
          # Colour is not identity (synthetic.VideoDynamics): objects in the background's two colours,
          # per-frame exposure jumps, drifting shadows, squashing objects.
          camouflage=0.0,
          flicker=0.0,
          shadows=0.0,
          deformation=0.0,
      )
  )


def check_config(config) -> None:
  if config.recipe not in RECIPES:
    raise ConfigError(f"recipe={config.recipe!r}: expected one of {RECIPES}")
  tau = config.model.feature_temperature
  if tau < 0 or (tau > 0 and config.recipe != "mast"):
    raise ConfigError(
        f"model.feature_temperature={tau!r}: MAST's encoder only, >= 0 (0 = MAST's unnormalised "
        "features); CRW's temperature is loss.temperature / propagate.crw_temperature"
    )


def build_encoder(config):
  check_config(config)
  dtype = compute_dtype(config)
  m = config.model
  if config.recipe == "mast":
    return MastEncoder(
        float(m.width_multiplier),
        int(m.feature_dim),
        dtype=dtype,
        feature_temperature=float(m.feature_temperature),
    )
  return CrwEncoder(float(m.width_multiplier), int(m.embed_dim), str(m.map_layer), dtype=dtype)


# ------------------------------------------------------------------------------------------------------
# Inputs.


@dataclasses.dataclass(frozen=True)
class ClipAugment(grain.transforms.RandomMap):
  """uint8 clip [T, H, W, 3] -> float32 [T, h, w, 3]: one random scale, crop and flip for the whole clip,
  then MAST's normalised Lab or CRW's ImageNet normalisation."""

  size: tuple[int, int]
  scale_range: tuple[float, float]
  flip: bool
  recipe: str

  def random_map(self, element, rng):
    ex = {"clip": np.asarray(element["clip"])}
    if tuple(self.scale_range) != (1.0, 1.0):
      ex = transforms.random_scale(ex, rng, self.scale_range)
      ex = transforms.random_crop(ex, rng, self.size)
    else:
      ex = transforms.resize(ex, self.size)
    if self.flip:
      ex = transforms.random_flip(ex, rng, 0.5)
    return {"clip": frames_to_input(ex["clip"], self.recipe)}


# Compiled once per input shape: op by op, the table-interpolated Lab conversion takes ~60 ms per 2-frame
# 64 x 64 clip on a CPU (data loading competes with the train step for the demo's 2 cores); compiled,
# ~2 ms, with the same bits.
_mast_lab_input = jax.jit(lab.mast_lab_input)


def frames_to_input(frames: np.ndarray, recipe: str) -> np.ndarray:
  """uint8 RGB [..., H, W, 3] -> the encoder's float32 input (MAST: normalised Lab; CRW: ImageNet)."""
  if recipe == "mast":
    return np.asarray(_mast_lab_input(np.asarray(frames)), np.float32)
  x = np.asarray(frames, np.float32) / 255.0
  return (
      (x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
  ).astype(np.float32)


# ------------------------------------------------------------------------------------------------------
# Objectives.


def _encode(encoder, params, model_state, x, train: bool):
  return apply_model(encoder, params, model_state, x, train=train)


def mast_dropout_inputs(clip: jax.Array, channel: jax.Array) -> jax.Array:
  """MAST's `dropout2d_lab`: zero Lab channel `channel` (1 = a or 2 = b) of every frame, scale by 3/2."""
  keep = 1.0 - jax.nn.one_hot(channel, 3, dtype=clip.dtype)
  return clip * keep * (3.0 / (3.0 - 1.0))


def mast_photometric_loss(encoder, loss_cfg, params, model_state, clip, channel):
  """MAST's `compute_lphoto` for a given dropped channel: the encoder forward on the dropped inputs,
  then `jaxseg.losses.reconstruction.mast_reconstruction_loss` on the features.

  Args:
    clip: float32 [B, T, H, W, 3] clean normalised Lab; frames 0..T-2 are the references, T-1 the target.
    channel: int scalar, the Lab channel dropped from the inputs and reconstructed (1 = a, 2 = b).
  Returns:
    (loss, aux, model_state); aux: feats [T, B, h, w, C], out [B, h, w, 1] (colorizer output),
    out_up [B, H, W, 1], err_map [B, H, W] (|out_up - target|, the official `err_maps`).
  """
  num_frames = clip.shape[1]
  inputs = mast_dropout_inputs(clip, channel)
  feats = []
  for t in range(num_frames):  # one encoder call per frame: BatchNorm statistics per frame
    f, model_state = _encode(encoder, params, model_state, inputs[:, t], train=True)
    feats.append(f)
  values = jnp.sum(clip * jax.nn.one_hot(channel, 3, dtype=clip.dtype), -1, keepdims=True)
  loss, aux = reconstruction.mast_reconstruction_loss(
      feats[-1],
      jnp.stack(feats[:-1]),
      jnp.moveaxis(values[:, :-1], 1, 0),
      values[:, -1],
      radius=int(loss_cfg.radius),
      huber_scale=float(loss_cfg.huber_scale),
  )
  return loss, {"feats": jnp.stack(feats), **aux}, model_state


def mast_loss(encoder, loss_cfg, params, model_state, batch, rng):
  """MAST's training objective: a random dropped channel (a or b, one draw per batch as the official
  `np.random.choice`) then `mast_photometric_loss`. batch['clip']: float32 [B, T, H, W, 3] clean
  normalised Lab. Returns (loss, (terms, model_state))."""
  channel = jax.random.randint(rng, (), 1, 3)
  loss, _, model_state = mast_photometric_loss(
      encoder, loss_cfg, params, model_state, batch["clip"], channel
  )
  return loss, ({"photometric": loss}, model_state)


def crw_loss(encoder, loss_cfg, params, model_state, batch, rng):
  """CRW's cycle-consistency loss of one batch. batch['clip']: float32 [B, T, H, W, 3] (ImageNet-normalised)."""
  clip = batch["clip"]
  b, t = clip.shape[:2]
  k_patch, k_drop = jax.random.split(rng)
  patches = walk.extract_patches(
      clip,
      int(loss_cfg.patch_size),
      int(loss_cfg.patch_stride),
      tuple(loss_cfg.patch_scale),
      k_patch,
  )
  n = patches.shape[2]
  out, model_state = _encode(
      encoder, params, model_state, patches.reshape(b * t * n, *patches.shape[3:]), train=True
  )
  nodes = out["embedding"].reshape(b, t, n, -1)
  loss, per_cycle = walk.crw_walk_loss(
      nodes,
      float(loss_cfg.temperature),
      edge_dropout=float(loss_cfg.edge_dropout),
      rng=k_drop,
  )
  terms = {"walk": loss}
  for i, v in enumerate(jnp.atleast_1d(per_cycle)):
    terms[f"cycle_{i + 2}"] = v
  return loss, (terms, model_state)


# ------------------------------------------------------------------------------------------------------
# Task.


def example_batch(config) -> dict:
  b = int(config.train.batch_size)
  h, w = config.input.image_size
  return {"clip": np.zeros((b, int(config.input.clip_length), h, w, 3), np.float32)}


def init_variables(config, rng, batch):
  encoder = build_encoder(config)
  clip = batch["clip"]
  if config.recipe == "crw":
    p = int(config.loss.patch_size)
    return encoder.init(rng, jnp.zeros((1, p, p, 3), clip.dtype), train=False)
  return encoder.init(rng, clip[:, 0], train=False)


def make_task(config, train_source=None) -> loop.TrainTask:
  """The TrainTask of the 'train' stage (`train_source`: the clip source; built from config if None)."""
  from jaxseg.methods.vos import data

  check_config(config)
  if int(config.input.clip_length) < 2:
    raise ConfigError("input.clip_length must be >= 2 (references + target, or a walk)")
  if config.recipe == "crw" and int(config.input.clip_length) < 3:
    raise ConfigError("recipe=crw: input.clip_length must be >= 3 (palindrome cycles of 2+ steps)")
  encoder = build_encoder(config)
  objective = mast_loss if config.recipe == "mast" else crw_loss
  i = config.input
  return loop.TrainTask(
      init_fn=functools.partial(init_variables, config),
      loss_fn=functools.partial(objective, encoder, config.loss),
      train_source=train_source if train_source is not None else data.train_source(config),
      augment=ClipAugment(
          tuple(i.image_size), tuple(float(s) for s in i.scale_range), bool(i.flip), config.recipe
      ),
      keys=("clip",),
  )
