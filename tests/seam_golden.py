"""Shared set-up of the SEAM parity tests: the official SEAM net with seeded weights and its cached outputs.

The fixtures in tests/data/seam/ are cut from shared/golden/seam (outputs of the official YudeWang/SEAM code,
see tests/data/seam/extract_golden.py). Weights are not stored: both sides draw them from the official
state-dict names with `seeded_state_dict(seed=0)`. Everything expensive is computed once per test session.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models import convert
from jaxseg.models.seam import SEAMNet
from jaxseg.models.seeded import seeded_state_dict

DATA = os.path.join(os.path.dirname(__file__), "data", "seam")


@functools.cache
def fixture(name: str):
  """tests/data/seam/<name>.npz as a dict of numpy arrays."""
  with np.load(os.path.join(DATA, f"{name}.npz")) as f:
    return {k: f[k] for k in f.files}


def nhwc(a: np.ndarray) -> np.ndarray:
  """NCHW (golden layout) -> NHWC."""
  return np.asarray(a).transpose(0, 2, 3, 1)


def errors(ours, ref) -> tuple[float, float]:
  """(max abs error, max abs error / max |ref|)."""
  ours = np.asarray(ours, np.float64)
  ref = np.asarray(ref, np.float64)
  assert ours.shape == ref.shape, (ours.shape, ref.shape)
  abs_err = float(np.abs(ours - ref).max()) if ref.size else 0.0
  return abs_err, abs_err / max(float(np.abs(ref).max()), 1e-30)


def assert_close(ours, ref, rel: float = 1e-4, atol: float = 1e-6, what: str = ""):
  """|a - b| <= rel * max|b| + atol (the golden README's suggested check for maps)."""
  abs_err, _ = errors(ours, ref)
  bound = rel * float(np.abs(np.asarray(ref, np.float64)).max()) + atol
  assert abs_err <= bound, f"{what}: max abs error {abs_err:.3g} > {bound:.3g}"


@functools.cache
def seeded_seam():
  """(SEAMNet(), variables) with the golden weights: official names -> seeded_state_dict(seed 0) -> converter."""
  model = SEAMNet()
  template = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False)
  )
  shapes = convert.torch_shapes(template)
  return model, convert.state_dict_to_variables(
      seeded_state_dict(shapes, 0), template, source="seeded SEAM"
  )


@functools.cache
def eval_apply():
  model, _ = seeded_seam()
  return jax.jit(lambda v, x: model.apply(v, x, train=False))


@functools.cache
def golden_view_outputs(view: int):
  """SEAMNet eval outputs (numpy) on the golden training views: 1 = x (2x64x64), 2 = img2 (2x19x19)."""
  images = fixture("forward")["x"] if view == 1 else fixture("train")["img2"]
  _, variables = seeded_seam()
  out = eval_apply()(variables, jnp.asarray(nhwc(images)))
  return {k: np.asarray(v) for k, v in out.items()}
