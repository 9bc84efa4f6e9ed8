"""Method registry: `config.method` -> module with `default_config()` and `run(config, workdir)`.

Modules are imported lazily, so a method's dependencies load only when it runs.
"""

from __future__ import annotations

import importlib
import json
import os
from types import ModuleType

import ml_collections

METHODS = {
    "supervised": "jaxseg.methods.supervised",
    "seam": "jaxseg.methods.seam",
}


def get_method(name: str) -> ModuleType:
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; known: {sorted(METHODS)}")
  return importlib.import_module(METHODS[name])


def save_config(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Writes the resolved config to `workdir/config.json` (what the run really used)."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  with open(path, "w") as f:
    f.write(config.to_json(indent=2))
  return path


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """Reads `workdir/config.json` back into the method's locked default config."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir} a jaxseg workdir?")
  with open(path) as f:
    values = json.load(f)
  config = get_method(values["method"]).default_config()
  _update(config, values, "")
  return config


def _update(config, values, prefix):
  for key, value in values.items():
    if key not in config and prefix.endswith("optimizer.groups.") and isinstance(value, dict):
      from jaxseg.train.optimizer import optimizer_group  # pylint: disable=g-import-not-at-top

      with config.unlocked():
        config[key] = optimizer_group(value.get("params", ""))
    if key not in config:
      raise ValueError(f"{prefix}{key}: unknown key in saved config")
    if isinstance(config[key], ml_collections.ConfigDict):
      _update(config[key], value, f"{prefix}{key}.")
    elif isinstance(config[key], tuple) and isinstance(value, list):
      config[key] = _to_tuple(value)
    else:
      config[key] = value


def _to_tuple(value):
  return tuple(_to_tuple(v) if isinstance(v, list) else v for v in value)


def load_inference_model(workdir: str):
  """(apply_fn, variables, config) of a trained workdir's latest checkpoint.

  `apply_fn(variables, images [B, H, W, 3] float32 normalised) -> logits`.
  """
  config = load_config(workdir)
  return get_method(config.method).load_inference_model(config, workdir)
