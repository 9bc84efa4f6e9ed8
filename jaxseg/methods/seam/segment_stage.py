"""SEAM's last stage: a segmentation network trained on the pseudo masks, as the paper's final result.

1. Pseudo masks of the segmenter's training images (`data.train_split`, the first `segment.num_images`):
   multi-scale + flip CAMs with the image-level labels (as the 'infer' stage), refined by the random walk
   with the trained AffinityNet (`segment.pseudo_masks='random_walk'`, paper) or the CAM at
   `infer.bg_threshold` ('cam'); palette PNGs under segment/pseudo_masks/ (resumable: written ones are
   kept).
2. DeepLab-v2 trained on (image, pseudo mask) with the shared segmentation objective and trainer, its own
   trainer section `config.segment` (checkpoints under segment/).
3. Scored on `segment.eval_split` (multi-scale + flip softmax, `segment.test_scales` / `test_flip`), with
   and without the dense CRF (`crf.dense_crf`, official defaults): segment/metrics.json; the first
   `evaluate.num_pictures` predicted masks under segment/masks/ for the picture grid.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from jaxseg.data import datasets, transforms
from jaxseg.evaluation.outputs import write_json, write_palette_png
from jaxseg.losses.segmentation import upsample_logits
from jaxseg.methods.seam import affinity_stage, cam_inference, crf, method
from jaxseg.models import convert
from jaxseg.models.pretrained import weights_loader
from jaxseg.models.resize import resize_bilinear
from jaxseg.train import loop, multihost, preemption
from jaxseg.train.objectives import segmentation_objective
from jaxseg.train.stages import train_stage

PSEUDO_MASKS = ("random_walk", "cam")


class PseudoMaskSource:
  """Random-access {'image': uint8 [H, W, 3], 'mask': uint8 [H, W]} of the training images and their
  pseudo-mask PNGs (`paths[i]` the mask of `images[i]`; values as written, 255 = ignore kept)."""

  def __init__(self, images, paths: list[str]):
    self.images = images
    self.paths = list(paths)

  def __len__(self):
    return len(self.paths)

  def __getitem__(self, index):
    mask = np.asarray(Image.open(self.paths[index]))
    return {"image": np.asarray(self.images[index]["image"]), "mask": mask}


def _train_images(config):
  return datasets.build_source(config.data, "train", with_labels=True, with_masks=False)


def _num_images(config, source) -> int:
  return min(len(source), int(config.segment.num_images) or len(source))


def mask_paths(config, workdir: str, source) -> list[str]:
  out_dir = os.path.join(workdir, "segment", "pseudo_masks")
  return [os.path.join(out_dir, f"{i:07d}.png") for i in range(_num_images(config, source))]


def make_pseudo_masks(config, workdir: str) -> list[str]:
  """Pseudo masks of the first `segment.num_images` training images (skips those already written)."""
  kind = str(config.segment.pseudo_masks)
  if kind not in PSEUDO_MASKS:
    raise ValueError(f"segment.pseudo_masks={kind!r}: expected one of {PSEUDO_MASKS}")
  source = _train_images(config)
  paths = mask_paths(config, workdir, source)
  os.makedirs(os.path.join(workdir, "segment", "pseudo_masks"), exist_ok=True)
  todo = [i for i in multihost.process_indices(len(paths)) if not os.path.exists(paths[i])]
  if todo:
    cam_apply, cam_variables = method.load_cam_model(config, workdir)
    walk = None
    if kind == "random_walk":
      walk = affinity_stage.random_walker(
          config, affinity_stage.load_affinity_variables(config, workdir)
      )
    for done, i in enumerate(todo):
      if done:  # a stop request ends the pass here; the rerun skips the masks written
        preemption.check_stop(f"in segment pseudo masks after {done} of {len(todo)} images")
      example = source[i]
      labels = example["labels"]
      cams = method.configured_cams(config, cam_apply, cam_variables, example["image"], labels)
      if walk is None:
        mask = cam_inference.pseudo_label(cams, labels, float(config.infer.bg_threshold))
      else:
        # Absent classes zeroed, as the saved present-class CAMs the 'affinity' stage walks.
        present = {int(c): cams[c] for c in cam_inference.present_classes(labels)}
        mask = walk(
            example["image"],
            affinity_stage.full_cams(present, cams.shape[0], example["image"].shape[:2]),
        )
      tmp = paths[i] + ".tmp.png"
      write_palette_png(tmp, np.asarray(mask, np.uint8))
      os.replace(tmp, paths[i])
  multihost.sync("seam_segment_pseudo_masks")
  return paths


def augment_spec(config) -> dict:
  s = config.segment
  return dict(
      scale_range=tuple(s.scale_range) if s.scale_range else None,
      crop_size=tuple(s.crop_size),
      flip=bool(s.flip),
      color_jitter=tuple(s.color_jitter) if s.color_jitter else None,
      mean=tuple(config.normalize.mean),
      std=tuple(config.normalize.std),
      ignore_index=config.data.ignore_index,
  )


def make_task(config, paths: list[str]) -> loop.TrainTask:
  """DeepLab-v2 on (training image, pseudo mask) with the shared segmentation objective."""
  model = method.build_segmenter(config)

  def init_fn(rng, batch):
    return model.init({"params": rng, "dropout": rng}, batch["image"], train=False)

  weights = str(config.segment.init_weights)
  return loop.TrainTask(
      init_fn=init_fn,
      loss_fn=functools.partial(
          segmentation_objective, model, config.data.ignore_index, output="main"
      ),
      train_source=PseudoMaskSource(_train_images(config), paths),
      augment=transforms.build_augment(augment_spec(config)),
      keys=("image", "mask"),
      init_weights=weights_loader(weights, convert.load_variables) if weights else None,
  )


def train(config, workdir: str, paths: list[str]):
  """Trains the segmenter on the pseudo masks `paths` with its own trainer section (`config.segment`),
  checkpoints under segment/."""
  return train_stage(config, workdir, make_task(config, paths), section="segment", subdir="segment")


def segmenter_probs(predict, image: np.ndarray, config) -> np.ndarray:
  """Multi-scale (+ flip) softmax of the segmenter on one image: float32 [C, H, W].

  predict: images float32 [B, h, w, 3] (normalised by config.normalize) -> logits [B, h', w', C]; at
  each scale of `segment.test_scales` the image is resized bilinearly, the logits upsampled back to
  (H, W) (align_corners=True), and the softmaxes of every scale and flip averaged.
  """
  h, w = image.shape[:2]
  x = transforms.normalize(
      {"image": np.asarray(image)}, tuple(config.normalize.mean), tuple(config.normalize.std)
  )["image"].astype(np.float32)
  x = jnp.asarray(x)[None]
  flip = bool(config.segment.test_flip)
  total, count = 0.0, 0
  for scale in config.segment.test_scales:
    size = (max(1, int(round(h * scale))), max(1, int(round(w * scale))))
    xs = x if size == (h, w) else resize_bilinear(x, size, align_corners=False)
    batch = jnp.concatenate([xs, xs[:, :, ::-1]]) if flip else xs
    probs = jax.nn.softmax(upsample_logits(predict(batch), (h, w)), axis=-1)
    total = total + probs[0] + (probs[1][:, ::-1] if flip else 0.0)
    count += 2 if flip else 1
  return np.moveaxis(np.asarray(total / count, np.float32), -1, 0)


def eval_source(config):
  """The held-out split the segmenter is scored on (`segment.eval_split`)."""
  data = ml_collections.ConfigDict(config.data.to_dict())
  data.eval_split = str(config.segment.eval_split)
  return datasets.build_source(data, "eval")


def score(config, workdir: str, model, *, write_masks: bool = False) -> dict:
  """mIoU (official averaging, as the other SEAM rows) of `model` (an InferenceModel of the
  segmenter) on `segment.eval_split`, without and with the dense CRF."""
  source = eval_source(config)
  num_classes, ignore = config.data.num_classes, config.data.ignore_index
  confusion = np.zeros((2, num_classes, num_classes), np.int64)
  mask_dir = os.path.join(workdir, "segment", "masks")
  if write_masks:
    os.makedirs(mask_dir, exist_ok=True)
  for i in multihost.process_indices(len(source)):
    example = source[i]
    probs = segmenter_probs(model.predict, example["image"], config)
    plain = np.argmax(probs, axis=0).astype(np.uint8)
    refined = np.argmax(crf.dense_crf(example["image"], probs), axis=0).astype(np.uint8)
    gt = np.asarray(example["mask"]).astype(np.int64).ravel()
    valid = gt != ignore
    for k, pred in enumerate((plain, refined)):
      idx = gt[valid] * num_classes + pred.astype(np.int64).ravel()[valid]
      confusion[k] += np.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)
    if write_masks and i < int(config.evaluate.num_pictures):
      write_palette_png(os.path.join(mask_dir, f"{example.get('id', f'{i:06d}')}.png"), plain)
  confusion = multihost.sum_over_processes(confusion)
  (iou, miou), (crf_iou, crf_miou) = (cam_inference.official_miou(c) for c in confusion)
  return dict(miou=miou, crf_miou=crf_miou, iou=iou.tolist(), crf_iou=crf_iou.tolist())


def run(config, workdir: str) -> dict:
  """Pseudo masks -> DeepLab-v2 (trainer section `config.segment`) -> mIoU with / without CRF."""
  paths = make_pseudo_masks(config, workdir)
  train(config, workdir, paths)
  model = method.load_inference_model(config, workdir, stage="segment")
  result = score(config, workdir, model, write_masks=True)
  result.update(
      step=model.step,
      eval_split=str(config.segment.eval_split),
      pseudo_masks=str(config.segment.pseudo_masks),
      num_images=len(paths),
  )
  print(
      f"SEAM segmenter ({config.segment.pseudo_masks} masks, {len(paths)} images): mIoU "
      f"{100 * result['miou']:.2f}, with CRF {100 * result['crf_miou']:.2f}",
      flush=True,
  )
  if multihost.is_main_process():
    write_json(os.path.join(workdir, "segment", "metrics.json"), result)
  return {k: result[k] for k in ("miou", "crf_miou")}
