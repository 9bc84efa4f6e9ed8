"""Steady-state training-step throughput, compile time and model FLOPs utilisation (MFU).

Times jaxseg's real train step (the trainer's jitted, donated step over the device mesh, the method's loss and
optimiser) and, with --reference, the official PyTorch implementation's step at the same shapes on the same
machine, and prints jaxseg / official.

  python benchmarks/train_step.py --method=seam                      # paper shapes: ResNet-38, 448^2 + x0.3 view
  python benchmarks/train_step.py --method=uda                       # AdvEnt: DeepLab-v2 R101 + 2 D, 1280x720 + 1024x512
  python benchmarks/train_step.py --method=uda --size=320 --steps=2 --repeats=2 --reference=/path/to/ADVENT
  python benchmarks/train_step.py --method=seam --reference=/path/to/SEAM    # + official step, same device
  python benchmarks/train_step.py --method=vos --reference=/path/to/MAST     # MAST pairs, 256^2, batch 12
  python benchmarks/train_step.py --method=vos --reference=/path/to/MAST --interleave   # shared machine
  python benchmarks/train_step.py --method=seam --size=112 --batch=2 --steps=3   # quick CPU check

Methods (shapes from the papers / official configs):
  seam  SEAM train step: two views (448^2 crop and its x0.3 rescale), cls + ER + ECR + PCM min-pooling losses,
        SGD with the official parameter groups; batch 8 per device. Reference: YudeWang/SEAM
        (`network/resnet38_SEAM.py`, `train_SEAM.py`'s loss lines restated around the imported pieces).
  uda   The `uda` method's AdvEnt step (its default objective): DeepLab-v2 R101 multi-level, source
        1280x720 with labels, target 1024x512; segmenter CE (main + 0.1 aux, logits upsampled to the label
        size) + adversarial BCE on the target self-information maps (0.001 main + 0.0002 aux, D frozen),
        and the two FC discriminators (main and aux heads) on the detached source / target maps (each term
        halved); SGD momentum 0.9 with 10x lr on the heads and ADVENT's per-listing backbone updates, Adam
        (0.9, 0.99) for each discriminator; batch 1 per device as ADVENT. `--uda-objective=minent` times
        the MinEnt step instead (CE + 0.001 / 0.0002 x target entropy; no discriminator).
        Reference: valeoai/ADVENT, one iteration of `advent/domain_adaptation/train_UDA.py: train_advent`
        (or `train_minent`) restated around its imported pieces (`advent/model/deeplabv2.py`,
        `advent/model/discriminator.py: get_fc_discriminator`, `advent/utils/func.py: loss_calc,
        prob_2_entropy, bce_loss, adjust_learning_rate*`, `advent/utils/loss.py: entropy_loss`): the
        official order of forward / backward passes, requires_grad toggles and optimiser steps, labels
        source 0 / target 1, cfg.TRAIN's values (domain_adaptation/config.py, restated: it needs easydict);
        `F.softmax`'s implicit dim (1) is written out. On CPU `bce_loss` (which moves its label tensor to
        `get_device()`, -1 there) is restated with the same ops.
  vos   MAST step (the `vos` method's `mast_loss`): pairs of 256^2 Lab frames, one of a/b dropped, ResNet-18
        features, colorizer with R = 6, smooth-L1 (x20); Adam 1e-3; batch 12 per device. Reference:
        zlai0/MAST (`models/mast.py: MAST` with training=True, its `dropout2d_lab`, `main.py: compute_lphoto`'s
        ops restated as main.py parses argv at import), timed (with --interleave) twice: with the compiled
        `spatial_correlation_sampler` the official colorizer imports (built from the PyPI sdist for this
        torch when it does not import: references/correlation_sampler.py, --correlation-sampler) and with
        a pure-PyTorch stand-in (same values, other speed); without the compiled op the stand-in row alone.
  hn    No train-step case here yet (not among --method's choices).

MFU = FLOPs of the compiled step (XLA cost analysis of the step with XLA's convolution ops, whatever
lowering is timed; counts multiply-adds as 2) / step time / device peak.
Peaks are dense tensor-core numbers per chip (table `PEAK_TFLOPS`, from jaxseg/tools/chips.py with its sources): bf16
for bf16 compute, TF32 for fp32 compute on NVIDIA (XLA's default f32 matmul precision there), the bf16 MXU peak on TPU.
CPUs have no entry: FLOP/s only.

Official PyTorch is timed in fp32 (the code has no mixed precision). On CPU install torch 2.13.0
(`pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu`); the official code's unused
imports (cv2, pydensecrf, tensorboardX, torchvision) are replaced by inert stubs when missing.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import sys
import time
from collections.abc import Callable

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from references import advent, mast, seam  # noqa: E402
from references.common import Contender, interleaved_medians, median_step_seconds, uda_shapes  # noqa: E402

from jaxseg.models import conv_lowering  # noqa: E402
from jaxseg.tools import chips  # noqa: E402
from jaxseg.train import loop  # noqa: E402
from jaxseg.train import sharding as shd  # noqa: E402

# Dense peak TFLOP/s per chip: (bf16, fp32 as XLA computes it by default), matched against device_kind. The
# numbers and their sources live in one table, jaxseg/tools/chips.py, shared with `python -m jaxseg.tools.plan`.
PEAK_TFLOPS = chips.peak_tflops_table()

TARGETS = {  # printed next to the results (issue 7); a benchmark reports, it does not assert
    "seam": "official fp32 ratio >= 3x on a GPU (>= 1x on CPU); MFU >= 45% bf16 on H100/H200",
    "uda": "AdvEnt step: official fp32 ratio >= 1x on CPU, >= 2x on a GPU",
    "vos": "MAST's PyTorch step: >= 1x on this CPU, >= 2x on a GPU",
}


def peak_tflops(device_kind: str, dtype: str) -> float | None:
  for key, (bf16, fp32) in PEAK_TFLOPS.items():
    if key.lower() in device_kind.lower():
      return bf16 if dtype == "bfloat16" else fp32
  return None


# ------------------------------------------------------------------------------------------------------------
# jaxseg steps


def seam_case(args, dtype: str):
  """(config, task, global batch) of the SEAM train step at the paper's shapes."""
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
  import seam as seam_config
  from jaxseg.methods.seam import method

  config = seam_config.get_config("voc")
  size = args.size or 448
  batch = args.batch or 8
  with config.unlocked():
    config.data.name = (
        "synthetic"  # only builds the (unused) source; the batch below is fed directly
    )
    config.data.synthetic.num_train = 8
    config.data.synthetic.image_size = (size, size)
    config.model.width_multiplier = args.width
    config.train.compute_dtype = dtype
    config.augment.crop_size = (size, size)
    config.train.batch_size = batch * num_devices(args)
  task = method.make_task(config)
  rng = np.random.default_rng(0)
  n = config.train.batch_size
  labels = (rng.random((n, config.data.num_classes - 1)) < 0.15).astype(np.float32)
  labels[np.arange(n), rng.integers(0, labels.shape[1], n)] = 1.0
  data = dict(image=rng.standard_normal((n, size, size, 3)).astype(np.float32), labels=labels)
  return config, task, data


