"""benchmarks/gpu.sh, the GPU run-book: its results table and its dry run (tiny shapes on the CPU).

CI checks the table (measured rows beside the planner's predictions) from canned JSON, the script's
syntax and arguments, and the dry run of vos (~40 s, ~55 CPU-s here: the planner's compiles fill the
persistent XLA cache that the timed steps then read). The dry run of seam and uda compiles two ResNets
(minutes), so it is the slow tier's; the commands it runs are the same, with other `--method`s.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")
SCRIPT = os.path.join(BENCHMARKS, "gpu.sh")
sys.path.insert(0, BENCHMARKS)

import gpu_table  # noqa: E402


def _dump(path, data):
  with open(path, "w") as f:
    json.dump(data, f)


def _row(precision, step_s, **extra):
  return dict(precision=precision, images_per_s=8 / step_s, step_s=step_s, mfu=0.3, **extra)


def test_table_puts_each_measured_row_beside_its_prediction(tmp_path):
  run = dict(method="seam", device="NVIDIA H100 80GB HBM3", devices=1, jax="0.11.2", date="d")
  _dump(
      tmp_path / "train_seam_float32.json",
      dict(
          run,
          reference=dict(images_per_s=10.0, step_s=0.8),
          rows=[_row("float32", 0.5, device_peak_bytes=2**30, ratio_vs_official=1.6)],
      ),
  )
  _dump(tmp_path / "train_seam_bfloat16.json", dict(run, rows=[_row("bfloat16", 0.25)]))
  _dump(
      tmp_path / "predict_train_seam.json",
      [
          dict(method="seam", precision=p, step_s=s, roofline_step_s=s / 2, planned_bytes=3 * 2**30)
          for p, s in (("float32", 0.1), ("bfloat16", 0.05))
      ],
  )
  _dump(
      tmp_path / "vos_propagation.json",
      [
          dict(
              size="480x854",
              encoder_fps=100.0,
              propagation_fps=40.0,
              total_fps=30.0,
              step_bytes=2**28,
          )
      ],
  )
  _dump(tmp_path / "predict_propagation.json", [dict(size="480x854", fps=90.0, roofline_fps=50.0)])
  (tmp_path / "status.txt").write_text("train_seam_float32: exit 0, 40 s\n")
  text = gpu_table.table([f"--dir={tmp_path}"])
  lines = text.splitlines()
  fp32 = next(line for line in lines if line.startswith("| seam | float32"))
  bf16 = next(line for line in lines if line.startswith("| seam | bfloat16"))
  assert "| 500.0 | 30.0% | 1024 |" in fp32 and "| 10 | 1.60 | 100 | 50 | 3072 |" in fp32
  assert "not carried" in bf16 and "| 50 | 25 | 3072 |" in bf16
  assert "| 480x854 | 100 | 40 | 30 | 256 | - | 90 | 50 |" in text
  assert "train_seam_float32: exit 0" in text and "NVIDIA H100" in text
  saved = json.loads((tmp_path / "results.json").read_text())
  assert [r["precision"] for r in saved["train_steps"]] == ["float32", "bfloat16"]
  assert saved["propagation"][0]["predicted_fps"] == 90.0
  assert (tmp_path / "results.md").read_text() == text


def test_script_parses_and_rejects_unknown_arguments():
  subprocess.run(["bash", "-n", SCRIPT], check=True)
  bad = subprocess.run(["bash", SCRIPT, "--dyr"], capture_output=True, text=True)
  assert bad.returncode == 2 and "unknown argument --dyr" in bad.stdout


@pytest.mark.slow
@pytest.mark.parametrize("methods", [pytest.param("vos", marks=pytest.mark.ci), "seam,uda"])
def test_dry_run_writes_fp32_and_bf16_rows_with_predictions(tmp_path, methods):
  out = subprocess.run(
      ["bash", SCRIPT, "--dry", f"--methods={methods}", f"--out={tmp_path}", "--budget=3000"],
      capture_output=True,
      text=True,
      timeout=3600,
      cwd=ROOT,
  )
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
  saved = json.loads((tmp_path / "results.json").read_text())
  rows = {(r["method"], r["precision"]): r for r in saved["train_steps"]}
  for method in methods.split(","):
    (measured,) = (
        json.loads(p.read_text())["rows"] for p in tmp_path.glob(f"train_{method}_*.json")
    )
    predicted = json.loads((tmp_path / f"predict_train_{method}.json").read_text())
    for precision, step, plan in zip(("float32", "bfloat16"), measured, predicted, strict=True):
      row = rows[(method, precision)]
      assert step["precision"] == plan["precision"] == precision
      assert row["images_per_s"] > 0 and row["predicted_step_s"] > 0 and row["planned_bytes"] > 0
      assert step["compile_s"] > 0 and step["global_batch"] == 1 and step["mfu"] is None  # CPU
      # The planner compiles the very step the benchmark times (XLA convolutions at these widths on
      # the CPU too): the same FLOPs, and its planned bytes are the timed program's compiled bytes.
      assert step["flops_per_step"] == plan["flops_per_step"] > 0
      assert step["compiled_bytes"] == plan["planned_bytes"]
  if "vos" in methods:
    (prop,) = saved["propagation"]
    assert prop["propagation_fps"] > 0 and prop["predicted_fps"] > 0
  assert "exit 124" not in (tmp_path / "status.txt").read_text()


def test_compiled_count_reads_a_jitted_cache_or_says_none():
  """The recompilation check's count: executables of a jitted function; None where a JAX has no such
  attribute (a newer JAX than the pinned one), so the check is skipped rather than crashing."""
  import jax
  import jax.numpy as jnp

  from jaxseg.train import loop

  f = jax.jit(lambda x: x + 1)
  f(jnp.zeros(2))
  f(jnp.zeros(3))
  assert loop.compiled_count(f) == 2
  assert loop.compiled_count(lambda x: x) is None
