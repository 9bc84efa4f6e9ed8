"""`python -m jaxseg.tools.plan`: what it predicts is checked against what can be measured here.

CI plans a two-convolution task (each compile about a second); the session has 8 fake CPU devices
(tests/conftest.py). The slow tier checks a real method's step against `benchmarks/train_step.py` and runs
the command on SEAM's runlocal config. Paper shapes are the README's table ("Planning a run"), not CI's.
"""

import dataclasses
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.tools import chips
from jaxseg.tools import plan as planner

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


class _TinyNet(nn.Module):
  """Two 3x3 convolutions and BatchNorm: a step that compiles in about a second."""

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Conv(16, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train)(x)
    return nn.Conv(8, (3, 3))(nn.relu(x))


class _OtherNet(nn.Module):
  """Another network for the CPU timing check: strided, wider, three convolutions and a dense head."""

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.relu(nn.Conv(32, (3, 3), strides=2)(x))
    x = nn.relu(nn.Conv(48, (3, 3))(x))
    x = nn.Conv(24, (1, 1))(x)
    return nn.Dense(8)(x)


class _DeepNet(nn.Module):
  """The CPU timing check's target: four 64-channel convolutions, one strided."""

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.relu(nn.Conv(64, (3, 3))(x))
    x = nn.relu(nn.Conv(64, (3, 3), strides=2)(x))
    x = nn.relu(nn.Conv(64, (3, 3))(x))
    return nn.Conv(8, (1, 1))(x)


def _tiny_stage(batch: int, *, fsdp: bool = False, model=None, size: int = 32):
  """(trainer config, StageSpec) of a one-stage task on [batch, size, size, 3] images."""
  from jaxseg.train import loop
  from jaxseg.train.config import trainer_config

  model = model or _TinyNet()
  config = trainer_config()
  config.train.update(batch_size=batch, total_steps=1000)
  config.optimizer.name = "adam"
  if fsdp:
    config.sharding_rules = planner.FSDP_RULES
    config.fsdp_min_size = 0

  def init_fn(rng, b):
    return model.init(rng, b["image"], train=False)

  def loss_fn(params, model_state, b, rng):
    out, updates = model.apply(
        {"params": params, **model_state}, b["image"], train=True, mutable=["batch_stats"]
    )
    return jnp.mean(out**2), ({}, {**model_state, **updates})

  task = loop.TrainTask(
      init_fn=init_fn, loss_fn=loss_fn, train_source=[], augment=None, keys=("image",)
  )
  example = {"image": np.zeros((batch, size, size, 3), np.float32)}
  return config, planner.StageSpec("train", None, lambda: (task, example))


def _tiny_plan(batch: int, devices: int = 1, **kwargs) -> planner.StagePlan:
  config, spec = _tiny_stage(batch, **kwargs)
  return planner.plan_stage(config, spec, jax.devices()[:devices])


@pytest.fixture(scope="module")
def one_device():
  """The tiny stage planned on one device at batch 2 and batch 4."""
  return _tiny_plan(2), _tiny_plan(4)


def test_plan_flops_equal_the_same_step_compiled_directly(one_device):
  from jaxseg.train import loop
  from jaxseg.train import sharding as shd

  config, spec = _tiny_stage(2)
  task, example = spec.build()
  ts = loop.setup(config, task, example, mesh=shd.make_mesh(config.mesh, jax.devices()[:1]))
  compiled = loop.make_train_step(task, ts).lower(ts.abstract_state, example).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  assert cost["flops"] > 0
  assert one_device[0].flops == pytest.approx(cost["flops"], rel=1e-6)
  assert one_device[0].devices == 1 and one_device[0].global_batch == 2


def test_temporaries_grow_with_the_batch(one_device):
  small, large = one_device
  assert large.params_bytes == small.params_bytes and large.opt_bytes == small.opt_bytes
  assert large.batch_bytes == 2 * small.batch_bytes
  assert large.temp_bytes > 1.3 * small.temp_bytes
  assert large.flops == pytest.approx(2 * small.flops, rel=0.1)  # the step is linear in the batch


