"""SEAM's AffinityNet stage (Ahn & Kwak's PSA, as SEAM runs it): CAMs -> CRF affinity labels ->
AffinityNet training (the shared trainer) -> random walk -> refined pseudo masks and their mIoU.

Official pipeline (infer_SEAM.py, train_aff.py, infer_aff.py): CRF scores of the train_aug CAMs with
background powers 4 (la) and 24 (ha); AffinityNet trained on pair labels from them (colour jitter,
joint crop 448, flip, 8x8 block mean, radius 5); random walk with alpha 6, beta 8, logt 6 on the
eval split's CAMs. Here the CAMs of the training images are computed in this stage (official: a
separate `infer_SEAM.py` run over train_aug), capped at `affinity.num_images`.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import grain
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.data import datasets, transforms
from jaxseg.evaluation.miou import confusion_matrix
from jaxseg.evaluation.outputs import write_json, write_palette_png
from jaxseg.losses.affinity import affinity_loss
from jaxseg.methods.seam import affinity as aff
from jaxseg.methods.seam import cam_inference, method
from jaxseg.models import affinitynet
from jaxseg.train import loop, multihost
from jaxseg.train.config import compute_dtype
from jaxseg.train.inference import image_init_fn, load_variables
from jaxseg.train.objectives import apply_model
from jaxseg.train.stages import train_stage


class CrfScoreSource:
  """Random-access source of {'image' uint8, 'la', 'ha' float32 [H, W, K+1]} from saved npz files."""

  def __init__(self, paths: list[str]):
    self.paths = list(paths)

  def __len__(self):
    return len(self.paths)

  def __getitem__(self, index):
    with np.load(self.paths[index]) as data:
      return {
          "image": data["image"],
          "la": np.moveaxis(data["la"], 0, -1),
          "ha": np.moveaxis(data["ha"], 0, -1),
      }


@dataclasses.dataclass(frozen=True)
class AffinityAugment(grain.transforms.RandomMap):
  """Official VOC12AffDataset order: colour jitter -> joint crop (scores pad with 0 = no score) ->
  normalise -> joint flip -> pair labels at the feature stride."""

  crop_size: tuple[int, int]
  color_jitter: tuple[float, float, float, float] | None
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  radius: int

  def random_map(self, element, rng):
    keys = ("image", "la", "ha")
    ex = dict(element)
    if self.color_jitter is not None:
      ex = transforms.color_jitter(ex, rng, *self.color_jitter)
    ex = transforms.normalize(ex, self.mean, self.std)
    # Image padding 0 after normalising = the mean colour (official zero container).
    ex = transforms.random_crop(ex, rng, self.crop_size, fill=0.0, spatial_keys=keys)
    ex = transforms.random_flip(ex, rng, 0.5, spatial_keys=keys)
    targets = aff.affinity_targets(
        ex["la"], ex["ha"], stride=aff.FEATURE_STRIDE, radius=self.radius
    )
    return {
        "image": ex["image"].astype(np.float32),
        "bg_pos": targets["aff_bg_pos"],
        "fg_pos": targets["aff_fg_pos"],
        "neg": targets["aff_neg"],
    }

  def __call__(self, element, rng):
    return self.random_map(element, rng)


def build_model(config) -> affinitynet.AffinityNet:
  """AffinityNet with SEAM's backbone settings (width, BatchNorm, b6/b7 dropout: `config.model`, as the
  official resnet38_aff.Net shares resnet38d's), computing in the affinity stage's dtype."""
  return affinitynet.AffinityNet(
      width_multiplier=config.model.width_multiplier,
      dropout=config.model.dropout,
      frozen_bn=config.model.frozen_bn,
      dtype=compute_dtype(config, "affinity"),
  )


def make_task(config, score_paths: list[str]) -> loop.TrainTask:
  model = build_model(config)
  radius = int(config.affinity.radius)

  def init_fn(rng, batch):
    return model.init({"params": rng, "dropout": rng}, batch["image"], train=False)

  def loss_fn(params, model_state, batch, rng):
    features, model_state = apply_model(
        model, params, model_state, batch["image"], train=True, rng=rng
    )
    affinities = affinitynet.pairwise_affinities(features, radius)
    loss, terms = affinity_loss(affinities, batch["bg_pos"], batch["fg_pos"], batch["neg"])
    return loss, (
        {k: terms[k] for k in ("bg_loss", "fg_loss", "neg_loss") if k in terms},
        model_state,
    )

  a = config.affinity
  augment = AffinityAugment(
      crop_size=tuple(a.crop_size),
      color_jitter=tuple(config.augment.color_jitter) if config.augment.color_jitter else None,
      mean=tuple(config.normalize.mean),
      std=tuple(config.normalize.std),
      radius=radius,
  )
  return loop.TrainTask(
      init_fn=init_fn,
      loss_fn=loss_fn,
      train_source=CrfScoreSource(score_paths),
      augment=augment,
      keys=("image", "bg_pos", "fg_pos", "neg"),
      init_weights=method.backbone_init(config),
  )


def full_cams(cam_dict: dict, num_fg: int, shape: tuple[int, int]) -> np.ndarray:
  """{class: [H, W]} (present classes) -> float32 [num_fg, H, W] with zeros elsewhere (official cam_full_arr)."""
  out = np.zeros((num_fg, *shape), np.float32)
  for c, cam in cam_dict.items():
    out[int(c)] = cam
  return out


def make_crf_scores(config, workdir: str, cam_apply, cam_variables) -> list[str]:
  """CAMs of the training images -> la/ha CRF scores, saved as npz (one per image)."""
  source = datasets.build_source(config.data, "train", with_labels=True, with_masks=False)
  out_dir = os.path.join(workdir, "affinity", "crf")
  os.makedirs(out_dir, exist_ok=True)
  count = min(len(source), int(config.affinity.num_images) or len(source))
  paths = [os.path.join(out_dir, f"{i:07d}.npz") for i in range(count)]
  iters = int(config.affinity.crf_iterations)
  for i in multihost.host_pass(count, "AffinityNet CRF labels"):
    if os.path.exists(paths[i]):  # Resumable: scores already made by an interrupted run.
      continue
    example = source[i]
    labels = example["labels"]
    cams = method.configured_cams(config, cam_apply, cam_variables, example["image"], labels)
    present = cam_inference.present_classes(labels)
    if present.size == 0:
      present_cams = np.zeros((1, *example["image"].shape[:2]), np.float32)  # bg only
    else:
      present_cams = cams[present]
    la, ha = (
        aff.crf_scores(example["image"], present_cams, alpha, iterations=iters)
        for alpha in config.affinity.crf_alphas
    )
    tmp = paths[i] + ".tmp.npz"
    np.savez(tmp, image=example["image"], la=la.astype(np.float32), ha=ha.astype(np.float32))
    os.replace(tmp, paths[i])
  multihost.sync("seam_affinity_crf_scores")
  return paths


def run(config, workdir: str) -> dict:
  """Trains AffinityNet on CRF labels of the CAMs, then random-walks the eval split's CAMs."""
  cam_apply, cam_variables = method.load_cam_model(config, workdir)
  score_paths = make_crf_scores(config, workdir, cam_apply, cam_variables)
  # AffinityNet trains with its own complete trainer section (config.affinity.train / .optimizer).
  state = train_stage(
      config, workdir, make_task(config, score_paths), section="affinity", subdir="affinity"
  )
  return random_walk_eval(config, workdir, loop.variables_of(state))


