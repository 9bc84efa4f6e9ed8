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
"""
from collections.abc import Callable, Mapping, Sequence
import dataclasses
import functools
from typing import Any

import chex
import jax
import jax.numpy as jnp

from jaxseg.cam import activations as act_lib
from jaxseg.cam import postprocess
from jaxseg.cam import smoothing
from jaxseg.cam import targets as targets_lib

ABLATION_OFFSET = 1e7
SCORECAM_EPS = 1e-8


@dataclasses.dataclass(frozen=True)
class LayerInputs:
    """What a method may use for one layer (B images)."""
    activations: jax.Array  # A [B, h, w, K]
    gradients: jax.Array | None  # dy/dA [B, h, w, K] (gradient methods only)
    scores: jax.Array  # [B] target scores of the unmodified forward pass
    output: Any  # model output (logits)
    images: jax.Array  # [B, H, W, C] network input
    target: targets_lib.Target
    # images [B, H, W, C] -> [B] target scores (Score-CAM's masked inputs).
    score_images: Callable[[jax.Array], jax.Array]
    # activations [B, h, w, K] replacing this layer's output -> [B] scores.
    score_activations: Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Options:
    """Method options (static)."""
    chunk_size: int = 16  # channels per vmapped step (Score-CAM, Ablation-CAM)
    fc_kernel: Any = None  # [K, num_classes] final linear kernel (CAM)
    eigen_sign: str = "activation"  # see postprocess.first_component_projection


# --- Channel weights [B, K] --------------------------------------------------


def gradcam_weights(acts: jax.Array, grads: jax.Array) -> jax.Array:
    """Grad-CAM: spatial mean of the gradient. [B, h, w, K] x2 -> [B, K]."""
    return jnp.mean(grads, axis=(1, 2))


def gradcam_plusplus_weights(acts: jax.Array, grads: jax.Array) -> jax.Array:
    """Grad-CAM++ (closed form for y = exp(S)). [B, h, w, K] x2 -> [B, K]."""
    grads_2 = grads ** 2
    grads_3 = grads_2 * grads
    sum_acts = jnp.sum(acts, axis=(1, 2), keepdims=True)
    alpha = grads_2 / (2 * grads_2 + sum_acts * grads_3 + 1e-6)
    alpha = jnp.where(grads != 0, alpha, 0.0)
    return jnp.sum(jax.nn.relu(grads) * alpha, axis=(1, 2))


def xgradcam_weights(acts: jax.Array, grads: jax.Array) -> jax.Array:
    """XGrad-CAM: activation-weighted gradient sum. [B, h, w, K] x2 -> [B, K]."""
    sum_acts = jnp.sum(acts, axis=(1, 2), keepdims=True)
    return jnp.sum(grads * acts / (sum_acts + 1e-7), axis=(1, 2))


def _map_channels(fn: Callable[[jax.Array], jax.Array], xs: jax.Array,
                  chunk_size: int) -> jax.Array:
    """lax.map of fn over the leading axis of xs, vmapped in chunks."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    return jax.lax.map(fn, xs, batch_size=min(chunk_size, xs.shape[0]))


def scorecam_weights(inputs: LayerInputs, chunk_size: int) -> jax.Array:
    """Score-CAM: softmax over channels of y(x * upsampled, min-maxed A_k). [B, K].

    Each channel needs a forward pass of the whole batch; `chunk_size` channels
    run at once (chunk_size * B images in memory).
    """
    size = inputs.images.shape[1:3]
    per_channel = jnp.moveaxis(inputs.activations, -1, 0)  # [K, B, h, w]

    def channel_score(act: jax.Array) -> jax.Array:  # [B, h, w] -> [B]
        mask = postprocess.resize_bilinear(act, size, align_corners=True)
        low = jnp.min(mask, axis=(1, 2), keepdims=True)
        high = jnp.max(mask, axis=(1, 2), keepdims=True)
        mask = (mask - low) / (high - low + SCORECAM_EPS)
        return inputs.score_images(inputs.images * mask[..., None].astype(
            inputs.images.dtype))

    scores = _map_channels(channel_score, per_channel, chunk_size)  # [K, B]
    return jax.nn.softmax(scores.T, axis=-1)