def test_fsdp_divides_parameter_bytes_over_eight_devices(one_device):
  full = one_device[0]
  sharded = _tiny_plan(16, 8, fsdp=True)  # the same 2 per device
  assert sharded.mesh == {"data": 8, "model": 1} and sharded.batch_per_device == 2
  # Every leaf has a dimension divisible by 8 (16 or 8 channels): each device keeps an eighth.
  assert sharded.params_bytes * 8 == full.params_bytes
  assert sharded.opt_bytes * 8 == pytest.approx(
      full.opt_bytes, abs=64
  )  # Adam's step count stays whole
  # Without the rule the 8 devices each hold everything.
  assert sharded.argument_bytes < full.argument_bytes


def test_stage_over_the_chip_memory_is_flagged_with_what_would_fit(one_device):
  result = one_device[1]
  tiny = dataclasses.replace(chips.CHIPS["h100"], name="tiny", hbm_bytes=result.total_bytes // 2)
  text = planner.format_plan([result], tiny, 0.4)
  assert "DOES NOT FIT" in text and "FLAG: train does not fit tiny" in text
  assert "--config.train.batch_size=" in text  # a smaller batch per device
  assert "--config.train.compute_dtype=bfloat16" in text
  assert "jax.checkpoint" in text
  roomy = dataclasses.replace(tiny, hbm_bytes=10 * result.total_bytes)
  assert "FLAG" not in planner.format_plan([result], roomy, 0.4)
  # On several devices without sharding rules the FSDP rule is offered too.
  several = dataclasses.replace(result, devices=8, mesh={"data": 8, "model": 1})
  assert "FSDP: sharding_rules=" in planner.format_plan([several], tiny, 0.4)


def test_roofline_and_hours_follow_the_chip_table(one_device):
  result = one_device[0]
  h100 = chips.CHIPS["h100"]
  assert result.roofline_seconds(h100) == pytest.approx(
      max(result.flops / 494.7e12, result.bytes_accessed / 3350e9)
  )
  steps = result.total_steps
  assert result.hours(h100, 0.4) == pytest.approx(steps * result.flops / (494.7e12 * 0.4) / 3600)


def test_a_stage_that_cannot_be_planned_is_reported_not_raised(monkeypatch):
  config, spec = _tiny_stage(3)  # batch 3 does not split over 2 devices
  monkeypatch.setattr(planner, "stage_specs", lambda c: [spec])
  monkeypatch.setattr("jaxseg.methods.check_config_keys", lambda c: None)
  results = planner.plan(config, jax.devices()[:2])
  assert isinstance(results[0], planner.StageError) and "train.batch_size=3" in results[0].message
  assert "cannot plan" in planner.format_plan(results, chips.CHIPS["v5e"], 0.4)


@pytest.mark.slow
def test_plan_flops_equal_the_train_step_benchmark():
  """The planner's FLOPs for vos's MAST step equal `benchmarks/train_step.py`'s count at the same shapes."""
  sys.path.insert(0, BENCHMARKS)
  import train_step

  from jaxseg.methods.vos import method as vos
  from jaxseg.train import loop
  from jaxseg.train import sharding as shd

  sys.path.insert(0, CONFIGS)
  import vos as vos_config

  config = vos_config.get_config("synthetic,runlocal")
  with config.unlocked():
    config.input.image_size = (32, 32)
    config.train.batch_size = 2
  (result,) = planner.plan(config, jax.devices()[:1], passes=False)
  task = vos.make_task(config, planner._NotOpened())
  data = vos.example_batch(config)
  ts = loop.setup(config, task, data, mesh=shd.make_mesh(config.mesh, jax.devices()[:1]))
  measured = train_step.model_flops(
      task, ts, ts.abstract_state, shd.global_batch(data, ts.batch_sharding)
  )
  assert measured > 0 and result.flops == pytest.approx(measured, rel=1e-6)


@pytest.mark.slow
def test_plan_command_on_seam_runlocal_plans_every_stage_and_pass():
  import subprocess

  root = os.path.dirname(CONFIGS)
  out = subprocess.run(
      [
          sys.executable,
          "-m",
          "jaxseg.tools.plan",
          "--config=configs/seam.py:synthetic,runlocal",
          "--devices=2",
          "--chip=v5e",
      ],
      cwd=root,
      capture_output=True,
      text=True,
      timeout=900,
      check=True,
  ).stdout
  assert "on 2 x v5e" in out and out.count("fits (") == 5  # 3 stages, 2 passes
  assert "stage train (top-level" in out and "stage affinity (affinity" in out
  assert "stage segment (segment" in out
  assert "pass infer: multi-scale CAMs" in out and "pass segment_eval:" in out
  assert "predicted stage time at 40% MFU" in out


def test_chip_table_is_the_benchmark_peak_table():
  sys.path.insert(0, BENCHMARKS)
  import train_step

  assert train_step.PEAK_TFLOPS == chips.peak_tflops_table()
  assert chips.chip_for_device_kind("TPU v5 lite").name == "v5e"
  assert chips.chip_for_device_kind("NVIDIA H200").name == "h200"
  assert chips.chip_for_device_kind("cpu") is None


def _flops_and_step_seconds(config, spec) -> tuple[float, float]:
  """(the planner's FLOPs per step, median measured seconds per step) of a stage on one CPU device: the
  program the planner compiles (`plan.compile_stage`), run on a real state and batch."""
  sys.path.insert(0, BENCHMARKS)
  from references.common import median_step_seconds

  from jaxseg.train import sharding as shd

  task, example = spec.build()
  batch = planner.abstract_batch(task, example)
  ts, _, compiled = planner.compile_stage(config, task, batch, jax.devices()[:1])
  data = shd.global_batch(example, ts.batch_sharding)
  carry = {"state": ts.init_state()}

  def one():
    carry["state"] = compiled(carry["state"], data)[0]

  seconds = median_step_seconds(
      one, lambda: jax.block_until_ready(carry), warmup=2, steps=4, repeats=3
  )
  return planner._cost(compiled)["flops"], seconds


CPU_FACTOR = 3.0  # stated bound: predicted / measured CPU step time within [1/3, 3]


@pytest.mark.slow
def test_cpu_step_time_predicted_from_another_networks_throughput():
  """The planner's time formula (FLOPs / (peak x MFU)) with the peak set to the FLOP/s measured on one
  network's step predicts another network's measured CPU step time within `CPU_FACTOR`."""
  # Networks of 24-64 channels, steps of tens of milliseconds: compute, not the per-step dispatch, sets
  # the time (a 16-channel network runs at a third of the FLOP/s: the factor is for compute-bound steps).
  flops, seconds = _flops_and_step_seconds(*_tiny_stage(8, model=_OtherNet(), size=64))
  cpu = chips.Chip("cpu", flops / seconds / 1e12, flops / seconds / 1e12, 2**34, 10.0, ())
  target_flops, measured = _flops_and_step_seconds(*_tiny_stage(16, model=_DeepNet(), size=32))
  assert target_flops > 2 * flops  # another network, more work
  plan = planner.StagePlan(**{f.name: 0 for f in dataclasses.fields(planner.StagePlan)})
  plan = dataclasses.replace(
      plan, flops=target_flops, total_steps=1, runs=1, compute_dtype="float32"
  )
  predicted = plan.hours(cpu, 1.0) * 3600  # the planner's formula, MFU 1 of the measured rate
  ratio = predicted / measured
  print(
      f"CPU: {flops / seconds / 1e9:.2f} GFLOP/s; predicted {1e3 * predicted:.2f} ms, "
      f"measured {1e3 * measured:.2f} ms, ratio {ratio:.2f}"
  )
  assert 1 / CPU_FACTOR <= ratio <= CPU_FACTOR


def _tiny_pass(count: int = 3):
  from jaxseg.tools import plan_passes

  model = _TinyNet()

  def build():
    init = lambda rng: model.init(rng, jnp.zeros((1, 32, 32, 3)), train=False)  # noqa: E731
    apply = lambda v, x: model.apply(v, x, train=False)  # noqa: E731
    return init, plan_passes.multiscale_calls(apply, (32, 32), (0.5, 1.0), True, count, "net")

  return plan_passes.PassSpec("infer", "tiny", "float32", build)


def test_inference_pass_sums_its_calls_and_is_flagged_when_too_big():
  one = planner.plan_pass(_tiny_pass(3), jax.devices()[:1])
  assert [c.label for c in one.calls] == ["net x0.5", "net x1"] and one.calls[0].count == 3
  small, large = one.calls
  assert large.flops == pytest.approx(4 * small.flops, rel=0.05)  # 4x the pixels, batch 2 (flip)
  assert one.flops == pytest.approx(3 * (small.flops + large.flops))
  assert one.total_bytes == large.total_bytes and one.weight_bytes > 0
  h100 = chips.CHIPS["h100"]
  eight = dataclasses.replace(one, devices=8)
  assert eight.hours(h100, 0.4) == pytest.approx(one.hours(h100, 0.4) / 8)
  assert one.hours(h100, 0.4) == pytest.approx(one.flops / (494.7e12 * 0.4) / 3600)
  tiny = dataclasses.replace(h100, name="tiny", hbm_bytes=one.total_bytes // 2)
  text = planner.format_plan([one], tiny, 0.4)
  assert "pass infer: tiny" in text and "FLAG: pass infer does not fit tiny" in text
  assert "FLAG" not in planner.format_plan([one], h100, 0.4)


def test_paper_passes_are_built_without_compiling():
  """SEAM's passes at the recipe's shapes (VOC images, the official scales and flip), and the table of
  split sizes they use; building a pass only traces shapes."""
  sys.path.insert(0, CONFIGS)
  import seam as seam_config
  from jaxseg.tools import plan_passes

  config = seam_config.get_config()
  infer, segment = plan_passes.pass_specs(config)
  _, calls = infer.build()
  assert [c.inputs[0].shape for c in calls] == [
      (2, 188, 250, 3),
      (2, 375, 500, 3),
      (2, 562, 750, 3),
      (2, 750, 1000, 3),
  ]
  assert {c.count for c in calls} == {1464}  # VOC train: the CAM mIoU split
  assert "1449 voc:val" in segment.what and "0.5, 0.75" in segment.what
  assert [s.name for s in planner.stage_specs(config)] == ["train", "affinity", "segment"]


def test_recipe_table_rows():
  from jaxseg.tools import plan_table

  config, spec = _tiny_stage(2)
  stage = planner.plan_stage(config, spec, jax.devices()[:1])
  one = planner.plan_pass(_tiny_pass(), jax.devices()[:1])
  recipe = plan_table.RECIPES[0]
  results = {
      recipe: {
          "1x H100": [stage, one],
          "8x v5e": [planner.StageError("train", "x"), dataclasses.replace(one, devices=8)],
      }
  }
  text = plan_table.table(results, 0.4)
  lines = text.splitlines()
  assert len(lines) == 4 and "| train |" in lines[2] and "| pass infer |" in lines[3]
  assert "cannot plan" in lines[2] and lines[3].count("| yes |") == 2
  assert {r.label for r in plan_table.RECIPES} >= {
      "SEAM VOC",
      "ADVENT AdvEnt",
      "ADVENT MinEnt",
      "ESL self-training",
      "MAST",
      "CRW",
      "HN NYUv2",
  }
