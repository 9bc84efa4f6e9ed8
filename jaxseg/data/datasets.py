"""Segmentation datasets by name, built from a `config.data` section.

Each builder returns a random-access source of example dicts (`image` uint8
[H, W, 3], `mask` uint8 [H, W], ...). Real datasets are imported lazily.
"""

from __future__ import annotations

import ml_collections

from jaxseg.data.errors import DataError

SYNTHETIC_HINT = "use the ':synthetic' config variant for the embedded synthetic dataset"


# Keys of a data section that may change between launches of one workdir (the dataset moved; a bad
# file that stops every resume is skipped): `resume_safe('data')` -> ('data.root', 'data.skip_bad').
RESUME_SAFE_DATA_KEYS = ("root", "skip_bad", "tfds.data_dir")


def resume_safe(*sections: str) -> tuple[str, ...]:
  """The resume-safe keys of the named `data_config()` sections of a method's config."""
  return tuple(f"{s}.{k}" for s in sections for k in RESUME_SAFE_DATA_KEYS)


def data_config() -> ml_collections.ConfigDict:
  """Keys of a segmentation `config.data` section (shared by the methods)."""
  return ml_collections.ConfigDict(
      dict(
          name="synthetic",  # synthetic | voc | folder | tfds | gta5 | cityscapes
          # raw: read `root`'s files; tfds: the same examples from the dataset prepared by
          # `python -m jaxseg.data.prepare` (voc -> voc_aug, gta5, cityscapes) in `tfds.data_dir`.
          source="raw",
          root="",  # dataset root for voc / folder / gta5 / cityscapes
          train_split="train",
          eval_split="val",
          num_classes=7,  # including background
          ignore_index=255,
          # True: a training example whose file is bad (DataError) is replaced by the next readable
          # one, with a warning naming the file (see jaxseg/data/skip_bad.py); eval never skips.
          # `python -m jaxseg.data.check --config=...` lists every bad file before a run.
          skip_bad=False,
          synthetic=dict(
              num_train=2000,
              num_eval=200,
              image_size=(64, 64),
              min_objects=1,
              max_objects=4,
              style="default",
              object_scale=1.0,  # object radius multiplier (1.6: VOC-like object sizes)
              seed=0,  # scene seed offset: another domain draws other scenes (e.g. UDA's target)
          ),
          folder=dict(
              image_dir="images", mask_dir="masks", image_ext=".jpg", mask_ext=".png", split_dir=""
          ),
          # name='tfds' (any TFDS segmentation dataset: image_key, mask_key) or source='tfds'.
          tfds=dict(
              name="",
              data_dir="",
              image_key="image",
              mask_key="segmentation_mask",
              per_process=False,  # source='tfds' training: each process reads only its range
          ),
      )
  )


def build_source(
    data: ml_collections.ConfigDict,
    split: str,
    *,
    with_labels: bool = False,
    with_masks: bool = True,
):
  """Random-access source for `split` ('train' or 'eval' names a config split).

  Args:
    with_labels: attach image-level `labels` float32 [num_classes - 1] (multi-hot
      over the foreground classes). The synthetic scenes always carry them.
    with_masks: False reads no pixel labels where the dataset allows it (VOC
      train_aug without SBD masks: the weakly supervised setting).

  With `data.skip_bad`, the train source skips unreadable examples (`skip_bad.SkipBadSource`).
  """
  source = _build_source(data, split, with_labels=with_labels, with_masks=with_masks)
  if split == "train" and data.get("skip_bad", False):
    from jaxseg.data.skip_bad import SkipBadSource

    return SkipBadSource(source, name=f"{data.name}/{data.train_split}")
  return source


# source='tfds': the prepared dataset of each raw dataset, and its split names (raw -> prepared).
PREPARED = {"voc": "voc_aug", "gta5": "gta5", "cityscapes": "cityscapes"}
_PREPARED_SPLITS = {"gta5": {"all": "train"}}


