"""Every method's training step on 8 (fake CPU) devices computes what it computes on one.

The task is the one the method trains (`make_task` of its `:runlocal` config, shrunk); the step is the
trainer's own (`loop.setup` / `loop.make_train_step`), once on a 1-device mesh and once with the batch
split over 8: one step's loss, terms, gradient norms and parameter updates agree. One step, because
later steps of a freshly initialised BatchNorm network amplify rounding-level differences (MAST's
gradient norm drifts 4e-4, 6 %, 25 % apart over three steps while the first-step gradients agree to
~1e-4), which would say nothing about the sharding. SEAM's case, with its two views and PCM, is tests/test_seam_method.py.
"""

import importlib.util
import os

import jax
import numpy as np
import pytest

from jaxseg.train import loop
from jaxseg.train import sharding as shd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(name: str, arg: str = "runlocal"):
  path = os.path.join(ROOT, "configs", f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"cfg8_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg)
  config.train.batch_size = 8
  # SGD: Adam's g / (sqrt(v) + eps) turns rounding-level gradient differences of near-zero gradients
  # into lr-sized parameter differences, which says nothing about the sharding.
  config.optimizer.update(name="momentum", momentum=0.9)
  return config


def _supervised():
  from jaxseg.methods.supervised import method

  config = _config("supervised")
  config.augment.crop_size = (32, 32)
  return config, method.make_task(config)


def _uda():
  from jaxseg.methods.uda import method

  config = _config("uda")
  config.model.update(width_multiplier=0.125, depth_blocks=(1, 1, 1, 1), discriminator_width=8)
  config.input.update(source_size=(33, 33), target_size=(33, 33))
  config.optimizer.groups.discriminators.name = "momentum"
  return config, method.make_task(config)


def _hn():
  from jaxseg.methods.hn import data, method

  config = _config("hn")
  config.augment.crop_size = (32, 32)
  source = data.ImageMaskSource(data.semantic_source(config, "train"))
  return config, method.make_task(config, source, int(config.data.num_classes))


def _vos():
  from jaxseg.methods.vos import method

  config = _config("vos")
  return config, method.make_task(config)


def _worst_difference(a, b) -> float:
  """max over tensors of ||a - b|| / ||a||."""
  return max(
      float(np.linalg.norm(x - y) / max(np.linalg.norm(x), 1e-12))
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )


TASKS = {"supervised": _supervised, "uda": _uda, "hn": _hn, "vos": _vos}


# Slow tier (~40-75 s each; CI time is at its limit): CI runs a data-parallel step on several devices and
# processes in tests/test_launch.py::test_two_processes_match_one.
CASES = ["supervised", "uda", "hn", "vos"]


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_train_step_same_on_one_and_eight_devices(name):
  config, task = TASKS[name]()
  datasets, _ = loop._datasets(config, task)  # the trainer's own input pipeline
  batch = {k: ds[0] for k, ds in datasets.items()} if isinstance(datasets, dict) else datasets[0]
  reversed_batch = jax.tree.map(lambda x: np.ascontiguousarray(x[::-1]), batch)
  runs = {}
  for n in (1, 8):
    config.mesh.data = n
    mesh = shd.make_mesh(config.mesh, jax.devices()[:n])
    ts = loop.setup(config, task, batch, mesh=mesh)
    step = loop.make_train_step(task, ts)
    for run, b in [("8 devices" if n == 8 else "1 device", batch)] + (
        [("1 device, batch reversed", reversed_batch)] if n == 1 else []
    ):
      init = ts.init_state()
      before = jax.device_get(init["params"])
      state, metrics, _ = step(init, shd.global_batch(b, ts.batch_sharding))
      update = jax.tree.map(lambda x, y: x - y, jax.device_get(state["params"]), before)
      runs[run] = ({k: float(v) for k, v in jax.device_get(metrics).items()}, update)
  (m1, u1), (m8, u8) = runs["1 device"], runs["8 devices"]
  assert np.isfinite(m1["loss"])
  for key in m1:  # the loss, its terms, learning rates and gradient norms
    assert m1[key] == pytest.approx(m8[key], rel=1e-3, abs=1e-6), key
  # Each tensor's update, relative to its size, against what rounding alone does to it: the same step on
  # one device with the batch in reverse order (mathematically the same update; MAST's BatchNorm network
  # moves by ~1e-2 on its smallest tensors). A sharding bug moves updates by O(1).
  noise = _worst_difference(u1, runs["1 device, batch reversed"][1])
  assert _worst_difference(u1, u8) <= max(4 * noise, 1e-4), noise
