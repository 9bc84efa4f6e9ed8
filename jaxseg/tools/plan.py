"""Plans a run before renting the hardware: per-device memory, FLOPs and time of every training stage
and of every inference / propagation pass.

  python -m jaxseg.tools.plan --config=configs/<method>.py[:variant] --devices=N --chip=h100 \
      [--mesh_data=N --mesh_model=1] [--mfu=0.4] [--fsdp] [--nopasses] [--config.train.batch_size=...]

For each training stage of the config (SEAM: train, affinity, segment; uda: source_only / adapt / self_train as
`config.stages` lists them; vos: train; hn: pretrain, finetune) this builds the method's real `TrainTask`
without opening a data file or reading a weight (`datasets.build_source` is stubbed out while the task is
built): the train state is `jax.eval_shape` of the trainer's init, sharded by the config's
`sharding_rules` over the mesh, the batch is `jax.ShapeDtypeStruct`s of the method's `example_batch`.
The trainer's jitted, donated step (`jaxseg.train.step.make_train_step`) is lowered and compiled for those
abstract inputs on N fake CPU devices, with XLA's own convolution ops (as on GPU / TPU), and XLA's
`memory_analysis()` (per device: arguments, outputs, temporaries) and `cost_analysis()` (FLOPs and bytes
accessed per device) are read. Printed per stage: parameter and optimiser bytes per device (from the
state's shardings), temporaries, the peak total vs the chip's HBM, FLOPs per step, the roofline step time
on the chip (max(FLOPs / peak, bytes / bandwidth)), and the stage's hours at `--mfu` (total steps x FLOPs
per device / (peak x MFU)). A stage that does not fit is flagged with what would make it fit.

Then each inference / propagation pass of the config's stages (`jaxseg.tools.plan_passes`: SEAM's CAM
inference and segmenter scoring, the evaluation forwards, vos propagation): each of its jitted functions
compiled on one device for abstract weights and inputs; the pass's images are split over the N devices.
`python -m jaxseg.tools.plan_table` plans every paper recipe on 1x H100 and 8x v5e in one command.

Fake devices: `main` sets XLA_FLAGS=--xla_force_host_platform_device_count=N and JAX_PLATFORMS=cpu
in its own environment before jax is first imported (the config file's import is the first), so the
command needs no flags of its own; called in a process where jax is already imported it uses the first
N of the devices there.

Caveats: the program is XLA:CPU's. Temporaries and bytes accessed depend on the backend's fusion and
scheduling (a GPU or TPU compiler usually needs less); a bf16 plan made on CPU showed more temporaries than
fp32 (docs/plan_recipes.md), so bf16 savings are not visible here; FLOPs do not depend on the backend. Multi-host meshes are planned as one host with N devices.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable
from typing import Any

from jaxseg.tools.chips import CHIPS, Chip

FSDP_RULES = ((".*", "fsdp"),)


@dataclasses.dataclass(frozen=True)
class StageSpec:
  """One training stage to plan.

  Attributes:
    name: the stage's name in `config.stages`.
    section: its trainer section (None: the top-level train / optimizer).
    build: () -> (TrainTask, one global example batch of numpy arrays or ShapeDtypeStructs).
    runs: how many times the stage trains this network (hn's finetune: one run per arm and fraction).
  """

  name: str
  section: str | None
  build: Callable[[], tuple[Any, dict]]
  runs: int = 1


@dataclasses.dataclass
class StagePlan:
  stage: str
  section: str | None
  devices: int
  mesh: dict[str, int]
  global_batch: int
  batch_per_device: int
  compute_dtype: str
  total_steps: int
  runs: int
  params_bytes: int  # per device
  opt_bytes: int  # per device
  other_state_bytes: int  # per device: model_state (BatchNorm statistics), extra, counters
  batch_bytes: int  # per device
  argument_bytes: int  # XLA: state + batch per device
  output_bytes: int
  alias_bytes: int  # outputs written into donated arguments
  temp_bytes: int
  flops: float  # per device, per step
  bytes_accessed: float  # per device, per step
  sharded_rules: bool  # the config has sharding rules

  @property
  def state_bytes(self) -> int:
    return self.params_bytes + self.opt_bytes + self.other_state_bytes

  @property
  def total_bytes(self) -> int:
    """Peak per device: live arguments + outputs not written in place + temporaries."""
    return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

  def roofline_seconds(self, chip: Chip) -> float:
    return max(
        self.flops / chip.peak_flops(self.compute_dtype), self.bytes_accessed / chip.hbm_bytes_per_s
    )

  def hours(self, chip: Chip, mfu: float) -> float:
    steps = self.total_steps * self.runs
    return steps * self.flops / (chip.peak_flops(self.compute_dtype) * mfu) / 3600.0

  def fits(self, chip: Chip) -> bool:
    return self.total_bytes <= chip.hbm_bytes


@dataclasses.dataclass
class StageError:
  stage: str
  message: str


@dataclasses.dataclass
class CallPlan:
  label: str
  count: int
  flops: float  # per call
  bytes_accessed: float  # per call
  argument_bytes: int
  output_bytes: int
  temp_bytes: int

  @property
  def total_bytes(self) -> int:
    return self.argument_bytes + self.output_bytes + self.temp_bytes


@dataclasses.dataclass
class PassPlan:
  """An inference / propagation pass: its calls compiled on one device; the images (frames) of the pass
  are split over `devices` (data parallel: every device holds the weights and runs its share)."""

  name: str
  what: str
  devices: int
  compute_dtype: str
  weight_bytes: int  # per device (replicated)
  calls: list[CallPlan]

  @property
  def flops(self) -> float:
    """Of the whole pass, all devices together."""
    return sum(c.count * c.flops for c in self.calls)

  @property
  def bytes_accessed(self) -> float:
    return sum(c.count * c.bytes_accessed for c in self.calls)

  @property
  def largest(self) -> CallPlan:
    return max(self.calls, key=lambda c: c.total_bytes)

  @property
  def total_bytes(self) -> int:
    """Peak per device: the largest call (its arguments hold the weights)."""
    return self.largest.total_bytes

  def fits(self, chip: Chip) -> bool:
    return self.total_bytes <= chip.hbm_bytes

  def hours(self, chip: Chip, mfu: float) -> float:
    return self.flops / (self.devices * chip.peak_flops(self.compute_dtype) * mfu) / 3600.0

  def roofline_hours(self, chip: Chip) -> float:
    seconds = max(
        self.flops / chip.peak_flops(self.compute_dtype), self.bytes_accessed / chip.hbm_bytes_per_s
    )
    return seconds / self.devices / 3600.0


# ------------------------------------------------------------------------------------------------------
# The stages of each method.


class _NotOpened:
  """Stands in for a data source while a task is built for planning: never read."""

  def __init__(self, *args, **kwargs):
    self.args = args

  def __len__(self):
    raise RuntimeError("the planner opens no data")

  def __getitem__(self, index):
    raise RuntimeError("the planner opens no data")


@contextlib.contextmanager
def no_data():
  """`datasets.build_source` returns a stub inside the block: building a task opens no file."""
  from jaxseg.data import datasets

  original = datasets.build_source
  datasets.build_source = _NotOpened
  try:
    yield
  finally:
    datasets.build_source = original


def augmented_batch(task, blank: dict, batch_size: int) -> dict:
  """A batch of zeros shaped as the task's augmentation makes one example of `blank` (uint8 image and
  targets at any size): for stages without an `example_batch`."""
  import numpy as np

  one = task.augment.random_map(blank, np.random.default_rng(0))
  return {k: np.zeros((batch_size,) + np.shape(v), np.asarray(v).dtype) for k, v in one.items()}


def _seam_stages(config) -> list[StageSpec]:
  import numpy as np

  from jaxseg.methods.seam import affinity_stage, method, segment_stage

  def train():
    return method.make_task(config), method.example_batch(config)

  def affinity():
    task = affinity_stage.make_task(config, [])
    h, w = config.affinity.crop_size
    k = int(config.data.num_classes)
    blank = {
        "image": np.zeros((h, w, 3), np.uint8),
        "la": np.zeros((h, w, k), np.float32),
        "ha": np.zeros((h, w, k), np.float32),
    }
    return task, augmented_batch(task, blank, int(config.affinity.train.batch_size))

  def segment():
    task = segment_stage.make_task(config, [])
    h, w = config.segment.crop_size
    blank = {"image": np.zeros((h, w, 3), np.uint8), "mask": np.zeros((h, w), np.uint8)}
    return task, augmented_batch(task, blank, int(config.segment.train.batch_size))

  builders = {
      "train": (None, train),
      "affinity": ("affinity", affinity),
      "segment": ("segment", segment),
  }
  return [
      StageSpec(name, section, build)
      for name, (section, build) in builders.items()
      if name in config.stages
  ]


def _uda_stages(config) -> list[StageSpec]:
  from jaxseg.methods.uda import method
  from jaxseg.methods.uda.stages import TRAINING_STAGES

  def build(stage, section):
    def fn():
      if stage == "source_only":
        task = method.make_task(config, section=section, objective="source_only")
      elif stage == "self_train":
        task = method.make_task(
            config,
            section=section,
            target_source=_NotOpened(),
            objective=str(config.self_train.objective),
        )
      else:
        task = method.make_task(config)
      return task, method.example_batch(config, section)

    return fn

  return [
      StageSpec(stage, section, build(stage, section))
      for stage, section in TRAINING_STAGES.items()
      if stage in config.stages
  ]


def _vos_stages(config) -> list[StageSpec]:
  from jaxseg.methods.vos import method

  if "train" not in config.stages:
    return []
  return [
      StageSpec(
          "train",
          None,
          lambda: (method.make_task(config, _NotOpened()), method.example_batch(config)),
      )
  ]


def _hn_stages(config) -> list[StageSpec]:
  from jaxseg.methods.hn import method, stages

  out = []
  if "pretrain" in config.stages:
    out.append(
        StageSpec(
            "pretrain",
            None,
            lambda: (
                method.make_task(config, _NotOpened(), method.num_hn_classes(config)),
                method.example_batch(config),
            ),
        )
    )
  if "finetune" in config.stages:
    classes = int(config.data.num_classes)
    out.append(
        StageSpec(
            "finetune",
            "finetune",
            lambda: (
                method.make_task(config, _NotOpened(), classes, section="finetune"),
                method.example_batch(config, "finetune"),
            ),
            runs=len(stages.finetune_runs(config)),
        )
    )
  return out


def _supervised_stages(config) -> list[StageSpec]:
  from jaxseg.methods.supervised import method

  def build():
    import numpy as np

    b = int(config.train.batch_size)
    h, w = config.augment.crop_size
    batch = dict(image=np.zeros((b, h, w, 3), np.float32), mask=np.zeros((b, h, w), np.int32))
    return method.make_task(config), batch

  return [StageSpec("train", None, build)] if "train" in config.stages else []


STAGES: dict[str, Callable[[Any], list[StageSpec]]] = {
    "seam": _seam_stages,
    "uda": _uda_stages,
    "vos": _vos_stages,
    "hn": _hn_stages,
    "supervised": _supervised_stages,
}


def stage_specs(config) -> list[StageSpec]:
  """The training stages of `config` that the planner can build."""
  if config.method not in STAGES:
    raise ValueError(f"the planner has no stages for method {config.method!r}")
  return STAGES[config.method](config)


# ------------------------------------------------------------------------------------------------------
# Planning one stage.


def abstract_batch(task, example: dict) -> dict:
  """ShapeDtypeStructs of the keys the task's loss reads (each source's `keys`, or `task.keys`)."""
  import jax

  def structs(batch, keys):
    batch = {k: v for k, v in batch.items() if keys is None or k in keys}
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(tuple(x.shape), x.dtype), batch)

  sources = task.data_sources() if task.sources is not None else None
  if sources is None:
    return structs(example, task.keys)
  return {name: structs(example[name], src.keys) for name, src in sources.items()}


def _shard_bytes(tree) -> int:
  import jax
  import numpy as np

  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
    total += int(np.prod(shape, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
  return total


def compile_stage(stage_config, task, batch, devices):
  """(TrainSetup, abstract sharded batch, compiled step) of one stage on `devices`, XLA convolutions."""
  import jax

  from jaxseg.models import conv_lowering
  from jaxseg.train import loop
  from jaxseg.train import sharding as shd

  mesh = shd.make_mesh(stage_config.mesh, devices)
  ts = loop.setup(stage_config, task, batch, mesh=mesh)
  sizes = {None: batch} if task.sources is None else batch
  loop._check_batch_sizes(sizes, mesh)
  sharded = jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=ts.batch_sharding), batch
  )
  with conv_lowering.conv_lowering("xla"):
    compiled = loop.make_train_step(task, ts).lower(ts.abstract_state, sharded).compile()
  return ts, sharded, compiled


def plan_stage(config, spec: StageSpec, devices) -> StagePlan:
  """Compiles one stage's train step for abstract inputs on `devices` and reads XLA's analyses."""
  import jax

  from jaxseg.train.config import stage_trainer_config

  stage_config = stage_trainer_config(config, spec.section)
  with no_data():
    task, example = spec.build()
  batch = abstract_batch(task, example)
  ts, sharded, compiled = compile_stage(stage_config, task, batch, devices)
  memory = compiled.memory_analysis()
  cost = _cost(compiled)
  state = ts.abstract_state
  params, opt = _shard_bytes(state["params"]), _shard_bytes(state["opt_state"])
  global_batch = int(jax.tree.leaves(batch)[0].shape[0])
  data_ways = int(ts.mesh.shape["data"])
  return StagePlan(
      stage=spec.name,
      section=spec.section,
      devices=len(devices),
      mesh={k: int(v) for k, v in ts.mesh.shape.items()},
      global_batch=global_batch,
      batch_per_device=global_batch // data_ways,
      compute_dtype=str(stage_config.train.compute_dtype),
      total_steps=int(stage_config.train.total_steps),
      runs=spec.runs,
      params_bytes=params,
      opt_bytes=opt,
      other_state_bytes=_shard_bytes(state) - params - opt,
      batch_bytes=_shard_bytes(sharded),
      argument_bytes=int(memory.argument_size_in_bytes),
      output_bytes=int(memory.output_size_in_bytes),
      alias_bytes=int(memory.alias_size_in_bytes),
      temp_bytes=int(memory.temp_size_in_bytes),
      flops=float(cost.get("flops", 0.0)),
      bytes_accessed=float(cost.get("bytes accessed", 0.0)),
      sharded_rules=bool(tuple(stage_config.sharding_rules)),
  )


def _cost(compiled) -> dict:
  cost = compiled.cost_analysis()
  return (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}


def plan_pass(spec, devices) -> PassPlan:
  """Compiles each call of an inference pass (`jaxseg.tools.plan_passes.PassSpec`) on the first of
  `devices`, XLA convolutions, weights as `jax.eval_shape` of the network's init."""
  import jax

  from jaxseg.models import conv_lowering

  with no_data():
    init, calls = spec.build()
  variables = jax.eval_shape(init, jax.random.key(0))
  planned = []
  with conv_lowering.conv_lowering("xla"), jax.default_device(devices[0]):
    for call in calls:
      args = ((variables,) if call.uses_variables else ()) + tuple(call.inputs)
      compiled = jax.jit(call.fn).lower(*args).compile()
      memory, cost = compiled.memory_analysis(), _cost(compiled)
      planned.append(
          CallPlan(
              label=call.label,
              count=int(call.count),
              flops=float(cost.get("flops", 0.0)),
              bytes_accessed=float(cost.get("bytes accessed", 0.0)),
              argument_bytes=int(memory.argument_size_in_bytes),
              output_bytes=int(memory.output_size_in_bytes),
              temp_bytes=int(memory.temp_size_in_bytes),
          )
      )
  return PassPlan(
      name=spec.name,
      what=spec.what,
      devices=len(devices),
      compute_dtype=spec.compute_dtype,
      weight_bytes=_shard_bytes(variables),
      calls=planned,
  )


