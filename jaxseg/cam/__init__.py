"""Class activation maps for any Flax Linen model (Grad-CAM family), jit-able and batched.

    from jaxseg import cam
    maps = cam.compute_cam("gradcam++", model.apply, variables, images,
                           targets=class_ids, layer="backbone/layer4")  # [B, H, W]

See methods.py for the formulas, targets.py for what a target is,
activations.py for how a layer is named, metrics.py for faithfulness scores,
overlay.py for pictures. `python -m jaxseg.cam --help` is the CLI.
"""

from jaxseg.cam.activations import (
    activations_and_gradients,
    forward_with_activations,
    forward_with_replaced_layer,
    list_layers,
)
from jaxseg.cam.methods import (
    ALL_METHODS,
    canonical_method,
    compute_cam,
    compute_channel_weights,
    compute_layer_cams,
    compute_raw_cams,
    make_cam_fn,
)
from jaxseg.cam.metrics import (
    average_drop,
    confidence_change,
    drop_in_confidence,
    impute_linear,
    increase_in_confidence,
    increase_rate,
    road,
    road_average,
    road_combined,
)
from jaxseg.cam.overlay import image_grid, jet_colormap, overlay_cam, write_cam_grid
from jaxseg.cam.postprocess import (
    aggregate_layers,
    first_component_projection,
    resize_bilinear,
    scale_cam,
)
from jaxseg.cam.smoothing import augmentation_smooth
from jaxseg.cam.targets import (
    ClassLogit,
    ClassSoftmax,
    PerImageTargets,
    SegmentationTarget,
    TargetFn,
    make_target,
)
