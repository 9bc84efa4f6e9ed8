"""Deterministic random weights defined on PyTorch state-dict names (for parity tests against reference runs).

The golden reference sets under `shared/golden/` (and `tests/data/backbones/`) do not ship network weights:
both the reference run and the test draw them from (name, shape, seed) with the rules below, so a fixture is
small and the converter is exercised on the official names.

Rules by the last name component and the rank of the shape:
  running_mean -> 0.1 N(0,1); running_var -> U(0.5, 1.5); num_batches_tracked -> left out;
  weight of rank 1 (norm scale) -> 1 + 0.1 N(0,1); bias -> 0.1 N(0,1);
  rank >= 2 -> N(0,1) / sqrt(fan_in), fan_in = prod(shape[1:]); anything else -> 0.1 N(0,1).
Each array uses `np.random.default_rng([seed, crc32(name)])`, independent of the other names.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping

import numpy as np


def seeded_array(name: str, shape: Iterable[int], seed: int) -> np.ndarray | None:
  """float32 array for state-dict entry `name` of `shape`; None for `num_batches_tracked`."""
  shape = tuple(int(s) for s in shape)
  leaf = name.rsplit(".", 1)[-1]
  if leaf == "num_batches_tracked":
    return None
  rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
  if leaf == "running_mean":
    values = 0.1 * rng.standard_normal(shape)
  elif leaf == "running_var":
    values = rng.uniform(0.5, 1.5, shape)
  elif leaf == "weight" and len(shape) == 1:
    values = 1.0 + 0.1 * rng.standard_normal(shape)
  elif leaf == "bias":
    values = 0.1 * rng.standard_normal(shape)
  elif len(shape) >= 2:
    values = rng.standard_normal(shape) / np.sqrt(float(np.prod(shape[1:])))
  else:
    values = 0.1 * rng.standard_normal(shape)
  return values.astype(np.float32)


def seeded_state_dict(shapes: Mapping[str, Iterable[int]], seed: int) -> dict[str, np.ndarray]:
  """{name: shape} -> {name: float32 array}, `num_batches_tracked` entries dropped."""
  out = {}
  for name, shape in shapes.items():
    values = seeded_array(name, shape, seed)
    if values is not None:
      out[name] = values
  return out


def seeded_variables(template, seed: int):
  """Seeded weights for a Flax variable tree (arrays or `jax.eval_shape` structs), via the torch names.

  Cheaper than `model.init` for big nets on CPU (no XLA compilation) and gives exactly the weights a
  PyTorch reference run with `seeded_state_dict(model.state_dict() shapes, seed)` has.
  """
  from jaxseg.models import convert

  flat = convert.torch_shapes(template)
  return convert.state_dict_to_variables(
      seeded_state_dict(flat, seed), template, source="seeded weights"
  )