def plan(config, devices, *, passes: bool = True) -> list[StagePlan | PassPlan | StageError]:
  """Every training stage of `config` planned on `devices`, then (with `passes`) its inference /
  propagation passes; a stage or pass that cannot be built or compiled becomes a `StageError` naming why
  (the others are still planned)."""
  from jaxseg import methods
  from jaxseg.tools import plan_passes

  methods.check_config_keys(config)
  out = []
  try:
    specs = stage_specs(config)
    extra = plan_passes.pass_specs(config) if passes else []
  except Exception as e:  # noqa: BLE001  (reported, not raised: the command's answer for this config)
    return [StageError("*", f"{type(e).__name__}: {e}")]
  if not specs and not extra:
    return [StageError("*", f"no training stage or pass in config.stages={tuple(config.stages)}")]
  jobs = [(s.name, lambda s=s: plan_stage(config, s, devices)) for s in specs]
  jobs += [(f"pass {p.name}", lambda p=p: plan_pass(p, devices)) for p in extra]
  for name, job in jobs:
    try:
      out.append(job())
    except Exception as e:  # noqa: BLE001
      text = " ".join(str(e).split())[:400]
      out.append(StageError(name, f"{type(e).__name__}: {text}"))
  return out


# ------------------------------------------------------------------------------------------------------
# Advice and output.


