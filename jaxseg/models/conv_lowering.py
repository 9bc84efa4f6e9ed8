"""How a 2-D convolution is lowered: XLA's convolution op, or im2col + one matrix multiply.

Same arithmetic, different kernels. On XLA's CPU backend the convolution op is slow where the weights are
large and the feature map small (ResNet-38's b5-b7, DeepLab-v2's layer3/4, every 1x1 conv): its backward
pass copies each kernel into a transposed layout (the input gradient wants HWOI) and each activation into a
batch-last layout (the weight gradient), and those copies cost more than the arithmetic. A matrix multiply
has no such copies — its transposes are GEMM flags — and runs 2-3.6x faster there, end to end ~1.2x on the
SEAM step (numbers in docs/benchmarks.md). Where the feature map is large the im2col buffer (k*k times the
input) costs more than the copies, so the convolution op stays.

Policy (`conv_lowering()`; the default "auto"):
  * accelerators (GPU / TPU): XLA's convolution op, always (cuDNN / the MXU handle it; XLA already turns
    1x1 convolutions into GEMMs there).
  * CPU, kernels of at least `MATMUL_MIN_KERNEL` (2^17) elements: 1x1 convolutions -> matmul always (no
    im2col copy at all); k x k convolutions -> im2col + matmul when the output has at most
    `4 * out_channels` pixels (N*Ho*Wo), i.e. when the im2col buffer is at most 4x the kernel, otherwise the
    convolution op. Smaller kernels keep the op: either way costs microseconds there, and the op compiles
    faster (the unit tests' tiny networks).
Results agree with `lax.conv_general_dilated` to fp32 rounding (tests/test_conv_lowering.py); the choice
never changes parameters, shapes or the experiment, so it is not a config key. `with conv_lowering("xla"):`
(or "matmul") forces one lowering while tracing, e.g. for the side-by-side benchmark.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
from jax import lax

LOWERINGS = ("auto", "xla", "matmul")
# The im2col buffer of a k x k convolution may be this many times its kernel before "auto" keeps XLA's op.
IM2COL_KERNEL_RATIO = 4
# Kernels smaller than this (elements) keep XLA's op under "auto".
MATMUL_MIN_KERNEL = 1 << 17

_lowering = contextvars.ContextVar("jaxseg_conv_lowering", default="auto")
_NHWC = ("NHWC", "HWIO", "NHWC")


@contextlib.contextmanager
def conv_lowering(mode: str) -> Iterator[None]:
  """Within the block, convolutions traced by `conv_general_dilated` use `mode` ('auto'|'xla'|'matmul')."""
  if mode not in LOWERINGS:
    raise ValueError(f"conv lowering must be one of {LOWERINGS}, got {mode!r}")
  token = _lowering.set(mode)
  try:
    yield
  finally:
    _lowering.reset(token)


def uses_xla_convolutions() -> bool:
  """True when the current policy never takes the matmul path ('xla', or 'auto' off the CPU)."""
  mode = _lowering.get()
  return mode == "xla" or (mode == "auto" and jax.default_backend() != "cpu")


def _explicit_padding(padding, in_spatial, kernel_spatial, strides, dilation):
  if isinstance(padding, str):
    effective = [(k - 1) * d + 1 for k, d in zip(kernel_spatial, dilation)]
    return tuple(lax.padtype_to_pads(in_spatial, effective, strides, padding))
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def _output_hw(in_hw, kernel_hw, strides, padding, dilation) -> tuple[int, int]:
  """(Ho, Wo) of a convolution with explicit padding."""
  return tuple(
      (size + lo + hi - d * (k - 1) - 1) // st + 1
      for size, k, st, (lo, hi), d in zip(in_hw, kernel_hw, strides, padding, dilation)
  )


def im2col_conv(
    x: jax.Array,
    kernel: jax.Array,
    strides: Sequence[int],
    padding: Sequence[tuple[int, int]],
    dilation: Sequence[int],
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
  """Convolution as one matmul: x [N, H, W, C], kernel [kh, kw, C, O] (HWIO) -> [N, Ho, Wo, O].

  Columns are ordered (kh, kw, C), the row-major order of the HWIO kernel, so the kernel reshapes to
  [kh*kw*C, O] without a copy. Padding is explicit ((top, bottom), (left, right)), zeros.
  """
  n, h, w, c = x.shape
  kh, kw = kernel.shape[:2]
  (pt, pb), (pl, pr) = padding
  sh, sw = strides
  dh, dw = dilation
  ho, wo = _output_hw((h, w), (kh, kw), strides, padding, dilation)
  if pt or pb or pl or pr:
    x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  columns = [
      lax.slice(
          x,
          (0, a * dh, b * dw, 0),
          (n, a * dh + (ho - 1) * sh + 1, b * dw + (wo - 1) * sw + 1, c),
          (1, sh, sw, 1),
      )
      for a in range(kh)
      for b in range(kw)
  ]
  patches = columns[0] if len(columns) == 1 else jnp.concatenate(columns, axis=-1)
  out_dtype = None
  if preferred_element_type is None and jnp.finfo(patches.dtype).bits < 32:
    # bf16/f16 operands: accumulate in f32 (XLA:CPU's bf16 GEMM is faster that way too), return bf16.
    preferred_element_type, out_dtype = jnp.float32, patches.dtype
  y = lax.dot_general(
      patches,
      kernel.reshape(kh * kw * c, kernel.shape[-1]),
      (((3,), (0,)), ((), ())),
      precision=precision,
      preferred_element_type=preferred_element_type,
  )
  return y if out_dtype is None else y.astype(out_dtype)


def _use_matmul(out_pixels: int, kernel_shape: Sequence[int]) -> bool:
  if _lowering.get() == "matmul":
    return True
  if uses_xla_convolutions():
    return False
  kh, kw, in_channels, out_channels = kernel_shape
  if kh * kw * in_channels * out_channels < MATMUL_MIN_KERNEL:
    return False
  return (kh == 1 and kw == 1) or out_pixels <= IM2COL_KERNEL_RATIO * out_channels


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    batch_group_count=1,
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
  """Drop-in `lax.conv_general_dilated` (the `nn.Conv(conv_general_dilated=...)` hook) with the policy above.

  Only NHWC / HWIO, ungrouped, undilated-input 2-D convolutions take the matmul path; anything else is
  passed to `lax.conv_general_dilated` unchanged.
  """
  dilation = tuple(rhs_dilation or (1, 1))
  plain = (
      lhs.ndim == 4
      and rhs.ndim == 4
      and feature_group_count == 1
      and batch_group_count == 1
      and all(d == 1 for d in (lhs_dilation or (1, 1)))
      and dimension_numbers is not None
      and (
          lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
          == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
      )
  )
  if plain and not uses_xla_convolutions():
    pads = _explicit_padding(padding, lhs.shape[1:3], rhs.shape[:2], window_strides, dilation)
    if all(p >= 0 for pair in pads for p in pair):
      ho, wo = _output_hw(lhs.shape[1:3], rhs.shape[:2], window_strides, pads, dilation)
      if _use_matmul(lhs.shape[0] * ho * wo, rhs.shape):
        return im2col_conv(
            lhs, rhs, window_strides, pads, dilation, precision, preferred_element_type
        )
  return lax.conv_general_dilated(
      lhs,
      rhs,
      window_strides,
      padding,
      lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      batch_group_count=batch_group_count,
      precision=precision,
      preferred_element_type=preferred_element_type,
  )
