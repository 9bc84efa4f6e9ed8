"""Small CNNs for the CLI's --demo mode and the parity tests.

Both match the networks of the pytorch-grad-cam golden set
(shared/golden/cam/README.md): a trunk of four Conv3x3(+bias) -> BatchNorm
-> ReLU blocks (the second with stride 2), then either GAP + Dense
(`SmallCNN`, classification logits [B, K]) or a 1x1 conv head upsampled
bilinearly to the input size (`SmallFCN`, segmentation logits [B, H, W, K]).
Layer names for CAMs: "block1".."block4" (ReLU outputs), "blockN/conv",
"blockN/bn".
"""

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.cam.postprocess import resize_bilinear

TRUNK = (("block1", 16, 1), ("block2", 32, 2), ("block3", 32, 1), ("block4", 32, 1))


class ConvBNReLU(nn.Module):
  """Conv 3x3 (padding 1, bias) -> BatchNorm (eval) -> ReLU, NHWC."""

  features: int
  strides: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.features, (3, 3), strides=self.strides, padding=((1, 1), (1, 1)), name="conv")(
        x
    )
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-5, name="bn")(x)
    return nn.relu(x)


class SmallCNN(nn.Module):
  """images [B, H, W, 3] -> logits [B, num_classes] (GAP + Dense 'fc')."""

  num_classes: int = 10

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for name, features, strides in TRUNK:
      x = ConvBNReLU(features, strides, name=name)(x)
    return nn.Dense(self.num_classes, name="fc")(jnp.mean(x, axis=(1, 2)))


class SmallFCN(nn.Module):
  """images [B, H, W, 3] -> logits [B, H, W, num_classes] (1x1 conv 'head')."""

  num_classes: int = 5

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    size = x.shape[1:3]
    for name, features, strides in TRUNK:
      x = ConvBNReLU(features, strides, name=name)(x)
    x = nn.Conv(self.num_classes, (1, 1), name="head")(x)
    # Bilinear, half-pixel centres (torch F.interpolate, align_corners=False).
    return resize_bilinear(x, size)


def variables_from_torch(state_dict: Mapping[str, np.ndarray]) -> dict:
  """Torch state dict of the golden CNN/FCN -> Flax variables.

  Conv weights OIHW -> HWIO, Linear [out, in] -> Dense kernel [in, out],
  BatchNorm weight/bias/running_mean/running_var -> scale/bias/mean/var.
  Torch names: "blockN.0.*" (conv), "blockN.1.*" (BN), "fc.*", "head.*".
  """
  params, stats = {}, {}
  for key, value in state_dict.items():
    value = np.asarray(value, np.float32)
    module, _, leaf = key.rpartition(".")
    if leaf == "num_batches_tracked":
      continue
    if module in ("fc", "head"):
      if leaf == "weight":
        value = value.T if value.ndim == 2 else np.transpose(value, (2, 3, 1, 0))
        leaf = "kernel"
      params.setdefault(module, {})[leaf] = value
      continue
    block, _, index = module.partition(".")
    if index == "0":
      name = {"weight": "kernel", "bias": "bias"}[leaf]
      if name == "kernel":
        value = np.transpose(value, (2, 3, 1, 0))
      params.setdefault(block, {}).setdefault("conv", {})[name] = value
    elif index == "1":
      collection, name = {
          "weight": (params, "scale"),
          "bias": (params, "bias"),
          "running_mean": (stats, "mean"),
          "running_var": (stats, "var"),
      }[leaf]
      collection.setdefault(block, {}).setdefault("bn", {})[name] = value
    else:
      raise ValueError(f"unexpected torch state-dict key {key!r}.")
  return {"params": params, "batch_stats": stats}


def random_variables(model: nn.Module, seed: int = 0, size: int = 32) -> dict:
  """Random variables for `model` drawn in numpy (no init compilation).

  Kernels N(0, 1 / fan_in) (fan_in = all but the last axis, HWIO / [in, out]),
  biases 0.1 N(0, 1), BatchNorm scale 1 + 0.1 N(0, 1), mean 0.1 N(0, 1),
  var U(0.5, 1.5).
  """
  shapes = jax.eval_shape(
      model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  )
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name, shape = path[-1].key, leaf.shape
    if name == "kernel":
      values = rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))
    elif name == "scale":
      values = 1 + 0.1 * rng.standard_normal(shape)
    elif name == "var":
      values = rng.uniform(0.5, 1.5, shape)
    else:  # bias, mean
      values = 0.1 * rng.standard_normal(shape)
    return jnp.asarray(values, leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, dict(shapes))