def ablation_weights(inputs: LayerInputs, chunk_size: int) -> jax.Array:
    """Ablation-CAM: relative score drop when channel k is ablated. [B, K].

    The ablated value is 0 where the image's minimum activation is 0 (post-ReLU
    layers), else min - 1e7 (pytorch-grad-cam; its in-place loop lowers this by
    a further 1e7 per channel within a batch, which changes nothing after a
    following ReLU and is not reproduced).
    """
    acts = inputs.activations
    lowest = jnp.min(acts, axis=(1, 2, 3), keepdims=True)  # [B, 1, 1, 1]
    value = jnp.where(lowest == 0, 0.0, lowest - ABLATION_OFFSET).astype(
        acts.dtype)
    channel_ids = jnp.arange(acts.shape[-1])

    def ablated_score(k: jax.Array) -> jax.Array:  # () -> [B]
        return inputs.score_activations(jnp.where(channel_ids == k, value, acts))

    ablated = _map_channels(ablated_score, channel_ids, chunk_size).T  # [B, K]
    original = inputs.scores[:, None]
    return (original - ablated) / original


def _fc_weights(inputs: LayerInputs, fc_kernel: Any) -> jax.Array:
    """CAM weights [B, K]: the Dense kernel column of each image's class.

    Only meaningful when the layer is the one globally average-pooled into
    that Dense (CAM's definition); only the channel count is checked.
    """
    if fc_kernel is None:
        raise ValueError(
            "method 'cam' needs the final linear layer: pass fc_layer='<module "
            "path of the Dense after global average pooling>' or fc_kernel "
            "[K, num_classes].")
    kernel = jnp.asarray(fc_kernel)
    k = inputs.activations.shape[-1]
    if kernel.ndim != 2 or kernel.shape[0] != k:
        raise ValueError(
            f"CAM fc_kernel has shape {kernel.shape}; expected [K={k}, "
            "num_classes] (HWIO-style Dense kernel, K = channels of the layer).")
    class_ids = targets_lib.class_ids_of(inputs.target, inputs.output)
    return jnp.take(kernel.T, class_ids, axis=0, mode="fill", fill_value=jnp.nan)


# --- Methods -----------------------------------------------------------------


def _gradient_weights(weights_fn):
    return lambda inputs, options: weights_fn(inputs.activations,
                                              inputs.gradients)


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

    def weighted_activations(self, inputs: LayerInputs,
                             options: Options) -> jax.Array:
        if self.channel_weights is not None:
            weights = self.channel_weights(inputs, options)
            return weights[:, None, None, :] * inputs.activations
        return self.pixel_weighted(inputs, options)


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("cam", False,
           channel_weights=lambda i, o: _fc_weights(i, o.fc_kernel)),
    Method("gradcam", True, channel_weights=_gradient_weights(gradcam_weights)),
    Method("gradcam++", True,
           channel_weights=_gradient_weights(gradcam_plusplus_weights)),
    Method("xgradcam", True,
           channel_weights=_gradient_weights(xgradcam_weights)),
    Method("hirescam", True,
           pixel_weighted=lambda i, o: i.gradients * i.activations),
    Method("gradcam_elementwise", True,
           pixel_weighted=lambda i, o: jax.nn.relu(i.gradients * i.activations)),
    Method("layercam", True,
           pixel_weighted=lambda i, o: jax.nn.relu(i.gradients) * i.activations),
    Method("scorecam", False,
           channel_weights=lambda i, o: scorecam_weights(i, o.chunk_size)),
    Method("ablationcam", False,
           channel_weights=lambda i, o: ablation_weights(i, o.chunk_size)),
    Method("eigencam", False, pixel_weighted=lambda i, o: i.activations,
           always_eigen=True),
    Method("eigengradcam", True,
           pixel_weighted=lambda i, o: i.gradients * i.activations,
           always_eigen=True),
]}
ALL_METHODS = tuple(METHODS) + ("fullgrad",)

_ALIASES = {
    "gradcamplusplus": "gradcam++", "gradcampp": "gradcam++",
    "elementwise": "gradcamelementwise", "score": "scorecam",
    "ablation": "ablationcam", "eigen": "eigencam",
}


def canonical_method(method: str) -> str:
    """'Grad-CAM++', 'GradCAMPlusPlus', 'gradcam++' -> 'gradcam++', etc."""
    key = method.lower().replace("-", "").replace("_", "").replace(" ", "")
    key = _ALIASES.get(key, key)
    for name in ALL_METHODS:
        if key == name.replace("_", ""):
            return name
    raise ValueError(
        f"unknown CAM method {method!r}; choose one of {', '.join(ALL_METHODS)}.")


# --- Pipeline ----------------------------------------------------------------


def _check_images(images: jax.Array) -> None:
    chex.assert_rank(images, 4)
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(
            f"images must be float NHWC [B, H, W, C] network input, got dtype "
            f"{images.dtype}.")


