"""The shared training loop: metrics, checkpoints, exact in-process resume, NaN stop."""

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.train import checkpoint as ckpt_lib
from jaxseg.train import loop
from jaxseg.train import sharding as shd
from jaxseg.train.metrics import read_metrics

import toy


def _params(state):
  return jax.device_get(state["params"])


def test_train_writes_metrics_and_checkpoints(tmp_path):
  config = toy.toy_config(total_steps=6, keep_checkpoints=2)
  state = loop.train(config, str(tmp_path), toy.toy_task())
  assert int(state["step"]) == 6
  records = read_metrics(str(tmp_path))
  assert [r["step"] for r in records] == [2, 4, 6]
  assert all(np.isfinite(r["loss"]) and r["learning_rate"] == pytest.approx(0.05) for r in records)
  assert records[-1]["loss"] < records[0]["loss"]
  steps = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
  assert steps == [4, 6]  # keep-last-2
  assert os.listdir(tmp_path / "tensorboard")


def test_resume_is_exact(tmp_path):
  straight = loop.train(toy.toy_config(total_steps=8), str(tmp_path / "a"), toy.toy_task())
  loop.train(toy.toy_config(total_steps=4), str(tmp_path / "b"), toy.toy_task())
  resumed = loop.train(toy.toy_config(total_steps=8), str(tmp_path / "b"), toy.toy_task())
  jax.tree.map(np.testing.assert_array_equal, _params(straight), _params(resumed))
  jax.tree.map(
      np.testing.assert_array_equal,
      jax.device_get(straight["opt_state"]),
      jax.device_get(resumed["opt_state"]),
  )
  # The loader resumed at the right batch: the logged losses after the resume agree.
  a = {r["step"]: r["loss"] for r in read_metrics(str(tmp_path / "a"))}
  b = {r["step"]: r["loss"] for r in read_metrics(str(tmp_path / "b"))}
  assert a[6] == b[6] and a[8] == b[8]
  # And the saved iterator positions are identical.
  for d in "ab":
    files = list((tmp_path / d / "checkpoints" / "8" / "data").glob("*.json"))
    assert len(files) == 1
  assert json.loads(
      next((tmp_path / "a" / "checkpoints" / "8" / "data").glob("*.json")).read_text()
  ) == json.loads(next((tmp_path / "b" / "checkpoints" / "8" / "data").glob("*.json")).read_text())


def test_nan_loss_stops_before_checkpoint(tmp_path):
  # A huge learning rate makes the toy net diverge to inf/NaN within a few steps.
  config = toy.toy_config(total_steps=40, log_every=1, checkpoint_every=1)
  config.optimizer.learning_rate = 1e12
  with pytest.raises(loop.NonFiniteLossError, match=r"at step (\d+)") as info:
    loop.train(config, str(tmp_path), toy.toy_task())
  bad_step = int(re.search(r"at step (\d+)", str(info.value)).group(1))
  assert bad_step > 1
  saved = ckpt_lib.Checkpointer(str(tmp_path)).latest_step()
  # The last checkpoint is the step before the NaN, never one after it.
  assert saved == bad_step - 1
  restored, _ = loop.load_state(
      config, str(tmp_path), toy.toy_task(), pipeline_example(toy.toy_task())
  )
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(restored["params"])))


def pipeline_example(task):
  from jaxseg.data import pipeline

  return pipeline.train_dataset(task.train_source, task.augment, seed=0, global_batch_size=8)[0]


def test_worker_processes_give_the_same_batches_and_state():
  from jaxseg.data import pipeline

  task = toy.toy_task()
  ds = pipeline.train_dataset(task.train_source, task.augment, seed=3, global_batch_size=8)
  inline = pipeline.make_iterator(ds, num_workers=0)
  expected = [next(inline) for _ in range(6)]
  workers = pipeline.make_iterator(ds, num_workers=2)
  got = [next(workers) for _ in range(3)]
  state = pipeline.encode_state(workers)
  # A fresh worker iterator restored from that state continues with batch 3.
  resumed = pipeline.make_iterator(ds, num_workers=2)
  pipeline.decode_state(resumed, state)
  got += [next(resumed) for _ in range(3)]
  for a, b in zip(expected, got):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["mask"], b["mask"])


def test_interrupted_save_leaves_previous_checkpoint_usable(tmp_path):
  loop.train(toy.toy_config(total_steps=4), str(tmp_path), toy.toy_task())
  # What a crash during the save of step 6 leaves behind: an unfinished temporary folder.
  partial = tmp_path / "checkpoints" / "6.orbax-checkpoint-tmp-1234"
  (partial / "state").mkdir(parents=True)
  (partial / "state" / "garbage").write_bytes(b"\x00" * 10)
  assert ckpt_lib.Checkpointer(str(tmp_path)).latest_step() == 4
  state = loop.train(toy.toy_config(total_steps=6), str(tmp_path), toy.toy_task())
  assert int(state["step"]) == 6


def test_bf16_compute_keeps_fp32_params(tmp_path):
  from jaxseg.methods.supervised import method

  config = method.default_config()
  config.train.compute_dtype = "bfloat16"
  config.train.batch_size = 8
  config.train.total_steps = 1
  config.train.progress_bar = False
  config.model.width_multiplier = 0.125
  config.data.synthetic.num_train = 16
  config.augment.crop_size = (16, 16)
  config.data.synthetic.image_size = (32, 32)
  task = method.make_task(config)
  state = loop.train(config, str(tmp_path), task)
  dtypes = {x.dtype for x in jax.tree.leaves(state["params"])}
  assert dtypes == {jnp.dtype(jnp.float32)}
  # The forward really runs in bf16: the backbone's activations are bf16.
  model = method.build_model(config)
  image = jnp.zeros((1, 16, 16, 3))
  _, inter = jax.jit(lambda v, x: model.apply(v, x, train=False, capture_intermediates=True))(
      {"params": state["params"], **state["model_state"]}, image
  )
  conv_out = inter["intermediates"]["backbone"]["conv1"]["__call__"][0]
  assert conv_out.dtype == jnp.bfloat16
  assert all(np.isfinite(r["loss"]) for r in read_metrics(str(tmp_path)))


def test_frozen_params_get_no_gradient_and_no_update():
  """optimizer.frozen: the step stops their gradient (XLA then drops the backward pass below them)."""
  config = toy.toy_config(total_steps=2)
  config.optimizer.frozen = r"^conv1/"
  task = toy.toy_task()
  example = pipeline_example(task)
  ts = loop.setup(config, task, example)
  assert ts.frozen["conv1"]["kernel"] and not ts.frozen["head"]["kernel"]
  step = loop.make_train_step(task, ts)
  state = ts.init_state()
  before = jax.device_get(state["params"])
  batch = shd.global_batch(example, ts.batch_sharding)
  state, measured, _ = step(state, batch)
  after = jax.device_get(state["params"])
  np.testing.assert_array_equal(after["conv1"]["kernel"], before["conv1"]["kernel"])
  assert not np.array_equal(after["head"]["kernel"], before["head"]["kernel"])
  # The compiled step computes no gradient for the frozen conv: its weight-gradient convolution is gone.
  convolutions = lambda step_fn, s: step_fn.lower(s, batch).as_text().count("convolution")
  ts_all = loop.setup(toy.toy_config(total_steps=2), task, example)
  unfrozen = convolutions(loop.make_train_step(task, ts_all), ts_all.init_state())
  assert 0 < convolutions(step, state) < unfrozen
