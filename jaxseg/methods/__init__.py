"""Method registry: `config.method` -> module with `default_config()` and `run(config, workdir)`.

Modules are imported lazily, so a method's dependencies load only when it runs.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from types import ModuleType

import ml_collections

from jaxseg.errors import ConfigError
from jaxseg.train.config import check_config_keys as check_config_keys_against
from jaxseg.train.config import config_diff, describe_config_diff, fill_added_train_keys
from jaxseg.train.config import resume_safe_keys as trainer_resume_safe_keys
from jaxseg.train.optimizer import optimizer_group

METHODS = {
    "supervised": "jaxseg.methods.supervised",
    "seam": "jaxseg.methods.seam",
    "uda": "jaxseg.methods.uda",
    "vos": "jaxseg.methods.vos",
    "hn": "jaxseg.methods.hn",
}


def get_method(name: str) -> ModuleType:
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; known: {sorted(METHODS)}")
  return importlib.import_module(METHODS[name])


def check_config_keys(config: ml_collections.ConfigDict) -> None:
  """Raises `ConfigError` naming every key of `config` its method does not read."""
  check_config_keys_against(config, get_method(config.method).default_config())


def check_batch_sizes(config: ml_collections.ConfigDict) -> None:
  """Every training section's `train.batch_size` and the `evaluate.batch_size` split over the mesh's
  'data' axis, checked before the first stage runs (not after hours of training).

  Raises:
    ConfigError: one line naming the key, the devices and a value that works.
  """
  from jaxseg.errors import ConfigError
  from jaxseg.train import sharding as shd
  from jaxseg.train.config import trainer_sections

  ways = int(shd.make_mesh(config.mesh).shape["data"])
  keys = {
      (f"{name}." if name else "") + "train.batch_size": section.train.batch_size
      for name, section in trainer_sections(config).items()
  }
  if "evaluate" in config and "batch_size" in config.evaluate:
    keys["evaluate.batch_size"] = config.evaluate.batch_size
  for key, value in keys.items():
    if int(value) % ways:
      raise ConfigError(
          f"{key}={value} does not split over the {ways} devices of the mesh's 'data' axis; "
          f"hint: use a multiple of {ways} (or set mesh.data)"
      )


def resume_safe_keys(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Keys that may change between launches of one workdir: the trainer's (every trainer section's
  logging / checkpoint cadence / loader keys, `stages`) and the method's own `RESUME_SAFE_KEYS`
  (declared next to its `default_config`)."""
  return trainer_resume_safe_keys(config) + tuple(get_method(config.method).RESUME_SAFE_KEYS)


