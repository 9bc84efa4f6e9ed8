"""Class activation maps for any Flax Linen model (Grad-CAM family), jit-able and batched.

    from jaxseg import cam
    maps = cam.compute_cam("gradcam++", model.apply, variables, images,
                           targets=class_ids, layer="backbone/layer4")  # [B, H, W]

See methods.py for the formulas, targets.py for what a target is,
activations.py for how a layer is named, metrics.py for faithfulness scores,
overlay.py for pictures. `python -m jaxseg.cam --help` is the CLI.
"""
from jaxseg.cam.activations import activations_and_gradients
from jaxseg.cam.activations import forward_with_activations
from jaxseg.cam.activations import forward_with_replaced_layer
from jaxseg.cam.activations import list_layers
from jaxseg.cam.methods import ALL_METHODS
from jaxseg.cam.methods import canonical_method
from jaxseg.cam.methods import compute_cam
from jaxseg.cam.methods import compute_channel_weights
from jaxseg.cam.methods import compute_layer_cams
from jaxseg.cam.methods import compute_raw_cams
from jaxseg.cam.methods import make_cam_fn
from jaxseg.cam.metrics import average_drop
from jaxseg.cam.metrics import confidence_change
from jaxseg.cam.metrics import drop_in_confidence
from jaxseg.cam.metrics import impute_linear
from jaxseg.cam.metrics import increase_in_confidence
from jaxseg.cam.metrics import increase_rate
from jaxseg.cam.metrics import road
from jaxseg.cam.metrics import road_average
from jaxseg.cam.metrics import road_combined
from jaxseg.cam.overlay import image_grid
from jaxseg.cam.overlay import jet_colormap
from jaxseg.cam.overlay import overlay_cam
from jaxseg.cam.overlay import write_cam_grid
from jaxseg.cam.postprocess import aggregate_layers
from jaxseg.cam.postprocess import first_component_projection
from jaxseg.cam.postprocess import resize_bilinear
from jaxseg.cam.postprocess import scale_cam
from jaxseg.cam.smoothing import augmentation_smooth
from jaxseg.cam.targets import ClassLogit
from jaxseg.cam.targets import ClassSoftmax
from jaxseg.cam.targets import PerImageTargets
from jaxseg.cam.targets import SegmentationTarget
from jaxseg.cam.targets import TargetFn
from jaxseg.cam.targets import make_target
