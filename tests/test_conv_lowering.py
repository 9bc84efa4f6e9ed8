"""Convolution lowering (jaxseg.models.conv_lowering): im2col + matmul equals XLA's convolution op, values and
gradients, for the shapes the backbones use; the "auto" policy picks what its docstring says."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import conv_lowering
from jaxseg.models.layers import conv2d

DN = ("NHWC", "HWIO", "NHWC")

CASES = [  # (kernel, stride, dilation, padding, in, out, H, W): every kind the backbones build
    (3, 1, 1, 1, 8, 16, 9, 11),
    (3, 2, 1, 1, 8, 16, 9, 12),  # strided, odd/even sizes
    (3, 1, 2, 2, 8, 8, 7, 7),  # ResNet-38 b5
    (3, 1, 4, 4, 8, 16, 5, 6),  # b6/b7: dilation larger than the map
    (3, 1, 12, 12, 4, 5, 6, 7),  # DeepLab-v2 ASPP branch, padding = dilation
    (1, 1, 1, 0, 8, 32, 6, 6),
    (1, 2, 1, 0, 8, 16, 7, 9),  # strided 1x1 shortcut
    (7, 2, 1, 3, 3, 8, 17, 15),  # ResNet stem
]


@pytest.mark.parametrize("k,s,d,p,cin,cout,h,w", CASES)
def test_matmul_lowering_matches_xla_conv(k, s, d, p, cin, cout, h, w):
  kx, kw_, kd = jax.random.split(jax.random.key(k * 100 + s * 10 + d), 3)
  x = jax.random.normal(kx, (2, h, w, cin))
  kernel = jax.random.normal(kw_, (k, k, cin, cout)) / np.sqrt(k * k * cin)
  args = ((s, s), ((p, p), (p, p)))

  def reference(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, *args, rhs_dilation=(d, d), dimension_numbers=DN)

  def matmul(x, kernel):
    return conv_lowering.im2col_conv(x, kernel, (s, s), ((p, p), (p, p)), (d, d))

  ref, out = reference(x, kernel), matmul(x, kernel)
  assert out.shape == ref.shape
  np.testing.assert_allclose(out, ref, atol=2e-5, rtol=1e-5)
  cot = jax.random.normal(kd, ref.shape)
  grads_ref = jax.vjp(reference, x, kernel)[1](cot)
  grads = jax.vjp(matmul, x, kernel)[1](cot)
  for g, r in zip(grads, grads_ref):
    np.testing.assert_allclose(g, r, atol=1e-4, rtol=1e-5)


def test_bf16_accumulates_in_f32_and_returns_bf16():
  x = jax.random.normal(jax.random.key(0), (1, 6, 6, 64))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 64, 8)) / 24.0
  pads = ((1, 1), (1, 1))
  out = conv_lowering.im2col_conv(
      x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16), (1, 1), pads, (1, 1)
  )
  assert out.dtype == jnp.bfloat16
  exact = conv_lowering.im2col_conv(
      x.astype(jnp.bfloat16).astype(jnp.float32),
      kernel.astype(jnp.bfloat16).astype(jnp.float32),
      (1, 1),
      pads,
      (1, 1),
  )
  # Only the final rounding to bf16 remains (f32 accumulation): within one bf16 ulp.
  np.testing.assert_allclose(out.astype(jnp.float32), exact, rtol=2**-8, atol=1e-6)


def _lowered_ops(module, x, mode):
  variables = module.init(jax.random.key(0), x)
  with conv_lowering.conv_lowering(mode):
    hlo = jax.jit(module.apply).lower(variables, x).as_text()
  return hlo.count("stablehlo.convolution"), hlo.count("stablehlo.dot_general")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the auto policy is CPU-specific")
def test_auto_policy_on_cpu():
  small = jnp.zeros((1, 4, 4, 128))  # 16 output pixels <= 4 * 128 channels -> matmul
  large = jnp.zeros((1, 24, 24, 128))  # 576 pixels > 512 -> XLA's convolution
  conv3 = conv2d(128, 3)  # 147456 kernel elements >= MATMUL_MIN_KERNEL
  assert _lowered_ops(conv3, small, "auto") == (0, 1)
  assert _lowered_ops(conv3, large, "auto") == (1, 0)
  assert _lowered_ops(conv2d(1024, 1), large, "auto") == (0, 1)  # big 1x1: always a matmul
  assert _lowered_ops(conv2d(16, 3), small, "auto") == (1, 0)  # small kernel: XLA's op
  assert _lowered_ops(conv3, small, "xla") == (1, 0)
  assert _lowered_ops(conv2d(16, 3), large, "matmul") == (0, 1)


def test_unsupported_layouts_fall_back_to_xla():
  grouped = nn.Conv(
      8, (3, 3), feature_group_count=2, conv_general_dilated=conv_lowering.conv_general_dilated
  )
  x = jnp.ones((1, 4, 4, 8))
  assert _lowered_ops(grouped, x, "matmul") == (1, 0)
  with pytest.raises(ValueError, match="conv lowering must be one of"):
    with conv_lowering.conv_lowering("cudnn"):
      pass


def test_conv2d_module_same_output_either_way():
  module = conv2d(12, 3, stride=2, dilation=1, use_bias=True)
  x = jax.random.normal(jax.random.key(3), (2, 10, 10, 5))
  variables = module.init(jax.random.key(0), x)
  with conv_lowering.conv_lowering("xla"):
    ref = module.apply(variables, x)
  with conv_lowering.conv_lowering("matmul"):
    out = module.apply(variables, x)
  np.testing.assert_allclose(out, ref, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("k,s,d,p,cin,cout,h,w", CASES)
def test_gemm_weight_gradient_matches_xla_conv(k, s, d, p, cin, cout, h, w):
  """XLA's op with the per-tap GEMM kernel gradient: same values, input and kernel gradients."""
  kx, kw_, kd = jax.random.split(jax.random.key(k * 100 + s * 10 + d + 7), 3)
  x = jax.random.normal(kx, (2, h, w, cin))
  kernel = jax.random.normal(kw_, (k, k, cin, cout)) / np.sqrt(k * k * cin)
  pads = ((p, p), (p, p))

  def reference(x, kernel):
    return jax.lax.conv_general_dilated(
        x, kernel, (s, s), pads, rhs_dilation=(d, d), dimension_numbers=DN
    )

  def gemm(x, kernel):
    return conv_lowering.xla_conv_gemm_weight_grad(x, kernel, (s, s), pads, (d, d), None, None)

  ref, out = reference(x, kernel), gemm(x, kernel)
  np.testing.assert_array_equal(out, ref)  # the forward is XLA's op itself
  cot = jax.random.normal(kd, ref.shape)
  grads_ref = jax.vjp(reference, x, kernel)[1](cot)
  grads = jax.vjp(gemm, x, kernel)[1](cot)
  for g, r in zip(grads, grads_ref):
    assert g.shape == r.shape and g.dtype == r.dtype
    np.testing.assert_allclose(g, r, atol=1e-4, rtol=1e-5)


