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
    `4 * out_channels` pixels (N*Ho*Wo), i.e. when the im2col buffer is at most 4x the kernel, otherwise
    XLA's op forward and for the input gradient, with the kernel gradient as one GEMM per kernel tap
    (`xla_conv_gemm_weight_grad`: XLA's own kernel gradient runs 2-4x slower on CPU). Smaller kernels keep
    the op: either way costs microseconds there, and the op compiles faster (the unit tests' tiny networks).
Two more CPU-only rewrites live here because they answer the same XLA:CPU costs: `dilated_conv_sum`
(DeepLab-v2's ASPP classifier as one GEMM plus shifted adds) and `fusion_boundary` (stops XLA:CPU from
recomputing residual chains inside fusions).
Results agree with `lax.conv_general_dilated` to fp32 rounding (tests/test_conv_lowering.py); the choice
never changes parameters, shapes or the experiment, so it is not a config key. `with conv_lowering("xla"):`
(or "matmul") forces one lowering while tracing, e.g. for the side-by-side benchmark ("xla" also turns
the two rewrites off). Traces are cached per function: set the lowering before the first trace.

The convolution *algorithm* is another matter: `with conv_algorithm("winograd"):` computes the 3x3,
stride-1 "same" convolutions by Winograd's F(2x2, 3x3) (jaxseg/models/winograd.py), which rounds
differently (~1e-6 relative), so it is a config key (`train.conv_algorithm`, read by the train step) and
"direct" by default. `conv_lowering("xla")` turns it off too (XLA's own ops, the FLOP count's program).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator, Sequence

import chex
import jax
import jax.numpy as jnp
from jax import lax

from jaxseg.models import winograd

LOWERINGS = ("auto", "xla", "matmul")
# The im2col buffer of a k x k convolution may be this many times its kernel before "auto" keeps XLA's op.
IM2COL_KERNEL_RATIO = 4
# Kernels smaller than this (elements) keep XLA's op under "auto".
MATMUL_MIN_KERNEL = 1 << 17

_lowering = contextvars.ContextVar("jaxseg_conv_lowering", default="auto")
ALGORITHMS = ("direct", "winograd")
_algorithm = contextvars.ContextVar("jaxseg_conv_algorithm", default="direct")
_NHWC = ("NHWC", "HWIO", "NHWC")


@contextlib.contextmanager
def _setting(
    var: contextvars.ContextVar, value: str, allowed: tuple[str, ...], what: str
) -> Iterator[None]:
  """`var` = `value` (one of `allowed`, else a ValueError naming `what`) within the block."""
  if value not in allowed:
    raise ValueError(f"{what} must be one of {allowed}, got {value!r}")
  token = var.set(value)
  try:
    yield
  finally:
    var.reset(token)


def conv_lowering(mode: str) -> contextlib.AbstractContextManager[None]:
  """Within the block, convolutions traced by `conv_general_dilated` use `mode` ('auto'|'xla'|'matmul')."""
  return _setting(_lowering, mode, LOWERINGS, "conv lowering")


def conv_algorithm(name: str) -> contextlib.AbstractContextManager[None]:
  """Within the block, convolutions traced by `conv_general_dilated` use algorithm `name`: 'direct', or
  'winograd' for those `winograd.supports` (3x3, stride 1, padding 1, even maps), the rest direct.
  """
  return _setting(_algorithm, name, ALGORITHMS, "conv algorithm")


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
  c = x.shape[-1]
  kh, kw = kernel.shape[:2]
  out_hw = _output_hw(x.shape[1:3], (kh, kw), strides, padding, dilation)
  columns = _shifted_windows(x, (kh, kw), strides, padding, dilation, out_hw)
  patches = columns[0] if len(columns) == 1 else jnp.concatenate(columns, axis=-1)
  out_dtype = None
  if preferred_element_type is None and _accumulation_dtype(patches.dtype) is not None:
    # bf16/f16 operands: accumulate in f32, return bf16.
    preferred_element_type, out_dtype = jnp.float32, patches.dtype
  n, ho, wo, k = patches.shape
  y = _patch_gemm(
      patches.reshape(n * ho * wo, k),
      kernel.reshape(kh * kw * c, kernel.shape[-1]),
      precision,
      preferred_element_type,
  ).reshape(n, ho, wo, -1)
  return y if out_dtype is None else y.astype(out_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _patch_gemm(patches, kernel, precision, preferred_element_type):
  """patches [P, K] @ kernel [K, O] -> [P, O], with the kernel gradient's operand order chosen.

  The kernel gradient patches^T @ dy contracts over the P pixels, and XLA:CPU (after folding the
  transposes into the dot) copies the right-hand operand of such a GEMM into a transposed [cols, P]
  layout, inside the fusion that produces it: a strided write of a whole activation-sized map. Autodiff
  makes dy that operand; when dy has more columns than the patches (O > K, e.g. a bottleneck's
  256 -> 1024 conv3 or its projection shortcut) the patches are made the right-hand operand instead,
  (dy^T @ patches)^T, so the smaller map is the one copied (AdvEnt step at 640 px: 16.1 -> 14.3 s).
  """
  return _gemm(patches, kernel, precision, preferred_element_type)


def _gemm(a, b, precision, preferred_element_type):
  return lax.dot_general(
      a,
      b,
      (((1,), (0,)), ((), ())),
      precision=precision,
      preferred_element_type=preferred_element_type,
  )


def _patch_gemm_fwd(patches, kernel, precision, preferred_element_type):
  return _gemm(patches, kernel, precision, preferred_element_type), (patches, kernel)


def _patch_gemm_bwd(precision, preferred_element_type, residuals, dy):
  patches, kernel = residuals
  accumulate = _accumulation_dtype(patches.dtype)
  dy = dy.astype(patches.dtype)
  dpatches = lax.dot_general(
      dy, kernel, (((1,), (1,)), ((), ())), precision=precision, preferred_element_type=accumulate
  ).astype(patches.dtype)
  if kernel.shape[1] > kernel.shape[0]:
    dkernel = _gemm(dy.T, patches, precision, accumulate).T
  else:
    dkernel = _gemm(patches.T, dy, precision, accumulate)
  return dpatches, dkernel.astype(kernel.dtype)


_patch_gemm.defvjp(_patch_gemm_fwd, _patch_gemm_bwd)


def _accumulation_dtype(dtype):
  """f32 for bf16/f16 operands (XLA:CPU's low-precision GEMMs are faster accumulating in f32 too), else None."""
  return jnp.float32 if jnp.finfo(dtype).bits < 32 else None


def _use_matmul(out_pixels: int, kernel_shape: Sequence[int]) -> bool:
  if _lowering.get() == "matmul":
    return True
  if uses_xla_convolutions():
    return False
  kh, kw, in_channels, out_channels = kernel_shape
  if kh * kw * in_channels * out_channels < MATMUL_MIN_KERNEL:
    return False
  return (kh == 1 and kw == 1) or out_pixels <= IM2COL_KERNEL_RATIO * out_channels


def _use_gemm_weight_grad(kernel_shape: Sequence[int]) -> bool:
  """Under "auto" on CPU: XLA's op forward, GEMM weight gradient (k x k kernels of MATMUL_MIN_KERNEL+)."""
  if _lowering.get() != "auto" or uses_xla_convolutions():
    return False
  kh, kw, in_channels, out_channels = kernel_shape
  return kh * kw * in_channels * out_channels >= MATMUL_MIN_KERNEL


def _shifted_windows(x, kernel_hw, strides, padding, dilation, out_hw):
  """The kh*kw strided windows of zero-padded x [N, H, W, C] that meet each kernel tap, each [N, Ho, Wo, C]."""
  n, _, _, c = x.shape
  (pt, pb), (pl, pr) = padding
  if pt or pb or pl or pr:
    x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  (ho, wo), (sh, sw), (dh, dw) = out_hw, strides, dilation
  return [
      lax.slice(
          x,
          (0, a * dh, b * dw, 0),
          (n, a * dh + (ho - 1) * sh + 1, b * dw + (wo - 1) * sw + 1, c),
          (1, sh, sw, 1),
      )
      for a in range(kernel_hw[0])
      for b in range(kernel_hw[1])
  ]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def xla_conv_gemm_weight_grad(
    x, kernel, strides, padding, dilation, precision, preferred_element_type
):
  """XLA's convolution op, with the weight gradient as one GEMM per kernel tap.

  x [N, H, W, C], kernel [kh, kw, C, O] (HWIO) -> [N, Ho, Wo, O]; padding explicit. The values and the
  input gradient are XLA's own (its forward op and its transposed convolution); only the kernel gradient
  differs in how it is computed: dk[a, b] = window(a, b)^T @ dy over the N*Ho*Wo pixels. XLA's CPU backend
  computes that gradient as a convolution with batch and feature swapped, which moves both operands into
  batch-last layouts and runs 3-4x slower than these GEMMs (DeepLab-v2's dilated layer3/4 convolutions:
  102 vs 52 ms for a 46x81x256 map), while the forward op and the input gradient run at GEMM speed.
  """
  return _xla_conv(x, kernel, strides, padding, dilation, precision, preferred_element_type)


def _xla_conv(x, kernel, strides, padding, dilation, precision, preferred_element_type):
  return lax.conv_general_dilated(
      x,
      kernel,
      strides,
      padding,
      rhs_dilation=dilation,
      dimension_numbers=_NHWC,
      precision=precision,
      preferred_element_type=preferred_element_type,
  )


def _gemm_weight_grad_fwd(x, kernel, strides, padding, dilation, precision, preferred_element_type):
  y = _xla_conv(x, kernel, strides, padding, dilation, precision, preferred_element_type)
  return y, (x, kernel)


def _gemm_weight_grad_bwd(
    strides, padding, dilation, precision, preferred_element_type, residuals, dy
):
  x, kernel = residuals
  _, input_vjp = jax.vjp(
      lambda x: _xla_conv(x, kernel, strides, padding, dilation, precision, preferred_element_type),
      x,
  )
  (dx,) = input_vjp(dy)
  kh, kw, c, o = kernel.shape
  # A data dependency on dy (x + 0 * dy[0]): without it XLA:CPU's scheduler computes the padded copy and
  # the kh*kw windows of every layer as soon as the forward pass has x, and keeps them all alive until
  # the backward pass reaches that layer (+1.5 GiB on DeepLab-v2 at 640 px).
  x = x + jnp.zeros((), x.dtype) * dy.reshape(-1)[0].astype(x.dtype)
  windows = _shifted_windows(x, (kh, kw), strides, padding, dilation, dy.shape[1:3])
  dy_rows = dy.reshape(-1, o).astype(x.dtype)
  accumulate = _accumulation_dtype(x.dtype)
  taps = [
      lax.dot_general(
          window.reshape(-1, c),
          dy_rows,
          (((0,), (0,)), ((), ())),
          precision=precision,
          preferred_element_type=accumulate,
      )
      for window in windows
  ]
  dk = jnp.stack(taps).reshape(kh, kw, c, o).astype(kernel.dtype)
  return dx, dk


xla_conv_gemm_weight_grad.defvjp(_gemm_weight_grad_fwd, _gemm_weight_grad_bwd)


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
  if plain:
    pads = _explicit_padding(padding, lhs.shape[1:3], rhs.shape[:2], window_strides, dilation)
    if (
        _algorithm.get() == "winograd"
        and _lowering.get() != "xla"
        and preferred_element_type is None
        and winograd.supports(lhs.shape, rhs.shape, window_strides, pads, dilation)
    ):
      return winograd.conv3x3(lhs, rhs, precision)
  if plain and not uses_xla_convolutions():
    if all(p >= 0 for pair in pads for p in pair):
      ho, wo = _output_hw(lhs.shape[1:3], rhs.shape[:2], window_strides, pads, dilation)
      if _use_matmul(lhs.shape[0] * ho * wo, rhs.shape):
        return im2col_conv(
            lhs, rhs, window_strides, pads, dilation, precision, preferred_element_type
        )
      if _use_gemm_weight_grad(rhs.shape):
        return xla_conv_gemm_weight_grad(
            lhs, rhs, tuple(window_strides), pads, dilation, precision, preferred_element_type
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


def fusion_boundary(x: jax.Array) -> jax.Array:
  """x unchanged (values and gradients), but XLA's CPU fusion cannot recompute it inside its consumers.

  XLA's CPU instruction fusion duplicates cheap elementwise producers into every consumer, and it removes
  `optimization_barrier`s before fusing. In a residual stack (out = relu(bn(conv(x)) + x)) that chains: the
  fusion computing block k's output re-derives blocks 1..k-1 from their convolution outputs instead of
  reading the materialised input, so the elementwise work grows with the square of the depth (DeepLab-v2's
  23-block layer3: 23 fusions reading 4..48 maps each, ~13x the memory traffic, forward and backward).
  A conditional is never fused through, so its output is read, not recomputed; the cotangent passes
  through one too (the gradient chain has the same shape). CPU only, under "auto"/"matmul": on
  accelerators (a conditional would cost a device-to-host read there) and with "xla" (the side-by-side
  baseline) x is returned as is.
  """
  if not _use_fusion_boundary():
    return x
  return _boundary(x)


def relu_fusion_boundary(x: jax.Array) -> jax.Array:
  """`fusion_boundary(relu(x))` that keeps only its output for the backward pass.

  Autodiff of the composition would keep both relu's input and the boundary's output (two copies of every
  residual block's output); the relu mask is read from the output instead (out > 0 iff x > 0).
  """
  if not _use_fusion_boundary():
    return jax.nn.relu(x)
  return _relu_boundary(x)


def _use_fusion_boundary() -> bool:
  return not uses_xla_convolutions() and jax.default_backend() == "cpu"


def _materialise(x: jax.Array) -> jax.Array:
  # The predicate is true for every input (nothing compares below -inf, NaN included) but is not a
  # constant XLA can fold, and the branches differ, so the conditional stays; the false one never runs.
  always = jnp.logical_not(x.reshape(-1)[0] < -jnp.inf)
  return lax.cond(always, lambda v: v, jnp.zeros_like, x)


@jax.custom_vjp
def _boundary(x):
  return _materialise(x)


_boundary.defvjp(lambda x: (_materialise(x), None), lambda _, g: (_materialise(g),))


@jax.custom_vjp
def _relu_boundary(x):
  return _materialise(jnp.maximum(x, 0))


def _relu_boundary_fwd(x):
  out = _materialise(jnp.maximum(x, 0))
  return out, out


def _relu_boundary_bwd(out, g):
  return (_materialise(jnp.where(out > 0, g, jnp.zeros_like(g))),)


_relu_boundary.defvjp(_relu_boundary_fwd, _relu_boundary_bwd)


def dilated_conv_sum(
    x: jax.Array,
    kernels: Sequence[jax.Array],
    biases: Sequence[jax.Array],
    dilations: Sequence[int],
) -> jax.Array:
  """sum_i (3x3 conv of x with kernels[i], dilation = padding = dilations[i]) + biases[i].

  x [N, H, W, C]; kernels[i] [3, 3, C, O] (HWIO); biases[i] [O] -> [N, H, W, O] (DeepLab-v2's ASPP
  classifier). Under "auto"/"matmul" on CPU it is one GEMM then shifted adds: Z = x @ [every tap of every
  kernel] ([C, 9 * len(kernels) * O]) and out[i, j] = sum over taps of Z_tap[i + da, j + db] (zero
  outside the map). Same sums as the convolutions (fp32 rounding aside), but the GEMM has 9 * 4 * O
  output columns instead of O, so it runs at GEMM speed where a 2048 -> 19 convolution does not, no
  padded copy of the 2048-channel input is made, and taps that fall off the map cost nothing. Its
  gradients are XLA's own (autodiff of the dot, pad and slices). Elsewhere: the convolutions themselves.
  """
  chex.assert_rank(x, 4)
  if len(kernels) != len(biases) or len(kernels) != len(dilations):
    raise ValueError(f"{len(kernels)} kernels, {len(biases)} biases, {len(dilations)} dilations")
  if uses_xla_convolutions():
    out = None
    for kernel, bias, d in zip(kernels, biases, dilations):
      y = _xla_conv(x, kernel, (1, 1), ((d, d), (d, d)), (d, d), None, None) + bias
      out = y if out is None else out + y
    return out
  n, h, w, c = x.shape
  kh, kw, _, o = kernels[0].shape
  # [C, (branch, a, b, O)]: every tap's [C, O] slice side by side.
  taps = jnp.concatenate([k.transpose(2, 0, 1, 3).reshape(c, kh * kw * o) for k in kernels], axis=1)
  accumulate = _accumulation_dtype(x.dtype)
  z = lax.dot_general(
      x.reshape(n * h * w, c), taps, (((1,), (0,)), ((), ())), preferred_element_type=accumulate
  ).reshape(n, h, w, -1)
  reach = max(max(kh // 2, kw // 2) * d for d in dilations)
  z = jnp.pad(z, ((0, 0), (reach, reach), (reach, reach), (0, 0)))
  out = sum(bias.astype(z.dtype) for bias in biases)
  column = 0
  for d in dilations:
    for a in range(kh):
      for b in range(kw):
        top, left = reach + (a - kh // 2) * d, reach + (b - kw // 2) * d
        out = out + lax.slice(z, (0, top, left, column), (n, top + h, left + w, column + o))
        column += o
  return out.astype(x.dtype)
