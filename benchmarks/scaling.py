"""Weak scaling of a method's train step: step time on 1, 2, 4, 8 devices at a fixed batch per device.

Each device count runs `benchmarks/train_step.py --devices=N` in a fresh process (the same jitted, donated step
over a ('data', 'model') mesh of the first N devices, batch split on 'data'). Weak-scaling efficiency is
t(1) / t(N): 100 % means N devices process N times the images in the same time.

  python benchmarks/scaling.py --method=seam                         # real accelerators, paper shapes
  python benchmarks/scaling.py --method=seam --size=64 --width=0.125 --batch=2   # CPU: 8 fake devices

Without an accelerator the devices are XLA's fake host devices (`--xla_force_host_platform_device_count`),
which share the machine's cores: the table then shows the cost of the SPMD program (collectives, sharding),
not a speed-up; on a 2-core machine expect the step time to grow with N.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def run_step(args, devices: int, fake_cpu_devices: int) -> dict:
  with tempfile.NamedTemporaryFile(suffix=".json") as out:
    cmd = [
        sys.executable,
        os.path.join(HERE, "train_step.py"),
        f"--method={args.method}",
        f"--devices={devices}",
        f"--precision={args.precision}",
        f"--steps={args.steps}",
        f"--repeats={args.repeats}",
        f"--width={args.width}",
        f"--json={out.name}",
    ]
    if args.size:
      cmd.append(f"--size={args.size}")
    if args.batch:
      cmd.append(f"--batch={args.batch}")
    env = dict(os.environ)
    if fake_cpu_devices:
      env["JAX_PLATFORMS"] = "cpu"
      env["XLA_FLAGS"] = (
          env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={fake_cpu_devices}"
      ).strip()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    with open(out.name) as f:
      result = json.load(f)
  row = result["rows"][0]
  row["device"] = result["device"]
  return row


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--method", default="seam")
  parser.add_argument("--devices", default="1,2,4,8")
  parser.add_argument("--precision", default="float32")
  parser.add_argument("--size", type=int, default=0)
  parser.add_argument(
      "--batch", type=int, default=0, help="batch per device (0 = the method's paper value)"
  )
  parser.add_argument("--width", type=float, default=1.0)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument(
      "--fake-cpu-devices",
      type=int,
      default=-1,
      help="fake host devices when there is no accelerator (-1: 8 if no GPU/TPU, else 0)",
  )
  parser.add_argument("--json", default="")
  args = parser.parse_args(argv)
  fake = args.fake_cpu_devices
  if fake < 0:
    import jax

    fake = 8 if jax.devices()[0].platform == "cpu" else 0
  rows = []
  print(
      f"# weak scaling: {args.method}, {args.precision}, batch per device {args.batch or 'paper'}"
      + (f", {fake} fake CPU devices on {os.cpu_count()} cores" if fake else "")
  )
  print(f"{'devices':>7} {'global batch':>12} {'ms/step':>9} {'img/s':>9} {'efficiency':>10}")
  for n in (int(d) for d in args.devices.split(",")):
    row = run_step(args, n, fake)
    base = rows[0]["step_s"] if rows else row["step_s"]
    row["efficiency"] = base / row["step_s"]
    rows.append(row)
    print(
        f"{n:7d} {row['global_batch']:12d} {1e3 * row['step_s']:9.1f} {row['images_per_s']:9.2f} "
        f"{100 * row['efficiency']:9.1f}%",
        flush=True,
    )
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=2)
  return rows


if __name__ == "__main__":
  main()