def _prepared_source(data, split: str, split_name: str, *, with_labels: bool, with_masks: bool):
  from jaxseg.data.readers import prepared

  if data.name not in PREPARED:
    raise DataError(
        f"config.data.source='tfds' reads a prepared {sorted(PREPARED)} dataset, not "
        f"data.name={data.name!r}"
    )
  if data.name == "voc":
    options = {"with_labels": with_labels, "with_masks": with_masks or split_name != "train_aug"}
  else:
    if with_labels:
      raise ValueError(f"dataset {data.name!r} has no image-level labels; use synthetic or voc")
    options = {"with_masks": with_masks}
  if data.name in ("gta5", "cityscapes"):
    from jaxseg.data.readers import driving

    driving.check_config(data)
  return prepared.section_source(
      data,
      _PREPARED_SPLITS.get(data.name, {}).get(split_name, split_name),
      where="data",
      default_name=PREPARED[data.name],
      options=options,
      train=split == "train",
  )


def _build_source(data, split: str, *, with_labels: bool, with_masks: bool):
  split_name = data.train_split if split == "train" else data.eval_split
  from jaxseg.data.readers import prepared

  if prepared.reads_prepared(data, "data"):
    return _prepared_source(data, split, split_name, with_labels=with_labels, with_masks=with_masks)
  if data.name == "synthetic":
    from jaxseg.data.synthetic import sources as synthetic

    s = data.synthetic
    count = s.num_train if split == "train" else s.num_eval
    # Train and eval draw disjoint scenes: eval seeds are offset.
    return synthetic.SyntheticScenes(
        count,
        num_classes=data.num_classes - 1,
        image_size=tuple(s.image_size),
        seed=int(s.seed) + (0 if split == "train" else 1_000_003),
        min_objects=s.min_objects,
        max_objects=s.max_objects,
        style=s.style,
        object_scale=float(s.object_scale),
    )
  if data.name == "voc":
    from jaxseg.data.readers import sources

    _require_root(data)
    return sources.voc_segmentation_source(
        data.root, split_name, use_sbd=with_masks, with_labels=with_labels, hint=SYNTHETIC_HINT
    )
  if with_labels:
    raise ValueError(f"dataset {data.name!r} has no image-level labels; use synthetic or voc")
  if data.name == "folder":
    import os

    from jaxseg.data.readers import sources

    _require_root(data)
    f = data.folder
    split_file = os.path.join(data.root, f.split_dir, f"{split_name}.txt")
    return sources.SegmentationFolderSource(
        data.root,
        split_file=split_file,
        image_dir=f.image_dir,
        mask_dir=f.mask_dir,
        image_ext=f.image_ext,
        mask_ext=f.mask_ext,
        num_classes=data.num_classes,
        ignore_index=data.ignore_index,
        name=data.name,
        hint=SYNTHETIC_HINT,
    )
  if data.name in ("gta5", "cityscapes"):
    from jaxseg.data.readers import driving

    _require_root(data)
    return driving.build_driving_source(
        data, split_name, with_masks=with_masks, hint=SYNTHETIC_HINT
    )
  if data.name == "tfds":
    from jaxseg.data.readers import tfds_source

    t = data.tfds
    return tfds_source.tfds_segmentation_source(
        t.name, split_name, data_dir=t.data_dir or None, image_key=t.image_key, mask_key=t.mask_key
    )
  raise ValueError(
      f"config.data.name={data.name!r}: expected synthetic, voc, folder, tfds, gta5 or cityscapes"
  )


def _require_root(data) -> None:
  # A missing directory is reported by the source itself, with the path.
  if not data.root:
    raise DataError(
        f"config.data.root is empty for dataset {data.name!r}; set "
        f"--config.data.root=/path/to/dataset, or {SYNTHETIC_HINT}"
    )


def class_names(data: ml_collections.ConfigDict) -> list[str]:
  if data.name == "synthetic":
    from jaxseg.data.synthetic import sources as synthetic

    return list(synthetic.class_names(data.num_classes - 1))
  if data.name == "voc":
    from jaxseg.data.readers import sources

    return list(sources.VOC_CLASS_NAMES)
  if data.name in ("gta5", "cityscapes"):
    from jaxseg.data.readers import driving

    return list(driving.CITYSCAPES_CLASS_NAMES)
  if data.name == "synthetic_indoor":
    from jaxseg.data.synthetic.indoor import INDOOR_CLASSES

    return list(INDOOR_CLASSES)
  return [str(i) for i in range(data.num_classes)]
