"""SEAM demo seed study: plain CAM, SEAM and the supervised upper bound over several seeds, one table.

  python -m jaxseg.methods.seam.seed_study --seeds=0,1,2 --workdir=runs/seam_seeds

Per seed it launches (`launch.py`, one process at a time, the real device count of this machine):
  <workdir>/seed<s>/cam         configs/seam.py:synthetic_cam   train, infer, evaluate (plain CAM baseline)
  <workdir>/seed<s>/seam        configs/seam.py:synthetic       train, infer, affinity, evaluate
  <workdir>/seed<s>/supervised  configs/supervised.py:seam      train, evaluate (same scenes, pixel labels)
with `--config.seed=<s>`. The seed changes the initialisation, the training order and the augmentation;
the scenes themselves (data.synthetic.seed) are the same for every seed. A run whose metrics.json exists
is not launched again (and the launcher skips finished stages of an interrupted one), so the study
resumes where it stopped.

Writes <workdir>/seed_study.json and seed_study.md: rows plain CAM, SEAM raw CAM, SEAM CAM (PCM), random
walk, supervised bound, and the two gains (SEAM CAM - plain CAM, SEAM CAM - SEAM raw CAM); columns one
per seed, then mean +- std (sample standard deviation, ddof=1) and min..max. mIoU in % at each run's
best background threshold (infer.sweep).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (config.seed) to run.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/seam_seeds", "Root of the per-seed workdirs.")
_ARMS = flags.DEFINE_list(
    "arms", ["cam", "seam", "supervised"], "Runs per seed: cam, seam, supervised."
)
_STEPS = flags.DEFINE_integer("steps", 0, "CAM/SEAM training steps (0 = the demo config's).")
_AFFINITY = flags.DEFINE_bool("affinity", True, "Run SEAM's AffinityNet + random walk stage.")
_OVERRIDES = flags.DEFINE_multi_string(
    "override",
    [],
    "Extra --config.* flag for the CAM and SEAM runs (repeatable), e.g. "
    "--override=--config.data.synthetic.num_eval=100.",
)

# (row name, arm, key in that run's metrics.json).
ROWS = (
    ("plain CAM", "cam", "cam_miou"),
    ("SEAM raw CAM", "seam", "cam_miou"),
    ("SEAM CAM (PCM)", "seam", "seam_cam_miou"),
    ("random walk", "seam", "random_walk_miou"),
    ("supervised bound", "supervised", "miou"),
)
# (row name, minuend row, subtrahend row).
GAINS = (
    ("gain: SEAM CAM - plain CAM", "SEAM CAM (PCM)", "plain CAM"),
    ("gain: PCM - SEAM raw CAM", "SEAM CAM (PCM)", "SEAM raw CAM"),
)


def arm_command(arm: str, seed: int, workdir: str, steps: int, affinity: bool, overrides=()):
  """The launch.py command line of one run (argv list, run from the repository root)."""
  common = [f"--workdir={workdir}", f"--config.seed={seed}", "--config.train.progress_bar=False"]
  if arm == "supervised":
    return [sys.executable, "launch.py", "--config=configs/supervised.py:seam", *common]
  variant = {"cam": "synthetic_cam", "seam": "synthetic"}[arm]
  config = f"configs/seam.py:{variant}" + (f",steps={steps}" if steps else "")
  if arm == "cam":
    stages = '("train", "infer", "evaluate")'
  elif affinity:
    stages = '("train", "infer", "affinity", "evaluate")'
  else:
    stages = '("train", "infer", "evaluate")'
  return [
      sys.executable,
      "launch.py",
      f"--config={config}",
      *common,
      f"--config.stages={stages}",
      *overrides,
  ]


def run_arm(command: Sequence[str], workdir: str) -> dict:
  """Runs one launch (unless its metrics.json exists); returns its metrics.json and stage timings."""
  metrics_path = os.path.join(workdir, "metrics.json")
  if not os.path.exists(metrics_path):
    os.makedirs(workdir, exist_ok=True)
    print("$ " + " ".join(command[1:]), flush=True)
    start = time.time()
    with open(os.path.join(workdir, "launch.log"), "a") as log:
      out = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False)
    if out.returncode != 0:
      raise RuntimeError(f"{' '.join(command)} failed; see {workdir}/launch.log")
    print(f"  done in {time.time() - start:.0f} s", flush=True)
  with open(metrics_path) as f:
    metrics = json.load(f)
  seconds = {}
  stage_dir = os.path.join(workdir, "stages")
  for name in sorted(os.listdir(stage_dir)) if os.path.isdir(stage_dir) else ():
    with open(os.path.join(stage_dir, name)) as f:
      seconds[name.removesuffix(".json")] = json.load(f).get("seconds")
  return dict(metrics=metrics, seconds=seconds)


def summarise(values: dict[int, float | None]) -> dict:
  """{seed: value} -> mean, std (ddof=1; 0 for one seed), min, max over the seeds that have a value."""
  v = np.array([x for x in values.values() if x is not None], np.float64)
  if v.size == 0:
    return dict(mean=None, std=None, min=None, max=None)
  std = float(np.std(v, ddof=1)) if v.size > 1 else 0.0
  return dict(mean=float(v.mean()), std=std, min=float(v.min()), max=float(v.max()))


def study_table(runs: dict[int, dict[str, dict]]) -> dict:
  """{seed: {arm: run_arm(...)}} -> {row name: {'seeds': {seed: mIoU %}, **summarise}} (rows + gains)."""
  table = {}
  for name, arm, key in ROWS:
    seeds = {}
    for seed, arms in runs.items():
      value = arms.get(arm, {}).get("metrics", {}).get(key)
      seeds[seed] = None if value is None else 100 * float(value)
    if any(v is not None for v in seeds.values()):
      table[name] = dict(seeds=seeds, **summarise(seeds))
  for name, a, b in GAINS:
    if a in table and b in table:
      seeds = {
          s: None
          if table[a]["seeds"][s] is None or table[b]["seeds"][s] is None
          else table[a]["seeds"][s] - table[b]["seeds"][s]
          for s in runs
      }
      table[name] = dict(seeds=seeds, **summarise(seeds))
  return table


def markdown(table: dict, seeds: Sequence[int]) -> str:
  """The table as markdown: a column per seed, then mean +- std and min..max."""
  head = "| mIoU (%) | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std | min … max |"
  lines = [head, "|---" * (len(seeds) + 3) + "|"]

  def fmt(x):
    return "–" if x is None else f"{x:.1f}"

  for name, row in table.items():
    cells = [fmt(row["seeds"][s]) for s in seeds]
    spread = "–" if row["mean"] is None else f"{row['mean']:.1f} ± {row['std']:.1f}"
    span = "–" if row["min"] is None else f"{row['min']:.1f} … {row['max']:.1f}"
    lines.append(f"| {name} | " + " | ".join(cells) + f" | {spread} | {span} |")
  return "\n".join(lines)


def source_state() -> str:
  """`git describe`-like commit of the tree the study ran on, '+dirty' with uncommitted changes."""
  try:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"
  return commit + ("+dirty" if dirty else "")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  seeds = [int(s) for s in _SEEDS.value]
  root = os.path.abspath(_WORKDIR.value)
  runs = {}
  for seed in seeds:
    runs[seed] = {}
    for arm in _ARMS.value:
      workdir = os.path.join(root, f"seed{seed}", arm)
      overrides = () if arm == "supervised" else tuple(_OVERRIDES.value)
      command = arm_command(arm, seed, workdir, _STEPS.value, _AFFINITY.value, overrides)
      runs[seed][arm] = dict(command=" ".join(command[1:]), **run_arm(command, workdir))
  table = study_table(runs)
  text = markdown(table, seeds)
  note = (
      f"Seeds {', '.join(map(str, seeds))} (config.seed: init, data order, augmentation; same scenes); "
      f"source {source_state()}; spread = sample std (ddof=1) and min … max."
  )
  print(text + "\n\n" + note, flush=True)
  with open(os.path.join(root, "seed_study.md"), "w") as f:
    f.write(text + "\n\n" + note + "\n")
  with open(os.path.join(root, "seed_study.json"), "w") as f:
    json.dump(dict(table=table, runs=runs, source=source_state()), f, indent=2)


if __name__ == "__main__":
  app.run(main)
