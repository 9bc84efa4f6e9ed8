"""A named layer's activation and gradient from any Flax Linen model, without hooks.

A *layer* is the output of a Linen submodule's `__call__`, named by its module
path: "block3" or "backbone/layer4/2/conv3" ("/"-joined `Module.path`, the
same names as in `variables["params"]`). The model is never modified: the
forward pass runs under `nn.intercept_methods`, and for the named modules the
interceptor

  * records the output A (activation, NHWC [B, h, w, K] for conv layers),
  * adds a perturbation delta (zeros) to it, so that jax.grad with respect to
    delta is exactly dy/dA (no backward hooks), or
  * replaces it by a given array (to run the rest of the network on modified
    activations: Ablation-CAM).

`apply_fn(variables, images)` must run the Linen `apply` inside the call (a
plain function or partial of `model.apply`), not a function that was jitted
on its own: a cached jit trace would bypass the interceptor. That case, a
misspelt layer and a layer called several times are all ValueErrors.
"""

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

ApplyFn = Callable[[Any, jax.Array], Any]
LayerSpec = str | Sequence[str]


def layer_names(layer: LayerSpec) -> tuple[str, ...]:
  """Normalises a layer spec ("a/b" or ["a/b", "c"]) to a tuple of names."""
  names = (layer,) if isinstance(layer, str) else tuple(layer)
  if not names or not all(isinstance(n, str) and n.strip("/") for n in names):
    raise ValueError(
        f"layer must be a module path like 'block3/conv' or a list of them, " f"got {layer!r}."
    )
  return tuple(n.strip("/") for n in names)


def _path_name(module: nn.Module) -> str:
  return "/".join(str(p) for p in module.path)


def _is_array(x: Any) -> bool:
  return isinstance(x, (jax.Array, jax.core.Tracer))


@dataclasses.dataclass
class _Tap:
  """Interceptor state for one traced forward pass."""

  select: Callable[[str, nn.Module], bool]
  perturbations: Mapping[str, jax.Array] | None = None
  replacements: Mapping[str, jax.Array] | None = None
  record_bias: bool = False
  outputs: dict[str, jax.Array] = dataclasses.field(default_factory=dict)
  biases: dict[str, jax.Array] = dataclasses.field(default_factory=dict)
  calls: dict[str, int] = dataclasses.field(default_factory=dict)
  called: dict[str, tuple[int, ...] | str] = dataclasses.field(default_factory=dict)

  def __call__(self, next_fun, args, kwargs, context):
    if context.method_name != "__call__":
      return next_fun(*args, **kwargs)
    name = _path_name(context.module)
    if not self.select(name, context.module):
      out = next_fun(*args, **kwargs)
      self.called.setdefault(name, tuple(out.shape) if _is_array(out) else type(out).__name__)
      return out
    self.calls[name] = self.calls.get(name, 0) + 1
    if self.calls[name] > 1:
      raise ValueError(
          f"layer {name!r} is called more than once in one forward pass; a "
          "CAM layer must be a module that runs once (pick a module path "
          "that is not shared)."
      )
    if self.replacements is not None and name in self.replacements:
      self.called[name] = tuple(self.replacements[name].shape)
      return self.replacements[name]
    out = next_fun(*args, **kwargs)
    if not _is_array(out):
      raise ValueError(
          f"layer {name!r} returns a {type(out).__name__}, not an array; name "
          "a submodule whose output is a single array (e.g. a stage module)."
      )
    self.called[name] = tuple(out.shape)
    self.outputs[name] = out
    if self.record_bias:
      self.biases[name] = _effective_bias(context.module)
    if self.perturbations is not None and name in self.perturbations:
      out = out + self.perturbations[name]
    return out


def _run(apply_fn: ApplyFn, variables: Any, images: jax.Array, tap: _Tap) -> Any:
  with nn.intercept_methods(tap):
    return apply_fn(variables, images)


def _check_found(tap: _Tap, names: Sequence[str]) -> None:
  missing = [n for n in names if n not in tap.calls]
  if missing:
    listed = [f"{n or '<root>'} {s}" for n, s in tap.called.items()]
    if len(listed) > 60:  # big models: keep the message readable
      listed = listed[:60] + [f"... ({len(listed) - 60} more; see list_layers)"]
    available = ", ".join(listed) or "none"
    raise ValueError(
        f"layer(s) {missing} not called in the forward pass of apply_fn. "
        f"Modules called (path, output shape): {available}. If this list is "
        "empty, apply_fn may be jitted on its own (pass the un-jitted "
        "function) or not a Flax Linen model."
    )


def _select_names(names: Sequence[str]) -> Callable[[str, nn.Module], bool]:
  wanted = frozenset(names)
  return lambda name, module: name in wanted


def list_layers(
    apply_fn: ApplyFn, variables: Any, images: jax.Array
) -> dict[str, tuple[int, ...] | str]:
  """{module path: output shape (or type name)} of every module call.

  Runs only an abstract trace (jax.eval_shape), no computation.
  """
  tap = _Tap(select=lambda name, module: False)
  jax.eval_shape(lambda v, x: _run(apply_fn, v, x, tap), variables, images)
  return dict(tap.called)


def forward_with_activations(
    apply_fn: ApplyFn, variables: Any, images: jax.Array, layer: LayerSpec
) -> tuple[Any, dict[str, jax.Array]]:
  """One forward pass -> (model output, {layer: activation [B, h, w, K]})."""
  names = layer_names(layer)
  tap = _Tap(select=_select_names(names))
  output = _run(apply_fn, variables, images, tap)
  _check_found(tap, names)
  return output, {n: tap.outputs[n] for n in names}


