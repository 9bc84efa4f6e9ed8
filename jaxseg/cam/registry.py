"""The method registry: `Method`, `METHODS`, `ALL_METHODS` and name lookup.

Each `Method` builds weighted activations [B, h, w, K] from one layer's
`LayerInputs`, either as channel weights [B, K] times A or pixel-wise.
FullGrad has no per-layer map and is only named here (see fullgrad.py).
"""

import dataclasses
from collections.abc import Callable

import jax

from jaxseg.cam import gradient_weights, perturbation
from jaxseg.cam.layer_inputs import LayerInputs, Options


def _gradient_weights(weights_fn):
  return lambda inputs, options: weights_fn(inputs.activations, inputs.gradients)


@dataclasses.dataclass(frozen=True)
class Method:
  """A CAM method: channel weights [B, K] or pixel-wise weighted activations."""

  name: str
  needs_gradients: bool
  # (LayerInputs, Options) -> [B, K]; the map is sum_k w_k A_k.
  channel_weights: Callable[[LayerInputs, Options], jax.Array] | None = None
  # (LayerInputs, Options) -> [B, h, w, K] for pixel-wise methods.
  pixel_weighted: Callable[[LayerInputs, Options], jax.Array] | None = None
  always_eigen: bool = False  # Eigen-CAM family: always the PC projection

  def weighted_activations(self, inputs: LayerInputs, options: Options) -> jax.Array:
    """Weighted activations [B, h, w, K] of one layer."""
    if self.channel_weights is not None:
      weights = self.channel_weights(inputs, options)
      return weights[:, None, None, :] * inputs.activations
    return self.pixel_weighted(inputs, options)


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method(
            "cam",
            False,
            channel_weights=lambda i, o: gradient_weights.fc_weights(i, o.fc_kernel),
        ),
        Method(
            "gradcam",
            True,
            channel_weights=_gradient_weights(gradient_weights.gradcam_weights),
        ),
        Method(
            "gradcam++",
            True,
            channel_weights=_gradient_weights(gradient_weights.gradcam_plusplus_weights),
        ),
        Method(
            "xgradcam",
            True,
            channel_weights=_gradient_weights(gradient_weights.xgradcam_weights),
        ),
        Method("hirescam", True, pixel_weighted=lambda i, o: i.gradients * i.activations),
        Method(
            "gradcam_elementwise",
            True,
            pixel_weighted=lambda i, o: jax.nn.relu(i.gradients * i.activations),
        ),
        Method(
            "layercam", True, pixel_weighted=lambda i, o: jax.nn.relu(i.gradients) * i.activations
        ),
        Method(
            "scorecam",
            False,
            channel_weights=lambda i, o: perturbation.scorecam_weights(i, o.chunk_size),
        ),
        Method(
            "ablationcam",
            False,
            channel_weights=lambda i, o: perturbation.ablation_weights(i, o.chunk_size),
        ),
        Method("eigencam", False, pixel_weighted=lambda i, o: i.activations, always_eigen=True),
        Method(
            "eigengradcam",
            True,
            pixel_weighted=lambda i, o: i.gradients * i.activations,
            always_eigen=True,
        ),
    ]
}
ALL_METHODS = tuple(METHODS) + ("fullgrad",)

_ALIASES = {
    "gradcamplusplus": "gradcam++",
    "gradcampp": "gradcam++",
    "elementwise": "gradcamelementwise",
    "score": "scorecam",
    "ablation": "ablationcam",
    "eigen": "eigencam",
}


def canonical_method(method: str) -> str:
  """'Grad-CAM++', 'GradCAMPlusPlus', 'gradcam++' -> 'gradcam++', etc."""
  key = method.lower().replace("-", "").replace("_", "").replace(" ", "")
  key = _ALIASES.get(key, key)
  for name in ALL_METHODS:
    if key == name.replace("_", ""):
      return name
  raise ValueError(f"unknown CAM method {method!r}; choose one of {', '.join(ALL_METHODS)}.")
