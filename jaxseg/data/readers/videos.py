"""Unlabelled video clips from a folder of frame folders, for self-supervised VOS training.

Layout: `<root>/<video>/<frame>.jpg` (also .jpeg / .png), e.g. YouTube-VOS `train/JPEGImages`
(root = that folder), Kinetics frames extracted to `<root>/<video>/%05d.jpg`, or DAVIS
`JPEGImages/480p`. Frames are ordered by natural sort of their names ('img2' before 'img10').

`VideoFolderSource(root)[i]` is a clip drawn from (seed, i) alone:
  clip          uint8 [T, H, W, 3] RGB (kind `clip`), T = clip_length.
  video         str, the video folder name.
  frame_indices int64 [T], positions of the frames in the video's frame list (with a list file:
                offsets from the row's first frame).
  frame_names   list of T frame file stems.
  gap           int, the frame gap drawn.
  index, id     the item index and '<video>/<first frame stem>'.
Item i is video i mod num_videos (`num_samples` sets the length, default one item per video). Its
generator is `np.random.default_rng([seed, i])`: first the gap g from `frame_gaps` with probabilities
`gap_probs`, then the start frame s uniform over every start with s + (T - 1) g inside the video;
the frames are s, s + g, ..., s + (T - 1) g.

  MAST (`functional/feeder/dataset/YouTubeVOSTrain.py`): gaps (2, 5, 8) with p = (0.4, 0.4, 0.2),
    pairs (clip_length=2), frames resized to 256x256: `image_size=256`. (MAST resizes with cv2
    bilinear, here PIL bilinear, which antialiases when shrinking. MAST cuts each video into
    consecutive pairs per epoch; here each item draws one pair, so an epoch draws the same gap
    distribution but not MAST's exact set of pairs.)
  CRW (`--clip-len 4 --frame-skip 8`): `clip_length=4, frame_gaps=(8,), gap_probs=(1.0,)`.

The folder is scanned once when the source is built, keeping each video's name and frame count
only (the frame names of Kinetics would not fit a pickled source); an item lists its one video
folder again and checks the count. Videos with fewer than `min_frames` frames (default: the
longest clip, (T - 1) * max(frame_gaps) + 1) are skipped with one warning giving the count.

List file (MAST's `ytvos.csv`): rows `video_id,start_frame,n_frames`; the row's frames are the
files `<root>/<video_id>/<frame_format.format(k)>` for k = start_frame .. start_frame + n_frames - 1
(MAST: `{:05d}.jpg`, frame numbers as in YouTube-VOS all-frames names). The folder is then not
scanned; items are rows, and a missing frame file is a `DataError` naming it and the row.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from jaxseg.data.errors import DataError
from jaxseg.data.readers.sources import check_utf8_name, decode_image, read_text_lines

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
_LAYOUT = "expected <root>/<video>/<frame>.jpg (e.g. YouTube-VOS train/JPEGImages as root)"


def natural_key(name: str) -> tuple:
  """Sort key ordering the digit runs of `name` by value: 'f2.jpg' < 'f10.jpg'."""
  parts = re.split(r"(\d+)", name)
  # re.split with a group alternates text, number, text, ...: each position keeps one type.
  return tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts)) + (name,)


def list_frames(folder: str, extensions: Sequence[str] = FRAME_EXTENSIONS) -> list[str]:
  """File names in `folder` with one of `extensions` (case-insensitive), in natural order."""
  try:
    names = os.listdir(folder)
  except FileNotFoundError as e:
    raise DataError(f"{folder}: frame folder not found") from e
  except NotADirectoryError as e:
    raise DataError(f"{folder}: not a folder of frames") from e
  exts = tuple(e.lower() for e in extensions)
  frames = [check_utf8_name(folder, n) for n in names if n.lower().endswith(exts)]
  return sorted(frames, key=natural_key)


def _image_size(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
  if image_size is None:
    return None
  if isinstance(image_size, (int, np.integer)):
    image_size = (int(image_size), int(image_size))
  size = tuple(int(s) for s in image_size)
  if len(size) != 2 or min(size) < 1:
    raise ValueError(f"image_size must be an int or (H, W) of positive ints, got {image_size!r}")
  return size


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """uint8 [H, W, 3] -> [size[0], size[1], 3] with PIL bilinear (antialiased when shrinking)."""
  if frame.shape[:2] == size:
    return frame
  return np.asarray(Image.fromarray(frame).resize((size[1], size[0]), Image.BILINEAR))


def _read_rows(path: str) -> list[tuple[int, str, int, int]]:
  """(line number, video, start frame, frame count) of a MAST-style `video_id,start,n` list."""
  rows = []
  for lineno, line in enumerate(read_text_lines(path), 1):
    if not line.strip():
      continue
    fields = [f.strip() for f in line.split(",")]
    try:
      if len(fields) != 3 or not fields[0]:
        raise ValueError
      start, count = int(fields[1]), int(fields[2])
      if start < 0 or count < 1:
        raise ValueError
    except ValueError as e:
      raise DataError(
          f"{path}:{lineno}: expected 'video_id,start_frame,n_frames' with start >= 0 and "
          f"n_frames >= 1, got {line.strip()!r}"
      ) from e
    rows.append((lineno, fields[0], start, count))
  if not rows:
    raise DataError(f"{path}: list file has no rows")
  return rows


def draw_clip(
    index: int,
    num_frames: Sequence[int] | np.ndarray,
    clip_length: int,
    frame_gaps: Sequence[int],
    gap_probs: Sequence[float],
    seed: int,
) -> tuple[int, int, np.ndarray]:
  """(video number, gap, frame indices int64 [T]) of item `index` (see the module doc).

  `num_frames[v]` is video v's frame count; the draw depends on (seed, index) alone, so the raw and
  the prepared (`jaxseg.data.readers.prepared.PreparedClips`) sources give the same clips.
  """
  video = index % len(num_frames)
  rng = np.random.default_rng([seed, index])
  gap = int(frame_gaps[rng.choice(len(frame_gaps), p=gap_probs)])
  span = (clip_length - 1) * gap + 1
  start = int(rng.integers(0, int(num_frames[video]) - span + 1))
  return video, gap, start + gap * np.arange(clip_length, dtype=np.int64)


def clip_example(
    video: str,
    frames: list[np.ndarray],
    stems: list[str],
    indices: np.ndarray,
    gap: int,
    index: int,
) -> dict[str, Any]:
  """The clip example both clip sources return (files: `VideoFolderSource`; records:
  `jaxseg.data.readers.prepared.PreparedClips`)."""
  return {
      "clip": np.stack(frames),
      "video": video,
      "frame_indices": indices,
      "frame_names": stems,
      "gap": gap,
      "index": index,
      "id": f"{video}/{stems[0]}",
  }


class VideoFolderSource:
  """Random-access clips sampled deterministically from folders of frames (see the module doc)."""

  def __init__(
      self,
      root: str | os.PathLike,
      *,
      clip_length: int = 2,
      frame_gaps: Sequence[int] = (2, 5, 8),
      gap_probs: Sequence[float] | None = (0.4, 0.4, 0.2),
      image_size: int | Sequence[int] | None = None,
      seed: int = 0,
      min_frames: int | None = None,
      num_samples: int | None = None,
      list_file: str | os.PathLike | None = None,
      frame_format: str = "{:05d}.jpg",
      extensions: Sequence[str] = FRAME_EXTENSIONS,
  ):
    """Scans `root` (or reads `list_file`) once.

    Args:
      root: folder of video folders.
      clip_length: frames per clip T (>= 1).
      frame_gaps: gaps between consecutive clip frames, one drawn per item.
      gap_probs: probability of each gap (None: uniform); must sum to 1.
      image_size: resize every frame to (H, W) (an int: square) with PIL bilinear; None keeps the
        native size (then every frame of a clip must have the same size).
      seed: with the item index, the only source of randomness.
      min_frames: skip videos shorter than this; at least the longest clip.
      num_samples: length of the source (item i uses video i mod num_videos); default num_videos.
      list_file: MAST-style `video_id,start_frame,n_frames` list (relative to root or absolute).
      frame_format: frame file name of frame number k, for list files.
      extensions: frame file extensions, for scanning.
    """
    self.root = os.fspath(root)
    if not os.path.isdir(self.root):
      raise DataError(f"video root folder not found: {self.root}\nhint: {_LAYOUT}")
    self.clip_length = int(clip_length)
    if self.clip_length < 1:
      raise ValueError(f"clip_length must be >= 1, got {clip_length}")
    self.frame_gaps = tuple(int(g) for g in frame_gaps)
    if not self.frame_gaps or min(self.frame_gaps) < 1:
      raise ValueError(f"frame_gaps must be positive ints, got {frame_gaps!r}")
    if gap_probs is None:
      gap_probs = [1.0 / len(self.frame_gaps)] * len(self.frame_gaps)
    probs = np.asarray(gap_probs, np.float64)
    if probs.shape != (len(self.frame_gaps),) or (probs < 0).any() or abs(probs.sum() - 1) > 1e-6:
      raise ValueError(
          f"gap_probs must be {len(self.frame_gaps)} non-negative numbers summing to 1 (one per "
          f"frame gap {self.frame_gaps}), got {gap_probs!r}"
      )
    self.gap_probs = tuple(float(p) for p in probs / probs.sum())
    self.image_size = _image_size(image_size)
    self.seed = int(seed)
    longest = (self.clip_length - 1) * max(self.frame_gaps) + 1
    self.min_frames = longest if min_frames is None else int(min_frames)
    if self.min_frames < longest:
      raise ValueError(
          f"min_frames={min_frames} is shorter than the longest clip ({self.clip_length} frames "
          f"at gap {max(self.frame_gaps)} span {longest}); use min_frames >= {longest}"
      )
    self.extensions = tuple(extensions)
    self.frame_format = frame_format
    self.list_file = None
    if list_file is not None:
      self.list_file = os.path.join(self.root, os.fspath(list_file))
      if not os.path.isfile(self.list_file):
        raise DataError(f"video list file not found: {self.list_file}")
      rows = _read_rows(self.list_file)
      kept = [r for r in rows if r[3] >= self.min_frames]
      total = len(rows)
      self.videos = tuple(r[1] for r in kept)
      self.num_frames = np.array([r[3] for r in kept], np.int64)
      self.starts = np.array([r[2] for r in kept], np.int64)
      self.lines = tuple(r[0] for r in kept)
      origin = self.list_file
    else:
      names = sorted(
          (
              check_utf8_name(self.root, n)
              for n in os.listdir(self.root)
              if os.path.isdir(os.path.join(self.root, n))
          ),
          key=natural_key,
      )
      if not names:
        raise DataError(f"{self.root}: no video folders\nhint: {_LAYOUT}")
      counts = [len(list_frames(os.path.join(self.root, n), self.extensions)) for n in names]
      kept = [(n, c) for n, c in zip(names, counts) if c >= self.min_frames]
      total = len(names)
      self.videos = tuple(n for n, _ in kept)
      self.num_frames = np.array([c for _, c in kept], np.int64)
      self.starts = self.lines = None
      origin = self.root
    self.num_skipped = total - len(self.videos)
    if not self.videos:
      raise DataError(
          f"{origin}: none of its {total} videos has the {self.min_frames} frames a clip needs "
          f"({self.clip_length} frames, gaps {self.frame_gaps})\nhint: {_LAYOUT}"
      )
    if self.num_skipped:
      warnings.warn(
          f"{origin}: skipped {self.num_skipped} of {total} videos with fewer than "
          f"{self.min_frames} frames",
          stacklevel=2,
      )
    self.num_samples = len(self.videos) if num_samples is None else int(num_samples)
    if self.num_samples < 1:
      raise ValueError(f"num_samples must be >= 1, got {num_samples}")

  def __len__(self) -> int:
    return self.num_samples

  def __repr__(self) -> str:
    origin = f"list_file={self.list_file!r}, " if self.list_file else ""
    return (
        f"VideoFolderSource(root={self.root!r}, {origin}videos={len(self.videos)}, "
        f"skipped={self.num_skipped}, clip_length={self.clip_length}, "
        f"frame_gaps={self.frame_gaps}, image_size={self.image_size}, seed={self.seed}, "
        f"len={len(self)})"
    )

  def sample(self, index: int) -> tuple[int, int, np.ndarray]:
    """(video number, gap, frame indices int64 [T]) of item `index`, without reading files."""
    return draw_clip(
        index, self.num_frames, self.clip_length, self.frame_gaps, self.gap_probs, self.seed
    )

  def frame_paths(self, video: int, indices: np.ndarray) -> list[str]:
    """The files of frames `indices` (positions in the video's frame list) of video number `video`."""
    return self._frame_paths(video, indices)

  def _frame_paths(self, video: int, indices: np.ndarray) -> list[str]:
    folder = os.path.join(self.root, self.videos[video])
    if self.list_file is not None:
      paths = []
      for k in indices:
        path = os.path.join(folder, self.frame_format.format(int(self.starts[video] + k)))
        if not os.path.isfile(path):
          raise DataError(
              f"{path}: frame file not found (row {self.lines[video]} of {self.list_file}: "
              f"{self.videos[video]},{self.starts[video]},{self.num_frames[video]})"
          )
        paths.append(path)
      return paths
    frames = list_frames(folder, self.extensions)
    if len(frames) != self.num_frames[video]:
      raise DataError(
          f"{folder}: video has {len(frames)} frames, {self.num_frames[video]} when the source "
          "was built; rebuild the source after changing the folder"
      )
    return [os.path.join(folder, frames[k]) for k in indices]

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    if not -len(self) <= index < len(self):
      raise IndexError(f"VideoFolderSource: index {index} out of range for {len(self)} items")
    index %= len(self)
    video, gap, indices = self.sample(index)
    paths = self._frame_paths(video, indices)
    frames = []
    for path in paths:
      frame = decode_image(path)
      if self.image_size is not None:
        frame = resize_frame(frame, self.image_size)
      elif frames and frame.shape != frames[0].shape:
        raise DataError(
            f"{path}: frame is {frame.shape[0]}x{frame.shape[1]} (HxW) but {paths[0]} of the same "
            f"clip is {frames[0].shape[0]}x{frames[0].shape[1]}; pass image_size= to resize"
        )
      frames.append(frame)
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    return clip_example(self.videos[video], frames, stems, indices, gap, index)
