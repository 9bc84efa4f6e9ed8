"""Datasets prepared by `python -m jaxseg.data.prepare` as random-access sources.

`PreparedSource(name, split, data_dir)[i]` is the raw reader's example i (the same keys, dtypes and
values; `index` is the reader's index), decoded from the ArrayRecord files by TFDS with PIL; no
TensorFlow. `options` select what the raw reader would have been asked for (voc_aug: with_masks,
with_labels; nyu_depth_v2: classes; driving: with_masks).

Per-host reading: with `process_count` > 1 a source holds only process `process_index`'s contiguous
range [n * p // P, n * (p + 1) // P) of the split's n records, so every process reads its own part.

`PreparedClips` draws clips from a `video_frames` dataset exactly as `VideoFolderSource` draws them
from the folders (`videos.draw_clip`), reading frame (v, t) as record offsets[v] + t.

Sources are picklable: the TFDS data source is opened in the process that reads.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxseg.data.errors import DataError


def open_split(name: str, split: str, data_dir: str | None):
  """The TFDS ArrayRecord data source of a prepared split (a `DataError` with a hint if missing)."""
  import tensorflow_datasets as tfds  # Lazy: heavy import.

  from jaxseg.data.prepare import builder_class

  builder_class(name)  # registers the builder with TFDS
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
  except (ValueError, NotImplementedError, FileNotFoundError, AssertionError, KeyError) as e:
    message = str(e).split("\nAvailable datasets:")[0].splitlines()[0]
    raise DataError(
        f"prepared dataset {name!r} split {split!r} not found in data_dir={data_dir!r}: {message}"
        f"\nhint: python -m jaxseg.data.prepare {name.split(':')[0]} --root=<raw dataset> "
        f"--data_dir={data_dir or '<data_dir>'}"
    ) from e


def process_range(n: int, process_index: int, process_count: int) -> tuple[int, int]:
  """[start, end) of process `process_index`'s even share of n records."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  return n * process_index // process_count, n * (process_index + 1) // process_count


class PreparedSource:
  """A prepared split as the raw reader's examples (see the module doc)."""

  def __init__(
      self,
      name: str,
      split: str,
      data_dir: str | None,
      options: dict[str, Any] | None = None,
      *,
      process_index: int = 0,
      process_count: int = 1,
  ):
    from jaxseg.data.prepare import builder_class

    self.name, self.split, self.data_dir = name, split, data_dir
    self.options = dict(options or {})
    self.from_record = builder_class(name).from_record
    self._ds = open_split(name, split, data_dir)
    self.num_records = len(self._ds)
    self.start, self.end = process_range(self.num_records, process_index, process_count)
    if self.end <= self.start:
      raise DataError(
          f"{self}: process {process_index} of {process_count} gets no record of the "
          f"{self.num_records} of {name}/{split}"
      )
    self.process_index, self.process_count = process_index, process_count

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_ds"] = None
    return state

  def _source(self):
    if self._ds is None:
      self._ds = open_split(self.name, self.split, self.data_dir)
    return self._ds

  def __len__(self) -> int:
    return self.end - self.start

  def __repr__(self) -> str:
    part = f", records [{self.start}, {self.end})" if self.process_count > 1 else ""
    return f"PreparedSource({self.name}/{self.split}, data_dir={self.data_dir!r}{part})"

  def metadata(self) -> dict[str, Any]:
    """The dataset's metadata (metadata.json): e.g. video lists, HN-label settings."""
    return dict(self._source().dataset_info.metadata or {})

  def record(self, index: int) -> dict[str, Any]:
    """The decoded record `index` of this source (this process's range)."""
    index = int(index)
    if not -len(self) <= index < len(self):
      raise IndexError(f"{self!r}: index {index} out of range for {len(self)} records")
    return self._source()[self.start + index % len(self)]

  def __getitem__(self, index: int) -> dict[str, Any]:
    record = self.record(index)
    example = self.from_record(record, self.options)
    example["index"] = int(record["index"])
    return example


