"""sRGB -> CIE L*a*b* as OpenCV's `cvtColor(float32, COLOR_BGR2Lab)` computes it, and MAST's Lab input.

MAST (zlai0/MAST, `functional/feeder/dataset/YTVOSTrainLoader.py`, `DavisLoaderLab.py`) feeds the network
`cv2.cvtColor(bgr_float32 / 255, cv2.COLOR_BGR2Lab)` normalised with mean (50, 0, 0) and std (50, 127, 127).

What OpenCV really does for float input (modules/imgproc/src/color_lab.cpp, `RGB2Lab_f`): with the default
sRGB primaries and D65 white point (`useInterpolation` is true), it does NOT evaluate the Lab formula per
pixel. It looks the colour up in a 33x33x33 table of int16 Lab values and interpolates trilinearly with
fixed-point weights:

  1. clip B, G, R to [0, 1]; c = round_half_even(v * 2^14) (integers in [0, 16384]);
  2. cell t = c >> 9 (32 cells), fraction f = (c >> 5) & 15 (16 steps per cell);
  3. each table node holds round(2^14 L / 100), round(2^14 (a + 128) / 256), round(2^14 (b + 128) / 256) of
     the exact conversion at the node colour (k / 32 per channel; sRGB gamma, the sRGB->XYZ matrix scaled
     by the D65 white (0.950456, 1, 1.088754), cube root with the linear toe below (6/29)^3), computed by
     OpenCV in software float32 (`softfloat`);
  4. out = (sum_corners node * prod(f or 16 - f) + 2^11) >> 12;
  5. L = out_L * 100 / 2^14, a = out_a / 64 - 128, b = out_b / 64 - 128.

So OpenCV's float Lab is quantised to 1/164 of an L unit and carries the trilinear error of a 32-step
grid (up to ~0.1 L units against the formula). `rgb_to_lab(..., method="opencv")` (the default)
reproduces that path bit for bit: the table is rebuilt here in float32 with OpenCV's operation order and
its own cube root (a rational approximation whose float32 result is truncated, see `_cbrt_opencv_f32`);
the sRGB gamma uses numpy's double `pow` where OpenCV has its own double `exp(y log x)`, which could
only matter if a double result sat within an ulp of a float32 rounding boundary (it does not for the 33
node values used). `method="formula"` evaluates the formula directly
in float32 (differentiable, what OpenCV's non-interpolated path computes; it does not match cv2 output
to better than ~1e-2 in L).

Shapes: [..., 3], channels last. Inputs may be numpy or jax arrays; outputs are jax float32 arrays.
"""

from __future__ import annotations

import functools
import struct

import jax
import jax.numpy as jnp
import numpy as np

MAST_LAB_MEAN = (50.0, 0.0, 0.0)
MAST_LAB_STD = (50.0, 127.0, 127.0)

_LAB_BASE_SHIFT = 14  # inputs are rounded to multiples of 2^-14
_LUT_SHIFT = 5  # 2^5 = 32 cells per axis -> 33 nodes
_LUT_DIM = (1 << _LUT_SHIFT) + 1
_TRI_SHIFT = 8 - _LUT_SHIFT + 1  # 4: 16 fractional steps per cell
_TRI_BASE = 1 << _TRI_SHIFT


def _raw_f64(bits: int) -> float:
  return struct.unpack("<d", struct.pack("<Q", bits))[0]


# OpenCV's sRGB -> XYZ (D65) matrix and white point, as the exact doubles it stores (rows X, Y, Z; columns
# R, G, B): 0.412453 0.357580 0.180423 / 0.212671 0.715160 0.072169 / 0.019334 0.119193 0.950227.
_SRGB2XYZ = np.array(
    [
        _raw_f64(b)
        for b in (
            0x3FDA65A14488C60D,
            0x3FD6E297396D0918,
            0x3FC71819D2391D58,
            0x3FCB38CDA6E75FF6,
            0x3FE6E297396D0918,
            0x3FB279AAE6C8F755,
            0x3F93CC4AC6CDAF4B,
            0x3FBE836EB4E98138,
            0x3FEE68427418D691,
        )
    ],
    dtype=np.float64,
).reshape(3, 3)
_D65 = (_raw_f64(0x3FEE6A22B3892EE8), 1.0, _raw_f64(0x3FF16B8950763A19))  # 0.950456, 1, 1.088754

_F32 = np.float32
_LTHRESH = _F32(216) / _F32(24389)  # (6/29)^3 = 0.008856
_LSCALE = _F32(841) / _F32(108)  # 7.787
_LBIAS = _F32(16) / _F32(116)
_L_LINEAR = _F32(24389) / _F32(27)  # 903.3


def _srgb_gamma_f32(v: np.ndarray) -> np.ndarray:
  """OpenCV `applyGamma`: float32 in, computed in double, rounded to float32."""
  x = v.astype(np.float64)
  lo = x / (323.0 / 25.0)
  hi = np.power((x + 11.0 / 200.0) / (1.0 + 11.0 / 200.0), 12.0 / 5.0)
  return np.where(x <= 809.0 / 20000.0, lo, hi).astype(np.float32)