def _fc_kernel(variables: Any, fc_layer: str | None, fc_kernel: Any) -> Any:
    if fc_kernel is not None or fc_layer is None:
        return fc_kernel
    node = variables["params"]
    for part in act_lib.layer_names(fc_layer)[0].split("/"):
        if not isinstance(node, Mapping) or part not in node:
            raise ValueError(
                f"fc_layer {fc_layer!r}: no entry {part!r} in variables['params'] "
                f"(keys: {list(node) if isinstance(node, Mapping) else node}).")
        node = node[part]
    if "kernel" not in node:
        raise ValueError(f"fc_layer {fc_layer!r} has no 'kernel' parameter.")
    return node["kernel"]


def _layer_inputs(method: Method, apply_fn, variables, images: jax.Array,
                  target: targets_lib.Target, names: Sequence[str]
                  ) -> dict[str, LayerInputs]:
    """One forward (+ backward when needed) pass for all layers."""
    batch = images.shape[0]
    score_fn = functools.partial(targets_lib.score, target, batch_size=batch)
    if method.needs_gradients:
        result = act_lib.activations_and_gradients(
            apply_fn, variables, images, names, score_fn)
        output, scores = result.output, result.scores
        acts, grads = result.activations, result.gradients
    else:
        output, acts = act_lib.forward_with_activations(
            apply_fn, variables, images, names)
        scores, grads = score_fn(output), {}

    def score_images(x):
        return score_fn(apply_fn(variables, x))

    inputs = {}
    for name in names:
        if acts[name].ndim != 4:
            raise ValueError(
                f"layer {name!r} output has shape {acts[name].shape}; CAMs need a "
                "4-D NHWC activation [B, h, w, K] (reshape token outputs first).")

        def score_activations(a, name=name):
            return score_fn(act_lib.forward_with_replaced_layer(
                apply_fn, variables, images, name, a))

        inputs[name] = LayerInputs(
            activations=acts[name], gradients=grads.get(name), scores=scores,
            output=output, images=images, target=target,
            score_images=score_images, score_activations=score_activations)
    return inputs


def _raw_cams(method: Method, apply_fn, variables, images: jax.Array,
              target: targets_lib.Target, names: Sequence[str],
              options: Options, eigen_smooth: bool) -> dict[str, jax.Array]:
    raw = {}
    for name, inputs in _layer_inputs(method, apply_fn, variables, images,
                                      target, names).items():
        weighted = method.weighted_activations(inputs, options)
        if method.always_eigen or eigen_smooth:
            raw[name] = postprocess.first_component_projection(
                weighted, options.eigen_sign)
        else:
            raw[name] = jnp.sum(weighted, axis=-1)
    return raw


def _fullgrad_cam(apply_fn, variables, images: jax.Array,
                  target: targets_lib.Target) -> jax.Array:
    """FullGrad [B, H, W]: per (image, channel) min-max + resize, summed."""
    batch, height, width, _ = images.shape
    score_fn = functools.partial(targets_lib.score, target, batch_size=batch)
    result = act_lib.bias_activations_and_gradients(
        apply_fn, variables, images, score_fn)

    def per_channel_maps(x):  # [B, h, w, K] >= 0 -> [B, H, W] summed channels
        k = x.shape[-1]
        per_channel = jnp.moveaxis(x, -1, 1).reshape(batch * k, *x.shape[1:3])
        scaled = postprocess.scale_cam(per_channel, (height, width))
        return jnp.sum(scaled.reshape(batch, k, height, width), axis=1)

    total = per_channel_maps(jnp.abs(result.input_gradient * images))
    for name, grads in result.gradients.items():
        if grads.ndim != 4:
            continue  # FullGrad uses the 2-D conv / norm layers only.
        total = total + per_channel_maps(jnp.abs(result.biases[name] * grads))
    return postprocess.minmax_normalize(total)


def _setup(method: str, variables, images, targets, chunk_size, fc_layer,
           fc_kernel, eigen_sign):
    _check_images(images)
    spec = METHODS.get(canonical_method(method))
    if spec is None:
        raise ValueError("FullGrad has no per-layer map; use compute_cam.")
    target = targets_lib.make_target(targets, images.shape[0])
    options = Options(chunk_size=chunk_size, eigen_sign=eigen_sign,
                      fc_kernel=_fc_kernel(variables, fc_layer, fc_kernel))
    return spec, target, options


