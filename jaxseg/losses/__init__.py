"""Loss functions: pure functions on arrays, importable alone."""
from jaxseg.losses.segmentation import softmax_cross_entropy_with_ignore

__all__ = ["softmax_cross_entropy_with_ignore"]