UDA_OBJECTIVES = ("advent", "minent")
# ADVENT's FC discriminator: five 4x4 / 2 convs, so its input (a map at the label size) needs >= 32 px a side.
UDA_MIN_DISCRIMINATOR_SIDE = 32


def uda_case(args, dtype: str):
  """The `uda` method's own step for `--uda-objective` (AdvEnt by default: segmenter + the two
  discriminators, each network with its optimiser group), paper optimisers, random inputs at the
  requested shapes."""
  from jaxseg.methods.uda import method as uda

  objective = args.uda_objective
  source, target = uda_shapes(args)
  if objective == "advent" and min(*source, *target) < UDA_MIN_DISCRIMINATOR_SIDE:
    raise SystemExit(
        f"--method=uda --uda-objective=advent: source {source} / target {target} (H, W) are below the "
        f"discriminators' {UDA_MIN_DISCRIMINATOR_SIDE} px (five stride-2 convs); use --size >= 80"
    )
  batch = (args.batch or 1) * num_devices(args)
  config = uda.default_config()
  config.train.batch_size = batch
  config.train.compute_dtype = dtype
  config.model.width_multiplier = args.width
  config.loss.name = objective
  config.input.update(source_size=source, target_size=target)
  segmenter, disc = uda.build_networks(config)
  task = loop.TrainTask(
      init_fn=lambda rng, b: uda.init_variables(config, rng, b),
      loss_fn=functools.partial(uda.uda_loss, segmenter, disc, config.loss, objective),
      train_source=None,
      augment=None,
  )
  rng = np.random.default_rng(0)
  data = {
      "source": {
          "image": rng.standard_normal((batch, *source, 3)).astype(np.float32) * 50,
          "mask": rng.integers(0, 19, (batch, *source)).astype(np.int32),
      },
      "target": {"image": rng.standard_normal((batch, *target, 3)).astype(np.float32) * 50},
  }
  return config, task, data