def load_affinity_variables(config, workdir: str) -> dict:
  """The trained AffinityNet's variables from the 'affinity' stage's latest checkpoint (parameters and
  BatchNorm statistics only, as `jaxseg.train.inference.load_variables`)."""
  model = build_model(config)
  h, w = config.affinity.crop_size

  init_fn = image_init_fn(model, (h, w))

  variables, _, _ = load_variables(os.path.join(workdir, "affinity"), init_fn)
  return variables


def random_walker(config, variables):
  """The official random walk (infer_aff.py) with a trained AffinityNet, as one function:
  (image uint8 [H, W, 3], fg CAMs float [K, H, W] (zeros for absent classes)) -> uint8 [H, W] mask
  (0 = background, k = the k-th foreground class). Used for the eval split's CAMs ('affinity') and for
  the segmenter's training images ('segment')."""
  model = build_model(config)
  a = config.affinity
  features_fn = jax.jit(lambda v, x: model.apply(v, x, train=False))
  refine = jax.jit(
      functools.partial(
          aff.refine_cams,
          alpha=float(a.rw_alpha),
          beta=float(a.beta),
          logt=int(a.logt),
          radius=int(a.radius),
      )
  )

  def walk(image: np.ndarray, fg_cams: np.ndarray) -> np.ndarray:
    padded = aff.pad_images(jnp.asarray(cam_inference.normalize_image(image))[None])
    features = features_fn(variables, padded)[0]
    refined = refine(jnp.asarray(fg_cams), features)
    return np.asarray(jnp.argmax(refined, axis=0)).astype(np.uint8)

  return walk


def random_walk_eval(config, workdir: str, variables) -> dict:
  """Refines the saved eval CAMs (infer/cams) by random walk; writes masks and their mIoU."""
  walk = random_walker(config, variables)
  source = datasets.build_source(config.data, "eval", with_labels=True)
  num_classes = config.data.num_classes
  mask_dir = os.path.join(workdir, "affinity", "masks")
  os.makedirs(mask_dir, exist_ok=True)
  confusion = np.zeros((num_classes, num_classes), np.int64)
  for i in multihost.host_pass(len(source), "random walk"):
    example = source[i]
    name = str(example.get("id", f"{i:06d}"))
    cam_path = os.path.join(workdir, "infer", "cams", f"{name}.npy")
    if not os.path.exists(cam_path):
      raise FileNotFoundError(
          f"{cam_path} not found: run the 'infer' stage (with infer.save_cams) first"
      )
    cams = full_cams(
        np.load(cam_path, allow_pickle=True).item(), num_classes - 1, example["image"].shape[:2]
    )
    mask = walk(example["image"], cams)
    confusion += np.asarray(
        confusion_matrix(
            jnp.asarray(example["mask"]), jnp.asarray(mask), num_classes, config.data.ignore_index
        ),
        np.int64,
    )
    write_palette_png(os.path.join(mask_dir, f"{name}.png"), mask)
  confusion = multihost.sum_over_processes(confusion)
  iou, miou = cam_inference.official_miou(confusion)
  print(f"SEAM random walk: mIoU {100 * miou:.2f}", flush=True)
  result = {"miou": miou, "iou": iou.tolist()}
  if multihost.is_main_process():
    write_json(os.path.join(workdir, "affinity", "metrics.json"), result)
  return result
