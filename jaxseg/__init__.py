"""jaxseg: semantic segmentation with few or no pixel labels, in JAX/Flax."""

__version__ = "0.1.0"