def vos_case(args, dtype: str):
  """The `vos` method's MAST step (the method's own objective): pairs of 256 x 256 Lab frames, batch
  12 (MAST's default), Adam; random clean-Lab inputs."""
  from jaxseg.methods.vos import method as vos

  size = args.size or 256
  batch = (args.batch or 12) * num_devices(args)
  config = vos.default_config()
  config.train.batch_size = batch
  config.train.compute_dtype = dtype
  config.model.width_multiplier = args.width
  config.input.image_size = (size, size)
  encoder = vos.build_encoder(config)
  task = loop.TrainTask(
      init_fn=functools.partial(vos.init_variables, config),
      loss_fn=functools.partial(vos.mast_loss, encoder, config.loss),
      train_source=None,
      augment=None,
  )
  rng = np.random.default_rng(0)
  clip = rng.uniform(-1, 1, (batch, 2, size, size, 3)).astype(np.float32)
  return config, task, {"clip": clip}


CASES: dict[str, Callable] = {
    "seam": seam_case,
    "uda": uda_case,
    "vos": vos_case,
}


def num_devices(args) -> int:
  return args.devices or jax.device_count()


def model_flops(task, ts, state, batch) -> float:
  """FLOPs of one train step: XLA's cost analysis of the step traced with XLA's convolution ops.

  Counted on that program whatever lowering is timed: im2col + matmul (the CPU path, see
  jaxseg/models/conv_lowering.py) also multiplies the zero padding taps, which are not model FLOPs.
  """
  with conv_lowering.conv_lowering("xla"):
    return flops_of(loop.make_train_step(task, ts).lower(state, batch).compile())


def flops_of(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0)) if cost else 0.0


def jaxseg_contender(args, dtype: str, algorithm: str = "direct") -> Contender:
  """jaxseg's compiled train step with `train.conv_algorithm = algorithm`, warmed up (under the caller's
  convolution lowering: the step is traced then, and later calls reuse that trace)."""
  config, task, data = CASES[args.method](args, dtype)
  config.train.conv_algorithm = algorithm
  mesh = shd.make_mesh(config.mesh, jax.devices()[: num_devices(args)])
  ts = loop.setup(config, task, data, mesh=mesh)
  state = ts.init_state()
  batch = shd.global_batch(data, ts.batch_sharding)
  step = loop.make_train_step(task, ts)
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  if conv_lowering.uses_xla_convolutions():
    flops = flops_of(compiled)
  else:
    flops = model_flops(task, ts, state, batch)
  carry = {"state": state, "metrics": None}

  def one_step():  # the state is donated: feed each step's output to the next
    carry["state"], carry["metrics"], _ = step(carry["state"], batch)

  def sync():
    jax.block_until_ready(carry)

  for _ in range(args.warmup):
    one_step()
  sync()

  def report(step_s: float) -> dict:
    executables = loop.compiled_count(step)
    if executables not in (1, None):
      raise RuntimeError(f"the {args.method} step recompiled: {executables} executables")
    memory = compiled.memory_analysis()
    stats = jax.devices()[0].memory_stats() or {}
    images = int(config.train.batch_size)
    peak = peak_tflops(jax.devices()[0].device_kind, dtype)
    tflops = (
        flops / step_s / 1e12
    )  # cost analysis is of the whole (SPMD-partitioned) program per device
    return dict(
        images_per_s=images / step_s,
        step_s=step_s,
        compile_s=compile_s,
        flops_per_step=flops,
        tflops_per_s=tflops,
        mfu=(tflops / peak) if peak else None,
        loss=float(carry["metrics"]["loss"]),
        global_batch=images,
        devices=num_devices(args),
        # XLA's memory analysis of the compiled step on this backend (per device; outputs written into
        # the donated state not counted twice), and on accelerators the allocator's peak for this process.
        compiled_bytes=int(
            memory.argument_size_in_bytes
            + memory.output_size_in_bytes
            - memory.alias_size_in_bytes
            + memory.temp_size_in_bytes
        )
        if memory is not None
        else None,
        device_peak_bytes=int(stats["peak_bytes_in_use"]) if "peak_bytes_in_use" in stats else None,
    )

  return Contender(one_step, sync, report)