def forward_with_replaced_layer(
    apply_fn: ApplyFn, variables: Any, images: jax.Array, layer: str, activation: jax.Array
) -> Any:
  """Model output with `layer`'s output replaced by `activation`.

  The layers before `layer` still run on `images` (XLA removes them under jit
  when nothing else uses them); the ones after see `activation`.
  """
  (name,) = layer_names(layer)
  tap = _Tap(select=_select_names([name]), replacements={name: activation})
  output = _run(apply_fn, variables, images, tap)
  _check_found(tap, [name])
  return output


@dataclasses.dataclass(frozen=True)
class Gradients:
  """Result of `activations_and_gradients` (B images)."""

  output: Any  # the model output, e.g. logits [B, K] or [B, h, w, K]
  scores: jax.Array  # [B] target scores
  activations: dict[str, jax.Array]  # layer -> A [B, h, w, K]
  gradients: dict[str, jax.Array]  # layer -> d(sum_b score_b)/dA, like A
  biases: dict[str, jax.Array]  # layer -> effective bias [K] (FullGrad only)
  input_gradient: jax.Array | None  # d(sum_b score_b)/d images, or None


def _activations_and_gradients(
    apply_fn: ApplyFn,
    variables: Any,
    images: jax.Array,
    select: Callable[[str, nn.Module], bool],
    names: Sequence[str] | None,
    score_fn: Callable[[Any], jax.Array],
    input_gradient: bool,
    record_bias: bool,
) -> Gradients:
  shape_tap = _Tap(select=select)
  shapes = jax.eval_shape(
      lambda v, x: (_run(apply_fn, v, x, shape_tap), shape_tap.outputs)[1], variables, images
  )
  if names is not None:
    _check_found(shape_tap, names)
  zeros = {n: jnp.zeros(s.shape, s.dtype) for n, s in shapes.items()}

  def total_score(perturbations, x):
    tap = _Tap(select=select, perturbations=perturbations, record_bias=record_bias)
    output = _run(apply_fn, variables, x, tap)
    scores = score_fn(output)
    # Images are independent (eval mode), so the gradient of the batch sum
    # is the per-image gradient, as in pytorch-grad-cam.
    return jnp.sum(scores), (output, scores, tap.outputs, tap.biases)

  argnums = (0, 1) if input_gradient else 0
  grads, (output, scores, acts, biases) = jax.grad(total_score, argnums=argnums, has_aux=True)(
      zeros, images
  )
  layer_grads, image_grad = grads if input_gradient else (grads, None)
  return Gradients(
      output=output,
      scores=scores,
      activations=dict(acts),
      gradients=dict(layer_grads),
      biases=dict(biases),
      input_gradient=image_grad,
  )


def activations_and_gradients(
    apply_fn: ApplyFn,
    variables: Any,
    images: jax.Array,
    layer: LayerSpec,
    score_fn: Callable[[Any], jax.Array],
    *,
    input_gradient: bool = False,
) -> Gradients:
  """One forward + one backward pass for the named layers.

  Args:
    apply_fn: apply_fn(variables, images) -> model output.
    variables: the model variables.
    images: [B, H, W, C] network input.
    layer: module path(s), see the module docstring.
    score_fn: model output -> [B] target scores.
    input_gradient: also return d(sum of scores)/d images [B, H, W, C].
  """
  names = layer_names(layer)
  return _activations_and_gradients(
      apply_fn,
      variables,
      images,
      _select_names(names),
      names,
      score_fn,
      input_gradient,
      record_bias=False,
  )


def _is_batch_norm(module: nn.Module) -> bool:
  """nn.BatchNorm, or a BatchNorm-like module (an `epsilon` attribute and
  'batch_stats' {'mean', 'var'} of its own, e.g. jaxseg.models.layers.BatchNorm)."""
  if isinstance(module, nn.BatchNorm):
    return True
  if not hasattr(module, "epsilon"):
    return False
  stats = module.variables.get("batch_stats", {})
  return "mean" in stats and "var" in stats


def _is_bias_layer(name: str, module: nn.Module) -> bool:
  """Conv / BatchNorm modules with a bias: the FullGrad layers."""
  if isinstance(module, (nn.Conv, nn.ConvTranspose)):
    return bool(module.use_bias)
  return _is_batch_norm(module)


def _lookup(module: nn.Module, name: str, default: jax.Array) -> jax.Array:
  for collection in ("params", "batch_stats"):
    values = module.variables.get(collection, {})
    if name in values:
      return values[name]
  return default


def _effective_bias(module: nn.Module) -> jax.Array:
  """The bias a module adds to its output, [K] (eval-mode BatchNorm folded:
  beta - mean * gamma / sqrt(var + eps))."""
  if _is_batch_norm(module):
    stats = module.variables["batch_stats"]
    mean, var = stats["mean"], stats["var"]
    scale = _lookup(module, "scale", jnp.ones_like(mean))
    bias = _lookup(module, "bias", jnp.zeros_like(mean))
    return bias - mean * scale / jnp.sqrt(var + module.epsilon)
  return module.variables["params"]["bias"]


def bias_activations_and_gradients(
    apply_fn: ApplyFn, variables: Any, images: jax.Array, score_fn: Callable[[Any], jax.Array]
) -> Gradients:
  """FullGrad's inputs: every Conv / BatchNorm output with a bias.

  Returns output gradients, the effective biases (BatchNorm in eval mode:
  beta - mean * gamma / sqrt(var + eps)) and the input gradient.
  """
  result = _activations_and_gradients(
      apply_fn,
      variables,
      images,
      _is_bias_layer,
      None,
      score_fn,
      input_gradient=True,
      record_bias=True,
  )
  if not result.gradients:
    raise ValueError("FullGrad found no nn.Conv / nn.BatchNorm module with a bias in the " "model.")
  return result
