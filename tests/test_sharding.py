"""Same training steps on 1 device, a (8,1) mesh and a (4,2) mesh with a
parameter-sharding rule give the same loss and parameters (fp32 tolerance)."""

import dataclasses
import os
import socket
import subprocess
import sys

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
    state, m, _ = step(state, shd.global_batch(ds[i], ts.batch_sharding))
    losses.append(float(m["loss"]))
  return losses, jax.device_get(state["params"]), state


def test_needs_eight_devices():
  assert jax.device_count() == 8, "tests/conftest.py should give 8 fake CPU devices"


def test_mesh_shapes_agree():
  ref_losses, ref_params, _ = _run((1, 1))
  for shape, rules in [
      ((8, 1), ()),
      ((4, 2), ((r"conv1/kernel$", (None, None, None, "model")), (r"head/kernel$", "fsdp"))),
  ]:
    losses, params, state = _run(shape, rules)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params, ref_params
    )
    if rules:
      # The rules really shard: params and their momentum buffers alike.
      conv = state["params"]["conv1"]["kernel"]
      assert conv.sharding.spec == P(None, None, None, "model")
      assert state["params"]["head"]["kernel"].sharding.spec == P(None, None, "data", None)
  assert ref_losses[-1] < ref_losses[0]


def test_bad_rule_names_param():
  with pytest.raises(ValueError, match="conv1/kernel"):
    _run((4, 2), ((r"conv1/kernel$", ("model",)),), steps=1)


def test_init_weights_with_sharded_params():
  """Pretrained weights land in FSDP/model-sharded params: the host round trip keeps the sharding."""
  config = toy.toy_config()
  config.sharding_rules = (
      (r"conv1/kernel$", (None, None, None, "model")),
      (r"head/kernel$", "fsdp"),
  )
  config.fsdp_min_size = 1
  config.mesh.data, config.mesh.model = 4, 2
  mesh = shd.make_mesh(config.mesh, jax.devices())
  seen = {}

  def init_weights(params, model_state):
    seen["types"] = {type(x) for x in jax.tree.leaves((params, model_state))}
    params["conv1"]["kernel"] = np.arange(params["conv1"]["kernel"].size, dtype=np.float32).reshape(
        params["conv1"]["kernel"].shape
    )
    return params, model_state

  task = dataclasses.replace(toy.toy_task(), init_weights=init_weights)
  ds = pipeline.train_dataset(task.train_source, task.augment, seed=0, global_batch_size=8)
  ts = loop.setup(config, task, ds[0], mesh=mesh)
  state, _ = loop.restore_or_init(ts, None, task.init_weights)
  assert seen["types"] == {np.ndarray}
  kernel = state["params"]["conv1"]["kernel"]
  assert kernel.sharding.spec == P(None, None, None, "model")
  np.testing.assert_array_equal(np.asarray(kernel), np.arange(kernel.size).reshape(kernel.shape))
  assert state["params"]["head"]["kernel"].sharding.spec == P(None, None, "data", None)


TWO_PROCESS_SCRIPT = r"""
import sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from jaxseg.train import sharding as shd
mesh = Mesh(np.array(jax.devices()).reshape(1, 4), ("data", "model"))  # 'model' spans both processes
full = np.arange(4 * 6, dtype=np.float32).reshape(4, 6)
sharding = {"w": NamedSharding(mesh, P("model", None)), "b": NamedSharding(mesh, P())}
tree = shd.put_global({"w": full, "b": full[0]}, sharding)
assert not tree["w"].is_fully_addressable
for shard in tree["w"].addressable_shards:
  np.testing.assert_array_equal(np.asarray(shard.data), full[shard.index])
back = shd.host_copy(tree)
np.testing.assert_array_equal(back["w"], full)
np.testing.assert_array_equal(back["b"], full[0])
print("ok", jax.process_index())
"""


def test_host_round_trip_across_two_processes(tmp_path):
  """host_copy / put_global with a 'model' axis spanning two processes (gloo, 2 fake devices each)."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(
      os.environ,
      XLA_FLAGS="--xla_force_host_platform_device_count=2",
      JAX_PLATFORMS="cpu",
      PYTHONPATH=root,
  )
  procs = [
      subprocess.Popen(
          [sys.executable, "-c", TWO_PROCESS_SCRIPT, f"localhost:{port}", str(i)],
          env=env,
          stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT,
          text=True,
      )
      for i in range(2)
  ]
  for i, p in enumerate(procs):
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out[-3000:]
    assert f"ok {i}" in out, out[-3000:]
