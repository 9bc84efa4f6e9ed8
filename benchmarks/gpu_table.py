"""The GPU run-book's predictions and its one results table (`benchmarks/gpu.sh` calls both).

  python benchmarks/gpu_table.py predict --method=seam --precision=float32,bfloat16 --chip=h100 --json=F [train_step args]
  python benchmarks/gpu_table.py predict-propagation --sizes=480x854 --frames=24 --chip=h100 --json=F [--width=..]
  python benchmarks/gpu_table.py table --dir=DIR --chip=h100      # -> DIR/results.md, DIR/results.json

`predict` is `python -m jaxseg.tools.plan` on the benchmark's own case (`train_step.CASES`: the same
config, task and shapes `train_step.py` times), compiled on one CPU device (run it with JAX_PLATFORMS=cpu):
per-device memory, FLOPs per step, and the step time on the chip at `--mfu` and at its roofline.
`predict-propagation` plans the vos propagation pass (`jaxseg.tools.plan_passes`) of one synthetic video of
that size: frames per second at `--mfu`. `table` puts each measured row of the JSON files that
`train_step.py` and `vos.py` wrote beside its prediction.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

MFU = 0.4


def _write(path: str, data) -> None:
  with open(path, "w") as f:
    json.dump(data, f, indent=1)


def predict(argv: list[str]) -> dict:
  """The planner's numbers for one `train_step.py` case (same arguments)."""
  import jax
  import train_step

  from jaxseg.tools import plan as planner
  from jaxseg.tools.chips import CHIPS

  parser = argparse.ArgumentParser()
  parser.add_argument("--chip", default="h100", choices=sorted(CHIPS))
  parser.add_argument("--json", required=True)
  parser.add_argument("--mfu", type=float, default=MFU)
  own, rest = parser.parse_known_args(argv)
  args = train_step.parse_args(rest)
  if args.devices not in (0, 1):
    raise SystemExit(
        f"error: predict plans one device (the run-book's GPU), got --devices={args.devices}"
    )
  # One device whatever the process sees (a test session's 8 fake CPU devices too): the case's global
  # batch is then one device's, as in the run-book's timed `--devices=1` step.
  args.devices = 1
  chip = CHIPS[own.chip]
  out = []
  for dtype in args.precision.split(","):
    config, task, data = train_step.CASES[args.method](args, dtype)
    spec = planner.StageSpec("train", None, lambda task=task, data=data: (task, data))
    plan = planner.plan_stage(config, spec, jax.devices()[:1])
    step_s = plan.hours(chip, own.mfu) * 3600 / plan.total_steps
    out.append(
        dict(
            method=args.method,
            precision=dtype,
            chip=chip.name,
            mfu=own.mfu,
            flops_per_step=plan.flops,
            planned_bytes=plan.total_bytes,
            fits=plan.fits(chip),
            step_s=step_s,
            roofline_step_s=plan.roofline_seconds(chip),
            images_per_s=plan.global_batch / step_s,
        )
    )
  _write(own.json, out)
  return out


def predict_propagation(argv: list[str]) -> list[dict]:
  """The planner's vos propagation pass for synthetic videos of each size: frames per second."""
  import jax

  import vos as vos_benchmark
  from configs import vos as vos_config
  from jaxseg.tools import plan as planner
  from jaxseg.tools import plan_passes
  from jaxseg.tools.chips import CHIPS

  parser = argparse.ArgumentParser()
  parser.add_argument("--sizes", default="480x854")
  parser.add_argument("--frames", type=int, default=24)
  parser.add_argument("--width", type=float, default=None)
  parser.add_argument("--chip", default="h100", choices=sorted(CHIPS))
  parser.add_argument("--mfu", type=float, default=MFU)
  parser.add_argument("--json", required=True)
  args = parser.parse_args(argv)
  chip, rows = CHIPS[args.chip], []
  for h, w in vos_benchmark._parse_sizes(args.sizes):
    config = vos_config.get_config("mast")
    if args.width is not None:
      config.model.width_multiplier = args.width
    config.eval_data.name = "synthetic"
    config.eval_data.synthetic.update(image_size=(h, w), num_videos=1, num_frames=args.frames)
    (spec,) = plan_passes.pass_specs(config)
    p = planner.plan_pass(spec, jax.devices()[:1])
    seconds = p.hours(chip, args.mfu) * 3600
    rows.append(
        dict(
            size=f"{h}x{w}",
            chip=chip.name,
            mfu=args.mfu,
            flops=p.flops,
            planned_bytes=p.total_bytes,
            fps=args.frames / seconds,
            roofline_fps=args.frames / (p.roofline_hours(chip) * 3600),
        )
    )
  _write(args.json, rows)
  return rows


def _load(pattern: str) -> list:
  out = []
  for path in sorted(glob.glob(pattern)):
    with open(path) as f:
      out.append(json.load(f))
  return out


def _fmt(x, spec: str = ".3g", scale: float = 1.0, missing: str = "-") -> str:
  return missing if x is None else format(x * scale, spec)


