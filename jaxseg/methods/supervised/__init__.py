"""Fully supervised segmentation: the stack's proof and the upper-bound row.

Stages: 'train' (pixel-wise cross-entropy) and 'evaluate' (mIoU + pictures).
"""

from jaxseg.methods.supervised.method import (
    RESUME_SAFE_KEYS,
    default_config,
    load_inference_model,
    run,
)

__all__ = ["RESUME_SAFE_KEYS", "default_config", "load_inference_model", "run"]
