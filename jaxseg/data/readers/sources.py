"""Random-access segmentation sources over image/mask folders (VOC layout and alike).

A source has `__len__` and `__getitem__(i) -> example` with
  image uint8 [H, W, 3] RGB, mask uint8 [H, W] class ids (255 = ignore),
  index int, id str, and optionally labels float32 [K] (image-level multi-hot).
It is cheap to build (the split list is read eagerly, the files lazily) and
picklable, so grain can ship it to worker processes. Every sample is checked
with `validate_example`; any bad file raises `DataError` naming it.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from jaxseg.data.errors import DataError
from jaxseg.data.transforms import validate_example

VOC_CLASS_NAMES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOC_NUM_CLASSES = len(VOC_CLASS_NAMES)  # 21, background included.
_VOC_FG_INDEX = {name: i for i, name in enumerate(VOC_CLASS_NAMES[1:])}

# Modes whose pixels hold 8-bit colour, convertible to RGB without losing meaning.
_RGB_CONVERTIBLE_MODES = frozenset(
    {"RGB", "RGBA", "RGBX", "L", "LA", "P", "PA", "1", "CMYK", "YCbCr"}
)


# ----------------------------------------------------------------------------
# Decoding.
# ----------------------------------------------------------------------------
def _open_decoded(path: str | os.PathLike, what: str) -> Image.Image:
  """Opens and fully decodes an image, so truncated files fail here, not later."""
  try:
    image = Image.open(path)
    image.load()
    return image
  except FileNotFoundError as e:
    raise DataError(f"{path}: {what} file not found") from e
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    # PIL reports corrupt/truncated/unknown files as OSError (UnidentifiedImageError
    # is one) and some broken headers as SyntaxError/ValueError.
    raise DataError(f"{path}: cannot read {what} ({type(e).__name__}: {e})") from e


def decode_image(path: str | os.PathLike) -> np.ndarray:
  """Reads an image file as uint8 [H, W, 3] RGB (grey, RGBA, palette converted; alpha dropped)."""
  with _open_decoded(path, "image") as image:
    if image.mode not in _RGB_CONVERTIBLE_MODES:
      raise DataError(
          f"{path}: image mode {image.mode!r} is not 8-bit colour/grey; "
          "expected an RGB, grey or palette image"
      )
    return np.asarray(image.convert("RGB"))


def decode_mask(path: str | os.PathLike) -> np.ndarray:
  """Reads a class-index mask as uint8 [H, W].

  Palette PNGs (mode 'P', VOC's SegmentationClass) give their palette indices,
  grey PNGs (mode 'L', SBD's SegmentationClassAug) their values; 16/32-bit
  grey is accepted when all values fit in 0..255. Colour (RGB/RGBA) masks and
  lossy JPEG masks are refused: colours are not class ids.
  """
  with _open_decoded(path, "mask") as mask:
    if mask.format == "JPEG":
      raise DataError(
          f"{path}: mask is a JPEG; lossy compression corrupts class ids at "
          "edges. Store masks as PNG (mode 'P' or 'L')."
      )
    if mask.mode in ("P", "L"):
      return np.array(mask, dtype=np.uint8)
    if mask.mode == "1":
      return np.array(mask, dtype=np.uint8)
    if mask.mode.startswith("I"):
      values = np.asarray(mask)
      if values.size and (values.min() < 0 or values.max() > 255):
        raise DataError(
            f"{path}: {mask.mode} mask has values in [{values.min()}, "
            f"{values.max()}], which do not fit class ids 0..255"
        )
      return values.astype(np.uint8)
    kind = "a colour image" if mask.mode in _RGB_CONVERTIBLE_MODES else "not class ids"
    raise DataError(
        f"{path}: mask has mode {mask.mode!r} ({kind}); a class-index PNG is needed: "
        "mode 'L' with the class id per pixel, or a palette PNG (mode 'P', as VOC's "
        "SegmentationClass). Convert colour masks to class ids with their colour map first."
    )


def voc_image_labels(
    annotation_xml_path: str | os.PathLike, *, include_difficult: bool = True
) -> np.ndarray:
  """Image-level multi-hot labels float32 [20] (no background) from a VOC Annotations XML.

  Class order is `VOC_CLASS_NAMES[1:]`. Objects marked `difficult` are
  included by default, as in SEAM/psa (`voc12/data.py:load_image_label_from_xml`
  takes every `<name>` tag, ignoring `difficult`, to build `cls_labels.npy`).
  Only top-level `<object>` names count; person-layout `<part>` names (head,
  hand, foot), which psa skips because they are not class names, are never read.
  """
  try:
    root = ElementTree.parse(annotation_xml_path).getroot()
  except FileNotFoundError as e:
    raise DataError(f"{annotation_xml_path}: annotation file not found") from e
  except (ElementTree.ParseError, OSError) as e:
    raise DataError(f"{annotation_xml_path}: cannot parse annotation XML ({e})") from e
  labels = np.zeros(len(_VOC_FG_INDEX), np.float32)
  for obj in root.findall("object"):
    name = (obj.findtext("name") or "").strip()
    if name not in _VOC_FG_INDEX:
      raise DataError(
          f"{annotation_xml_path}: unknown VOC object name {name!r}; "
          f"expected one of {VOC_CLASS_NAMES[1:]}"
      )
    if not include_difficult and (obj.findtext("difficult") or "0").strip() == "1":
      continue
    labels[_VOC_FG_INDEX[name]] = 1.0
  return labels


class VocAnnotationLabels:
  """Picklable `id -> float32 [20]` lookup reading `<annotations_dir>/<id>.xml`."""

  def __init__(self, annotations_dir: str | os.PathLike, include_difficult: bool = True):
    self.annotations_dir = os.fspath(annotations_dir)
    self.include_difficult = include_difficult

  def __call__(self, example_id: str) -> np.ndarray:
    return voc_image_labels(
        os.path.join(self.annotations_dir, example_id + ".xml"),
        include_difficult=self.include_difficult,
    )


# ----------------------------------------------------------------------------
# Folder source.
# ----------------------------------------------------------------------------
def _missing(path: str, what: str, hint: str | None) -> DataError:
  message = f"{what} not found: {path}"
  if hint:
    message += f"\nhint: {hint}"
  return DataError(message)


def read_text_lines(path: str) -> list[str]:
  """The lines of a UTF-8 list file; other bytes are a `DataError` naming the file and line."""
  with open(path, "rb") as f:
    raw = f.read().splitlines()
  lines = []
  for lineno, line in enumerate(raw, 1):
    try:
      lines.append(line.decode("utf-8"))
    except UnicodeDecodeError as e:
      raise DataError(
          f"{path}:{lineno}: not UTF-8 ({line!r}); file names must be UTF-8\n"
          "hint: rename the files to UTF-8 names and write the list as UTF-8"
      ) from e
  return lines


def check_utf8_name(folder: str, name: str) -> str:
  """`name` (from os.listdir) unchanged, or a `DataError` if it is not valid UTF-8."""
  try:
    name.encode("utf-8")
  except UnicodeEncodeError as e:
    shown = name.encode("utf-8", "backslashreplace").decode()
    raise DataError(
        f"{os.path.join(folder, shown)}: file name is not UTF-8\n"
        "hint: rename it (ids become output file names and table rows)"
    ) from e
  return name


def read_split_file(path: str | os.PathLike, hint: str | None = None) -> tuple[str, ...]:
  """Example ids from a split list, one per line.

  A line is either an id (`2007_000032`) or VOC/SBD train_aug style
  `<image path> <mask path>` (`/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png`);
  then the id is the image file's stem. Blank lines are skipped.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise _missing(path, "split file", hint)
  ids = []
  for lineno, line in enumerate(read_text_lines(path), 1):
    fields = line.split()
    if not fields:
      continue
    if len(fields) > 2:
      raise DataError(
          f"{path}:{lineno}: expected 'id' or 'image_path mask_path', got {line.strip()!r}"
      )
    ids.append(os.path.splitext(os.path.basename(fields[0]))[0])
  if not ids:
    raise DataError(f"{path}: split file lists no ids")
  return tuple(ids)


class SegmentationFolderSource:
  """Images in `<root>/<image_dir>/<id><image_ext>`, masks in `<root>/<mask_dir>/<id><mask_ext>`.

  `__getitem__(i)` returns {'image': uint8 [H, W, 3], 'mask': uint8 [H, W]
  (absent when mask_dir is None), 'index': i, 'id': str, 'labels': float32
  [K] (when `image_labels` is given)}. `image_labels` is a picklable callable
  `id -> labels`, e.g. `VocAnnotationLabels`.
  """

  def __init__(
      self,
      root: str | os.PathLike,
      *,
      split_file: str | os.PathLike,
      image_dir: str,
      mask_dir: str | None = None,
      image_ext: str = ".jpg",
      mask_ext: str = ".png",
      num_classes: int,
      ignore_index: int = 255,
      name: str = "dataset",
      hint: str | None = None,
      image_labels: Callable[[str], np.ndarray] | None = None,
  ):
    self.root = os.fspath(root)
    self.name = name
    if not os.path.isdir(self.root):
      raise _missing(self.root, f"{name} root directory", hint)
    self.image_dir = os.path.join(self.root, image_dir)
    self.mask_dir = None if mask_dir is None else os.path.join(self.root, mask_dir)
    for d, what in ((self.image_dir, "image directory"), (self.mask_dir, "mask directory")):
      if d is not None and not os.path.isdir(d):
        raise _missing(d, f"{name} {what}", hint)
    self.split_file = os.path.join(self.root, os.fspath(split_file))  # Absolute paths stay.
    self.ids = read_split_file(self.split_file, hint)
    self.image_ext, self.mask_ext = image_ext, mask_ext
    self.num_classes, self.ignore_index = num_classes, ignore_index
    self.image_labels = image_labels

  def __len__(self) -> int:
    return len(self.ids)

  def __repr__(self) -> str:
    return (
        f"SegmentationFolderSource(name={self.name!r}, root={self.root!r}, "
        f"split_file={self.split_file!r}, len={len(self)})"
    )

  def image_path(self, example_id: str) -> str:
    return os.path.join(self.image_dir, example_id + self.image_ext)

  def mask_path(self, example_id: str) -> str | None:
    return (
        None if self.mask_dir is None else os.path.join(self.mask_dir, example_id + self.mask_ext)
    )

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    if not -len(self) <= index < len(self):
      raise IndexError(f"{self.name}: index {index} out of range for {len(self)} examples")
    index %= len(self)
    example_id = self.ids[index]
    image_path = self.image_path(example_id)
    if not os.path.isfile(image_path):
      raise DataError(
          f"{self.name}: image of id {example_id!r} (listed in {self.split_file}) "
          f"not found: {image_path}"
      )
    example = {"image": decode_image(image_path), "index": index, "id": example_id}
    mask_path = self.mask_path(example_id)
    if mask_path is not None:
      if not os.path.isfile(mask_path):
        raise DataError(
            f"{self.name}: mask of id {example_id!r} (listed in {self.split_file}) "
            f"not found: {mask_path}"
        )
      example["mask"] = decode_mask(mask_path)
    if self.image_labels is not None:
      example["labels"] = np.asarray(self.image_labels(example_id), np.float32)
    validate_example(
        example,
        self.num_classes,
        self.ignore_index,
        source=f"{self.name} id {example_id!r} ({mask_path or image_path})",
    )
    return example


# ----------------------------------------------------------------------------
# PASCAL VOC 2012.
# ----------------------------------------------------------------------------
_VOC_LAYOUT = (
    "expected the VOC2012 layout <root>/JPEGImages, <root>/SegmentationClass "
    "(+ SegmentationClassAug for train_aug), <root>/ImageSets/Segmentation/<split>.txt, "
    "<root>/Annotations"
)


def _find_voc_root(root: str) -> str:
  """Accepts VOCdevkit/VOC2012 itself or a folder above it."""
  for candidate in (
      root,
      os.path.join(root, "VOC2012"),
      os.path.join(root, "VOCdevkit", "VOC2012"),
  ):
    if os.path.isdir(os.path.join(candidate, "JPEGImages")):
      return candidate
  return root


def voc_segmentation_source(
    root: str | os.PathLike,
    split: str = "train",
    *,
    use_sbd: bool = True,
    with_labels: bool = False,
    include_difficult: bool = True,
    hint: str | None = None,
) -> SegmentationFolderSource:
  """PASCAL VOC 2012 segmentation (21 classes, 255 = boundary/ignore).

  Args:
    root: VOCdevkit/VOC2012 (or a folder holding VOC2012 or VOCdevkit/VOC2012).
    split: list name under ImageSets/Segmentation (or ImageSets/SegmentationAug):
      'train' (1464), 'val' (1449), 'trainval', 'train_aug' (10582, VOC train + SBD).
    use_sbd: for 'train_aug', read masks from SegmentationClassAug (the SBD-augmented
      masks). With False, 'train_aug' is image-only (the weakly supervised setting: use
      with_labels=True). Other splits use SegmentationClass.
    with_labels: attach `labels` float32 [20] from Annotations/<id>.xml.
    include_difficult: count `difficult` objects in `labels` (SEAM/psa do).
    hint: appended to missing-path errors (e.g. where to find a synthetic dataset).
  """
  root = _find_voc_root(os.fspath(root))
  hint = _VOC_LAYOUT + (f"; {hint}" if hint else "")
  split_file = os.path.join("ImageSets", "Segmentation", f"{split}.txt")
  aug_split_file = os.path.join("ImageSets", "SegmentationAug", f"{split}.txt")
  if not os.path.isfile(os.path.join(root, split_file)) and os.path.isfile(
      os.path.join(root, aug_split_file)
  ):
    split_file = aug_split_file
  if split == "train_aug":
    mask_dir = "SegmentationClassAug" if use_sbd else None
  else:
    mask_dir = "SegmentationClass"
  labels = None
  if with_labels:
    annotations = os.path.join(root, "Annotations")
    if os.path.isdir(root) and not os.path.isdir(annotations):
      raise _missing(annotations, "VOC Annotations directory (needed for with_labels)", hint)
    labels = VocAnnotationLabels(annotations, include_difficult)
  return SegmentationFolderSource(
      root,
      split_file=split_file,
      image_dir="JPEGImages",
      mask_dir=mask_dir,
      image_ext=".jpg",
      mask_ext=".png",
      num_classes=VOC_NUM_CLASSES,
      ignore_index=255,
      name=f"voc2012/{split}",
      hint=hint,
      image_labels=labels,
  )