def fit_advice(p: StagePlan, chip: Chip) -> list[str]:
  """What would make a stage that does not fit the chip fit (estimates from this plan's numbers)."""
  budget = chip.hbm_bytes
  state = p.argument_bytes - p.batch_bytes  # the train state, per device
  rest = p.total_bytes - state  # batch, outputs not in place, temporaries: scale with the batch
  out = []
  if p.batch_per_device > 1 and rest > 0:
    b = p.batch_per_device
    while b > 1 and state + rest * b / p.batch_per_device > budget:
      b -= 1
    if state + rest * b / p.batch_per_device <= budget:
      key = "train.batch_size" if p.section is None else f"{p.section}.train.batch_size"
      out.append(
          f"batch per device {p.batch_per_device} -> {b} (~{_gib(state + rest * b / p.batch_per_device)} "
          f"per device): --config.{key}={b * p.mesh['data']}, or more devices on the 'data' axis"
      )
  ways = p.mesh["data"]
  if ways > 1 and not p.sharded_rules and p.state_bytes > 0:
    fsdp_total = p.total_bytes - state + state / ways
    verdict = "fits" if fsdp_total <= budget else "still over"
    out.append(
        f"FSDP: sharding_rules={FSDP_RULES!r} (--fsdp) shards params + optimiser over the {ways} "
        f"'data' devices: ~{_gib(fsdp_total)} per device ({verdict})"
    )
  elif ways == 1 and p.devices == 1:
    out.append(
        "FSDP needs several devices: parameters + optimiser take "
        f"{_gib(p.params_bytes + p.opt_bytes)} of one device"
    )
  if p.compute_dtype != "bfloat16":
    key = "train.compute_dtype" if p.section is None else f"{p.section}.train.compute_dtype"
    out.append(
        f"bf16 activations: --config.{key}=bfloat16 (on GPU / TPU temporaries roughly halve: "
        f"~{_gib(p.total_bytes - p.temp_bytes / 2)} per device; a bf16 plan on XLA:CPU does not show it)"
    )
  out.append(
      "rematerialisation: wrap the backbone's blocks in jax.checkpoint (no config key yet) to trade "
      f"recomputation for most of the {_gib(p.temp_bytes)} of temporaries"
  )
  return out


