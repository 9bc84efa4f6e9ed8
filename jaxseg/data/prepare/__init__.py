"""Preparing raw datasets as TFDS ArrayRecord datasets (`python -m jaxseg.data.prepare`).

The builders (`jaxseg.data.prepare.builders`) are TFDS `GeneratorBasedBuilder`s fed by jaxseg's
readers; importing this package imports neither TFDS nor the builders.
"""

# Builder name -> "module:class" (imported on use; the TFDS registry sees them once imported).
BUILDERS = {
    "voc_aug": "jaxseg.data.prepare.images:VocAug",
    "gta5": "jaxseg.data.prepare.images:Gta5",
    "cityscapes": "jaxseg.data.prepare.images:Cityscapes",
    "nyu_depth_v2": "jaxseg.data.prepare.rgbd:NyuDepthV2",
    "davis2017": "jaxseg.data.prepare.video:Davis2017",
    "video_frames": "jaxseg.data.prepare.video:VideoFrames",
}


def builder_class(name: str):
  """The builder class of a jaxseg TFDS name ('voc_aug' or 'voc_aug:1.0.0')."""
  import importlib

  from jaxseg.data.errors import DataError

  base = name.split(":")[0].split("/")[0]
  if base not in BUILDERS:
    raise DataError(f"unknown prepared dataset {name!r}; jaxseg prepares {sorted(BUILDERS)}")
  module, cls = BUILDERS[base].split(":")
  return getattr(importlib.import_module(module), cls)
