"""DAVIS 2017 (semi-supervised video object segmentation): one example per sequence.

Layout (the official one, as davis2017-evaluation `davis2017/davis.py` reads it):
  <root>/JPEGImages/<resolution>/<seq>/00000.jpg ...
  <root>/Annotations/<resolution>/<seq>/00000.png ...   palette (mode 'P') PNGs: 0 background,
                                                        1..K object ids, 255 void
  <root>/ImageSets/2017/{train,val}.txt                 one sequence per line (val: 30)
with resolution '480p' (default) or 'Full-Resolution'.

`DavisSequenceSource(root, split)[i]` reads sequence i (lazily: nothing but folder checks at build):
  frames       uint8 [T, H, W, 3]  RGB (kind `clip`).
  first_mask   uint8 [H, W]        annotation of frame 0 (always present: the semi-supervised input).
  masks        uint8 [T, H, W]     every annotation (kind `clip_mask`); present only when every frame
                                   has one (train/val). The test sets annotate frame 0 only: then no
                                   `masks`, and `annotated` says which frames have a file.
  annotated    bool [T]            frame t has an annotation PNG.
  num_objects  int                 K = max id of `first_mask` ignoring 255 (void), as the evaluation.
  frame_names  list[str]           frame stems ('00000', ...), to write results under the same names.
  palette      uint8 [256, 3]      the first annotation's palette, to write results in DAVIS colours.
  sequence     str; index int; id str (= sequence).
`KINDS` declares the keys the transforms cannot infer (`first_mask` is a mask, `palette` and
`annotated` pass through): `build_augment(..., kinds=davis.KINDS)` / `resolve_kinds(ex, KINDS)`.

Frames are the `*.jpg` of the sequence folder in natural order; annotations must be named after
frames (`<stem>.png`) and frame 0 must have one. A `DataError` names the file or folder for: a
missing root / resolution / sequence folder, an empty sequence, an annotation without a frame of the
same name, a missing first annotation, an annotation that is not a palette PNG, and an annotation or
frame whose size differs from the first frame's.
"""

from __future__ import annotations

import os
import types
from typing import Any

import numpy as np

from jaxseg.data.errors import DataError
from jaxseg.data.readers.sources import _open_decoded, decode_image, read_split_file
from jaxseg.data.readers.videos import list_frames
from jaxseg.data.transforms import CLIP, CLIP_MASK, MASK, OTHER

RESOLUTIONS = ("480p", "Full-Resolution")
VOID = 255
_LAYOUT = (
    "expected the DAVIS-2017 layout <root>/JPEGImages/<resolution>/<seq>/*.jpg, "
    "<root>/Annotations/<resolution>/<seq>/*.png, <root>/ImageSets/2017/<split>.txt"
)

KINDS = types.MappingProxyType(
    {
        "frames": CLIP,
        "masks": CLIP_MASK,
        "first_mask": MASK,
        "annotated": OTHER,
        "palette": OTHER,
        "frame_names": OTHER,
        "num_objects": OTHER,
        "sequence": OTHER,
    }
)


def davis_sequences(root: str | os.PathLike, split: str = "val") -> tuple[str, ...]:
  """Sequence names of `<root>/ImageSets/2017/<split>.txt`, in file order."""
  path = os.path.join(os.fspath(root), "ImageSets", "2017", f"{split}.txt")
  return read_split_file(path, hint=_LAYOUT)


def read_annotation(path: str) -> tuple[np.ndarray, np.ndarray]:
  """A DAVIS annotation: (ids uint8 [H, W], palette uint8 [256, 3]); refuses non-palette PNGs."""
  with _open_decoded(path, "annotation") as image:
    if image.mode != "P":
      raise DataError(
          f"{path}: annotation has mode {image.mode!r}; DAVIS annotations are palette (mode 'P') "
          "PNGs whose pixel values are object ids\nhint: use the official Annotations folder, or "
          "save ids with Image.fromarray(ids, 'P') and a palette"
      )
    ids = np.array(image, dtype=np.uint8)
    raw = image.getpalette() or []
  palette = np.zeros(256 * 3, np.uint8)
  palette[: len(raw)] = raw[: 256 * 3]
  return ids, palette.reshape(256, 3)