# Turkowski's rational approximation of the cube root on [0.125, 1) (numerator, denominator coefficients,
# highest power first), the one OpenCV's softfloat `cbrt` evaluates in double.
_CBRT_NUM = (
    45.2548339756803022511987494,
    192.2798368355061050458134625,
    119.1654824285581628956914143,
    13.43250139086239872172837314,
    0.1636161226585754240958355063,
)
_CBRT_DEN = (
    14.80884093219134573786480845,
    151.9714051044435648658557668,
    168.5254414101568283957668343,
    33.9905941350215598754191872,
    1.0,
)


def _cbrt_opencv_f32(t: np.ndarray) -> np.ndarray:
  """Cube root of positive float32 values as OpenCV's softfloat `cbrt` computes it (used for the table).

  The exponent is split so that the mantissa m lies in [0.125, 1); the cube root of m comes from a quartic
  rational approximation evaluated in double, and its mantissa is TRUNCATED (not rounded) to float32.
  The truncation matters: with a correctly rounded cube root 37 of the 49152 golden values move by one
  table step (1.2e-4 after MAST's normalisation).
  """
  bits = np.asarray(t, np.float32).view(np.int32).astype(np.int64)
  mag = bits & 0x7FFFFFFF
  ex = ((mag >> 23) & 255) - 127
  shx = np.fmod(ex, 3)  # C remainder (sign of the dividend)
  shx = np.where(shx >= 0, shx - 3, shx)
  ex_root = (ex - shx) // 3 - 1  # exact division; the root of m lies in [0.5, 1): exponent -1
  m = ((mag & 0x7FFFFF) | ((shx + 127) << 23)).astype(np.int32).view(np.float32).astype(np.float64)
  num = functools.reduce(lambda acc, c: acc * m + c, _CBRT_NUM[1:], _CBRT_NUM[0] * np.ones_like(m))
  den = functools.reduce(lambda acc, c: acc * m + c, _CBRT_DEN[1:], _CBRT_DEN[0] * np.ones_like(m))
  frac = ((num / den).view(np.int64) >> 29) & 0x7FFFFF
  out = np.where(mag == 0, 0, ((ex_root + 127) << 23) | frac)
  return out.astype(np.int32).view(np.float32)


def _lab_f_f32(t: np.ndarray) -> np.ndarray:
  """f(t) = cbrt(t) above (6/29)^3, else fma(t, 7.787, 16/116); float32 results."""
  cbrt = _cbrt_opencv_f32(np.maximum(t, _LTHRESH))
  lin = (t.astype(np.float64) * np.float64(_LSCALE) + np.float64(_LBIAS)).astype(np.float32)
  return np.where(t > _LTHRESH, cbrt, lin)


@functools.lru_cache(maxsize=1)
def opencv_lab_table() -> np.ndarray:
  """OpenCV's RGB2Lab interpolation table: int32 [33, 33, 33, 3] indexed [blue, green, red] node.

  Entry = (round(2^14 L / 100), round(2^14 (a + 128) / 256), round(2^14 (b + 128) / 256)) at the node
  colour (index / 32 per channel), as `initLUTforLABLUVs16` builds it (float32 operations in its order).
  """
  node = np.arange(_LUT_DIM, dtype=np.float32) / _F32(_LUT_DIM - 1)
  lin = _srgb_gamma_f32(node)
  blue, green, red = lin[:, None, None], lin[None, :, None], lin[None, None, :]
  white = (1.0 / _D65[0], 1.0, 1.0 / _D65[2])
  xyz = []
  for i in range(3):
    # Table axis 0 is the blue value, so OpenCV stores the coefficients as (blue, green, red).
    s_b, s_g, s_r = (_F32(_SRGB2XYZ[i, k] * white[i]) for k in (2, 1, 0))
    xyz.append((blue * s_b + green * s_g) + red * s_r)
  x, y, z = xyz
  fx, fy, fz = _lab_f_f32(x), _lab_f_f32(y), _lab_f_f32(z)
  lum = np.where(y > _LTHRESH, _F32(116) * fy - _F32(16), _L_LINEAR * y)
  a = _F32(500) * (fx - fy)
  b = _F32(200) * (fy - fz)
  base = _F32(1 << _LAB_BASE_SHIFT)
  q_l = np.rint(base * lum / _F32(100))
  q_a = np.rint(base * (a + _F32(128)) / _F32(256))
  q_b = np.rint(base * (b + _F32(128)) / _F32(256))
  return np.stack([q_l, q_a, q_b], axis=-1).astype(np.int32)


