"""Image segmentation builders: `voc_aug` (VOC 2012 + SBD), `gta5`, `cityscapes`.

Records (features): image PNG [H, W, 3]; mask PNG [H, W, 1] (class ids, 255 = ignore); id text;
voc_aug also `labels`: the image-level classes as a sequence of `ClassLabel` (20 VOC foreground
names), read back as the multi-hot float32 [20] of `voc_image_labels`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jaxseg.data.prepare import records
from jaxseg.data.prepare.base import ReaderBuilder
from jaxseg.data.readers import driving, sources


def _image_mask_features(mask_doc: str) -> dict[str, Any]:
  return {
      "image": tfds.features.Image(shape=(None, None, 3), doc="RGB, PNG (lossless)"),
      "mask": tfds.features.Image(shape=(None, None, 1), use_colormap=True, doc=mask_doc),
      "id": tfds.features.Text(),
  }


def _image_mask_record(example: dict[str, Any]) -> dict[str, Any]:
  return {
      "image": records.encode_png(example["image"]),
      "mask": records.encode_png(example["mask"]),
      "id": example["id"],
  }


def _image_mask_example(record: dict[str, Any], with_masks: bool) -> dict[str, Any]:
  example = {"image": np.asarray(record["image"]), "id": records.text(record["id"])}
  if with_masks:
    example["mask"] = records.squeeze_mask(record["mask"])
  return example


class VocAug(ReaderBuilder):
  """PASCAL VOC 2012 + SBD: splits train_aug (10582, SBD masks) and val (1449), with labels."""

  name = "voc_aug"
  DESCRIPTION = "PASCAL VOC 2012 segmentation with the SBD-augmented train_aug split (jaxseg)."
  LAYOUT = sources._VOC_LAYOUT
  SPLITS = ("train_aug", "val")

  def features(self):
    features = _image_mask_features("VOC class ids 0..20 (0 = background), 255 = boundary/ignore")
    features["labels"] = tfds.features.Sequence(
        tfds.features.ClassLabel(names=list(sources.VOC_CLASS_NAMES[1:])),
        doc="image-level classes (Annotations/<id>.xml, difficult objects included)",
    )
    return features

  def readers(self, root):
    return {s: sources.voc_segmentation_source(root, s, with_labels=True) for s in self.SPLITS}

  @classmethod
  def to_record(cls, example):
    record = _image_mask_record(example)
    record["labels"] = [int(c) for c in np.flatnonzero(example["labels"])]
    return record

  @classmethod
  def from_record(cls, record, options):
    example = _image_mask_example(record, options.get("with_masks", True))
    if options.get("with_labels", True):
      labels = np.zeros(len(sources.VOC_CLASS_NAMES) - 1, np.float32)
      labels[np.asarray(record["labels"], np.int64)] = 1.0
      example["labels"] = labels
    return example


class _TrainIdsBuilder(ReaderBuilder, skip_registration=True):
  """What the driving datasets share: image + mask in the 19 Cityscapes train ids."""

  def features(self):
    return _image_mask_features("Cityscapes train ids 0..18, 255 = ignore")

  @classmethod
  def to_record(cls, example):
    return _image_mask_record(example)

  @classmethod
  def from_record(cls, record, options):
    return _image_mask_example(record, options.get("with_masks", True))


class Gta5(_TrainIdsBuilder):
  """GTA5: one split 'train' (the reader's 'all'), labels mapped to the 19 Cityscapes train ids."""

  name = "gta5"
  DESCRIPTION = "GTA5 (Richter et al. 2016), labels as the 19 Cityscapes train ids (jaxseg)."
  LAYOUT = driving._GTA5_LAYOUT

  def readers(self, root):
    return {"train": driving.gta5_source(root, "all")}


class Cityscapes(_TrainIdsBuilder):
  """Cityscapes fine: splits train (2975) and val (500), labelIds mapped to the 19 train ids."""

  name = "cityscapes"
  DESCRIPTION = "Cityscapes leftImg8bit + gtFine, labels as the 19 train ids (jaxseg)."
  LAYOUT = driving._CITYSCAPES_LAYOUT

  def readers(self, root):
    return {
        s: driving.cityscapes_source(root, s)
        for s in ("train", "val")
        if os.path.isdir(os.path.join(root, "leftImg8bit", s))
    }
