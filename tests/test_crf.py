"""Dense CRF (jaxseg.methods.seam.crf): formula, denoising, exact vs grid vs pydensecrf, errors."""

import math

import numpy as np
import pytest

from jaxseg.methods.seam import crf

# Bilateral position std scaled to the small test images (the official 80 px would make the spatial part
# constant over a 40 x 40 image and test nothing).
SMALL = dict(sxy_bilateral=10.0)


def blob_scene(h, w, seed, noise=0.7, labels=3):
  """uint8 image of `labels` flat-coloured regions (+ pixel noise), its label map, and noisy probs [C, H, W]."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:h, :w]
  lab = np.zeros((h, w), np.int64)
  for k in range(1, labels):
    cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(h / 5, h / 3)
    lab[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = k
  colours = np.array([[30, 60, 200], [220, 40, 40], [40, 200, 60], [230, 230, 30]])[:labels]
  img = colours[lab] + rng.normal(0, 8, (h, w, 3))
  img = np.clip(img, 0, 255).astype(np.uint8)
  probs = np.eye(labels)[lab].transpose(2, 0, 1) * (1 - noise) + rng.uniform(
      0, noise, (labels, h, w)
  )
  return img, lab, probs.astype(np.float32)


def naive_mean_field(img, probs, iterations, sxy_g, w_g, sxy_b, srgb, w_b):
  """Pixel-pair loops straight from the formula (module docstring), float64."""
  c, h, w = probs.shape
  n = h * w
  pos = [(i % w, i // w) for i in range(n)]
  rgb = img.reshape(n, 3).astype(np.float64)
  kg = np.zeros((n, n))
  kb = np.zeros((n, n))
  for i in range(n):
    for j in range(n):
      dp = (pos[i][0] - pos[j][0]) ** 2 + (pos[i][1] - pos[j][1]) ** 2
      dc = float(np.sum((rgb[i] - rgb[j]) ** 2))
      kg[i, j] = math.exp(-dp / (2 * sxy_g**2))
      kb[i, j] = math.exp(-dp / (2 * sxy_b**2) - dc / (2 * srgb**2))
  unary = -np.log(np.clip(probs.reshape(c, n), 1e-5, 1.0))
  q = np.exp(-unary) / np.exp(-unary).sum(0)
  for _ in range(iterations):
    logits = -unary.copy()
    for k, wt in ((kg, w_g), (kb, w_b)):
      d = 1.0 / np.sqrt(k.sum(1))
      for i in range(n):
        for lab in range(c):
          logits[lab, i] += wt * d[i] * sum(k[i, j] * d[j] * q[lab, j] for j in range(n))
    q = np.exp(logits - logits.max(0)) / np.exp(logits - logits.max(0)).sum(0)
  return q.reshape(c, h, w)


def test_exact_matches_naive_formula():
  rng = np.random.default_rng(0)
  img = rng.integers(0, 256, (4, 5, 3)).astype(np.uint8)
  probs = rng.uniform(0, 1, (3, 4, 5)).astype(np.float32)
  kw = dict(
      sxy_gaussian=1.5,
      compat_gaussian=3.0,
      sxy_bilateral=3.0,
      srgb_bilateral=60.0,
      compat_bilateral=10.0,
  )
  got = crf.dense_crf(img, probs, iterations=2, method="exact", **kw)
  want = naive_mean_field(img, probs, 2, 1.5, 3.0, 3.0, 60.0, 10.0)
  np.testing.assert_allclose(got, want, atol=2e-5)


def test_zero_iterations_is_normalised_clipped_probs():
  img, _, probs = blob_scene(12, 10, 1)
  probs[0, 0, 0] = 0.0  # clipped to 1e-5 by the unary
  q = crf.dense_crf(img, probs, iterations=0, method="exact")
  clipped = np.clip(probs, 1e-5, 1.0)
  np.testing.assert_allclose(q, clipped / clipped.sum(0), rtol=1e-5)


@pytest.mark.parametrize("method", ["exact", "grid"])
def test_reduces_label_noise_on_two_regions(method):
  img, lab, probs = blob_scene(40, 40, 2, noise=0.75, labels=2)
  before = np.mean(probs.argmax(0) == lab)
  q = crf.dense_crf(img, probs, method=method, **SMALL)
  after = np.mean(q.argmax(0) == lab)
  assert before < 0.85  # the test input is really noisy
  assert after > 0.98 and after > before + 0.1
  assert q.shape == probs.shape and q.dtype == np.float32
  np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-5)


@pytest.mark.parametrize("iterations", [1, 10])
def test_grid_matches_exact(iterations):
  """The documented approximation error of the bilateral grid (module docstring)."""
  img, _, probs = blob_scene(40, 40, 3, noise=0.9)
  exact = crf.dense_crf(img, probs, iterations=iterations, method="exact", **SMALL)
  grid = crf.dense_crf(img, probs, iterations=iterations, method="grid", **SMALL)
  assert np.max(np.abs(exact - grid)) < (0.04 if iterations == 1 else 0.02)
  assert np.mean(exact.argmax(0) == grid.argmax(0)) > 0.99
  # A coarser grid is a worse approximation: the comparison can tell them apart.
  coarse = crf.dense_crf(img, probs, iterations=iterations, method="grid", grid_cell=1.6, **SMALL)
  assert np.max(np.abs(exact - coarse)) > np.max(np.abs(exact - grid))


def test_grid_filter_uses_official_bilateral_width():
  """With the official sxy=80 the grid backend still agrees with exact on a small image."""
  img, _, probs = blob_scene(32, 32, 4, noise=0.9)
  exact = crf.dense_crf(img, probs, method="exact")
  grid = crf.dense_crf(img, probs, method="grid")
  assert np.max(np.abs(exact - grid)) < 0.02


def test_matches_pydensecrf_when_installed():
  pytest.importorskip("pydensecrf.densecrf")
  img, _, probs = blob_scene(40, 40, 5, noise=0.9)
  for iterations in (1, 10):
    official = crf.dense_crf(img, probs, iterations=iterations, method="pydensecrf", **SMALL)
    exact = crf.dense_crf(img, probs, iterations=iterations, method="exact", **SMALL)
    # The permutohedral lattice is itself an approximation of the exact kernel (module docstring).
    assert np.max(np.abs(official - exact)) < 0.06
    assert np.mean(official.argmax(0) == exact.argmax(0)) > 0.985


def test_deterministic():
  img, _, probs = blob_scene(24, 20, 6)
  for method in ("exact", "grid"):
    a = crf.dense_crf(img, probs, method=method, **SMALL)
    b = crf.dense_crf(img.copy(), probs.copy(), method=method, **SMALL)
    np.testing.assert_array_equal(a, b)


def test_uniform_input_stays_uniform():
  img = np.full((9, 11, 3), 128, np.uint8)
  probs = np.full((4, 9, 11), 0.3, np.float32)
  q = crf.dense_crf(img, probs, method="exact")
  np.testing.assert_allclose(q, 0.25, atol=1e-6)


def test_auto_picks_a_backend(monkeypatch):
  img, _, probs = blob_scene(16, 16, 7)
  q = crf.dense_crf(img, probs, method="auto", **SMALL)
  ref = crf.dense_crf(img, probs, method="exact", **SMALL)
  assert np.mean(q.argmax(0) == ref.argmax(0)) > 0.99
  # Without pydensecrf: exact for small images, the grid above `max_exact_pixels`.
  monkeypatch.setattr(crf, "_pydensecrf_available", lambda: False)
  np.testing.assert_array_equal(crf.dense_crf(img, probs, method="auto", **SMALL), ref)
  grid = crf.dense_crf(img, probs, method="grid", **SMALL)
  np.testing.assert_array_equal(
      crf.dense_crf(img, probs, method="auto", max_exact_pixels=100, **SMALL), grid
  )


@pytest.mark.parametrize(
    "image, probs, match",
    [
        (
            np.zeros((8, 8, 3), np.uint8),
            np.zeros((8, 8, 3), np.float32),
            r"\[C, H, W\]",
        ),  # channels-last probs
        (np.zeros((8, 8, 3), np.float32), np.zeros((2, 8, 8), np.float32), "uint8"),
        (np.zeros((8, 8), np.uint8), np.zeros((2, 8, 8), np.float32), r"\[H, W, 3\]"),
        (np.zeros((8, 8, 3), np.uint8), np.zeros((2, 8, 9), np.float32), r"\[C, H, W\]"),
        (np.zeros((8, 8, 3), np.uint8), np.full((2, 8, 8), np.nan, np.float32), "NaN"),
        (np.zeros((8, 8, 3), np.uint8), np.zeros((2, 8, 8), np.int32), "floating"),
    ],
)
def test_bad_inputs(image, probs, match):
  with pytest.raises(ValueError, match=match):
    crf.dense_crf(image, probs, method="exact")


def test_bad_parameters():
  img, _, probs = blob_scene(8, 8, 8)
  with pytest.raises(ValueError, match="method"):
    crf.dense_crf(img, probs, method="lattice")
  with pytest.raises(ValueError, match="srgb_bilateral"):
    crf.dense_crf(img, probs, srgb_bilateral=0.0, method="exact")
  with pytest.raises(ValueError, match="grid_cell"):
    crf.dense_crf(img, probs, method="grid", grid_cell=2.0)