class DavisSequenceSource:
  """DAVIS 2017 sequences of a split, one example per sequence (see the module doc)."""

  def __init__(
      self,
      root: str | os.PathLike,
      split: str = "val",
      resolution: str = "480p",
      *,
      sequences: tuple[str, ...] | list[str] | None = None,
  ):
    """Checks the folders; reads nothing else.

    Args:
      root: the DAVIS folder (holding JPEGImages, Annotations, ImageSets).
      split: a list `ImageSets/2017/<split>.txt` ('train', 'val', 'test-dev', ...).
      resolution: '480p' or 'Full-Resolution'.
      sequences: the sequences to read instead of the split list.
    """
    self.root = os.fspath(root)
    if resolution not in RESOLUTIONS:
      raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution!r}")
    self.split, self.resolution = split, resolution
    if not os.path.isdir(self.root):
      raise DataError(f"DAVIS root folder not found: {self.root}\nhint: {_LAYOUT}")
    self.frame_dir = os.path.join(self.root, "JPEGImages", resolution)
    self.annotation_dir = os.path.join(self.root, "Annotations", resolution)
    for folder, what in ((self.frame_dir, "frame"), (self.annotation_dir, "annotation")):
      if not os.path.isdir(folder):
        raise DataError(f"DAVIS {what} folder not found: {folder}\nhint: {_LAYOUT}")
    if sequences is None:
      self.origin = os.path.join(self.root, "ImageSets", "2017", f"{split}.txt")
      self.sequences = davis_sequences(self.root, split)
    else:
      self.origin, self.sequences = "the sequences argument", tuple(sequences)
    for seq in self.sequences:
      for folder in (self.frame_dir, self.annotation_dir):
        if not os.path.isdir(os.path.join(folder, seq)):
          raise DataError(
              f"{os.path.join(folder, seq)}: sequence folder not found (sequence {seq!r} listed "
              f"in {self.origin})\nhint: {_LAYOUT}"
          )
    self.ids = self.sequences

  def __len__(self) -> int:
    return len(self.sequences)

  def __repr__(self) -> str:
    return (
        f"DavisSequenceSource(root={self.root!r}, split={self.split!r}, "
        f"resolution={self.resolution!r}, len={len(self)})"
    )

  def files(self, index: int) -> tuple[list[str], list[str | None]]:
    """(frame paths, annotation path or None per frame) of sequence `index`, checked by name."""
    seq = self.sequences[index]
    frame_folder = os.path.join(self.frame_dir, seq)
    annotation_folder = os.path.join(self.annotation_dir, seq)
    frames = list_frames(frame_folder, (".jpg",))
    if not frames:
      raise DataError(f"{frame_folder}: sequence {seq!r} has no .jpg frames (empty sequence)")
    stems = [os.path.splitext(f)[0] for f in frames]
    annotations = {os.path.splitext(a)[0]: a for a in list_frames(annotation_folder, (".png",))}
    orphans = sorted(set(annotations) - set(stems))
    if orphans:
      raise DataError(
          f"{os.path.join(annotation_folder, annotations[orphans[0]])}: annotation has no frame "
          f"{orphans[0]}.jpg in {frame_folder} ({len(orphans)} such annotations); frame and "
          "annotation names must match"
      )
    if stems[0] not in annotations:
      raise DataError(
          f"{os.path.join(annotation_folder, stems[0] + '.png')}: annotation of the first frame "
          f"not found (sequence {seq!r}); the semi-supervised task needs it"
      )
    return (
        [os.path.join(frame_folder, f) for f in frames],
        [
            os.path.join(annotation_folder, annotations[s]) if s in annotations else None
            for s in stems
        ],
    )

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    if not -len(self) <= index < len(self):
      raise IndexError(f"DAVIS: index {index} out of range for {len(self)} sequences")
    index %= len(self)
    seq = self.sequences[index]
    frame_paths, annotation_paths = self.files(index)
    frames = []
    for path in frame_paths:
      frame = decode_image(path)
      if frames and frame.shape != frames[0].shape:
        raise DataError(
            f"{path}: frame is {frame.shape[0]}x{frame.shape[1]} (HxW) but the sequence's first "
            f"frame {frame_paths[0]} is {frames[0].shape[0]}x{frames[0].shape[1]}"
        )
      frames.append(frame)
    size = frames[0].shape[:2]
    masks, palette = [], None
    for path, frame_path in zip(annotation_paths, frame_paths):
      if path is None:
        continue
      ids, pal = read_annotation(path)
      if ids.shape != size:
        raise DataError(
            f"{path}: annotation is {ids.shape[0]}x{ids.shape[1]} (HxW) but its frame "
            f"{frame_path} is {size[0]}x{size[1]}"
        )
      palette = pal if palette is None else palette
      masks.append(ids)
    first = masks[0]
    annotated = np.array([p is not None for p in annotation_paths])
    objects = first[first != VOID]
    example = {
        "frames": np.stack(frames),
        "first_mask": first,
        "annotated": annotated,
        "num_objects": int(objects.max()) if objects.size else 0,
        "frame_names": [os.path.splitext(os.path.basename(p))[0] for p in frame_paths],
        "palette": palette,
        "sequence": seq,
        "index": index,
        "id": seq,
    }
    if annotated.all():
      example["masks"] = np.stack(masks)
    return example
