"""Same training steps on 1 device, a (8,1) mesh and a (4,2) mesh with a
parameter-sharding rule give the same loss and parameters (fp32 tolerance)."""
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxseg.data import pipeline
from jaxseg.train import loop
from jaxseg.train import sharding as shd

import toy


def _run(mesh_shape, rules=(), steps=4):
  config = toy.toy_config()
  config.sharding_rules = rules
  config.fsdp_min_size = 1
  devices = jax.devices()[: mesh_shape[0] * mesh_shape[1]]
  config.mesh.data, config.mesh.model = mesh_shape
  mesh = shd.make_mesh(config.mesh, devices)
  task = toy.toy_task()
  ds = pipeline.train_dataset(task.train_source, task.augment, seed=0, global_batch_size=8)
  ts = loop.setup(config, task, ds[0], mesh=mesh)
  state = ts.init_state()
  step = loop.make_train_step(task, ts)
  losses = []
  for i in range(steps):
    state, m = step(state, shd.global_batch(ds[i], ts.batch_sharding))
    losses.append(float(m["loss"]))
  return losses, jax.device_get(state["params"]), state


def test_needs_eight_devices():
  assert jax.device_count() == 8, "tests/conftest.py should give 8 fake CPU devices"


def test_mesh_shapes_agree():
  ref_losses, ref_params, _ = _run((1, 1))
  for shape, rules in [((8, 1), ()),
                       ((4, 2), ((r"conv1/kernel$", (None, None, None, "model")),
                                 (r"head/kernel$", "fsdp")))]:
    losses, params, state = _run(shape, rules)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params, ref_params)
    if rules:
      # The rules really shard: params and their momentum buffers alike.
      conv = state["params"]["conv1"]["kernel"]
      assert conv.sharding.spec == P(None, None, None, "model")
      assert state["params"]["head"]["kernel"].sharding.spec == P(None, None, "data", None)
  assert ref_losses[-1] < ref_losses[0]


def test_bad_rule_names_param():
  with pytest.raises(ValueError, match="conv1/kernel"):
    _run((4, 2), ((r"conv1/kernel$", ("model",)),), steps=1)
