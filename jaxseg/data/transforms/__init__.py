"""Joint transforms of numpy examples (run inside grain workers), each key handled by its kind.

An example is a dict of numpy arrays, e.g.
  image       uint8 [H, W, 3] RGB (float32 after `normalize`)
  mask        uint8 [H, W] class ids, `ignore_index` (255) = not labelled
  depth       float32 [H, W] (0 = invalid), normals float32 [H, W, 3], other maps [H, W, ...]
  intrinsics  float32 [3, 3] K or [4] (fx, fy, cx, cy), moved with every geometric transform
  clip        [T, H, W, C] frames (one geometric and one photometric draw for all frames)
  labels float32 [K], index int, id str: passed through.

Modules:
  kinds        the kind of each key (`DEFAULT_KINDS`, `resolve_kinds`) and `validate_example`.
  resample     nearest / bilinear / bicubic / unit-vector resampling of one array.
  geometric    resize, random_scale, random_resize_long, random_crop, center_crop,
               random_flip, and the intrinsics they imply.
  photometric  color_jitter, normalize and the colour ops they use.
  spec         build_augment / build_eval_transform (grain RandomMap / Map), and the specs of a
               segmentation config (segmentation_augment_spec / segmentation_eval_spec).
Every name is re-exported here, so `transforms.random_crop(...)` etc. keep working.
"""

from jaxseg.data.transforms.geometric import (
    center_crop,
    flip_intrinsics,
    random_crop,
    random_flip,
    random_resize_long,
    random_scale,
    resize,
    resize_array,
    scale_intrinsics,
    shift_intrinsics,
)
from jaxseg.data.transforms.kinds import (
    CLIP,
    CLIP_DEPTH,
    CLIP_MAP,
    CLIP_MASK,
    CLIP_NORMALS,
    DEFAULT_KINDS,
    DENSE_KINDS,
    DEPTH,
    IMAGE,
    INTRINSICS,
    KINDS,
    MAP,
    MASK,
    NON_SPATIAL_KEYS,
    NORMALS,
    OTHER,
    Example,
    check_kinds,
    frame_kind,
    image_size,
    is_clip,
    resolve_kinds,
    spatial_keys_of,
    validate_example,
)
from jaxseg.data.transforms.photometric import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    hsv_to_rgb,
    normalize,
    rgb_to_hsv,
)
from jaxseg.data.transforms.spec import (
    SegmentationAugment,
    SegmentationEvalTransform,
    build_augment,
    build_eval_transform,
    segmentation_augment_spec,
    segmentation_eval_spec,
)
