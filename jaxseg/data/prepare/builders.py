"""Imports (registers with TFDS) every jaxseg builder: `tfds build --imports=jaxseg.data.prepare.builders`."""

from jaxseg.data.prepare.images import Cityscapes, Gta5, VocAug
from jaxseg.data.prepare.rgbd import NyuDepthV2
from jaxseg.data.prepare.video import Davis2017, VideoFrames

__all__ = ["Cityscapes", "Davis2017", "Gta5", "NyuDepthV2", "VideoFrames", "VocAug"]