class PreparedClips:
  """Clips of a prepared `video_frames` split, drawn as `VideoFolderSource` draws them."""

  def __init__(
      self,
      name: str,
      split: str,
      data_dir: str | None,
      *,
      clip_length: int = 2,
      frame_gaps: Sequence[int] = (2, 5, 8),
      gap_probs: Sequence[float] | None = (0.4, 0.4, 0.2),
      image_size: int | Sequence[int] | None = None,
      seed: int = 0,
      min_frames: int | None = None,
      num_samples: int | None = None,
  ):
    from jaxseg.data.readers import videos

    # The same argument checks and defaults as the folder reader.
    self.frames = PreparedSource(name, split, data_dir)
    meta = self.frames._source().dataset_info.metadata or {}
    if split not in meta:
      raise DataError(
          f"{self.frames!r}: no video list in its metadata (not a video_frames dataset?)"
      )
    names, counts = list(meta[split]["videos"]), np.asarray(meta[split]["num_frames"], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    self.clip_length = int(clip_length)
    self.frame_gaps = tuple(int(g) for g in frame_gaps)
    if gap_probs is None:
      gap_probs = [1.0 / len(self.frame_gaps)] * len(self.frame_gaps)
    probs = np.asarray(gap_probs, np.float64)
    self.gap_probs = tuple(float(p) for p in probs / probs.sum())
    self.image_size = videos._image_size(image_size)
    self.seed = int(seed)
    longest = (self.clip_length - 1) * max(self.frame_gaps) + 1
    self.min_frames = longest if min_frames is None else int(min_frames)
    kept = [v for v in range(len(names)) if counts[v] >= self.min_frames]
    if not kept:
      raise DataError(f"{self.frames!r}: no video has the {self.min_frames} frames a clip needs")
    self.num_skipped = len(names) - len(kept)
    if self.num_skipped:
      warnings.warn(
          f"{self.frames!r}: skipped {self.num_skipped} of {len(names)} videos with fewer than "
          f"{self.min_frames} frames",
          stacklevel=2,
      )
    self.videos = tuple(names[v] for v in kept)
    self.num_frames = counts[kept]
    self.offsets = offsets[kept]
    self.num_samples = len(self.videos) if num_samples is None else int(num_samples)

  def __len__(self) -> int:
    return self.num_samples

  def __repr__(self) -> str:
    return f"PreparedClips({self.frames!r}, videos={len(self.videos)}, len={len(self)})"

  def __getitem__(self, index: int) -> dict[str, Any]:
    from jaxseg.data.readers import videos

    index = int(index)
    if not -len(self) <= index < len(self):
      raise IndexError(f"{self!r}: index {index} out of range for {len(self)} items")
    index %= len(self)
    video, gap, indices = videos.draw_clip(
        index, self.num_frames, self.clip_length, self.frame_gaps, self.gap_probs, self.seed
    )
    frames, stems = [], []
    for t in indices:
      record = self.frames.record(int(self.offsets[video] + t))
      frame = np.asarray(record["image"])
      if self.image_size is not None:
        frame = videos.resize_frame(frame, self.image_size)
      elif frames and frame.shape != frames[0].shape:
        raise DataError(
            f"{self!r}: frame {t} of video {self.videos[video]!r} is {frame.shape[:2]} but its "
            f"clip's first frame is {frames[0].shape[:2]}; pass image_size= to resize"
        )
      frames.append(frame)
      stems.append(record["frame_name"].decode("utf-8"))
    return videos.clip_example(self.videos[video], frames, stems, indices, gap, index)


# ----------------------------------------------------------------------------
# Config sections: `source = 'raw' | 'tfds'`.
# ----------------------------------------------------------------------------
SOURCES = ("raw", "tfds")


def tfds_fields(name: str = "") -> dict[str, Any]:
  """The `tfds` sub-section of a method data section that can read a prepared dataset."""
  return dict(
      name=name,  # the prepared dataset ('' = the default of the section's dataset)
      data_dir="",  # the --data_dir given to `python -m jaxseg.data.prepare`
      per_process=False,  # training: each process reads only its range of the split
  )


def reads_prepared(section, where: str) -> bool:
  """True if the data section has `source='tfds'`; an unknown source is a one-line error."""
  source = section.get("source", "raw")
  if source not in SOURCES:
    raise DataError(f"{where}.source={source!r}: expected 'raw' or 'tfds'")
  return source == "tfds"


def section_source(
    section,
    split: str,
    *,
    where: str,
    default_name: str,
    options: dict[str, Any] | None = None,
    train: bool = False,
) -> PreparedSource:
  """The prepared split of a data section with source='tfds' (`section.tfds`: name, data_dir,
  per_process). With `per_process` and `train`, the source holds this JAX process's range only and
  is marked `process_local` (the training pipeline then batches it without re-sharding)."""
  t = section.tfds
  name = str(t.name) or default_name
  if not name:
    raise DataError(
        f"{where}.tfds.name is empty; set --config.{where}.tfds.name=<prepared dataset>"
    )
  if not t.data_dir:
    raise DataError(
        f"{where}.tfds.data_dir is empty with {where}.source='tfds'\nhint: "
        f"--config.{where}.tfds.data_dir=<the --data_dir of python -m jaxseg.data.prepare {name}>"
    )
  per_process = bool(train and t.get("per_process", False))
  process_index, process_count = 0, 1
  if per_process:
    import jax

    process_index, process_count = jax.process_index(), jax.process_count()
  source = PreparedSource(
      name,
      split,
      str(t.data_dir),
      options,
      process_index=process_index,
      process_count=process_count,
  )
  source.process_local = per_process
  return source
