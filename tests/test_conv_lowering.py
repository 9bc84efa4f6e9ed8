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
