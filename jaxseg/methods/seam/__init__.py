"""SEAM: weakly supervised segmentation from image-level labels (see method.py)."""
from jaxseg.methods.seam.method import default_config, load_inference_model, run

__all__ = ["default_config", "load_inference_model", "run"]