def test_gemm_weight_gradient_in_bf16_returns_bf16_close_to_f32():
  x = jax.random.normal(jax.random.key(0), (1, 12, 12, 64))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 64, 32)) / 24.0
  cot = jax.random.normal(jax.random.key(2), (1, 12, 12, 32))
  pads = ((2, 2), (2, 2))
  grads = {}
  for dtype in (jnp.bfloat16, jnp.float32):
    f = lambda x, k: conv_lowering.xla_conv_gemm_weight_grad(x, k, (1, 1), pads, (2, 2), None, None)  # noqa: E731
    args = (x.astype(jnp.bfloat16).astype(dtype), kernel.astype(jnp.bfloat16).astype(dtype))
    grads[dtype] = jax.vjp(f, *args)[1](cot.astype(jnp.bfloat16).astype(dtype))[1]
  assert grads[jnp.bfloat16].dtype == jnp.bfloat16
  # Same bf16-exact operands, f32 accumulation over 144 pixels: only the final rounding to bf16 remains.
  np.testing.assert_allclose(
      grads[jnp.bfloat16].astype(jnp.float32), grads[jnp.float32], rtol=2**-8, atol=1e-5
  )


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the auto policy is CPU-specific")
def test_auto_policy_takes_the_gemm_weight_gradient_for_large_maps():
  large = jnp.zeros((1, 24, 24, 128))  # 576 pixels > 4 * 128: XLA's op forward
  conv3 = conv2d(128, 3)
  variables = conv3.init(jax.random.key(0), large)

  def grad():  # a new jit each time: the lowering is read while tracing, and traces are cached
    return jax.jit(jax.grad(lambda v, x: jnp.sum(conv3.apply(v, x) ** 2), argnums=(0, 1)))

  hlo = grad().lower(variables, large).as_text()
  # Forward and input gradient: convolutions; kernel gradient: one GEMM per tap (9).
  assert hlo.count("stablehlo.convolution") == 2
  assert hlo.count("stablehlo.dot_general") == 9
  with conv_lowering.conv_lowering("xla"):
    hlo = grad().lower(variables, large).as_text()
  assert hlo.count("stablehlo.convolution") == 3 and hlo.count("stablehlo.dot_general") == 0


