"""GTA5 and Cityscapes sources for GTA5 -> Cityscapes domain adaptation (19 train classes).

Examples are {'image': uint8 [H, W, 3] RGB, 'mask': uint8 [H, W] train ids 0..18 with 255 =
ignore (absent when unlabelled), 'index': int, 'id': str}, as `sources.SegmentationFolderSource`
gives them (the transforms cast masks to int32). Images and labels keep their native size
(GTA5 1914x1052, Cityscapes 2048x1024): resizing belongs to the transforms. Sources are picklable,
read the file list eagerly and the files lazily; a bad file raises `DataError` naming it.

Layouts (official, as ADVENT `advent/dataset/{gta5,cityscapes}.py` reads them):
  GTA5:       <root>/images/00001.png, <root>/labels/00001.png (labels: Cityscapes label ids).
  Cityscapes: <root>/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png,
              <root>/gtFine/<split>/<city>/<name>_gtFine_labelIds.png; id = <name>, e.g.
              'aachen_000000_000019'. ESL writes its pseudo-labels (train ids) as
              '<id>_leftImg8bit.png' at 1024x512, not at the native image size.
Split lists: ADVENT reads `gta5_list/all.txt` (24966 names '00001.png', split 'all') and
`cityscapes_list/{train,val}.txt` (2975 / 500 lines 'aachen/aachen_000000_000019_leftImg8bit.png').
Here a list is read from `list_file` or, when present, `<root>/gta5_list/<split>.txt` /
`<root>/cityscapes_list/<split>.txt` (copy ADVENT's files there to pin its order); otherwise GTA5
split 'all' (or 'train') is every `images/*.png` sorted by name, and a Cityscapes split is every
`leftImg8bit/<split>/*/*_leftImg8bit.png` sorted by '<city>/<file>' (the same sets as those lists).

Label ids -> train ids: the official 256-entry table below (ADVENT's GTA5 `id_to_trainid` and
Cityscapes `info.json: label2train` agree; every other id -> 255). Ids 0..34 are accepted (the
domain of ADVENT's Cityscapes lookup, which fails on larger ids); larger values raise `DataError`
unless `check_ids=False` (then they map to 255, as ADVENT's GTA5 reader does silently).

Official preprocessing, to reproduce in the transform spec (ADVENT `base_dataset.py`, `config.py`):
  - No crop, flip or scale augmentation. Each image is resized with PIL BICUBIC (antialiased when
    shrinking) to (W, H) = 1280x720 for GTA5 (from 1914x1052, aspect not kept) and 1024x512 for
    Cityscapes (train and test input); labels with PIL NEAREST to the same size (GTA5 labels and
    ESL's Cityscapes pseudo-labels). Resizing is done on the uint8 image, before the float cast.
  - Evaluation: Cityscapes val at 1024x512 input; main logits upsampled bilinearly
    (align_corners=True) to 2048x1024, compared with the native-size labels (19-class mIoU).
  - Normalisation: RGB -> BGR, then subtract the BGR mean (104.00698793, 116.66876762,
    122.67891434) on the 0..255 scale, no std. In this RGB pipeline: `normalize` with mean =
    (122.67891434, 116.66876762, 104.00698793) / 255 and std = 1/255 gives x - mean_rgb in 0..255
    units; flip channels to BGR before Caffe-converted weights (or flip their first conv's inputs).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from jaxseg.data.errors import DataError
from jaxseg.data.readers.sources import check_utf8_name, decode_image, decode_mask, read_text_lines
from jaxseg.data.transforms import validate_example

CITYSCAPES_CLASS_NAMES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
NUM_CLASSES = len(CITYSCAPES_CLASS_NAMES)  # 19
IGNORE_INDEX = 255
# Cityscapes label id -> train id (GTA5 labels use the same ids); ADVENT's table.
_ID_TO_TRAINID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10}
_ID_TO_TRAINID.update({24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18})
MAX_LABEL_ID = 34  # ids 0..33 plus 34 (ADVENT's 35-entry lookup; licence plate -1 lands there)


def _id_table() -> np.ndarray:
  table = np.full(256, IGNORE_INDEX, np.uint8)
  for label_id, train_id in _ID_TO_TRAINID.items():
    table[label_id] = train_id
  table.flags.writeable = False
  return table


LABELID_TO_TRAINID = _id_table()  # uint8 [256]
GTA5_ID_TO_TRAINID = LABELID_TO_TRAINID  # the official GTA5 table is the same
CITYSCAPES_LABELID_TO_TRAINID = LABELID_TO_TRAINID

_GTA5_LAYOUT = "expected the GTA5 layout <root>/images/*.png, <root>/labels/*.png"
_CITYSCAPES_LAYOUT = (
    "expected the Cityscapes layout <root>/leftImg8bit/<split>/<city>/*_leftImg8bit.png, "
    "<root>/gtFine/<split>/<city>/*_gtFine_labelIds.png"
)


def _missing(path: str, what: str, hint: str) -> DataError:
  return DataError(f"{what} not found: {path}\nhint: {hint}")


def _require_dir(path: str, what: str, hint: str) -> str:
  if not os.path.isdir(path):
    raise _missing(path, what, hint)
  return path


def _read_list(path: str) -> list[tuple[int, str]]:
  """(line number, entry) for every non-blank line of an ADVENT-style list file."""
  lines = read_text_lines(path)
  entries = [(n, line.strip()) for n, line in enumerate(lines, 1) if line.strip()]
  if not entries:
    raise DataError(f"{path}: split list is empty")
  return entries


def _list_path(root: str, list_file: str | os.PathLike | None, default: str, hint: str) -> str:
  """The list to read: `list_file` (relative to root, must exist), else `default` if it exists."""
  if list_file is None:
    return default if os.path.isfile(default) else ""
  path = os.path.join(root, os.fspath(list_file))
  if not os.path.isfile(path):
    raise _missing(path, "split list", hint)
  return path


class DrivingSource:
  """Random access over (id, image path, label path or None) with an id -> train id table.

  `items` paths are absolute; `table` None means the labels already hold train ids (e.g.
  pseudo-labels written at the image size): they are only checked against [0, 19) and 255.
  """

  def __init__(
      self,
      name: str,
      items: tuple[tuple[str, str, str | None], ...],
      *,
      table: np.ndarray | None = LABELID_TO_TRAINID,
      check_ids: bool = True,
      origin: str = "",
  ):
    self.name, self.items, self.check_ids, self.origin = name, items, check_ids, origin
    self.table = None if table is None else np.asarray(table, np.uint8)
    self.ids = tuple(item[0] for item in items)

  def __len__(self) -> int:
    return len(self.items)

  def __repr__(self) -> str:
    return f"DrivingSource(name={self.name!r}, origin={self.origin!r}, len={len(self)})"

  def _labels(self, label_path: str, image_path: str, image_shape: tuple[int, ...]) -> np.ndarray:
    if not os.path.isfile(label_path):
      raise DataError(f"{label_path}: label file not found (for image {image_path})")
    raw = decode_mask(label_path)
    if raw.shape != image_shape[:2]:
      raise DataError(
          f"{label_path}: label is {raw.shape[0]}x{raw.shape[1]} (HxW) but its image "
          f"{image_path} is {image_shape[0]}x{image_shape[1]}"
      )
    if self.table is None:
      return raw
    if self.check_ids:
      counts = np.bincount(raw.ravel(), minlength=256)
      bad = np.flatnonzero(counts[MAX_LABEL_ID + 1 :]) + MAX_LABEL_ID + 1
      if bad.size:
        raise DataError(
            f"{label_path}: label values {bad[:10].tolist()} are not label ids 0..{MAX_LABEL_ID}"
            " (a colour or train-id PNG? labels must hold Cityscapes label ids)"
        )
    return self.table[raw]

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    if not -len(self) <= index < len(self):
      raise IndexError(f"{self.name}: index {index} out of range for {len(self)} examples")
    index %= len(self)
    example_id, image_path, label_path = self.items[index]
    if not os.path.isfile(image_path):
      where = f" (listed in {self.origin})" if self.origin.endswith(".txt") else ""
      raise DataError(f"{image_path}: image file not found{where}")
    example = {"image": decode_image(image_path), "index": index, "id": example_id}
    if label_path is not None:
      example["mask"] = self._labels(label_path, image_path, example["image"].shape)
    return validate_example(
        example, NUM_CLASSES, IGNORE_INDEX, source=f"{self.name} ({label_path or image_path})"
    )


def gta5_source(
    root: str | os.PathLike,
    split: str = "all",
    *,
    with_labels: bool = True,
    list_file: str | os.PathLike | None = None,
    check_ids: bool = True,
    hint: str | None = None,
) -> DrivingSource:
  """GTA5 (the source domain): images and labels mapped to the 19 Cityscapes train ids.

  Args:
    root: folder holding `images/` and `labels/` (same file names).
    split: 'all' (or 'train': the same) = every image, or a list `<root>/gta5_list/<split>.txt`.
    with_labels: read `labels/` (False: image-only examples, no labels folder needed).
    list_file: ADVENT-style list ('00001.png' per line), relative to root or absolute.
    check_ids: refuse label values above 34 (False: map them to 255).
    hint: appended to missing-path errors.
  """
  root = os.fspath(root)
  hint = _GTA5_LAYOUT + (f"; {hint}" if hint else "")
  _require_dir(root, "GTA5 root directory", hint)
  image_dir = _require_dir(os.path.join(root, "images"), "GTA5 image directory", hint)
  label_dir = None
  if with_labels:
    label_dir = _require_dir(os.path.join(root, "labels"), "GTA5 label directory", hint)
  default_list = os.path.join(root, "gta5_list", f"{split}.txt")
  path = _list_path(root, list_file, default_list, hint)
  if path:
    names = [entry for _, entry in _read_list(path)]
  elif split in ("all", "train"):
    names = sorted(
        check_utf8_name(image_dir, f) for f in os.listdir(image_dir) if f.lower().endswith(".png")
    )
    if not names:
      raise DataError(f"{image_dir}: no .png images\nhint: {hint}")
  else:
    raise _missing(default_list, f"GTA5 split list for split {split!r}", hint + "; or 'all'")
  items = []
  for name in names:
    file = name if os.path.splitext(name)[1] else name + ".png"
    label = None if label_dir is None else os.path.join(label_dir, file)
    items.append((os.path.splitext(file)[0], os.path.join(image_dir, file), label))
  return DrivingSource(f"gta5/{split}", tuple(items), check_ids=check_ids, origin=path or root)


def cityscapes_source(
    root: str | os.PathLike,
    split: str = "val",
    *,
    with_labels: bool = True,
    list_file: str | os.PathLike | None = None,
    check_ids: bool = True,
    hint: str | None = None,
) -> DrivingSource:
  """Cityscapes (the target domain), fine labels mapped labelIds -> 19 train ids.

  Args:
    root: folder holding `leftImg8bit/` (and `gtFine/` when labelled).
    split: 'train' (2975), 'val' (500) or any `leftImg8bit/<split>` folder.
    with_labels: read `gtFine/<split>` (False: the unlabelled target train split).
    list_file: ADVENT-style list ('<city>/<name>_leftImg8bit.png' per line, relative to
      `leftImg8bit/<split>`), relative to root or absolute; default
      `<root>/cityscapes_list/<split>.txt` if present, else all images of the split.
    check_ids: refuse gtFine values above 34 (False: map them to 255).
    hint: appended to missing-path errors.
  """
  root = os.fspath(root)
  hint = _CITYSCAPES_LAYOUT + (f"; {hint}" if hint else "")
  _require_dir(root, "Cityscapes root directory", hint)
  image_dir = os.path.join(root, "leftImg8bit", split)
  _require_dir(image_dir, f"Cityscapes image directory for split {split!r}", hint)
  label_dir = None
  if with_labels:
    label_dir = os.path.join(root, "gtFine", split)
    _require_dir(label_dir, f"Cityscapes label directory for split {split!r}", hint)
  suffix = "_leftImg8bit.png"
  path = _list_path(root, list_file, os.path.join(root, "cityscapes_list", f"{split}.txt"), hint)
  if path:
    entries = _read_list(path)
    for lineno, entry in entries:
      if not entry.endswith(suffix) or len(entry.split("/")) != 2:
        raise DataError(f"{path}:{lineno}: expected '<city>/<name>{suffix}', got {entry!r}")
    files = [entry for _, entry in entries]
  else:
    files = sorted(
        f"{check_utf8_name(image_dir, city)}/{check_utf8_name(os.path.join(image_dir, city), f)}"
        for city in os.listdir(image_dir)
        if os.path.isdir(os.path.join(image_dir, city))
        for f in os.listdir(os.path.join(image_dir, city))
        if f.endswith(suffix)
    )
    if not files:
      raise DataError(f"{image_dir}: no <city>/*{suffix} images\nhint: {hint}")
  items = []
  for file in files:
    city, base = file.split("/")
    stem = base[: -len(suffix)]
    label = None
    if label_dir is not None:
      label = os.path.join(label_dir, city, f"{stem}_gtFine_labelIds.png")
    items.append((stem, os.path.join(image_dir, city, base), label))
  return DrivingSource(
      f"cityscapes/{split}", tuple(items), check_ids=check_ids, origin=path or root
  )


def check_config(data) -> None:
  """A 'gta5' / 'cityscapes' `config.data` section must say 19 classes and ignore index 255."""
  if data.num_classes != NUM_CLASSES or data.ignore_index != IGNORE_INDEX:
    raise ValueError(
        f"config.data.name={data.name!r} has {NUM_CLASSES} classes and ignore index "
        f"{IGNORE_INDEX}; set --config.data.num_classes={NUM_CLASSES} (got "
        f"num_classes={data.num_classes}, ignore_index={data.ignore_index})"
    )


def build_driving_source(data, split: str, *, with_masks: bool = True, hint: str | None = None):
  """`gta5_source` / `cityscapes_source` for a `config.data` section named 'gta5'/'cityscapes'."""
  check_config(data)
  build = gta5_source if data.name == "gta5" else cityscapes_source
  return build(data.root, split, with_labels=with_masks, hint=hint)