def _gib(n: float) -> str:
  """Bytes in GiB (MiB below 1 GiB)."""
  return f"{n / 2**30:.2f} GiB" if abs(n) >= 2**30 else f"{n / 2**20:.1f} MiB"


def _human_seconds(s: float) -> str:
  return f"{1e3 * s:.1f} ms" if s < 1 else f"{s:.2f} s"


def format_plan(
    results: list[StagePlan | StageError], chip: Chip, mfu: float, title: str = ""
) -> str:
  lines = [title] if title else []
  for r in results:
    if isinstance(r, StageError):
      name = r.stage if r.stage.startswith("pass ") else f"stage {r.stage}"
      lines.append(f"{name}: cannot plan: {r.message}")
      continue
    if isinstance(r, PassPlan):
      lines += format_pass(r, chip, mfu)
      continue
    fits = r.fits(chip)
    runs = f" x {r.runs} runs" if r.runs > 1 else ""
    lines += [
        f"stage {r.stage} ({'top-level' if r.section is None else r.section} trainer section): "
        f"mesh data={r.mesh['data']} model={r.mesh['model']}, global batch {r.global_batch} "
        f"({r.batch_per_device} per device), {r.compute_dtype}, {r.total_steps} steps{runs}",
        f"  per device: params {_gib(r.params_bytes)}, optimiser {_gib(r.opt_bytes)}, other state "
        f"{_gib(r.other_state_bytes)}, batch {_gib(r.batch_bytes)}",
        f"  per device (XLA): arguments {_gib(r.argument_bytes)}, outputs {_gib(r.output_bytes)} "
        f"({_gib(r.alias_bytes)} in place), temporaries {_gib(r.temp_bytes)}",
        f"  total {_gib(r.total_bytes)} of {_gib(chip.hbm_bytes)} HBM ({chip.name}): "
        f"{'fits' if fits else 'DOES NOT FIT'} ({100 * r.total_bytes / chip.hbm_bytes:.0f}%)",
        f"  FLOPs per step: {r.flops / 1e12:.3f} TFLOP per device ({r.flops * r.devices / 1e12:.3f} "
        f"over {r.devices}), {_gib(r.bytes_accessed)} accessed per device",
        f"  roofline step on {chip.name}: {_human_seconds(r.roofline_seconds(chip))} "
        f"(peak {chip.peak_flops(r.compute_dtype) / 1e12:.1f} TFLOP/s {r.compute_dtype}, "
        f"{chip.hbm_gbytes_per_s:.0f} GB/s)",
        f"  predicted stage time at {100 * mfu:.0f}% MFU: {r.hours(chip, mfu):.3g} h",
    ]
    bound = r.roofline_seconds(chip) * r.total_steps * r.runs / 3600.0
    if bound > r.hours(chip, mfu):
      lines.append(
          f"  note: HBM-bound: the roofline step (XLA:CPU's byte count, which fuses less than GPU / TPU "
          f"compilers) is slower than {100 * mfu:.0f}% MFU; at the roofline the stage takes >= {bound:.3g} h"
      )
    if not fits:
      lines.append(f"  FLAG: {r.stage} does not fit {chip.name}; would make it fit:")
      lines += [f"    - {a}" for a in fit_advice(r, chip)]
  return "\n".join(lines)


