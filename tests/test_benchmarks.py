"""The benchmark scripts run (tiny shapes): they time the real train step and pipeline, so they must not rot.

Speed itself is never asserted here; `benchmarks/` prints it.
"""

import importlib.util
import os
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCHMARKS)

import backbones  # noqa: E402
import input_pipeline  # noqa: E402
import train_step  # noqa: E402

# The uda (AdvEnt) step's discriminators need >= 32 px maps: source 45x80, target 32x64.
TINY_SIZE = {"uda": 80}


def _tiny_train_step_benchmark(method: str) -> dict:
  return train_step.main(
      [
          f"--method={method}",
          f"--size={TINY_SIZE.get(method, 48)}",
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
        # The slow tier's: the script's shared path (timing, FLOPs, recompile check, JSON) runs in CI
        # through the GPU run-book's dry run of vos (tests/test_gpu_runbook.py), on one device and XLA's
        # convolutions as on a GPU; these add two devices and the CPU's matmul lowering. SEAM's and
        # AdvEnt's train steps are compiled and checked by tests/test_seam_method.py and
        # tests/test_uda_method.py.
        pytest.param("seam", marks=pytest.mark.slow),
        pytest.param("vos", marks=pytest.mark.slow),
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


def test_per_conv_inventory_is_every_convolution_of_the_mast_resnet():
  """`backbones.py --per-conv` times what the backbone calls: ResNet-18 at stride 4 (MAST) has a stem,
  16 block convolutions and 2 projection shortcuts (layer4 keeps 256 channels at stride 1: none)."""
  case = next(c for c in backbones.CASES if c.name.startswith("resnet18_os4"))
  counts = backbones.backbone_convolutions(case, (32, 32), 2, 0.25)
  assert sum(counts.values()) == 19
  stem = backbones.ConvShape((2, 32, 32, 3), (7, 7, 3, 16), (2, 2), ((3, 3), (3, 3)), (1, 1))
  assert counts[stem] == 1 and stem.describe() == "7x7 3->16 on 2x32x32 s2"
  widest = backbones.ConvShape((2, 8, 8, 64), (3, 3, 64, 64), (1, 1), ((1, 1), (1, 1)), (1, 1))
  assert counts[widest] == 7  # layer3 but its first, and all of layer4
  forward_ms, both_ms = backbones.jax_conv_ms(widest, "auto", steps=1)
  assert 0 < forward_ms and 0 < both_ms


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


def test_input_pipeline_benchmark_raw_vs_prepared(tmp_path):
  result = input_pipeline.main(
      [
          "--source=raw,tfds",
          "--images=4",
          "--size=64x32",
          "--workers=0",
          "--batch=2",
          "--batches=1",
          f"--tmp={tmp_path}",
      ]
  )
  assert [r["source"] for r in result["rows"]] == ["raw", "tfds"]
  assert all(r["examples_per_s"] > 0 and r["bytes_per_example"] > 0 for r in result["rows"])
  assert result["raw_bytes"] > 0 and result["tfds_bytes"] > 0


def test_pseudo_label_pass_benchmark_is_exact_and_bounded():
  import pseudo_labels

  small = pseudo_labels.main(["--images=4", "--height=64", "--width=128", "--check-images=4"])
  large = pseudo_labels.main(["--images=16", "--height=64", "--width=128", "--check-images=2"])
  assert small["exact_vs_in_memory"] and large["exact_vs_in_memory"]
  assert small["images_per_s"] > 0
  # The pass keeps histograms, not pixels: 4x the images, about the same peak.
  assert large["peak_pass_mib"] < 1.5 * small["peak_pass_mib"] + 1


def test_vos_propagation_benchmark_memory_is_linear_in_pixels():
  # By path: `vos` is also configs/vos.py's module name.
  spec = importlib.util.spec_from_file_location("benchmark_vos", os.path.join(BENCHMARKS, "vos.py"))
  vos = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(vos)
  rows = vos.main(["--sizes=16x24,32x48,64x96", "--frames=3", "--width=0.125"])
  assert [r["size"] for r in rows] == ["16x24", "32x48", "64x96"]
  assert all(r["predicted_frames"] == 3 and r["propagation_fps"] > 0 for r in rows)
  # The step with the ROI path and 5 references: bytes = a + b * pixels, so the increments per pixel
  # between sizes agree (a dense HW x HW affinity would make the second 4x the first).
  (p1, b1), (p2, b2), (p3, b3) = ((r["pixels"], r["step_bytes"]) for r in rows)
  slope_small, slope_large = (b2 - b1) / (p2 - p1), (b3 - b2) / (p3 - p2)
  assert abs(slope_large / slope_small - 1) < 0.25, rows  # measured 1.10 (buffer granularity)
  assert rows[2]["dense_affinity_bytes"] == 16 * rows[1]["dense_affinity_bytes"]


def test_correlation_sampler_build_guards_only_the_unguarded_cuda_includes(tmp_path):
  from references import correlation_sampler

  folder = tmp_path / "Correlation_Module"
  folder.mkdir()
  include = correlation_sampler.CUDA_INCLUDE
  (folder / "a.cpp").write_text(f"#include <torch/extension.h>\n{include}\n#include <vector>\n")
  (folder / "b.cpp").write_text(f"#include <vector>\n#ifdef USE_CUDA\n{include}\n#endif\n")
  assert correlation_sampler.guard_cuda_includes(str(tmp_path)) == ["a.cpp"]
  assert (folder / "a.cpp").read_text().split("\n")[1:4] == ["#ifdef USE_CUDA", include, "#endif"]
  assert correlation_sampler.guard_cuda_includes(str(tmp_path)) == []  # idempotent


def test_interleaved_medians_alternate_the_contenders():
  from references.common import Contender, interleaved_medians

  calls = []
  contenders = {
      name: Contender(lambda name=name: calls.append(name), lambda: None, None) for name in "ab"
  }
  times = interleaved_medians(contenders, steps=2, repeats=3)
  assert calls == ["a", "a", "b", "b"] * 3 and set(times) == {"a", "b"}


@pytest.mark.slow
def test_compiled_correlation_sampler_builds_and_matches_the_standin(tmp_path):
  # Builds the PyPI sdist for this torch (1-2 min on 2 idle cores, needs a C++ compiler and PyPI), then checks
  # that the pure-PyTorch stand-in MAST's rows fall back to gives the compiled op's values and gradients.
  torch = pytest.importorskip("torch")
  from references import correlation_sampler, mast

  compiled = correlation_sampler.load(correlation_sampler.build(cache=str(tmp_path / "build")))
  standin = mast._correlation_sampler_standin(torch)
  gen = torch.Generator().manual_seed(0)
  a, b = (torch.randn(2, 8, 12, 14, generator=gen, requires_grad=True) for _ in range(2))
  for patch, dilation in ((13, 1), (25, 3)):
    outs = [
        m.SpatialCorrelationSampler(1, patch, 1, 0, 1, dilation)(a, b) for m in (compiled, standin)
    ]
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    grads = [torch.autograd.grad(o.square().sum(), (a, b)) for o in outs]
    for g0, g1 in zip(*grads):
      torch.testing.assert_close(g0, g1, rtol=1e-4, atol=1e-4)