def save_config(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Writes the resolved config to `workdir/config.json` (what the run really used) and a copy
  to `workdir/config_history/` (one file per launch, so earlier launches stay on record)."""
  os.makedirs(os.path.join(workdir, "config_history"), exist_ok=True)
  text = config.to_json(indent=2)
  count = len(os.listdir(os.path.join(workdir, "config_history")))
  stamp = time.strftime("%Y%m%d-%H%M%S")
  with open(os.path.join(workdir, "config_history", f"{count:03d}-{stamp}.json"), "w") as f:
    f.write(text)
  path = os.path.join(workdir, "config.json")
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)
  return path


def _has_checkpoints(workdir: str) -> bool:
  """A checkpoint in the workdir or in a training stage's subdirectory (e.g. `affinity/`, `adapt/`)."""
  dirs = [workdir] + [os.path.join(workdir, d) for d in os.listdir(workdir)]
  for d in dirs:
    ckpts = os.path.join(d, "checkpoints")
    if os.path.isdir(ckpts) and any(s.isdigit() for s in os.listdir(ckpts)):
      return True
  return False


def check_no_silent_restart(workdir: str, *, restart: bool = False) -> None:
  """Refuses to train a stage from scratch where all its checkpoints were found damaged.

  A stage folder with `checkpoints_damaged/` and no step left in `checkpoints/` would otherwise start
  over without a word on the next launch (the launch that moved them aside stopped with an error).

  Raises:
    ConfigError: one line naming the folder; pass `--restart` to train it from step 0.
  """
  if restart or not os.path.isdir(workdir):
    return
  for folder, subdirs, _ in os.walk(workdir):
    if folder[len(workdir) :].count(os.sep) > 3:  # stage folders sit at most 3 levels down
      subdirs[:] = []
      continue
    damaged = os.path.join(folder, "checkpoints_damaged")
    if "checkpoints_damaged" not in subdirs or not os.listdir(damaged):
      continue
    ckpts = os.path.join(folder, "checkpoints")
    if not (os.path.isdir(ckpts) and any(s.isdigit() for s in os.listdir(ckpts))):
      raise ConfigError(
          f"{folder}: every checkpoint was damaged (moved to {damaged}) and none is left to resume "
          "from\nhint: pass --restart to train this stage again from step 0"
      )


def check_resume_config(
    config: ml_collections.ConfigDict, workdir: str, *, allow_change: bool = False
) -> None:
  """Refuses to resume a workdir whose checkpoints were trained with different settings.

  Raises:
    ConfigError: `workdir` has checkpoints and its `config.json` differs from `config` in a key
      outside `resume_safe_keys(config)` (the message lists them); pass `--allow_config_change`.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path) or not _has_checkpoints(workdir):
    return
  with open(path) as f:
    old = upgrade_saved_config(json.load(f))
  new = upgrade_saved_config(json.loads(config.to_json()))
  safe = resume_safe_keys(config)
  changed = [d for d in config_diff(old, new) if not any(d[0].startswith(k) for k in safe)]
  if not changed:
    return
  if allow_change:
    print(
        f"resuming {workdir} with changed keys: {', '.join(k for k, _, _ in changed)}", flush=True
    )
    return
  raise ConfigError(
      f"{workdir} has checkpoints trained with another config: {describe_config_diff(changed)}\n"
      "hint: use a new --workdir, or pass --allow_config_change to resume anyway"
  )


def upgrade_saved_config(values: dict) -> dict:
  """A `config.json` of an earlier jaxseg in today's keys (in place; returns it).

  Before the optimiser registry every optimiser section had `listing_multiplicity`: empty it meant
  nothing (dropped now), non-empty it made sgd/momentum ADVENT's per-listing SGD, now the optimiser
  registered as 'advent_sgd' by jaxseg/methods/uda/optimizer.py. Both spellings of the same
  optimiser compare equal after it (resume checks upgrade the old and the new config alike). Trainer keys
  added since (`ADDED_TRAIN_KEYS`, e.g. `train.conv_algorithm`) get the value the old run computed with.
  """
  fill_added_train_keys(values)
  for value in values.values():
    if isinstance(value, dict):
      upgrade_saved_config(value)
  if "listing_multiplicity" in values and "learning_rate" in values:
    if not values["listing_multiplicity"]:
      # Nothing listed twice: plain momentum SGD, whichever name spelt it ('advent_sgd' with () too).
      del values["listing_multiplicity"]
      if values.get("name") == "advent_sgd":
        values["name"] = "momentum"
    elif values.get("name") in ("sgd", "momentum"):
      if values["name"] == "sgd":
        values["momentum"] = 0.0
      values["name"] = "advent_sgd"
  return values


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """Reads `workdir/config.json` back into the method's locked default config."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir} a jaxseg workdir?")
  with open(path) as f:
    values = upgrade_saved_config(json.load(f))
  config = get_method(values["method"]).default_config()
  _update(config, values, "")
  return config


def _update(config, values, prefix):
  for key, value in values.items():
    if key not in config and prefix.endswith("optimizer.groups.") and isinstance(value, dict):
      with config.unlocked():  # a group named by the config: its optimiser's keys, then the values
        config[key] = optimizer_group(value.get("params", ""), name=value.get("name", "momentum"))
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


def load_inference_model(workdir: str, stage: str | None = None, which: str = "latest"):
  """A trained network of a workdir, for any method, from its checkpoint alone.

  Reads `workdir/config.json`, the stage's `trainer_config.json` and, from its checkpoint, only the
  network's parameters and model state (shapes from the network's `init`): no optimiser state, no
  data source opened, no data root needed.

  Args:
    stage: the training stage (or HN fine-tuning run) to load; None = the method's default (see its
      `load_inference_model`).
    which: 'latest' or 'best' (`checkpoints_best/`, by `train.best_metric`).
  Returns:
    `jaxseg.train.inference.InferenceModel`: `predict(images)`, `masks(images)`, `variables`,
    `apply_fn(variables, images)`, `config`, `stage`, `step`.
  """
  config = load_config(workdir)
  return get_method(config.method).load_inference_model(config, workdir, stage, which)
