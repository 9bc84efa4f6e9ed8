"""Forward+backward throughput (images/s) of the jaxseg backbones, fp32 and bf16, against PyTorch if installed.

Each backbone runs at the resolution its method trains at (override with --size / --scale); the PyTorch
numbers use the reference re-statements in tools/make_backbone_fixtures.py (same layers and names).

  python benchmarks/backbones.py                                   # method resolutions (slow on CPU)
  python benchmarks/backbones.py --scale 0.125 --width 0.25 --steps 2 --batch 1   # quick CPU check
  python benchmarks/backbones.py --only resnet18_os4 --size 256 256
  python benchmarks/backbones.py --only resnet18_os4 --size 128 128 --batch 4 --per-conv   # where the time goes
  python benchmarks/backbones.py --only resnet18_os4 --size 128 128 --batch 4 --dtypes fp32 --conv-algorithm direct,winograd

One step = forward in training mode, mean-square loss over the output, gradient w.r.t. all trainable
parameters (and the BatchNorm statistics update where the method uses batch statistics). The ratio printed
is jax images/s / torch images/s (> 1: jax is faster); both use the median step time.

--per-conv times each distinct convolution of the backbone alone (its shapes, stride, padding and dilation, as
the fp32 training forward traces them): forward, and forward + backward (input and kernel gradients; kernel
only for the convolution on the image), jaxseg's lowering on this backend (`auto`) and XLA's op (`xla`)
against `torch.nn.functional.conv2d` (NCHW, as the official code runs). Totals are weighted by how often each
occurs; the whole backbone's step minus the convolutions' total is everything else (BatchNorm, ReLU, adds,
layout copies).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jax_core

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from jaxseg.models import conv_lowering  # noqa: E402
from jaxseg.models.deeplab_v2 import DeepLabV2  # noqa: E402
from jaxseg.models.resnet import ResNet  # noqa: E402
from jaxseg.models.resnet38 import ResNet38  # noqa: E402
from jaxseg.models.seeded import seeded_variables  # noqa: E402


@dataclasses.dataclass
class Case:
  name: str
  size: tuple[int, int]  # (H, W) the method trains at
  make_jax: Callable[[float, Any], Any]  # (width, dtype) -> flax module
  make_torch: Callable[[Any, float], Any]  # (reference module namespace, width) -> torch module
  output: str  # which output the loss uses


CASES = [
    Case(
        "resnet18_os4 (MAST video, 256x256)",
        (256, 256),
        lambda w, dt: ResNet(
            18, w, output_stride=4, dilate=False, stage_widths=(64, 128, 256, 256), dtype=dt
        ),
        lambda ref, w: ref.TvResNet(
            18,
            w,
            replace=(False, True, True),
            dilate=False,
            max_pool=False,
            stage_widths=(64, 128, 256, 256),
        ),
        "layer4",
    ),
    Case(
        "resnet18_os8 (CRW video, 256x256)",
        (256, 256),
        lambda w, dt: ResNet(18, w, output_stride=8, dilate=False, dtype=dt),
        lambda ref, w: ref.TvResNet(18, w, replace=(False, True, True), dilate=False),
        "layer4",
    ),
    Case(
        "resnet50_os8 (depth pre-training, 320x320)",
        (320, 320),
        lambda w, dt: ResNet(50, w, output_stride=8, dtype=dt),
        lambda ref, w: ref.TvResNet(50, w, replace=(False, True, True)),
        "layer4",
    ),
    Case(
        "deeplab_v2_r101 (ADVENT/ESL, 512x1024)",
        (512, 1024),
        lambda w, dt: DeepLabV2(19, width_multiplier=w, dtype=dt),
        lambda ref, w: ref.AdventDeepLabV2(19, multiplier=w),
        "main",
    ),
    Case(
        "resnet38 (SEAM, 448x448)",
        (448, 448),
        lambda w, dt: ResNet38(width_multiplier=w, dtype=dt),
        lambda ref, w: ref.SeamResNet38(w),
        "conv6",
    ),
]


def median_step_time(step: Callable[[], Any], steps: int, warmup: int) -> float:
  """Median seconds per call after `warmup` untimed calls (the median resists a busy shared CPU)."""
  for _ in range(warmup):
    step()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def jax_images_per_s(
    case: Case, size, batch: int, width: float, dtype, steps: int, algorithm: str = "direct"
) -> float:
  model = case.make_jax(width, dtype)
  x = jax.random.normal(jax.random.key(0), (batch, *size, 3), jnp.float32)
  template = jax.eval_shape(lambda: model.init(jax.random.key(0), x[:1], train=False))
  variables = jax.device_put(seeded_variables(template, 0))
  params, state = variables["params"], {k: v for k, v in variables.items() if k != "params"}

  @jax.jit
  def step(params, state, x, rng):
    def loss_fn(p):
      out, new_state = model.apply(
          {"params": p, **state}, x, train=True, mutable=["batch_stats"], rngs={"dropout": rng}
      )
      return jnp.mean(jnp.square(out[case.output].astype(jnp.float32))), new_state

    (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return loss, grads, new_state

  rng = jax.random.key(1)
  with conv_lowering.conv_algorithm(algorithm):  # read while the step is traced, here
    jax.block_until_ready(step(params, state, x, rng))
  return batch / median_step_time(
      lambda: jax.block_until_ready(step(params, state, x, rng)), steps, warmup=1
  )


def torch_images_per_s(
    case: Case, ref, size, batch: int, width: float, steps: int, bf16: bool
) -> float:
  import torch

  model = case.make_torch(ref, width)
  model.train()
  x = torch.randn(batch, 3, *size)
  autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

  def step():
    model.zero_grad(set_to_none=True)
    with autocast:
      out = model(x)[case.output]
    torch.mean(out.float() ** 2).backward()

  # oneDNN creates its primitives over the first few steps (each ~100x slower than later ones).
  return batch / median_step_time(step, steps, warmup=4)


@dataclasses.dataclass(frozen=True)
class ConvShape:
  """One convolution as the backbone calls it: NHWC input, HWIO kernel."""

  lhs: tuple[int, ...]
  rhs: tuple[int, ...]
  strides: tuple[int, ...]
  padding: tuple[tuple[int, int], ...]
  dilation: tuple[int, ...]

  def describe(self) -> str:
    kh, kw, c, o = self.rhs
    n, h, w, _ = self.lhs
    extra = f" s{self.strides[0]}" if max(self.strides) > 1 else ""
    extra += f" d{self.dilation[0]}" if max(self.dilation) > 1 else ""
    return f"{kh}x{kw} {c}->{o} on {n}x{h}x{w}{extra}"


def backbone_convolutions(case: Case, size, batch: int, width: float) -> dict[ConvShape, int]:
  """{convolution: how many times the fp32 training forward calls it}, from the traced program (XLA's op
  forced, so that every convolution appears as one `conv_general_dilated`)."""
  model = case.make_jax(width, jnp.float32)
  x = jax.ShapeDtypeStruct((batch, *size, 3), jnp.float32)
  template = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, *size, 3)), train=False)
  )

  def forward(variables, x):
    return model.apply(
        variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)}
    )

  with conv_lowering.conv_lowering("xla"):
    closed = jax.make_jaxpr(forward)(template, x)
  counts: dict[ConvShape, int] = {}

  def visit(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "conv_general_dilated":
        lhs, rhs = (v.aval.shape for v in eqn.invars)
        p = eqn.params
        if tuple(p["dimension_numbers"].lhs_spec) != (0, 3, 1, 2) or p["feature_group_count"] != 1:
          raise SystemExit(
              f"--per-conv: {case.name} has a convolution other than NHWC / HWIO, ungrouped"
          )
        shape = ConvShape(
            tuple(lhs),
            tuple(rhs),
            tuple(p["window_strides"]),
            tuple(tuple(pad) for pad in p["padding"]),
            tuple(p["rhs_dilation"]),
        )
        counts[shape] = counts.get(shape, 0) + 1
      for sub in jax_core.jaxprs_in_params(eqn.params):
        visit(sub)

  visit(closed.jaxpr)
  return counts


def jax_conv_ms(shape: ConvShape, lowering: str, steps: int) -> tuple[float, float]:
  """(forward ms, forward + backward ms) of one convolution under `lowering` (the image's convolution:
  kernel gradient only)."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(shape.lhs, np.float32))
  w = jnp.asarray(rng.standard_normal(shape.rhs, np.float32) * 0.05)

  def conv(x, w):
    return conv_lowering.conv_general_dilated(
        x,
        w,
        shape.strides,
        shape.padding,
        rhs_dilation=shape.dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )

  image = shape.lhs[-1] == 3
  with conv_lowering.conv_lowering(lowering):  # traced here, on the first call
    forward = jax.jit(conv)
    ct = jnp.asarray(rng.standard_normal(jax.eval_shape(conv, x, w).shape, np.float32))

    @jax.jit
    def forward_backward(x, w, ct):
      if image:
        y, vjp = jax.vjp(lambda w: conv(x, w), w)
      else:
        y, vjp = jax.vjp(conv, x, w)
      return y, vjp(ct)

    times = []
    for fn, args in ((forward, (x, w)), (forward_backward, (x, w, ct))):
      jax.block_until_ready(fn(*args))
      times.append(
          1e3
          * median_step_time(
              lambda fn=fn, args=args: jax.block_until_ready(fn(*args)), steps, warmup=1
          )
      )
  return times[0], times[1]


