"""What a CAM method sees of one layer: the forward (+ backward) pass, options.

`layer_inputs` runs the model once (with a backward pass for the gradient
methods) and packs, per requested layer, the activations A [B, h, w, K], the
gradients dy/dA and the score closures the perturbation methods call.
"""

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp

from jaxseg.cam import activations as act_lib
from jaxseg.cam import targets as targets_lib


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


def check_images(images: jax.Array) -> None:
  """Raises unless images is a float NHWC batch [B, H, W, C]."""
  chex.assert_rank(images, 4)
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(
        f"images must be float NHWC [B, H, W, C] network input, got dtype " f"{images.dtype}."
    )


def resolve_fc_kernel(variables: Any, fc_layer: str | None, fc_kernel: Any) -> Any:
  """CAM's final Dense kernel [K, num_classes]: fc_kernel, else fc_layer's kernel.

  Args:
    variables: the model variables; fc_layer is looked up in variables['params'].
    fc_layer: module path of the Dense after global average pooling, or None.
    fc_kernel: an explicit kernel [K, num_classes] (wins over fc_layer), or None.
  Returns:
    The kernel [K, num_classes], or None when neither is given.
  """
  if fc_kernel is not None or fc_layer is None:
    return fc_kernel
  node = variables["params"]
  for part in act_lib.layer_names(fc_layer)[0].split("/"):
    if not isinstance(node, Mapping) or part not in node:
      raise ValueError(
          f"fc_layer {fc_layer!r}: no entry {part!r} in variables['params'] "
          f"(keys: {list(node) if isinstance(node, Mapping) else node})."
      )
    node = node[part]
  if "kernel" not in node:
    raise ValueError(f"fc_layer {fc_layer!r} has no 'kernel' parameter.")
  return node["kernel"]


def collect_layer_inputs(
    needs_gradients: bool,
    apply_fn,
    variables,
    images: jax.Array,
    target: targets_lib.Target,
    names: Sequence[str],
) -> dict[str, LayerInputs]:
  """One forward (+ backward when needed) pass for all layers.

  Args:
    needs_gradients: also run the backward pass for dy/dA.
    apply_fn: apply_fn(variables, images) -> model output (logits).
    variables: the model variables.
    images: [B, H, W, C] float network input.
    target: the target whose score y [B] the maps explain.
    names: module paths of the layers (each output [B, h, w, K]).
  Returns:
    {layer: LayerInputs}, in `names` order.
  """
  batch = images.shape[0]
  score_fn = functools.partial(targets_lib.score, target, batch_size=batch)
  if needs_gradients:
    result = act_lib.activations_and_gradients(apply_fn, variables, images, names, score_fn)
    output, scores = result.output, result.scores
    acts, grads = result.activations, result.gradients
  else:
    output, acts = act_lib.forward_with_activations(apply_fn, variables, images, names)
    scores, grads = score_fn(output), {}

  def score_images(x):
    return score_fn(apply_fn(variables, x))

  inputs = {}
  for name in names:
    if acts[name].ndim != 4:
      raise ValueError(
          f"layer {name!r} output has shape {acts[name].shape}; CAMs need a "
          "4-D NHWC activation [B, h, w, K] (reshape token outputs first)."
      )

    def score_activations(a, name=name):
      return score_fn(act_lib.forward_with_replaced_layer(apply_fn, variables, images, name, a))

    inputs[name] = LayerInputs(
        activations=acts[name],
        gradients=grads.get(name),
        scores=scores,
        output=output,
        images=images,
        target=target,
        score_images=score_images,
        score_activations=score_activations,
    )
  return inputs
