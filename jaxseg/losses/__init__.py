"""Every training objective of jaxseg's methods: pure functions on arrays, importable alone.

docs/losses.md tables them (module, shapes, the method that uses each, the official function it
matches); tests/test_loss_library.py keeps that table equal to `__all__`.
"""

from jaxseg.losses.adversarial import (
    adversarial_generator_loss,
    bce_with_logits,
    discriminator_loss,
    discriminator_loss_terms,
)
from jaxseg.losses.affinity import affinity_loss
from jaxseg.losses.correspondence import local_propagate, mast_colorize
from jaxseg.losses.entropy import entropy_loss, normalized_entropy, self_information_map
from jaxseg.losses.reconstruction import mast_reconstruction_loss, smooth_l1_loss
from jaxseg.losses.seam import (
    adaptive_min_pooling_loss,
    cam_classification_loss,
    equivariant_cross_regularization,
    equivariant_regularization,
    multilabel_soft_margin_loss,
    seam_loss,
)
from jaxseg.losses.segmentation import (
    entropy_weighted_cross_entropy,
    softmax_cross_entropy_with_ignore,
    upsampled_cross_entropy,
)
from jaxseg.losses.walk import crw_walk_loss, cycle_cross_entropy

__all__ = [
    "adaptive_min_pooling_loss",
    "adversarial_generator_loss",
    "affinity_loss",
    "bce_with_logits",
    "cam_classification_loss",
    "crw_walk_loss",
    "cycle_cross_entropy",
    "discriminator_loss",
    "discriminator_loss_terms",
    "entropy_loss",
    "entropy_weighted_cross_entropy",
    "equivariant_cross_regularization",
    "equivariant_regularization",
    "local_propagate",
    "mast_colorize",
    "mast_reconstruction_loss",
    "multilabel_soft_margin_loss",
    "normalized_entropy",
    "seam_loss",
    "self_information_map",
    "smooth_l1_loss",
    "softmax_cross_entropy_with_ignore",
    "upsampled_cross_entropy",
]