def time_jaxseg(args, dtype: str, algorithm: str = "direct") -> dict:
  c = jaxseg_contender(args, dtype, algorithm)
  return c.report(
      median_step_seconds(c.step, c.sync, warmup=0, steps=args.steps, repeats=args.repeats)
  )


# Official PyTorch steps (benchmarks/references/: imported from the checkout at run time; nothing vendored)
REFERENCES = {"seam": seam.reference, "uda": advent.reference, "vos": mast.reference}


# ------------------------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--method", required=True, choices=sorted(CASES))
  parser.add_argument(
      "--precision",
      default="float32,bfloat16",
      help="comma-separated compute dtypes for jaxseg (float32, bfloat16)",
  )
  parser.add_argument(
      "--size",
      type=int,
      default=0,
      help="SEAM crop side / UDA source width (target scaled alike) / MAST frame side; 0 = paper shapes",
  )
  parser.add_argument(
      "--batch", type=int, default=0, help="batch per device; 0 = paper (SEAM 8, UDA 1, MAST 12)"
  )
  parser.add_argument(
      "--width", type=float, default=1.0, help="backbone width multiplier (1 = paper)"
  )
  parser.add_argument("--devices", type=int, default=0, help="use the first N devices (0 = all)")
  parser.add_argument("--steps", type=int, default=10, help="steps per timed repeat")
  parser.add_argument(
      "--repeats", type=int, default=3, help="timed repeats (the median is reported)"
  )
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument(
      "--conv-lowering",
      default="auto",
      help="comma-separated convolution lowerings to time (auto, xla, matmul; see "
      "jaxseg/models/conv_lowering.py): 'auto,xla' shows what the CPU matmul path buys",
  )
  parser.add_argument(
      "--conv-algorithm",
      default="direct",
      help="comma-separated train.conv_algorithm values to time (direct, winograd; see "
      "jaxseg/models/winograd.py)",
  )
  parser.add_argument(
      "--reference", default="", help="path to the official checkout (SEAM, ADVENT or MAST)"
  )
  parser.add_argument(
      "--uda-objective",
      default="advent",
      choices=UDA_OBJECTIVES,
      help="--method=uda: the step timed (jaxseg and --reference): advent (segmenter + two "
      "discriminators) or minent",
  )
  parser.add_argument(
      "--interleave",
      action="store_true",
      help="time the official step(s) and every jaxseg row in alternating windows (all built first and "
      "kept in memory): on a shared machine, load falls on all of them alike; --repeats windows each",
  )
  parser.add_argument(
      "--correlation-sampler",
      default="",
      help="--method=vos: where MAST's compiled spatial_correlation_sampler comes from when it does not "
      "import: '' = build the PyPI sdist (references/correlation_sampler.py), a tarball or checkout "
      "to build, 'none' = the pure-PyTorch stand-in only",
  )
  parser.add_argument("--json", default="", help="also write the results here")
  return parser.parse_args(argv)


def jaxseg_rows(args) -> list[tuple[str, str, str]]:
  """(precision, lowering, conv algorithm) of every jaxseg row, in order."""
  return [
      (dtype, lowering, algorithm)
      for dtype in args.precision.split(",")
      for lowering in args.conv_lowering.split(",")
      for algorithm in args.conv_algorithm.split(",")
  ]


