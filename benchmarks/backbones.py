"""Forward+backward throughput (images/s) of the jaxseg backbones, fp32 and bf16, against PyTorch if installed.

Each backbone runs at the resolution its method trains at (override with --size / --scale); the PyTorch
numbers use the reference re-statements in tools/make_backbone_fixtures.py (same layers and names).

  python benchmarks/backbones.py                                   # method resolutions (slow on CPU)
  python benchmarks/backbones.py --scale 0.125 --width 0.25 --steps 2 --batch 1   # quick CPU check
  python benchmarks/backbones.py --only resnet18_os4 --size 256 256

One step = forward in training mode, mean-square loss over the output, gradient w.r.t. all trainable
parameters (and the BatchNorm statistics update where the method uses batch statistics). The ratio printed
is jax images/s / torch images/s (> 1: jax is faster); both use the median step time.
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

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
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


def jax_images_per_s(case: Case, size, batch: int, width: float, dtype, steps: int) -> float:
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
  jax.block_until_ready(step(params, state, x, rng))  # compile
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
  args = parser.parse_args(argv)

  ref = None if args.no_torch else load_reference()
  print(
      f"jax {jax.__version__} on {jax.devices()[0].platform}; torch: "
      f"{'not installed' if ref is None else ref.torch.__version__}; batch {args.batch}, width {args.width}"
  )
  print(
      f"{'backbone':46s} {'HxW':>9s} {'dtype':>5s} {'jax img/s':>10s} {'torch img/s':>11s} {'ratio':>6s}"
  )
  for case in CASES:
    if args.only and args.only not in case.name:
      continue
    size = (
        tuple(args.size)
        if args.size
        else tuple(max(32, int(round(s * args.scale))) for s in case.size)
    )
    for dtype_name, dtype in (("fp32", jnp.float32), ("bf16", jnp.bfloat16)):
      # torch first: right after an XLA run its worker threads still compete for the cores.
      torch_ips = (
          torch_images_per_s(
              case, ref, size, args.batch, args.width, args.steps, dtype_name == "bf16"
          )
          if ref is not None
          else float("nan")
      )
      jax_ips = jax_images_per_s(case, size, args.batch, args.width, dtype, args.steps)
      ratio = jax_ips / torch_ips if ref is not None else float("nan")
      print(
          f"{case.name:46s} {size[0]:4d}x{size[1]:<4d} {dtype_name:>5s} {jax_ips:10.2f} {torch_ips:11.2f} "
          f"{ratio:6.2f}",
          flush=True,
      )


if __name__ == "__main__":
  main()