def format_pass(p: PassPlan, chip: Chip, mfu: float) -> list[str]:
  big = p.largest
  fits = p.fits(chip)
  calls = ", ".join(f"{c.label} x{c.count}" for c in p.calls)
  lines = [
      f"pass {p.name}: {p.what}; {p.compute_dtype}, split over {p.devices} device(s)",
      f"  calls: {calls}",
      f"  per device: weights {_gib(p.weight_bytes)}; largest call ({big.label}): arguments "
      f"{_gib(big.argument_bytes)}, outputs {_gib(big.output_bytes)}, temporaries {_gib(big.temp_bytes)}",
      f"  total {_gib(p.total_bytes)} of {_gib(chip.hbm_bytes)} HBM ({chip.name}): "
      f"{'fits' if fits else 'DOES NOT FIT'} ({100 * p.total_bytes / chip.hbm_bytes:.0f}%)",
      f"  FLOPs: {p.flops / 1e15:.3f} PFLOP for the pass ({p.flops / 1e12 / p.devices:.1f} TFLOP per "
      f"device), {_gib(p.bytes_accessed / p.devices)} accessed per device",
      f"  predicted pass time at {100 * mfu:.0f}% MFU: {p.hours(chip, mfu):.3g} h"
      + (
          f" (HBM roofline >= {p.roofline_hours(chip):.3g} h)"
          if p.roofline_hours(chip) > p.hours(chip, mfu)
          else ""
      ),
  ]
  if not fits:
    lines += [
        f"  FLAG: pass {p.name} does not fit {chip.name}; would make it fit:",
        f"    - smaller inputs to the largest call ({big.label}): fewer or smaller test scales, a "
        "smaller evaluation batch or image size",
        "    - bf16 compute (the stage's train.compute_dtype=bfloat16 builds the network in bf16)",
    ]
  return lines


