"""Geometry from depth maps in pure JAX: point clouds, normals, gravity, height, HN labels.

Modules:
  geometry   backproject (depth + K -> camera-frame points), surface_normals (edge-aware plane fit).
  gravity    estimate_gravity (Gupta et al.'s HHA iteration), floor_level, height_above_floor,
             normal_gravity_angle.
  hn_labels  hn_labels (Lahoud & Ghanem's height + normal classes), default_hn_config,
             hn_num_classes, hn_class_names.
"""

from jaxseg.depth.geometry import backproject, intrinsics_matrix, surface_normals
from jaxseg.depth.gravity import (
    CAMERA_UP,
    estimate_gravity,
    floor_level,
    height_above_floor,
    normal_gravity_angle,
)
from jaxseg.depth.hn_labels import (
    HNParams,
    default_hn_config,
    hn_class_names,
    hn_labels,
    hn_num_classes,
)