def interleaved(args, results: dict) -> dict:
  """The official step(s) and jaxseg's rows timed in alternating windows in this process; every row's
  ratio against every official row."""
  contenders, official = {}, []
  if args.reference:
    import torch

    ref_run = REFERENCES[args.method](args, os.path.abspath(args.reference))
    variants = getattr(ref_run, "contenders", None) or {"official": ref_run.contender}
    for name, c in variants.items():
      for _ in range(max(args.warmup, 3)):
        c.step()
      c.sync()
      contenders[("official", name)] = c
      official.append(name)
  for dtype, lowering, algorithm in jaxseg_rows(args):
    with conv_lowering.conv_lowering(lowering):  # traced and warmed up under its lowering
      contenders[(dtype, lowering, algorithm)] = jaxseg_contender(args, dtype, algorithm)
  times = interleaved_medians(contenders, steps=args.steps, repeats=args.repeats)
  refs = {
      name: contenders[("official", name)].report(times[("official", name)]) for name in official
  }
  for name, r in refs.items():
    r["torch"] = torch.__version__
    print(
        f"official PyTorch {torch.__version__} fp32 ({name}): {r['images_per_s']:.3f} img/s "
        f"({1e3 * r['step_s']:.1f} ms/step)",
        flush=True,
    )
  results["references"] = refs
  header = f"{'precision':>9} {'lowering':>8} {'algorithm':>9} {'img/s':>9} {'ms/step':>9} {'compile s':>9}"
  print(header + "".join(f"  vs {name}" for name in refs), flush=True)
  for key, c in contenders.items():
    if key[0] == "official":
      continue
    dtype, lowering, algorithm = key
    r = c.report(times[key])
    r["precision"], r["conv_lowering"], r["conv_algorithm"] = dtype, lowering, algorithm
    r["ratio_vs"] = {
        name: r["images_per_s"] / num_devices(args) / ref["images_per_s"]
        for name, ref in refs.items()
    }
    results["rows"].append(r)
    line = (
        f"{dtype:>9} {lowering:>8} {algorithm:>9} {r['images_per_s']:9.3f} {1e3 * r['step_s']:9.1f} "
        f"{r['compile_s']:9.1f}"
    )
    print(line + "".join(f"  {x:{len(n) + 3}.2f}x" for n, x in r["ratio_vs"].items()), flush=True)
  results["interleaved"] = dict(steps=args.steps, repeats=args.repeats)
  return results


def main(argv=None) -> dict:
  args = parse_args(argv)
  kind = jax.devices()[0].device_kind
  print(
      f"# {args.method} train step | device {kind} x{num_devices(args)} | jax {jax.__version__} | "
      f"{time.strftime('%Y-%m-%d')}",
      flush=True,
  )
  results = {
      "method": args.method,
      "device": kind,
      "devices": num_devices(args),
      "jax": jax.__version__,
      "date": time.strftime("%Y-%m-%d"),
      "rows": [],
  }
  if args.reference and args.width != 1.0:
    raise SystemExit("--reference needs --width=1 (the official networks have full width only)")
  if args.interleave:
    results = interleaved(args, results)
    print(f"targets: {TARGETS.get(args.method, '-')}")
    if args.json:
      with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    return results
  reference = None
  if args.reference:
    if args.width != 1.0:
      raise SystemExit("--reference needs --width=1 (the official networks have full width only)")
    if num_devices(args) != 1:
      print("note: the official step runs on one device; compare per-device rates", flush=True)
    import torch

    ref_run = REFERENCES[args.method](args, os.path.abspath(args.reference))
    reference = ref_run(max(args.warmup, 3), args.steps, args.repeats)
    del ref_run  # frees the official model, optimiser and inputs before jaxseg's step is built
    gc.collect()
    reference["torch"] = torch.__version__
    print(
        f"official PyTorch {torch.__version__} fp32: {reference['images_per_s']:.3f} img/s "
        f"({1e3 * reference['step_s']:.1f} ms/step)",
        flush=True,
    )
    results["reference"] = reference
  header = (
      f"{'precision':>9} {'lowering':>8} {'algorithm':>9} {'img/s':>9} {'ms/step':>9} {'compile s':>9} "
      f"{'TFLOP/s':>8} {'MFU':>6}"
  )
  if reference:
    header += f" {'vs official':>11}"
  print(header)
  for dtype, lowering, algorithm in jaxseg_rows(args):
    with conv_lowering.conv_lowering(lowering):
      r = time_jaxseg(args, dtype, algorithm)
    r["precision"], r["conv_lowering"], r["conv_algorithm"] = dtype, lowering, algorithm
    if reference:
      r["ratio_vs_official"] = r["images_per_s"] / num_devices(args) / reference["images_per_s"]
    results["rows"].append(r)
    line = (
        f"{dtype:>9} {lowering:>8} {algorithm:>9} {r['images_per_s']:9.3f} {1e3 * r['step_s']:9.1f} "
        f"{r['compile_s']:9.1f} {r['tflops_per_s']:8.3f} "
        f"{('%.1f%%' % (100 * r['mfu'])) if r['mfu'] is not None else 'n/a':>6}"
    )
    if reference:
      line += f" {r['ratio_vs_official']:10.2f}x"
    print(line, flush=True)
  print(f"targets: {TARGETS.get(args.method, '-')}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=2)
  return results


if __name__ == "__main__":
  main()
