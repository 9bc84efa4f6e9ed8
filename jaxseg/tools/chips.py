"""Accelerator spec sheet: dense peak FLOP/s, HBM size and HBM bandwidth per chip.

One table for every number jaxseg reports against a chip: `python -m jaxseg.tools.plan` (roofline step time,
predicted hours, does the stage fit) and `benchmarks/train_step.py` (MFU, through `PEAK_TFLOPS`).

Peaks are dense (no 2:4 sparsity), per chip. `bf16` is the bf16 tensor-core / MXU peak. `fp32` is the peak
of float32 matmuls *as XLA computes them by default*: TF32 tensor cores on NVIDIA (the non-tensor-core FP32
rate is ~15x lower), the bf16 MXU passes on TPU (default matmul precision), so on TPU `fp32 == bf16`.
HBM sizes are the spec sheet's (NVIDIA quotes decimal GB, Google GiB); the runtime keeps a little of it for
itself (JAX on GPU preallocates 75 % unless XLA_PYTHON_CLIENT_MEM_FRACTION says otherwise).

Sources (public spec sheets, read 2026-12):
  H100 SXM5: NVIDIA H100 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/h100/): BF16 1,979 TFLOPS
    with sparsity = 989.4 dense, TF32 989 sparse = 494.7 dense, 80 GB HBM3, 3.35 TB/s.
  H200 SXM: NVIDIA H200 datasheet (nvidia.com/en-us/data-center/h200/): same tensor cores as H100 SXM,
    141 GB HBM3e, 4.8 TB/s.
  A100 SXM4 80GB: NVIDIA A100 datasheet (nvidia.com/en-us/data-center/a100/): BF16 312, TF32 156 (dense),
    80 GB HBM2e, 2,039 GB/s.
  TPU v4: cloud.google.com/tpu/docs/v4: 275 TFLOPS bf16, 32 GiB HBM2, 1,200 GB/s.
  TPU v5e: cloud.google.com/tpu/docs/v5e: 197 TFLOPS bf16, 16 GiB HBM2, 819 GB/s.
  TPU v5p: cloud.google.com/tpu/docs/v5p: 459 TFLOPS bf16, 95 GiB HBM2e, 2,765 GB/s.
  TPU v6e (Trillium): cloud.google.com/tpu/docs/v6e: 918 TFLOPS bf16, 32 GiB HBM, 1,640 GB/s.
"""

from __future__ import annotations

import dataclasses

GB = 10**9
GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str
  bf16_tflops: float  # dense peak, bf16
  fp32_tflops: float  # dense peak of float32 matmuls as XLA runs them by default (TF32 / bf16 MXU)
  hbm_bytes: int
  hbm_gbytes_per_s: float  # HBM bandwidth, 1e9 bytes/s
  device_kinds: tuple[str, ...]  # substrings of `jax.Device.device_kind` that name this chip

  def peak_flops(self, dtype: str) -> float:
    """Peak FLOP/s for a compute dtype ('bfloat16' -> bf16, anything else -> fp32)."""
    return 1e12 * (self.bf16_tflops if str(dtype) == "bfloat16" else self.fp32_tflops)

  @property
  def hbm_bytes_per_s(self) -> float:
    return 1e9 * self.hbm_gbytes_per_s


# Ordered so that the first device-kind substring that matches is the right chip ("TPU v5 lite" before
# "TPU v5", "H200" and "H100" distinct).
CHIPS: dict[str, Chip] = {
    "h100": Chip("h100", 989.4, 494.7, 80 * GB, 3350.0, ("H100",)),  # SXM (PCIe: 756 / 378, 2 TB/s)
    "h200": Chip("h200", 989.4, 494.7, 141 * GB, 4800.0, ("H200",)),
    "a100": Chip("a100", 312.0, 156.0, 80 * GB, 2039.0, ("A100",)),
    "v4": Chip("v4", 275.0, 275.0, 32 * GIB, 1200.0, ("TPU v4",)),
    "v5e": Chip("v5e", 197.0, 197.0, 16 * GIB, 819.0, ("TPU v5 lite", "TPU v5e")),
    "v5p": Chip("v5p", 459.0, 459.0, 95 * GIB, 2765.0, ("TPU v5p", "TPU v5")),
    "v6e": Chip("v6e", 918.0, 918.0, 32 * GIB, 1640.0, ("TPU v6 lite", "TPU v6e")),
}


def peak_tflops_table() -> dict[str, tuple[float, float]]:
  """{device_kind substring: (bf16, fp32) dense peak TFLOP/s}, in matching order."""
  return {
      kind: (chip.bf16_tflops, chip.fp32_tflops)
      for chip in CHIPS.values()
      for kind in chip.device_kinds
  }


def chip_for_device_kind(device_kind: str) -> Chip | None:
  """The chip whose device-kind substring occurs in `device_kind` (case-insensitive), else None (CPUs)."""
  kind = device_kind.lower()
  for chip in CHIPS.values():
    if any(k.lower() in kind for k in chip.device_kinds):
      return chip
  return None