def _lab_opencv(rgb: jax.Array) -> jax.Array:
  table = jnp.asarray(opencv_lab_table())
  v = jnp.clip(rgb.astype(jnp.float32), 0.0, 1.0)
  c = jnp.rint(v * float(1 << _LAB_BASE_SHIFT)).astype(jnp.int32)  # half to even, as cvRound
  c = c[..., ::-1]  # (blue, green, red): the table's axis order
  cell = c >> (_LAB_BASE_SHIFT - _LUT_SHIFT)
  frac = (c >> (_LAB_BASE_SHIFT - 8 - 1)) & (_TRI_BASE - 1)
  acc = jnp.zeros(rgb.shape[:-1] + (3,), jnp.int32)
  for corner in range(8):
    d = [(corner >> 2) & 1, (corner >> 1) & 1, corner & 1]
    idx = [jnp.minimum(cell[..., k] + d[k], _LUT_DIM - 1) for k in range(3)]
    w = functools.reduce(
        lambda p, q: p * q,
        [frac[..., k] if d[k] else _TRI_BASE - frac[..., k] for k in range(3)],
    )
    acc = acc + table[idx[0], idx[1], idx[2]] * w[..., None]
  q = (acc + (1 << (3 * _TRI_SHIFT - 1))) >> (3 * _TRI_SHIFT)
  q = q.astype(jnp.float32)
  lum = q[..., 0] * (100.0 / (1 << _LAB_BASE_SHIFT))
  ab = q[..., 1:] * (256.0 / (1 << _LAB_BASE_SHIFT)) - 128.0
  return jnp.concatenate([lum[..., None], ab], axis=-1)


def _lab_formula(rgb: jax.Array) -> jax.Array:
  v = jnp.clip(rgb.astype(jnp.float32), 0.0, 1.0)
  lin = jnp.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
  white = np.array([1.0 / _D65[0], 1.0, 1.0 / _D65[2]])
  mat = jnp.asarray((_SRGB2XYZ * white[:, None]).astype(np.float32))
  xyz = jnp.einsum("...c,kc->...k", lin, mat, precision=jax.lax.Precision.HIGHEST)
  thresh, scale, bias = float(_LTHRESH), float(_LSCALE), float(_LBIAS)
  f = jnp.where(xyz > thresh, jnp.cbrt(jnp.maximum(xyz, thresh)), xyz * scale + bias)
  y = xyz[..., 1]
  lum = jnp.where(y > thresh, 116.0 * f[..., 1] - 16.0, float(_L_LINEAR) * y)
  a = 500.0 * (f[..., 0] - f[..., 1])
  b = 200.0 * (f[..., 1] - f[..., 2])
  return jnp.stack([lum, a, b], axis=-1)


def rgb_to_lab(rgb: jax.Array | np.ndarray, *, method: str = "opencv") -> jax.Array:
  """sRGB (D65) -> L*a*b*, L in [0, 100], a and b roughly in [-127, 127].

  Args:
    rgb: float [..., 3] in RGB order, values in [0, 1] (clipped to it, as OpenCV does).
    method: "opencv" (default): `cv2.cvtColor(bgr, cv2.COLOR_BGR2Lab)` on float32 input, bit for bit (the
      table-interpolated path described in the module docstring; not differentiable). "formula": the
      exact formula in float32 (differentiable almost everywhere).
  Returns:
    float32 [..., 3] (L, a, b).
  """
  rgb = jnp.asarray(rgb)
  if rgb.shape[-1:] != (3,):
    raise ValueError(f"rgb_to_lab expects [..., 3] RGB, got shape {rgb.shape}")
  if method == "opencv":
    return _lab_opencv(rgb)
  if method == "formula":
    return _lab_formula(rgb)
  raise ValueError(f"method must be 'opencv' or 'formula', got {method!r}")


def bgr_to_lab(bgr: jax.Array | np.ndarray, *, method: str = "opencv") -> jax.Array:
  """`rgb_to_lab` for BGR channel order (cv2's), [..., 3] float in [0, 1] -> float32 [..., 3] Lab."""
  return rgb_to_lab(jnp.asarray(bgr)[..., ::-1], method=method)


def mast_normalize_lab(lab: jax.Array) -> jax.Array:
  """MAST's Lab normalisation: (lab - (50, 0, 0)) / (50, 127, 127), [..., 3] -> float32 [..., 3]."""
  mean = jnp.asarray(MAST_LAB_MEAN, jnp.float32)
  std = jnp.asarray(MAST_LAB_STD, jnp.float32)
  return (jnp.asarray(lab, jnp.float32) - mean) / std


def mast_lab_input(image_u8: jax.Array | np.ndarray, *, bgr: bool = False) -> jax.Array:
  """MAST's network input from an 8-bit image: float32(image) / 255 -> cv2 Lab -> normalised.

  Args:
    image_u8: uint8 [..., H, W, 3], RGB (or BGR with `bgr=True`, e.g. straight from `cv2.imread`).
    bgr: channel order of `image_u8`.
  Returns:
    float32 [..., H, W, 3] normalised (L, a, b), each roughly in [-1, 1].
  """
  x = jnp.asarray(image_u8)
  if x.dtype != jnp.uint8:
    raise ValueError(f"mast_lab_input expects a uint8 image, got dtype {x.dtype}")
  rgb = x.astype(jnp.float32) / 255.0
  lab = bgr_to_lab(rgb) if bgr else rgb_to_lab(rgb)
  return mast_normalize_lab(lab)
