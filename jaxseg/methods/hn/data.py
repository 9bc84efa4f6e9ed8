"""Data of the `hn` method: RGB-D sources for HN-label pre-training, semantic sources for fine-tuning.

  pretrain_data.name  synthetic_indoor | nyu (the depth of the labelled set's `split`) | rgbd (folders of
                      RGB + 16-bit depth PNGs + intrinsics.txt, `jaxseg.data.readers.rgbd`)
  data.name           synthetic_indoor | nyu (NYU Depth v2 labelled set: 795 train / 654 test, 40 or 13
                      classes)
A pre-training example needs image, depth (metres, 0 = invalid) and intrinsics; a semantic one image
and mask (255 = unlabelled).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from jaxseg.errors import ConfigError

# Eval scenes are drawn with an offset seed, so they never repeat a training scene.
EVAL_SEED_OFFSET = 1_000_003


def _indoor(s, count: int, seed: int):
  from jaxseg.data.synthetic.indoor import SyntheticIndoorScenes

  return SyntheticIndoorScenes(count, image_size=tuple(s.image_size), seed=seed)


def _nyu(d, split: str, where: str, train: bool = False):
  from jaxseg.data.readers import prepared
  from jaxseg.data.readers.nyu import NyuDepthV2Source

  if prepared.reads_prepared(d, where):
    if split not in ("train", "test"):
      raise ConfigError(
          f"{where}: the prepared nyu_depth_v2 has splits train and test, not {split!r}"
      )
    return prepared.section_source(
        d,
        split,
        where=where,
        default_name="nyu_depth_v2",
        # pretrain_data: HN labels stored by `prepare nyu_depth_v2/hn` come along.
        options={"classes": int(d.classes), "hn_labels": where == "pretrain_data"},
        train=train,
    )
  if not d.mat_path:
    raise ConfigError(
        f"{d.name}: mat_path is empty\nhint: --config.<section>.mat_path=/data/nyu_depth_v2_labeled.mat"
        " (and splits_path=/data/splits.mat, mapping40=/data/classMapping40.mat)"
    )
  return NyuDepthV2Source(
      str(d.mat_path),
      split=split,
      splits_path=str(d.splits_path) or None,
      classes=int(d.classes),
      mapping40=str(d.mapping40) or None,
      mapping13=str(d.mapping13) or None,
  )


def depth_source(config):
  """The RGB-D images whose depth gives the HN labels."""
  d = config.pretrain_data
  if d.name == "synthetic_indoor":
    return _indoor(d.synthetic, int(d.synthetic.num_train), int(d.synthetic.seed))
  if d.name == "nyu":
    return _nyu(d, str(d.split), "pretrain_data")
  if d.name == "rgbd":
    if d.get("source", "raw") != "raw":
      raise ConfigError(
          "pretrain_data.source='tfds' reads a prepared nyu_depth_v2; rgbd is raw only"
      )
    from jaxseg.data.readers.rgbd import RgbdFolderSource

    if not d.root:
      raise ConfigError(
          "pretrain_data.root is empty\nhint: --config.pretrain_data.root=/data/captures"
      )
    return RgbdFolderSource(str(d.root), depth_scale=float(d.depth_scale))
  raise ConfigError(f"pretrain_data.name={d.name!r}: expected synthetic_indoor, nyu or rgbd")


def semantic_source(config, split: str):
  """The labelled semantic split ('train' or 'eval')."""
  d = config.data
  if d.name == "synthetic_indoor":
    s = d.synthetic
    if split == "train":
      return _indoor(s, int(s.num_train), int(s.seed))
    return _indoor(s, int(s.num_eval), int(s.seed) + EVAL_SEED_OFFSET)
  if d.name == "nyu":
    name = str(d.train_split if split == "train" else d.eval_split)
    return _nyu(d, name, "data", train=split == "train")
  raise ConfigError(f"data.name={d.name!r}: expected synthetic_indoor or nyu")


def example_name(example, index: int) -> str:
  return str(example.get("id", f"{index:07d}"))


class ImageMaskSource:
  """image + mask of another source (drops depth, truth maps, ...): what the segmentation augment reads.
  With `label_dir`, the mask is the PNG `<label_dir>/<id>.png` (the HN labels) instead."""

  def __init__(self, source, label_dir: str | None = None):
    self.source, self.label_dir = source, label_dir

  def __len__(self):
    return len(self.source)

  def __repr__(self):
    return f"ImageMaskSource({self.source!r}, label_dir={self.label_dir!r})"

  def __getitem__(self, i):
    example = self.source[i]
    out = {"image": example["image"], "index": np.int64(i)}
    if self.label_dir is None:
      out["mask"] = example["mask"]
      return out
    path = os.path.join(self.label_dir, f"{example_name(example, i)}.png")
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path}: HN label missing; run the 'hn_labels' stage first")
    out["mask"] = np.asarray(Image.open(path))
    return out


def labelled_subset(num_examples: int, fraction: float, seed: int) -> np.ndarray:
  """The indices of the fine-tuning images that keep their labels: round(fraction * n) (at least 1),
  a fixed random draw per seed; a smaller fraction's images are a subset of a larger one's."""
  if not 0 < fraction <= 1:
    raise ConfigError(f"finetune.label_fractions: {fraction} is not in (0, 1]")
  count = max(1, int(round(fraction * num_examples)))
  order = np.random.default_rng([seed, 17]).permutation(num_examples)
  return np.sort(order[:count])


class Subset:
  """The examples of `source` at `indices`, listed `repeats` times (so a handful of labelled images
  still fill a batch: an epoch then shows each image `repeats` times)."""

  def __init__(self, source, indices, repeats: int = 1):
    self.source, self.indices = source, np.asarray(indices, np.int64)
    self.repeats = max(1, int(repeats))

  def __len__(self):
    return len(self.indices) * self.repeats

  def __repr__(self):
    return f"Subset({self.source!r}, {len(self.indices)} examples x {self.repeats})"

  def __getitem__(self, i):
    return self.source[int(self.indices[int(i) % len(self.indices)])]