def torch_conv_ms(shape: ConvShape, steps: int) -> tuple[float, float]:
  import torch
  import torch.nn.functional as F

  n, h, w_, c = shape.lhs
  kh, kw, _, o = shape.rhs
  if any(lo != hi for lo, hi in shape.padding):
    raise SystemExit(f"--per-conv: asymmetric padding {shape.padding} has no conv2d equivalent")
  x = torch.randn(n, c, h, w_, requires_grad=c != 3)
  w = (torch.randn(o, c, kh, kw) * 0.05).requires_grad_()
  options = dict(
      stride=shape.strides, padding=tuple(lo for lo, _ in shape.padding), dilation=shape.dilation
  )
  with torch.no_grad():
    ct = torch.randn_like(F.conv2d(x, w, **options))

  def forward():
    with torch.no_grad():
      F.conv2d(x, w, **options)

  def forward_backward():
    F.conv2d(x, w, **options).backward(ct)

  # oneDNN creates its primitives over the first calls.
  return tuple(1e3 * median_step_time(fn, steps, warmup=3) for fn in (forward, forward_backward))


def per_conv_table(case: Case, ref, size, batch: int, width: float, steps: int) -> None:
  counts = backbone_convolutions(case, size, batch, width)
  lowerings = ("auto", "xla")
  header = " | ".join(f"jax {lw} fwd / fwd+bwd ms" for lw in lowerings)
  print(f"\n{case.name}, fp32, batch {batch}, {size[0]}x{size[1]}: each convolution alone")
  print(
      f"| convolution | count | {header} | torch fwd / fwd+bwd ms | speed jax auto / torch (fwd+bwd) |"
  )
  print("| --- | --- |" + " --- |" * (len(lowerings) + 2))
  totals = np.zeros(2 * len(lowerings) + 2)
  for shape, count in counts.items():
    row = [t for lw in lowerings for t in jax_conv_ms(shape, lw, steps)]
    row += list(torch_conv_ms(shape, steps)) if ref is not None else [float("nan")] * 2
    totals += count * np.asarray(row)
    cells = " | ".join(f"{row[2 * i]:.1f} / {row[2 * i + 1]:.1f}" for i in range(len(row) // 2))
    print(f"| {shape.describe()} | {count} | {cells} | {row[-1] / row[1]:.2f} |", flush=True)
  cells = " | ".join(
      f"{totals[2 * i]:.0f} / {totals[2 * i + 1]:.0f}" for i in range(len(totals) // 2)
  )
  print(f"| total (x count) | {sum(counts.values())} | {cells} | {totals[-1] / totals[1]:.2f} |")


def load_reference():
  try:
    import torch  # noqa: F401
  except ImportError:
    return None
  path = os.path.join(os.path.dirname(__file__), "..", "tools", "make_backbone_fixtures.py")
  spec = importlib.util.spec_from_file_location("backbone_reference", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def main(argv=None):
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--width", type=float, default=1.0, help="width multiplier of every backbone")
  parser.add_argument("--scale", type=float, default=1.0, help="scales every method resolution")
  parser.add_argument("--size", type=int, nargs=2, default=None, help="H W for every backbone")
  parser.add_argument("--only", default=None, help="substring of the backbone names to run")
  parser.add_argument("--no-torch", action="store_true")
  parser.add_argument(
      "--per-conv",
      action="store_true",
      help="also time each distinct convolution alone (fp32; see above)",
  )
  parser.add_argument(
      "--conv-algorithm",
      default="direct",
      help="comma-separated train.conv_algorithm values for jax (direct, winograd: "
      "jaxseg/models/winograd.py), a row each",
  )
  parser.add_argument(
      "--dtypes",
      default="fp32,bf16",
      help="comma-separated: fp32, bf16 (torch runs bf16 in autocast)",
  )
  args = parser.parse_args(argv)

  ref = None if args.no_torch else load_reference()
  print(
      f"jax {jax.__version__} on {jax.devices()[0].platform}; torch: "
      f"{'not installed' if ref is None else ref.torch.__version__}; batch {args.batch}, width {args.width}"
  )
  print(
      f"{'backbone':46s} {'HxW':>9s} {'dtype':>5s} {'conv alg':>8s} {'jax img/s':>10s} "
      f"{'torch img/s':>11s} {'ratio':>6s}"
  )
  dtypes = {"fp32": jnp.float32, "bf16": jnp.bfloat16}
  for case in CASES:
    if args.only and args.only not in case.name:
      continue
    size = (
        tuple(args.size)
        if args.size
        else tuple(max(32, int(round(s * args.scale))) for s in case.size)
    )
    for dtype_name in args.dtypes.split(","):
      dtype = dtypes[dtype_name]
      # torch first: right after an XLA run its worker threads still compete for the cores.
      torch_ips = (
          torch_images_per_s(
              case, ref, size, args.batch, args.width, args.steps, dtype_name == "bf16"
          )
          if ref is not None
          else float("nan")
      )
      for algorithm in args.conv_algorithm.split(","):
        jax_ips = jax_images_per_s(case, size, args.batch, args.width, dtype, args.steps, algorithm)
        ratio = jax_ips / torch_ips if ref is not None else float("nan")
        print(
            f"{case.name:46s} {size[0]:4d}x{size[1]:<4d} {dtype_name:>5s} {algorithm:>8s} "
            f"{jax_ips:10.2f} {torch_ips:11.2f} {ratio:6.2f}",
            flush=True,
        )
    if args.per_conv:
      per_conv_table(case, ref, size, args.batch, args.width, args.steps)


if __name__ == "__main__":
  main()