# ------------------------------------------------------------------------------------------------------
# Command line.


def _requested_devices(argv: list[str]) -> int:
  for i, a in enumerate(argv):
    if a.startswith("--devices="):
      return int(a.split("=", 1)[1])
    if a == "--devices" and i + 1 < len(argv):
      return int(argv[i + 1])
  return 1


def use_fake_devices(count: int) -> None:
  """N fake CPU devices for this process: must run before jax is first imported (else a no-op)."""
  if "jax" in sys.modules:
    return
  flags = [
      f
      for f in os.environ.get("XLA_FLAGS", "").split()
      if not f.startswith("--xla_force_host_platform_device_count")
  ]
  os.environ["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={count}"])
  os.environ["JAX_PLATFORMS"] = "cpu"
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
  """The command line (absl flags, as `python -m jaxseg.data.check`: `--config.*` overrides work)."""
  try:
    use_fake_devices(max(1, _requested_devices(sys.argv)))
  except ValueError:
    pass  # the flag parser reports the bad value
  from absl import app, flags

  from jaxseg import cli

  config_flag, verbose = cli.define_config_flags()
  devices = flags.DEFINE_integer("devices", 1, "Devices to plan for (fake CPU devices here).")
  mesh_data = flags.DEFINE_integer("mesh_data", None, "mesh.data (default: the config's).")
  mesh_model = flags.DEFINE_integer("mesh_model", None, "mesh.model (default: the config's).")
  chip_flag = flags.DEFINE_enum("chip", "h100", list(CHIPS), "Target chip.")
  mfu = flags.DEFINE_float("mfu", 0.4, "Model FLOPs utilisation for the predicted hours.")
  fsdp = flags.DEFINE_bool("fsdp", False, f"Plan with sharding_rules={FSDP_RULES!r}.")
  passes = flags.DEFINE_bool("passes", True, "Also plan the inference / propagation passes.")

  def run(argv: list[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    with cli.user_errors(verbose.value):
      import jax

      from jaxseg.errors import ConfigError

      n = devices.value
      if n < 1 or n > jax.device_count():
        raise ConfigError(f"--devices={n}: this process has {jax.device_count()} devices")
      if not 0 < mfu.value <= 1:
        raise ConfigError(f"--mfu={mfu.value}: expected a fraction in (0, 1]")
      config = config_flag.value
      with config.unlocked():
        if mesh_data.value is not None:
          config.mesh.data = mesh_data.value
        if mesh_model.value is not None:
          config.mesh.model = mesh_model.value
        if fsdp.value:
          config.sharding_rules = FSDP_RULES
      chip = CHIPS[chip_flag.value]
      spec = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--config=")), "")
      title = (
          f"# plan {spec} on {n} x {chip.name} (fake CPU devices here; jax {jax.__version__}); "
          f"MFU {mfu.value:g}"
      )
      print(title, flush=True)
      results = plan(config, jax.devices()[:n], passes=passes.value)
      print(format_plan(results, chip, mfu.value), flush=True)

  cli.run_absl(run)


if __name__ == "__main__":
  main()
