"""Loss functions: pure functions on arrays, importable alone."""

from jaxseg.losses.correspondence import (
    crw_propagate,
    crw_walk_loss,
    local_propagate,
    mast_colorize,
)
from jaxseg.losses.entropy import entropy_loss, normalized_entropy, self_information_map
from jaxseg.losses.segmentation import softmax_cross_entropy_with_ignore

__all__ = [
    "crw_propagate",
    "crw_walk_loss",
    "entropy_loss",
    "local_propagate",
    "mast_colorize",
    "normalized_entropy",
    "self_information_map",
    "softmax_cross_entropy_with_ignore",
]
