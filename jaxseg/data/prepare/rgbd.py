"""`nyu_depth_v2`: the labelled NYU Depth v2 set (795 train / 654 test) from `NyuDepthV2Source`.

Raw layout (the `--root` folder): nyu_depth_v2_labeled.mat, splits.mat, classMapping40.mat,
class13Mapping.mat, and optionally intrinsics.txt (fx fy cx cy, or 3x3) for frames that are not the
full 480x640 Kinect frame. Records: image PNG [H, W, 3]; depth float32 [H, W] metres (filled
`depths`, 0 = invalid; zlib); intrinsics float32 [3, 3]; mask40 / mask13 PNG [H, W, 1] (0-based
class ids, 255 = unlabelled); id text ('%05d', the 1-based image number).

Configs: `nyu_depth_v2` (= `nyu_depth_v2/default`) as above; `nyu_depth_v2/hn` adds `hn_labels`
PNG [H, W, 1], the HN labels of `jaxseg.depth.hn_labels` with `default_hn_config()` (stored in the
dataset's metadata as `hn_params`), computed once at preparation instead of by the hn method's
`hn_labels` stage, which uses them when its `config.hn` equals `hn_params`.

`from_record(options)`: classes 40 (default with `classes`) or 13 picks the mask as `mask`, as the
reader built with that `classes` gives it; no `classes` option keeps both (`mask` = 40 classes,
`mask13`). `hn_labels` (uint8 [H, W]) is kept with no options or `hn_labels=True`, when stored.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from jaxseg.data.errors import DataError
from jaxseg.data.prepare import records
from jaxseg.data.prepare.base import ReaderBuilder
from jaxseg.data.readers import nyu

FILES = {
    "mat": "nyu_depth_v2_labeled.mat",
    "splits": "splits.mat",
    "mapping40": "classMapping40.mat",
    "mapping13": "class13Mapping.mat",
}


def hn_params() -> dict:
  """The HN-label settings of `nyu_depth_v2/hn` (JSON-normalised `default_hn_config()`)."""
  import json

  from jaxseg.depth.hn_labels import default_hn_config

  return json.loads(json.dumps(default_hn_config().to_dict()))


class _Both:
  """The 40-class reader's examples with the 13-class mask added as `mask13` (and `hn_labels`)."""

  def __init__(self, s40, s13, hn: bool = False):
    self.s40, self.s13, self.hn = s40, s13, hn

  def __len__(self):
    return len(self.s40)

  def __getitem__(self, index):
    example = self.s40[index]
    example["mask13"] = self.s13[index]["mask"]
    if self.hn:
      from jaxseg.depth.hn_labels import default_hn_config
      from jaxseg.depth.hn_labels import hn_labels as compute  # jitted per config

      labels, _ = compute(example["depth"][None], example["intrinsics"][None], default_hn_config())
      example["hn_labels"] = np.asarray(labels[0]).astype(np.uint8)
    return example


class NyuConfig(tfds.core.BuilderConfig):
  """`hn_labels`: also store the HN labels (config 'hn')."""

  def __init__(self, *, hn_labels: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.hn_labels = hn_labels


class NyuDepthV2(ReaderBuilder):
  """NYU Depth v2 labelled set with depth, intrinsics and 40- and 13-class labels."""

  BUILDER_CONFIGS = [
      NyuConfig(name="default", description="RGB, depth, intrinsics, 40/13-class masks"),
      NyuConfig(name="hn", description="default + HN labels (default_hn_config)", hn_labels=True),
  ]

  name = "nyu_depth_v2"
  DESCRIPTION = "NYU Depth v2 labelled set (Silberman et al. 2012): RGB-D + 40/13-class labels."
  LAYOUT = "expected <root>/" + ", <root>/".join(FILES.values()) + " (+ optional intrinsics.txt)"

  def features(self):
    return {
        "image": tfds.features.Image(shape=(None, None, 3)),
        "depth": tfds.features.Tensor(
            shape=(None, None), dtype=np.float32, encoding="zlib", doc="metres, 0 = invalid"
        ),
        "intrinsics": tfds.features.Tensor(shape=(3, 3), dtype=np.float32, doc="pinhole K"),
        "mask40": tfds.features.Image(shape=(None, None, 1), use_colormap=True),
        "mask13": tfds.features.Image(shape=(None, None, 1), use_colormap=True),
        "id": tfds.features.Text(),
    } | (
        {"hn_labels": tfds.features.Image(shape=(None, None, 1), use_colormap=True)}
        if self.builder_config.hn_labels
        else {}
    )

  def readers(self, root):
    paths = {k: os.path.join(root, f) for k, f in FILES.items()}
    for path in paths.values():
      if not os.path.isfile(path):
        raise DataError(f"{path}: NYU Depth v2 file not found\nhint: {self.LAYOUT}")
    k_path = os.path.join(root, "intrinsics.txt")
    intrinsics = None
    if os.path.isfile(k_path):
      from jaxseg.data.readers.rgbd import read_intrinsics

      intrinsics = read_intrinsics(k_path)
    out = {}
    for split in ("train", "test"):
      common = dict(
          splits_path=paths["splits"], mapping40=paths["mapping40"], intrinsics=intrinsics
      )
      s40 = nyu.NyuDepthV2Source(paths["mat"], split, classes=40, **common)
      s13 = nyu.NyuDepthV2Source(
          paths["mat"], split, classes=13, mapping13=paths["mapping13"], **common
      )
      out[split] = _Both(s40, s13, hn=self.builder_config.hn_labels)
    if self.builder_config.hn_labels:
      self.info.metadata["hn_params"] = hn_params()
    return out

  @classmethod
  def to_record(cls, example):
    record = {
        "image": records.encode_png(example["image"]),
        "depth": example["depth"],
        "intrinsics": example["intrinsics"],
        "mask40": records.encode_png(example["mask"]),
        "mask13": records.encode_png(example["mask13"]),
        "id": example["id"],
    }
    if "hn_labels" in example:
      record["hn_labels"] = records.encode_png(example["hn_labels"])
    return record

  @classmethod
  def from_record(cls, record, options):
    example = {
        "image": np.asarray(record["image"]),
        "depth": np.asarray(record["depth"], np.float32),
        "intrinsics": np.asarray(record["intrinsics"], np.float32),
        "id": records.text(record["id"]),
    }
    classes = options.get("classes")
    if classes is None:
      example["mask"] = records.squeeze_mask(record["mask40"])
      example["mask13"] = records.squeeze_mask(record["mask13"])
    elif int(classes) in (40, 13):
      example["mask"] = records.squeeze_mask(record[f"mask{int(classes)}"])
    else:
      raise DataError(f"nyu_depth_v2 (prepared) holds 40- and 13-class masks, not {classes}")
    if "hn_labels" in record and (not options or options.get("hn_labels")):
      example["hn_labels"] = records.squeeze_mask(record["hn_labels"])
    return example