def _mib(x) -> str:
  return _fmt(x, ".0f", 2**-20)


def table(argv: list[str]) -> str:
  """results.md + results.json of a run-book folder: measured train steps and propagation beside the
  planner's predictions."""
  parser = argparse.ArgumentParser()
  parser.add_argument("--dir", required=True)
  parser.add_argument("--title", default="")
  args = parser.parse_args(argv)
  d = args.dir
  predictions = {
      (p["method"], p["precision"]): p
      for p in sum(_load(os.path.join(d, "predict_train_*.json")), [])
  }
  runs = sorted(  # fp32 before bf16 within a method
      _load(os.path.join(d, "train_*.json")),
      key=lambda r: (r["method"], [row["precision"] != "float32" for row in r["rows"]]),
  )
  lines = [args.title or "# GPU run-book results", ""]
  if runs:
    lines.append(
        f"Device: {runs[0]['device']} x{runs[0]['devices']}, jax {runs[0]['jax']}, {runs[0]['date']}. "
        f"Predicted: the planner (XLA:CPU compile of the same step) at {int(100 * MFU)}% MFU on the "
        "chip table's peak; roofline: max(FLOPs / peak, bytes / HBM bandwidth)."
    )
  lines += [
      "",
      "| method | precision | img/s | ms/step | MFU | peak MiB (device) | compiled MiB | official "
      "PyTorch img/s | vs official | predicted ms/step | predicted roofline ms | planned MiB |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  rows = []
  for run in runs:
    ref = run.get("reference")
    for r in run["rows"]:
      p = predictions.get((run["method"], r["precision"]), {})
      row = dict(
          method=run["method"],
          device=run["device"],
          **{k: r.get(k) for k in ("precision", "images_per_s", "step_s", "mfu")},
          device_peak_bytes=r.get("device_peak_bytes"),
          compiled_bytes=r.get("compiled_bytes"),
          official_images_per_s=ref["images_per_s"] if ref else None,
          ratio_vs_official=r.get("ratio_vs_official"),
          predicted_step_s=p.get("step_s"),
          predicted_roofline_step_s=p.get("roofline_step_s"),
          planned_bytes=p.get("planned_bytes"),
      )
      rows.append(row)
      lines.append(
          f"| {row['method']} | {row['precision']} | {_fmt(row['images_per_s'])} | "
          f"{_fmt(row['step_s'], '.1f', 1e3)} | {_fmt(row['mfu'], '.1%')} | "
          f"{_mib(row['device_peak_bytes'])} | {_mib(row['compiled_bytes'])} | "
          f"{_fmt(row['official_images_per_s'], missing='not carried')} | "
          f"{_fmt(row['ratio_vs_official'], '.2f')} | {_fmt(row['predicted_step_s'], '.3g', 1e3)} | "
          f"{_fmt(row['predicted_roofline_step_s'], '.3g', 1e3)} | {_mib(row['planned_bytes'])} |"
      )
  propagation = sum(_load(os.path.join(d, "vos_propagation.json")), [])
  planned = {p["size"]: p for p in sum(_load(os.path.join(d, "predict_propagation.json")), [])}
  prop_rows = []
  if propagation:
    lines += [
        "",
        "| vos propagation (MAST) | encoder fps | propagation fps | total fps | step MiB (compiled) | "
        "device peak MiB | predicted fps | predicted roofline fps |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in propagation:
      p = planned.get(r["size"], {})
      prop_rows.append(
          dict(r, predicted_fps=p.get("fps"), predicted_roofline_fps=p.get("roofline_fps"))
      )
      lines.append(
          f"| {r['size']} | {_fmt(r['encoder_fps'])} | {_fmt(r['propagation_fps'])} | "
          f"{_fmt(r['total_fps'])} | {_mib(r['step_bytes'])} | {_mib(r.get('device_peak_bytes'))} | "
          f"{_fmt(p.get('fps'))} | {_fmt(p.get('roofline_fps'))} |"
      )
  log = os.path.join(d, "status.txt")
  if os.path.exists(log):
    with open(log) as f:
      lines += ["", "Steps of the run-book (`status.txt`):", "", "```", f.read().strip(), "```"]
  text = "\n".join(lines) + "\n"
  with open(os.path.join(d, "results.md"), "w") as f:
    f.write(text)
  _write(os.path.join(d, "results.json"), dict(train_steps=rows, propagation=prop_rows))
  return text


COMMANDS = {"predict": predict, "predict-propagation": predict_propagation, "table": table}


def main(argv=None) -> None:
  argv = sys.argv[1:] if argv is None else argv
  if not argv or argv[0] not in COMMANDS:
    raise SystemExit(f"usage: gpu_table.py {{{','.join(COMMANDS)}}} ... (see the docstring)")
  out = COMMANDS[argv[0]](argv[1:])
  if isinstance(out, str):
    print(out)


if __name__ == "__main__":
  main()