def compute_channel_weights(method: str, apply_fn, variables,
                            images: jax.Array,
                            targets: targets_lib.TargetLike = None, *,
                            layer: act_lib.LayerSpec, chunk_size: int = 16,
                            fc_layer: str | None = None, fc_kernel: Any = None
                            ) -> dict[str, jax.Array]:
    """{layer: channel weights [B, K]} of a channel-weight method (cam,
    gradcam, gradcam++, xgradcam, scorecam, ablationcam)."""
    spec, target, options = _setup(method, variables, images, targets,
                                   chunk_size, fc_layer, fc_kernel, "none")
    if spec.channel_weights is None:
        raise ValueError(f"method {spec.name!r} has pixel-wise weights, not "
                         "channel weights.")
    inputs = _layer_inputs(spec, apply_fn, variables, images, target,
                           act_lib.layer_names(layer))
    return {name: spec.channel_weights(i, options) for name, i in inputs.items()}


def compute_raw_cams(method: str, apply_fn, variables, images: jax.Array,
                     targets: targets_lib.TargetLike = None, *,
                     layer: act_lib.LayerSpec, eigen_smooth: bool = False,
                     chunk_size: int = 16, fc_layer: str | None = None,
                     fc_kernel: Any = None, eigen_sign: str = "activation"
                     ) -> dict[str, jax.Array]:
    """{layer: map [B, h, w]} before ReLU, normalisation and resize.

    Same arguments as `compute_cam` (no aug smoothing, no FullGrad).
    """
    spec, target, options = _setup(method, variables, images, targets,
                                   chunk_size, fc_layer, fc_kernel, eigen_sign)
    return _raw_cams(spec, apply_fn, variables, images, target,
                     act_lib.layer_names(layer), options, eigen_smooth)


def compute_layer_cams(method: str, apply_fn, variables, images: jax.Array,
                       targets: targets_lib.TargetLike = None, *,
                       layer: act_lib.LayerSpec, eigen_smooth: bool = False,
                       chunk_size: int = 16, fc_layer: str | None = None,
                       fc_kernel: Any = None, eigen_sign: str = "activation"
                       ) -> jax.Array:
    """Per-layer CAMs [L, B, H, W] (ReLU, min-max, resized), in `layer` order."""
    raw = compute_raw_cams(method, apply_fn, variables, images, targets,
                           layer=layer, eigen_smooth=eigen_smooth,
                           chunk_size=chunk_size, fc_layer=fc_layer,
                           fc_kernel=fc_kernel, eigen_sign=eigen_sign)
    size = images.shape[1:3]
    return jnp.stack([postprocess.layer_cam_to_image(m, size)
                      for m in raw.values()])


def compute_cam(method: str, apply_fn, variables, images: jax.Array,
                targets: targets_lib.TargetLike = None, *,
                layer: act_lib.LayerSpec | None = None,
                aug_smooth: bool = False, eigen_smooth: bool = False,
                chunk_size: int = 16, fc_layer: str | None = None,
                fc_kernel: Any = None, eigen_sign: str = "activation",
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
    _check_images(images)
    name = canonical_method(method)
    if name != "fullgrad" and layer is None:
        raise ValueError(f"method {name!r} needs layer='<module path>'.")
    if name == "fullgrad" and eigen_smooth:
        raise ValueError("eigen_smooth is not supported for 'fullgrad'.")
    target = targets_lib.make_target(targets, images.shape[0])

    def cam_of(x: jax.Array, t: targets_lib.Target) -> jax.Array:
        if name == "fullgrad":
            return _fullgrad_cam(apply_fn, variables, x, t)
        layer_cams = compute_layer_cams(
            name, apply_fn, variables, x, t, layer=layer,
            eigen_smooth=eigen_smooth, chunk_size=chunk_size, fc_layer=fc_layer,
            fc_kernel=fc_kernel, eigen_sign=eigen_sign)
        return postprocess.aggregate_layers(layer_cams)

    if aug_smooth:
        return smoothing.augmentation_smooth(
            cam_of, images, target, flips=aug_flips, multipliers=aug_multipliers,
            scales=aug_scales)
    return cam_of(images, target)


def make_cam_fn(method: str, apply_fn, **options
                ) -> Callable[[Any, jax.Array, Any], jax.Array]:
    """A jitted fn(variables, images, targets) -> CAMs [B, H, W].

    `options` are compute_cam's keyword arguments (layer=..., etc.). Targets
    are traced: pass a Target (targets.py) or an int array [B] of class ids;
    user callables must be wrapped in TargetFn / PerImageTargets (static).
    """
    def cam_fn(variables, images, targets=None):
        return compute_cam(method, apply_fn, variables, images, targets, **options)
    return jax.jit(cam_fn)
