"""Backbones with official-weight converters.

  ResNet      torchvision ResNet-18/34/50/101, output stride 32/16/8/4   (jaxseg.models.resnet)
  DeepLabV2   ADVENT's DeepLab-v2 ResNet-101 multi-level                 (jaxseg.models.deeplab_v2)
  ResNet38    SEAM's resnet38d                                           (jaxseg.models.resnet38)
Converters and checkpoint readers/writers: jaxseg.models.convert.
"""

from jaxseg.models.deeplab_v2 import DeepLabV2
from jaxseg.models.resnet import ResNet
from jaxseg.models.resnet38 import ResNet38

__all__ = ["DeepLabV2", "ResNet", "ResNet38"]
