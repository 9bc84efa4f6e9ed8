"""A method's stages as complete, resumable runs.

`run_stages` runs `config.stages` in order. A stage that finishes writes
`workdir/stages/<name>.json` (atomically, after its outputs); on relaunch it is
skipped. A training stage interrupted mid-way resumes from its own latest
checkpoint (its own workdir), so rerunning the same command after a kill
continues exactly where it stopped, between stages or inside one.

A training stage gets its complete trainer config from `train_stage`: the
shared keys (seed, mesh, sharding rules) plus the stage's own `train` and
`optimizer` sections, saved as `<stage workdir>/trainer_config.json`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from jaxseg.evaluation.outputs import write_json
from jaxseg.train import loop, multihost, preemption
from jaxseg.train.config import (
    config_diff,
    describe_config_diff,
    fill_added_train_keys,
    stage_trainer_config,
)

StageFn = Callable[[Any, str], Any]


def marker_path(workdir: str, stage: str) -> str:
  return os.path.join(workdir, "stages", f"{stage}.json")


def check_stages(config, known: Mapping[str, StageFn], method: str) -> None:
  for stage in config.stages:
    if stage not in known:
      raise ValueError(
          f"config.stages: unknown stage {stage!r} for {method!r}; known: {tuple(known)}"
      )


def run_stages(
    config, workdir: str, stages: Mapping[str, StageFn], *, method: str
) -> dict[str, Any]:
  """Runs `config.stages` in order, skipping those finished by an earlier launch.

  Args:
    stages: {stage name: fn(config, workdir) -> JSON-able summary or None}.
  Returns:
    {stage: its summary} for the stages run now.
  """
  check_stages(config, stages, method)
  with preemption.PreemptionGuard():  # one for the run: signals between stages and in host passes
    return _run_stages(config, workdir, stages)


def _run_stages(config, workdir: str, stages: Mapping[str, StageFn]) -> dict[str, Any]:
  results = {}
  for i, stage in enumerate(config.stages):
    if i:
      preemption.check_stop(f"before stage {stage} ({config.stages[i - 1]} finished)")
    marker = marker_path(workdir, stage)
    if os.path.exists(marker):
      print(f"stage {stage}: {_skip_message(marker, config)}", flush=True)
      continue
    logging.info("stage %s: starting", stage)
    start = time.time()
    result = stages[stage](config, workdir)
    multihost.sync(f"jaxseg_stage_{stage}")
    if multihost.is_main_process():
      write_json(
          marker,
          dict(
              stage=stage,
              seconds=round(time.time() - start, 1),
              finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
              summary=_jsonable(result),
              config=json.loads(config.to_json()),
          ),
      )
    multihost.sync(f"jaxseg_stage_{stage}_marked")
    results[stage] = result
  if config.stages and config.stages[-1] not in results:
    print_results(workdir)
  return results


def _skip_message(marker: str, config) -> str:
  """Why a finished stage is skipped, naming the keys that changed since it finished: a rerun with a new
  setting (e.g. `propagate.radius`) would otherwise show the old stage's results as if they were new.
  """
  text = f"finished earlier ({marker}); skipped (delete that file to run it again)"
  try:
    with open(marker) as f:
      then = json.load(f).get("config")
  except (OSError, ValueError):
    return text
  if then is None:  # a marker of an earlier jaxseg
    return text
  changed = config_diff(fill_added_train_keys(then), json.loads(config.to_json()))
  if not changed:
    return text
  return (
      f"finished earlier ({marker}) with other settings ({describe_config_diff(changed)}); skipped, "
      "its outputs are the old settings' (delete that file to run it again with these)"
  )


def print_results(workdir: str) -> None:
  """Prints `workdir/results.md` (every method's last stage writes it): a rerun whose stages were all
  finished shows the same table as the run that computed it."""
  path = os.path.join(workdir, "results.md")
  if multihost.is_main_process() and os.path.exists(path):
    with open(path) as f:
      print(f"results ({path}):\n{f.read().rstrip()}", flush=True)


def train_stage(
    config,
    workdir: str,
    task: loop.TrainTask,
    *,
    section: str | None = None,
    subdir: str | None = None,
) -> dict:
  """Trains one stage with its complete trainer config; returns the final train state.

  Args:
    section: the config key holding the stage's `trainer_section()` (None: top-level train/optimizer).
    subdir: the stage's workdir under `workdir` (its checkpoints, metrics.jsonl, tensorboard).
  """
  stage_config = stage_trainer_config(config, section)
  stage_dir = workdir if subdir is None else os.path.join(workdir, subdir)
  if multihost.is_main_process():
    write_json(os.path.join(stage_dir, "trainer_config.json"), stage_config.to_dict())
  return loop.train(stage_config, stage_dir, task)


def _jsonable(value: Any) -> Any:
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, (str, int, float, bool)) or value is None:
    return value
  try:
    import numpy as np

    arr = np.asarray(value)
    if arr.dtype.kind in "biuf" and arr.size <= 64:
      return arr.tolist()
  except Exception:  # noqa: BLE001  (a summary that is not an array is just left out)
    pass
  return None
