"""The benchmark scripts run (tiny shapes): they time the real train step and pipeline, so they must not rot.

Speed itself is never asserted here; `benchmarks/` prints it.
"""

import os
import sys

import pytest

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
)

import input_pipeline  # noqa: E402
import train_step  # noqa: E402


def _tiny_train_step_benchmark(method: str) -> dict:
  return train_step.main(
      [
          f"--method={method}",
          "--size=48",
          "--width=0.0625",
          "--batch=1",
          "--steps=1",
          "--repeats=1",
          "--warmup=1",
          "--precision=bfloat16",
          "--devices=2",
          "--conv-lowering=matmul",
      ]
  )


@pytest.mark.parametrize(
    "method",
    [
        "seam",
        "vos",
        # DeepLab-v2 R101 + two discriminators: twice SEAM's compile time, so outside CI.
        pytest.param("uda", marks=pytest.mark.slow),
    ],
)
def test_train_step_benchmark_reports_rates_flops_and_no_recompile(method):
  result = _tiny_train_step_benchmark(method)
  assert [(r["precision"], r["conv_lowering"]) for r in result["rows"]] == [("bfloat16", "matmul")]
  for row in result["rows"]:
    assert row["images_per_s"] > 0 and row["flops_per_step"] > 0 and row["compile_s"] > 0
    assert row["global_batch"] == 2 and row["devices"] == 2
    assert row["mfu"] is None  # CPU: no peak in the table


def test_peak_table_matches_device_kinds():
  assert train_step.peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == pytest.approx(989.4)
  assert train_step.peak_tflops("TPU v5 lite", "bfloat16") == pytest.approx(197.0)
  assert train_step.peak_tflops("cpu", "float32") is None


def test_input_pipeline_benchmark_reads_voc_layout(tmp_path):
  root = input_pipeline.write_voc_like(str(tmp_path), 4)
  assert sorted(os.listdir(os.path.join(root, "JPEGImages")))[0].endswith(".jpg")
  result = input_pipeline.main(
      ["--method=seam", "--workers=0", "--batch=2", "--batches=1", "--images=4", "--step-rate=1"]
  )
  (row,) = result["rows"]
  assert row["images_per_s"] > 0 and row["crop"] == (448, 448) and row["margin"] > 0


def test_pseudo_label_pass_benchmark_is_exact_and_bounded():
  import pseudo_labels  # pylint: disable=import-outside-toplevel

  small = pseudo_labels.main(["--images=4", "--height=64", "--width=128", "--check-images=4"])
  large = pseudo_labels.main(["--images=16", "--height=64", "--width=128", "--check-images=2"])
  assert small["exact_vs_in_memory"] and large["exact_vs_in_memory"]
  assert small["images_per_s"] > 0
  # The pass keeps histograms, not pixels: 4x the images, about the same peak.
  assert large["peak_pass_mib"] < 1.5 * small["peak_pass_mib"] + 1
