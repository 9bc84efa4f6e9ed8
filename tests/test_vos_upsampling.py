"""MAST's label upsampling (`propagate.upsampling`): the official bilinear resize of labels read at
[::4, ::4] places cell i at pixel 4 i + 1.5 (a mask comes back shifted right / down before the arg-max
re-quantises it); 'aligned' places it at 4 i, where it was read, and maps a label grid onto itself.
"""

import jax.numpy as jnp
import numpy as np

from jaxseg.methods.vos import propagation


def _round_trips(upsampling: str, steps: int) -> int:
  """Column of a vertical edge after `steps` rounds of: read labels [::4, ::4], upsample, arg-max."""
  ids = np.zeros((64, 64), np.int32)
  ids[:, 20:] = 1
  for _ in range(steps):
    cells = jnp.asarray(np.eye(2, dtype=np.float32)[ids[::4, ::4]])[None]
    soft = propagation.upsample_labels(cells, (64, 64), upsampling)
    ids = np.asarray(jnp.argmax(soft[0], -1))
  return int(np.argmax(ids[32] == 1))


def test_aligned_upsampling_is_a_fixed_point_and_official_is_shifted():
  first = _round_trips("aligned", 1)
  assert _round_trips("aligned", 6) == first  # no drift
  assert _round_trips("official", 1) > first  # the official grid sits 1.5 px to the right


def test_official_upsampling_is_pytorch_bilinear():
  rng = np.random.default_rng(0)
  soft = jnp.asarray(rng.random((1, 4, 5, 3)), jnp.float32)
  out = np.asarray(propagation.upsample_labels(soft, (16, 20), "official"))
  # F.interpolate(bilinear, align_corners=False): output pixel 0 of a 4x upsampling reads input -3/8 ->
  # clamped to 0, pixel 2 reads input 1/8 (between cells 0 and 1).
  np.testing.assert_allclose(out[0, 0, 0], np.asarray(soft[0, 0, 0]), atol=1e-6)
  expected = 0.875 * soft[0, 0, 0] + 0.125 * soft[0, 0, 1]
  np.testing.assert_allclose(out[0, 0, 2], np.asarray(expected), atol=1e-6)
