"""Every paper recipe planned on 1x H100 and on a v5e-8 slice, in one command: the README's table.

  python -m jaxseg.tools.plan_table [--out=docs/plan_recipes.md] [--mfu=0.4] [--only=seam,uda]

Runs `jaxseg.tools.plan` on each recipe of `RECIPES` (its training stages and its inference / propagation
passes) for each target of `TARGETS`, in one process with 8 fake CPU devices, and prints a markdown table:
per stage, memory per device, fits?, predicted hours at the MFU. `--out` also writes the document with the
table and every printed plan (docs/plan_recipes.md). An inference pass does not depend on the mesh: it is
compiled once and its time divided over the target's devices.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
import sys
import time

from jaxseg.tools import plan as planner
from jaxseg.tools.chips import CHIPS

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "configs")


@dataclasses.dataclass(frozen=True)
class Recipe:
  label: str
  config: str  # configs/<file>.py[:arg]
  stages: tuple[str, ...]  # the config.stages planned (trainings and passes); () = the config's own
  v5e_mesh: tuple[int, int]  # (data, model) on the v5e-8 slice
  stage_meshes: tuple[
      tuple[str, tuple[int, int]], ...
  ] = ()  # stages whose batch needs another mesh
  passes: bool = True


RECIPES = (
    # The segmenter's batch of 10 does not split 8 ways: 2x4.
    Recipe("SEAM VOC", "configs/seam.py", (), (8, 1), (("segment", (2, 4)),)),
    # ADVENT's batch of 1 does not split over 8 devices: each chip runs the whole step (1x8 mesh).
    Recipe("ADVENT AdvEnt", "configs/uda.py", (), (1, 8)),
    Recipe("ADVENT MinEnt", "configs/uda.py:minent", ("adapt",), (1, 8), passes=False),
    Recipe("ESL self-training", "configs/uda.py:esl", ("self_train",), (1, 8), passes=False),
    # MAST's batch of 12 and CRW's 20 do not split 8 ways: a 4x2 mesh.
    Recipe("MAST", "configs/vos.py", (), (4, 2)),
    Recipe("CRW", "configs/vos.py:crw", (), (4, 2)),
    Recipe("HN NYUv2", "configs/hn.py", (), (8, 1)),
)
# (column title, chip, devices, use the recipe's v5e mesh)
TARGETS = (("1x H100", "h100", 1, False), ("8x v5e", "v5e", 8, True))


def load_config(spec: str):
  """The ConfigDict of `configs/<file>.py[:arg]` (as `--config=` loads it)."""
  import importlib.util

  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("_plan_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def plan_recipe(recipe: Recipe, devices) -> dict[str, list]:
  """{target title: [StagePlan | PassPlan | StageError]} of one recipe."""
  config = load_config(recipe.config)
  with config.unlocked():
    if recipe.stages:
      config.stages = tuple(recipe.stages)
  passes = planner.plan(config, devices[:1], passes=recipe.passes)
  passes = [r for r in passes if isinstance(r, planner.PassPlan) or _is_pass_error(r)]
  every = tuple(config.stages)
  out = {}
  for title, _, n, use_mesh in TARGETS:
    meshes = {stage: recipe.v5e_mesh if use_mesh else (n, 1) for stage in every}
    if use_mesh:
      meshes.update(recipe.stage_meshes)
    stages = []
    for mesh in dict.fromkeys(meshes.values()):
      with config.unlocked():
        config.mesh.data, config.mesh.model = mesh
        config.stages = tuple(s for s in every if meshes[s] == mesh)
      stages += [
          s
          for s in planner.plan(config, devices[:n], passes=False)
          if not (isinstance(s, planner.StageError) and s.stage == "*")
      ]
    out[title] = stages + [
        dataclasses.replace(p, devices=n) if isinstance(p, planner.PassPlan) else p for p in passes
    ]
  return out


def _is_pass_error(r) -> bool:
  return isinstance(r, planner.StageError) and r.stage.startswith("pass ")


def _name(r) -> str:
  if isinstance(r, planner.PassPlan):
    return f"pass {r.name}"
  return r.stage


def _cell(r, chip, mfu: float) -> tuple[str, str, str]:
  """(memory / device, fits?, hours) of one result on one target."""
  if isinstance(r, planner.StageError):
    return "cannot plan", "-", "-"
  fits = "yes" if r.fits(chip) else "**no**"
  hours = r.hours(chip, mfu)
  if isinstance(r, planner.PassPlan):
    bound = r.roofline_hours(chip)
    extra = ""
  else:
    bound = r.roofline_seconds(chip) * r.total_steps * r.runs / 3600.0
    extra = f" ({r.runs} runs)" if r.runs > 1 else ""
  text = f"{hours:.3g}{extra}" + (f" (roofline >= {bound:.3g})" if bound > hours else "")
  memory = planner._gib(r.total_bytes)
  if not isinstance(r, planner.PassPlan) and (r.mesh["model"] > 1):
    memory += f" (mesh {r.mesh['data']}x{r.mesh['model']})"
  return memory, fits, text


def table(results: dict[Recipe, dict[str, list]], mfu: float) -> str:
  head = "| recipe | stage / pass |"
  rule = "|---|---|"
  for title, chip, _, _ in TARGETS:
    c = CHIPS[chip]
    head += f" {title}: memory / device | fits {planner._gib(c.hbm_bytes)}? | hours at {100 * mfu:.0f}% MFU |"
    rule += "---|---|---|"
  lines = [head, rule]
  for recipe, by_target in results.items():
    named = {title: {_name(r): r for r in rows} for title, rows in by_target.items()}
    for name in named[TARGETS[0][0]]:
      row = f"| {recipe.label} (`{recipe.config}`) | {name} |"
      for title, chip, _, _ in TARGETS:
        r = named[title].get(name)
        cells = _cell(r, CHIPS[chip], mfu) if r is not None else ("-", "-", "-")
        row += " {} | {} | {} |".format(*cells)
      lines.append(row)
  return "\n".join(lines)


def provenance() -> str:
  try:
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=True
    ).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    commit = "unknown"
  import jax

  return (
      f"commit `{commit}`, jax {jax.__version__}, {platform.machine()} with {os.cpu_count()} CPU "
      f"cores ({platform.node() or 'this machine'}), {time.strftime('%Y-%m-%d')}"
  )


def main(argv=None) -> None:

  from jaxseg import cli

  parser = cli.ArgumentParser(description=__doc__)
  parser.add_argument("--out", default="", help="also write the table and every plan here")
  parser.add_argument("--mfu", type=float, default=0.4)
  parser.add_argument("--only", default="", help="comma-separated config files (seam,uda,...)")
  args = parser.parse_args(argv)
  planner.use_fake_devices(8)
  import jax

  devices = jax.devices()
  if len(devices) < 8:
    raise SystemExit(
        f"error: {len(devices)} devices: run as a fresh process (needs 8 fake devices)"
    )
  recipes = [r for r in RECIPES if not args.only or _config_name(r) in args.only.split(",")]
  results, details = {}, []
  start, made_by = time.perf_counter(), provenance()  # the commit the plans are made at
  for recipe in recipes:
    t0 = time.perf_counter()
    results[recipe] = plan_recipe(recipe, devices)
    print(
        f"# planned {recipe.label} in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True
    )
    for title, chip, _, _ in TARGETS:
      details.append(
          planner.format_plan(
              results[recipe][title],
              CHIPS[chip],
              args.mfu,
              f"# {recipe.label} ({recipe.config}) on {title}",
          )
      )
  text = table(results, args.mfu)
  print(text, flush=True)
  if args.out:
    with open(args.out, "w") as f:
      f.write(
          "# `python -m jaxseg.tools.plan_table`: the paper recipes planned\n\n"
          f"Printed by `python -m jaxseg.tools.plan_table --out={args.out}` ({made_by}; "
          f"{time.perf_counter() - start:.0f} s). Fake CPU devices; MFU {args.mfu:g}. 1x H100: mesh "
          "1x1; 8x v5e: each recipe's mesh (`RECIPES` in jaxseg/tools/plan_table.py).\n\n"
          + text
          + "\n\nEvery plan as `python -m jaxseg.tools.plan` prints it:\n\n```\n"
          + "\n\n".join(details)
          + "\n```\n"
      )


def _config_name(recipe: Recipe) -> str:
  return os.path.basename(recipe.config.split(":")[0]).removesuffix(".py")


if __name__ == "__main__":
  main()
