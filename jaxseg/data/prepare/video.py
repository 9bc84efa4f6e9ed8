"""Video builders: `davis2017` (one record per sequence) and `video_frames` (one record per frame).

davis2017 (from `DavisSequenceSource`, 480p; splits train / val, whichever list exists): frames
Sequence(Image) [T, H, W, 3]; masks Sequence(Image) [A, H, W, 1], the annotations of the annotated
frames in order (A = T for train/val); annotated bool [T]; num_objects; frame_names; palette uint8
[256, 3]; sequence / id text. Read back as the reader's example (`first_mask` = masks[0]; `masks`
only when every frame is annotated).

video_frames (frame lists from `VideoFolderSource`, frames decoded by its reader): one record per
frame, video by video in the reader's (natural) order: image PNG [H, W, 3], video text,
frame_index (position in the video's frame list), frame_name, id '<video>/<frame stem>'. The split's
metadata lists the videos and their frame counts, so frame (v, t) is record offsets[v] + t and a
clip is random access (`jaxseg.data.readers.prepared.PreparedClips`).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from jaxseg.data.prepare import records
from jaxseg.data.prepare.base import ReaderBuilder
from jaxseg.data.readers import davis, videos
from jaxseg.data.readers.sources import decode_image


class Davis2017(ReaderBuilder):
  """DAVIS 2017 semi-supervised VOS sequences (480p)."""

  name = "davis2017"
  DESCRIPTION = "DAVIS 2017 semi-supervised video object segmentation, 480p (jaxseg)."
  LAYOUT = davis._LAYOUT
  chunk_size = 4  # a record is a whole sequence

  def features(self):
    return {
        "frames": tfds.features.Sequence(tfds.features.Image(shape=(None, None, 3))),
        "masks": tfds.features.Sequence(
            tfds.features.Image(shape=(None, None, 1), use_colormap=True),
            doc="annotations of the annotated frames: 0 background, 1..K objects, 255 void",
        ),
        "annotated": tfds.features.Tensor(shape=(None,), dtype=np.bool_),
        "num_objects": tfds.features.Scalar(dtype=np.int64),
        "frame_names": tfds.features.Sequence(tfds.features.Text()),
        "palette": tfds.features.Tensor(shape=(256, 3), dtype=np.uint8),
        "sequence": tfds.features.Text(),
        "id": tfds.features.Text(),
    }

  def readers(self, root):
    return {
        s: davis.DavisSequenceSource(root, s)
        for s in ("train", "val")
        if os.path.isfile(os.path.join(root, "ImageSets", "2017", f"{s}.txt"))
    }

  @classmethod
  def to_record(cls, example):
    masks = example["masks"] if "masks" in example else example["first_mask"][None]
    return {
        "frames": [records.encode_png(f) for f in example["frames"]],
        "masks": [records.encode_png(m) for m in masks],
        "annotated": np.asarray(example["annotated"], np.bool_),
        "num_objects": int(example["num_objects"]),
        "frame_names": list(example["frame_names"]),
        "palette": np.asarray(example["palette"], np.uint8),
        "sequence": example["sequence"],
        "id": example["id"],
    }

  @classmethod
  def from_record(cls, record, options):
    del options
    masks = records.squeeze_mask(np.asarray(record["masks"]))
    annotated = np.asarray(record["annotated"], np.bool_)
    example = {
        "frames": np.asarray(record["frames"]),
        "first_mask": masks[0],
        "annotated": annotated,
        "num_objects": int(record["num_objects"]),
        "frame_names": [records.text(n) for n in record["frame_names"]],
        "palette": np.asarray(record["palette"], np.uint8),
        "sequence": records.text(record["sequence"]),
        "id": records.text(record["id"]),
    }
    if annotated.all():
      example["masks"] = masks
    return example


class _Frames:
  """Every frame of a `VideoFolderSource`'s videos, one item per frame."""

  def __init__(self, source: videos.VideoFolderSource):
    self.source = source
    self.items = [(v, t) for v, n in enumerate(source.num_frames) for t in range(int(n))]

  def __len__(self):
    return len(self.items)

  def __getitem__(self, index):
    v, t = self.items[index]
    path = self.source.frame_paths(v, np.array([t]))[0]
    stem = os.path.splitext(os.path.basename(path))[0]
    video = self.source.videos[v]
    return {
        "image": decode_image(path),
        "video": video,
        "frame_index": t,
        "frame_name": stem,
        "id": f"{video}/{stem}",
    }


class VideoFrames(ReaderBuilder):
  """Frames of a folder of frame folders (YouTube-VOS, Kinetics frames, DAVIS JPEGImages/480p)."""

  name = "video_frames"
  DESCRIPTION = "Frames of <root>/<video>/<frame>.jpg, addressable by (video, frame index)."
  LAYOUT = videos._LAYOUT
  allow_skip = False  # clips address frames by position in the video
  chunk_size = 256

  def features(self):
    return {
        "image": tfds.features.Image(shape=(None, None, 3)),
        "video": tfds.features.Text(),
        "frame_index": tfds.features.Scalar(dtype=np.int64),
        "frame_name": tfds.features.Text(),
        "id": tfds.features.Text(),
    }

  def readers(self, root):
    source = videos.VideoFolderSource(root, clip_length=1, frame_gaps=(1,), gap_probs=None)
    return {"train": _Frames(source)}

  @classmethod
  def to_record(cls, example):
    record = dict(example)
    record["image"] = records.encode_png(example["image"])
    return record

  @classmethod
  def from_record(cls, record, options):
    del options
    return {
        "image": np.asarray(record["image"]),
        "video": records.text(record["video"]),
        "frame_index": int(record["frame_index"]),
        "frame_name": records.text(record["frame_name"]),
        "id": records.text(record["id"]),
    }

  def split_metadata(self, split, reader):
    del split
    return {
        "videos": list(reader.source.videos),
        "num_frames": [int(n) for n in reader.source.num_frames],
    }
