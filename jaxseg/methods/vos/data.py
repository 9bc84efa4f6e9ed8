"""Data of the `vos` method: training clip sources and the evaluation sequences.

Evaluation always reads a DAVIS-2017 layout: the real one (`eval_data.name=davis`), or synthetic videos
written into `<workdir>/synthetic_davis/` once (JPEG frames, palette-PNG annotations of every frame,
ImageSets/2017/val.txt), so the synthetic demo runs the same reader, propagation and evaluator as DAVIS.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from jaxseg.data.synthetic import sources as synthetic
from jaxseg.errors import ConfigError
from jaxseg.evaluation.outputs import write_palette_png


def _video_kwargs(s) -> dict:
  return dict(
      image_size=tuple(s.image_size),
      seed=int(s.seed),
      min_objects=int(s.min_objects),
      max_objects=int(s.max_objects),
      object_scale=float(s.object_scale),
      style=str(s.style),
      background_speed=float(s.background_speed),
      background_detail=float(s.background_detail),
      scale_amplitude=float(s.scale_amplitude),
      illumination_amplitude=float(s.illumination_amplitude),
      colour_drift=float(s.colour_drift),
      noise_std=None if float(s.noise_std) < 0 else float(s.noise_std),
      camouflage=float(s.camouflage),
      flicker=float(s.flicker),
      shadows=float(s.shadows),
      deformation=float(s.deformation),
  )


def train_source(config):
  """The unlabelled clip source of the 'train' stage: items {'clip': uint8 [T, H, W, 3], ...}."""
  d = config.train_data
  length = int(config.input.clip_length)
  if d.name == "synthetic":
    s = d.synthetic
    return synthetic.SyntheticClips(
        int(s.num_videos),
        num_clips=int(d.num_clips) or 50 * int(s.num_videos),
        clip_length=length,
        num_frames=int(s.num_frames),
        frame_gaps=tuple(d.frame_gaps),
        gap_probs=tuple(d.gap_probs) if d.gap_probs else None,
        frame_interval=float(s.frame_interval),
        **_video_kwargs(s),
    )
  from jaxseg.data.readers import prepared

  if prepared.reads_prepared(d, "train_data"):
    if d.name not in ("videos", "davis"):
      raise ConfigError(f"train_data.source='tfds' reads prepared video_frames, not {d.name!r}")
    if not d.tfds.data_dir:
      raise ConfigError(
          "train_data.tfds.data_dir is empty with train_data.source='tfds'\nhint: "
          "--config.train_data.tfds.data_dir=<the --data_dir of python -m jaxseg.data.prepare "
          "video_frames>"
      )
    return prepared.PreparedClips(
        str(d.tfds.name) or "video_frames",
        "train",
        str(d.tfds.data_dir),
        clip_length=length,
        frame_gaps=tuple(d.frame_gaps),
        gap_probs=tuple(d.gap_probs) if d.gap_probs else None,
        seed=int(config.seed),
    )
  if d.name in ("videos", "davis"):
    from jaxseg.data.readers.videos import VideoFolderSource

    if not d.root:
      raise ConfigError(
          f"train_data.root is empty: train_data.name={d.name!r} reads frames from disk\n"
          "hint: --config.train_data.root=/data/youtube-vos/train/JPEGImages (or a DAVIS root)"
      )
    root = str(d.root)
    if d.name == "davis":
      root = os.path.join(root, "JPEGImages", "480p")
    return VideoFolderSource(
        root,
        clip_length=length,
        frame_gaps=tuple(d.frame_gaps),
        gap_probs=tuple(d.gap_probs) if d.gap_probs else None,
        seed=int(config.seed),
    )
  raise ConfigError(f"train_data.name={d.name!r}: expected synthetic, videos or davis")


def davis_root(config, workdir: str) -> str:
  """The DAVIS-layout root of the evaluation sequences (synthetic ones are written on first use)."""
  d = config.eval_data
  if d.name == "davis":
    if not d.root:
      raise ConfigError(
          "eval_data.root is empty\nhint: --config.eval_data.root=/data/DAVIS (holds JPEGImages/480p, "
          "Annotations/480p, ImageSets/2017)"
      )
    return str(d.root)
  if d.name != "synthetic":
    raise ConfigError(f"eval_data.name={d.name!r}: expected davis or synthetic")
  root = os.path.join(workdir, "synthetic_davis")
  if not os.path.exists(os.path.join(root, "ImageSets", "2017", f"{d.split}.txt")):
    write_synthetic_davis(root, d, str(d.split), str(d.resolution))
  return root


def first_frame_ids(instances: np.ndarray) -> np.ndarray:
  """Object ids [T, H, W] renumbered 1..K by the objects visible in frame 0 (in id order); objects not
  visible in frame 0 become background, as DAVIS counts the objects of the first annotation."""
  visible = [i for i in np.unique(instances[0]) if i > 0]
  out = np.zeros(instances.shape, np.uint8)
  for new, old in enumerate(visible, start=1):
    out[instances == old] = new
  return out


def write_synthetic_davis(root: str, d, split: str, resolution: str) -> None:
  """Writes `d.synthetic.num_videos` synthetic videos as a DAVIS-2017 folder (atomic per file; the
  split file last, so a half-written folder is rewritten on the next launch)."""
  s = d.synthetic
  videos = synthetic.SyntheticVideos(
      int(s.num_videos),
      num_frames=int(s.num_frames),
      frame_interval=float(s.frame_interval),
      num_classes=6,
      **_video_kwargs(s),
  )
  names = []
  for i in range(len(videos)):
    video = videos[i]
    ids = first_frame_ids(video["instances"])
    if ids[0].max() == 0:
      continue  # nothing to track
    name = f"synth{i:03d}"
    names.append(name)
    frame_dir = os.path.join(root, "JPEGImages", resolution, name)
    os.makedirs(frame_dir, exist_ok=True)
    for t, (frame, mask) in enumerate(zip(video["frames"], ids)):
      path = os.path.join(frame_dir, f"{t:05d}.jpg")
      tmp = path + ".tmp.jpg"
      Image.fromarray(frame).save(tmp, quality=95)
      os.replace(tmp, path)
      write_palette_png(os.path.join(root, "Annotations", resolution, name, f"{t:05d}.png"), mask)
  split_path = os.path.join(root, "ImageSets", "2017", f"{split}.txt")
  os.makedirs(os.path.dirname(split_path), exist_ok=True)
  with open(split_path + ".tmp", "w") as f:
    f.write("\n".join(names) + "\n")
  os.replace(split_path + ".tmp", split_path)
