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
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(straight["opt_state"]),
               jax.device_get(resumed["opt_state"]))
  # The loader resumed at the right batch: the logged losses after the resume agree.
  a = {r["step"]: r["loss"] for r in read_metrics(str(tmp_path / "a"))}
  b = {r["step"]: r["loss"] for r in read_metrics(str(tmp_path / "b"))}
  assert a[6] == b[6] and a[8] == b[8]
  # And the saved iterator positions are identical.
  for d in "ab":
    files = list((tmp_path / d / "checkpoints" / "8" / "data").glob("*.json"))
    assert len(files) == 1
  assert (json.loads(next((tmp_path / "a" / "checkpoints" / "8" / "data").glob("*.json")).read_text())
          == json.loads(next((tmp_path / "b" / "checkpoints" / "8" / "data").glob("*.json")).read_text()))


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
  restored, _ = loop.load_state(config, str(tmp_path), toy.toy_task(),
                                pipeline_example(toy.toy_task()))
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(restored["params"])))


def pipeline_example(task):
  from jaxseg.data import pipeline
  return pipeline.train_dataset(task.train_source, task.augment, seed=0, global_batch_size=8)[0]
