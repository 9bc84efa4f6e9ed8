"""The CAM family, batched and jit-compilable.

Notation (NHWC): A [B, h, w, K] activations of the target layer, g = dy/dA
with y the target score of each image. Every method builds *weighted
activations* [B, h, w, K]; the map is their channel sum (or, with
eigen_smooth, their first principal component), then ReLU, per-image min-max
and resize to the input (postprocess.py). Formulas and constants follow
pytorch-grad-cam 1.5.5:

  cam            w_k = fc_kernel[k, c]          (final linear layer after GAP)
  gradcam        w_k = mean_ij g_ijk
  gradcam++      w_k = sum_ij relu(g) a,  a = g^2 / (2 g^2 + sum_ij A * g^3 + 1e-6), a = 0 where g = 0
  xgradcam       w_k = sum_ij g A / (sum_ij A + 1e-7)
  hirescam       g * A (no spatial averaging)
  gradcam_elementwise  relu(g * A)
  layercam       relu(g) * A
  scorecam       w = softmax_k y(x * minmax(upsample(A_k)))  (align_corners upsample)
  ablationcam    w_k = (y - y[A_k ablated]) / y, ablated = 0 if min A == 0 else min A - 1e7
  eigencam       first principal component of A (class-agnostic)
  eigengradcam   first principal component of g * A
  fullgrad       sum over Conv/BatchNorm biases of |bias * g| + |x * dy/dx|

Entry points: `compute_cam` (final [B, H, W]), `compute_layer_cams`
([L, B, H, W], one per layer, before the layer mean), `compute_raw_cams`
(the maps before ReLU / normalisation, at layer resolution),
`compute_channel_weights` ([B, K] per layer) and `make_cam_fn` (a jitted
closure).

Layout: layer_inputs.py (forward / backward pass, LayerInputs, Options),
gradient_weights.py (CAM, Grad-CAM, Grad-CAM++, XGrad-CAM), perturbation.py
(Score-CAM, Ablation-CAM), fullgrad.py, registry.py (Method, METHODS, name
lookup; the pixel-wise and Eigen methods); this module is the pipeline and
re-exports their public names.
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxseg.cam import activations as act_lib
from jaxseg.cam import fullgrad, layer_inputs, postprocess, smoothing
from jaxseg.cam import targets as targets_lib
from jaxseg.cam.gradient_weights import (
    gradcam_plusplus_weights,
    gradcam_weights,
    xgradcam_weights,
)
from jaxseg.cam.layer_inputs import LayerInputs, Options
from jaxseg.cam.perturbation import (
    ABLATION_OFFSET,
    SCORECAM_EPS,
    ablation_weights,
    scorecam_weights,
)
from jaxseg.cam.registry import ALL_METHODS, METHODS, Method, canonical_method

__all__ = [
    "ABLATION_OFFSET",
    "ALL_METHODS",
    "METHODS",
    "SCORECAM_EPS",
    "LayerInputs",
    "Method",
    "Options",
    "ablation_weights",
    "canonical_method",
    "compute_cam",
    "compute_channel_weights",
    "compute_layer_cams",
    "compute_raw_cams",
    "gradcam_plusplus_weights",
    "gradcam_weights",
    "make_cam_fn",
    "scorecam_weights",
    "xgradcam_weights",
]


# --- Pipeline ----------------------------------------------------------------


def _raw_cams(
    method: Method,
    apply_fn,
    variables,
    images: jax.Array,
    target: targets_lib.Target,
    names: Sequence[str],
    options: Options,
    eigen_smooth: bool,
) -> dict[str, jax.Array]:
  """{layer: map [B, h, w]}: channel sum (or first PC) of the weighted activations."""
  raw = {}
  for name, inputs in layer_inputs.collect_layer_inputs(
      method.needs_gradients, apply_fn, variables, images, target, names
  ).items():
    weighted = method.weighted_activations(inputs, options)
    if method.always_eigen or eigen_smooth:
      raw[name] = postprocess.first_component_projection(weighted, options.eigen_sign)
    else:
      raw[name] = jnp.sum(weighted, axis=-1)
  return raw


def _setup(method: str, variables, images, targets, chunk_size, fc_layer, fc_kernel, eigen_sign):
  """Checks images [B, H, W, C]; returns (Method, Target of B images, Options)."""
  layer_inputs.check_images(images)
  spec = METHODS.get(canonical_method(method))
  if spec is None:
    raise ValueError("FullGrad has no per-layer map; use compute_cam.")
  target = targets_lib.make_target(targets, images.shape[0])
  options = Options(
      chunk_size=chunk_size,
      eigen_sign=eigen_sign,
      fc_kernel=layer_inputs.resolve_fc_kernel(variables, fc_layer, fc_kernel),
  )
  return spec, target, options


def compute_channel_weights(
    method: str,
    apply_fn,
    variables,
    images: jax.Array,
    targets: targets_lib.TargetLike = None,
    *,
    layer: act_lib.LayerSpec,
    chunk_size: int = 16,
    fc_layer: str | None = None,
    fc_kernel: Any = None,
) -> dict[str, jax.Array]:
  """{layer: channel weights [B, K]} of a channel-weight method (cam,
  gradcam, gradcam++, xgradcam, scorecam, ablationcam)."""
  spec, target, options = _setup(
      method, variables, images, targets, chunk_size, fc_layer, fc_kernel, "none"
  )
  if spec.channel_weights is None:
    raise ValueError(f"method {spec.name!r} has pixel-wise weights, not " "channel weights.")
  inputs = layer_inputs.collect_layer_inputs(
      spec.needs_gradients, apply_fn, variables, images, target, act_lib.layer_names(layer)
  )
  return {name: spec.channel_weights(i, options) for name, i in inputs.items()}


def compute_raw_cams(
    method: str,
    apply_fn,
    variables,
    images: jax.Array,
    targets: targets_lib.TargetLike = None,
    *,
    layer: act_lib.LayerSpec,
    eigen_smooth: bool = False,
    chunk_size: int = 16,
    fc_layer: str | None = None,
    fc_kernel: Any = None,
    eigen_sign: str = "activation",
) -> dict[str, jax.Array]:
  """{layer: map [B, h, w]} before ReLU, normalisation and resize.

  Same arguments as `compute_cam` (no aug smoothing, no FullGrad).
  """
  spec, target, options = _setup(
      method, variables, images, targets, chunk_size, fc_layer, fc_kernel, eigen_sign
  )
  return _raw_cams(
      spec, apply_fn, variables, images, target, act_lib.layer_names(layer), options, eigen_smooth
  )


def compute_layer_cams(
    method: str,
    apply_fn,
    variables,
    images: jax.Array,
    targets: targets_lib.TargetLike = None,
    *,
    layer: act_lib.LayerSpec,
    eigen_smooth: bool = False,
    chunk_size: int = 16,
    fc_layer: str | None = None,
    fc_kernel: Any = None,
    eigen_sign: str = "activation",
) -> jax.Array:
  """Per-layer CAMs [L, B, H, W] (ReLU, min-max, resized), in `layer` order."""
  raw = compute_raw_cams(
      method,
      apply_fn,
      variables,
      images,
      targets,
      layer=layer,
      eigen_smooth=eigen_smooth,
      chunk_size=chunk_size,
      fc_layer=fc_layer,
      fc_kernel=fc_kernel,
      eigen_sign=eigen_sign,
  )
  size = images.shape[1:3]
  return jnp.stack([postprocess.layer_cam_to_image(m, size) for m in raw.values()])


def compute_cam(
    method: str,
    apply_fn,
    variables,
    images: jax.Array,
    targets: targets_lib.TargetLike = None,
    *,
    layer: act_lib.LayerSpec | None = None,
    aug_smooth: bool = False,
    eigen_smooth: bool = False,
    chunk_size: int = 16,
    fc_layer: str | None = None,
    fc_kernel: Any = None,
    eigen_sign: str = "activation",
    aug_flips: Sequence[bool] = smoothing.DEFAULT_FLIPS,
    aug_multipliers: Sequence[float] = smoothing.DEFAULT_MULTIPLIERS,
    aug_scales: Sequence[float] = smoothing.DEFAULT_SCALES,
) -> jax.Array:
  """Class activation maps [B, H, W] in [0, 1], like pytorch-grad-cam.

  Args:
    method: one of ALL_METHODS (aliases such as 'GradCAMPlusPlus' accepted).
    apply_fn: apply_fn(variables, images) -> logits [B, K] or [B, h, w, K];
      it must run a Flax Linen apply (see activations.py).
    variables: the model variables.
    images: [B, H, W, C] float network input (already normalised).
    targets: one per image: None (arg-max class), class ids [B], a Target
      (targets.py), a batch callable or a list of B per-image callables.
    layer: module path or list of paths (several layers are averaged). Not
      used by 'fullgrad' (all Conv / BatchNorm biases).
    aug_smooth: average over flips x input multipliers (smoothing.py).
    eigen_smooth: first principal component instead of the channel sum.
    chunk_size: Score-CAM / Ablation-CAM channels per vmapped forward; the
      memory of one step is about chunk_size * B forward passes.
    fc_layer / fc_kernel: final Dense after GAP ('cam' only): a module path in
      variables['params'] or the kernel [K, num_classes].
    eigen_sign: sign convention of the principal component.
    aug_flips / aug_multipliers / aug_scales: the aug smoothing passes
      (flips x spatial scales x input multipliers; the default is
      pytorch-grad-cam's 6 passes).
  Returns:
    [B, H, W] float32 CAMs.
  """
  layer_inputs.check_images(images)
  name = canonical_method(method)
  if name != "fullgrad" and layer is None:
    raise ValueError(f"method {name!r} needs layer='<module path>'.")
  if name == "fullgrad" and eigen_smooth:
    raise ValueError("eigen_smooth is not supported for 'fullgrad'.")
  target = targets_lib.make_target(targets, images.shape[0])

  def cam_of(x: jax.Array, t: targets_lib.Target) -> jax.Array:
    if name == "fullgrad":
      return fullgrad.fullgrad_cam(apply_fn, variables, x, t)
    layer_cams = compute_layer_cams(
        name,
        apply_fn,
        variables,
        x,
        t,
        layer=layer,
        eigen_smooth=eigen_smooth,
        chunk_size=chunk_size,
        fc_layer=fc_layer,
        fc_kernel=fc_kernel,
        eigen_sign=eigen_sign,
    )
    return postprocess.aggregate_layers(layer_cams)

  if aug_smooth:
    return smoothing.augmentation_smooth(
        cam_of, images, target, flips=aug_flips, multipliers=aug_multipliers, scales=aug_scales
    )
  return cam_of(images, target)


def make_cam_fn(method: str, apply_fn, **options) -> Callable[[Any, jax.Array, Any], jax.Array]:
  """A jitted fn(variables, images, targets) -> CAMs [B, H, W].

  `options` are compute_cam's keyword arguments (layer=..., etc.). Targets
  are traced: pass a Target (targets.py) or an int array [B] of class ids;
  user callables must be wrapped in TargetFn / PerImageTargets (static).
  """

  def cam_fn(variables, images, targets=None):
    return compute_cam(method, apply_fn, variables, images, targets, **options)

  return jax.jit(cam_fn)