@pytest.mark.parametrize("mode", ["auto", "xla"])
@pytest.mark.parametrize("h,w", [(9, 11), (5, 30)])  # (5, 30): dilations 12-24 leave the map
def test_dilated_conv_sum_matches_the_sum_of_convolutions(mode, h, w):
  dilations = (6, 12, 18, 24)
  keys = jax.random.split(jax.random.key(h * w), 10)
  x = jax.random.normal(keys[0], (2, h, w, 16))
  kernels = [jax.random.normal(keys[1 + i], (3, 3, 16, 5)) / 12.0 for i in range(4)]
  biases = [jax.random.normal(keys[5 + i], (5,)) for i in range(4)]

  def reference(x, kernels, biases):
    out = 0.0
    for kernel, bias, d in zip(kernels, biases, dilations):
      out = out + (
          jax.lax.conv_general_dilated(
              x, kernel, (1, 1), ((d, d), (d, d)), rhs_dilation=(d, d), dimension_numbers=DN
          )
          + bias
      )
    return out

  def summed(x, kernels, biases):
    with conv_lowering.conv_lowering(mode):
      return conv_lowering.dilated_conv_sum(x, kernels, biases, dilations)

  ref, out = reference(x, kernels, biases), summed(x, kernels, biases)
  assert out.shape == ref.shape == (2, h, w, 5)
  np.testing.assert_allclose(out, ref, atol=2e-5, rtol=1e-5)
  cot = jax.random.normal(keys[9], ref.shape)
  grads_ref = jax.vjp(reference, x, kernels, biases)[1](cot)
  grads = jax.vjp(summed, x, kernels, biases)[1](cot)
  for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref)):
    np.testing.assert_allclose(g, r, atol=1e-4, rtol=1e-5)


def _residual_stack(x, weights):
  for w1, w2 in weights:
    y = jax.nn.relu(x @ w1) @ w2
    y = (y - y.mean(0)) * jax.lax.rsqrt(y.var(0) + 1e-5)
    x = conv_lowering.fusion_boundary(jax.nn.relu(y + x))
  return x.sum()


def _largest_fusion_arity(hlo: str) -> int:
  arity = [
      len(line.split(" fusion(")[1].split("), kind=")[0].split(", "))
      for line in hlo.splitlines()
      if " fusion(" in line
  ]
  return max(arity)


def test_fusion_boundary_is_the_identity_and_stops_recomputed_residual_chains():
  x = jax.random.normal(jax.random.key(0), (64, 32))
  weights = [
      (
          jax.random.normal(jax.random.key(2 * i + 1), (32, 8)) / 6,
          jax.random.normal(jax.random.key(2 * i + 2), (8, 32)) / 3,
      )
      for i in range(12)
  ]
  for value in (x, jnp.full((3,), jnp.nan), jnp.array([-jnp.inf, 2.0])):
    np.testing.assert_array_equal(conv_lowering.fusion_boundary(value), value)

  def grad():  # a new function each time: the lowering is read while tracing, and traces are cached
    return jax.grad(lambda x, w: _residual_stack(x, w), argnums=(0, 1))

  with conv_lowering.conv_lowering("xla"):  # the boundary is off: the plain stack
    plain = grad()(x, weights)
    plain_hlo = jax.jit(grad()).lower(x, weights).compile().as_text()
  bounded = grad()(x, weights)
  bounded_hlo = jax.jit(grad()).lower(x, weights).compile().as_text()
  # One per block forward and (nearly) one per block backward.
  assert bounded_hlo.count(" conditional(") >= len(weights) and " conditional(" not in plain_hlo
  for a, b in zip(jax.tree.leaves(bounded), jax.tree.leaves(plain)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  if jax.default_backend() == "cpu":
    # Without the boundary XLA:CPU fuses block k's output from all k blocks' inputs (arity grows with
    # depth, ~3 per block); with it every fusion stays local.
    assert _largest_fusion_arity(plain_hlo) > 24
    assert _largest_fusion_arity(bounded_hlo) <= 12
