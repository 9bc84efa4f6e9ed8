"""Loading converted backbone weights into a freshly initialised model's variables."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
from flax import traverse_util


def merge_pretrained(
    params: Any, model_state: dict, pretrained: dict, *, source: str
) -> tuple[Any, dict]:
  """Overwrites the leaves of (params, model_state) present in `pretrained`.

  Args:
    pretrained: {'params': ..., 'batch_stats': ...} nested dicts of arrays, with
      names as in the model (e.g. from `jaxseg.models.convert`). Every leaf must
      exist in the model with the same shape: otherwise a ValueError lists them.
  Returns:
    (params, model_state) with the pretrained leaves in place (numpy, float32).
  """
  target = {"params": params, **model_state}
  flat = {k: v for k, v in traverse_util.flatten_dict(target, sep="/").items()}
  missing, wrong = [], []
  for key, value in traverse_util.flatten_dict(pretrained, sep="/").items():
    if key not in flat:
      missing.append(key)
    elif tuple(np.shape(value)) != tuple(np.shape(flat[key])):
      wrong.append(f"{key}: {np.shape(value)} vs model {np.shape(flat[key])}")
    else:
      flat[key] = np.asarray(value, dtype=np.asarray(flat[key]).dtype)
  if missing or wrong:
    raise ValueError(
        f"{source}: pretrained weights do not fit the model; not in the model: "
        f"{missing[:20]}{' ...' if len(missing) > 20 else ''}; wrong shape: {wrong[:20]}"
    )
  merged = traverse_util.unflatten_dict(flat, sep="/")
  params = merged.pop("params")
  return params, merged


def weights_loader(
    path: str, read: Callable[[str], dict]
) -> Callable[[Any, dict], tuple[Any, dict]]:
  """A `TrainTask.init_weights` that reads `path` with `read` and merges it."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"pretrained weights {path} not found (config.init.weights)")

  def init_weights(params, model_state):
    return merge_pretrained(params, model_state, read(path), source=path)

  return init_weights
