"""Every key of a training stage's trainer section takes effect in that stage.

Each stage function runs as the method runs it, with `train_stage` replaced by a recorder: the test
sees the task and trainer config the stage would train with. One stage at a time gets
`train.compute_dtype='bfloat16'` and another batch size; its traced training objective must compute
in bfloat16 (and the others in float32 only), and its trainer config must carry its batch size.
"""

import importlib
import os

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.train.config import stage_trainer_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(name: str, arg: str):
  spec = importlib.util.spec_from_file_location(
      f"cfg_{name}", os.path.join(ROOT, "configs", f"{name}.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _record(monkeypatch, stages_module):
  calls = []

  def train_stage(config, workdir, task, *, section=None, subdir=None):
    calls.append(dict(task=task, section=section, trainer=stage_trainer_config(config, section)))

  monkeypatch.setattr(stages_module, "train_stage", train_stage)
  return calls


def _dtypes_of_step(task, batch) -> set[str]:
  """The floating dtypes of every equation's outputs in the traced loss of `task` on `batch`."""
  variables = jax.eval_shape(task.init_fn, jax.random.key(0), batch)
  params = variables.pop("params")
  jaxpr = jax.make_jaxpr(task.loss_fn)(params, variables, batch, jax.random.key(1))
  seen = set()

  def walk(j):
    for eqn in j.eqns:
      for v in eqn.outvars:
        dtype = getattr(v.aval, "dtype", None)
        if dtype is not None and jnp.issubdtype(dtype, jnp.floating):
          seen.add(str(dtype))
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        walk(sub)

  walk(jaxpr.jaxpr)
  return seen


def _check(calls, bf16_section, batch_of):
  assert calls, "the stage trained nothing"
  for call in calls:
    dtypes = _dtypes_of_step(call["task"], batch_of(call["section"]))
    if call["section"] == bf16_section:
      assert "bfloat16" in dtypes, call["section"]
      assert call["trainer"].train.batch_size == 6
    else:
      assert "bfloat16" not in dtypes, call["section"]


UDA_STAGES = {"source_only": "source_only", "adapt": None, "self_train": "self_train"}


@pytest.mark.parametrize("bf16_stage", list(UDA_STAGES))
def test_uda_stage_sections_take_effect(tmp_path, monkeypatch, bf16_stage):
  from jaxseg.methods.uda import method, stages

  config = _config("uda", "runlocal")
  config.model.update(width_multiplier=0.125, depth_blocks=(1, 1, 1, 1), discriminator_width=8)
  config.input.update(source_size=(33, 33), target_size=(33, 33))
  section = UDA_STAGES[bf16_stage]
  s = config if section is None else config[section]
  s.train.update(compute_dtype="bfloat16", batch_size=6)
  os.makedirs(tmp_path / "pseudo_labels" / str(config.pseudo_labels.kind))
  calls = _record(monkeypatch, stages)
  for stage in UDA_STAGES:
    getattr(stages, stage)(config, str(tmp_path))
  assert [c["section"] for c in calls] == list(UDA_STAGES.values())
  _check(calls, section, lambda sec: method.example_batch(config, sec))


@pytest.mark.parametrize("bf16_section", [None, "finetune"])
def test_hn_stage_sections_take_effect(tmp_path, monkeypatch, bf16_section):
  from jaxseg.methods.hn import method, stages

  config = _config("hn", "runlocal")
  config.finetune.arms = ("random",)
  config.finetune.label_fractions = (0.5,)
  s = config if bf16_section is None else config[bf16_section]
  s.train.update(compute_dtype="bfloat16", batch_size=6)
  calls = _record(monkeypatch, stages)
  stages.hn_labels(config, str(tmp_path))
  stages.pretrain(config, str(tmp_path))
  stages.finetune(config, str(tmp_path))
  assert [c["section"] for c in calls] == [None, "finetune"]

  def batch_of(section):
    batch = method.example_batch(config, section)
    return {k: np.asarray(v) for k, v in batch.items()}

  _check(calls, bf16_section, batch_of)


@pytest.mark.parametrize("bf16_section", [None, "segment"])
def test_seam_segment_section_takes_effect(tmp_path, monkeypatch, bf16_section):
  """The SEAM 'segment' stage's DeepLab-v2 trains with `segment.train` (dtype, batch), not the top level's."""
  from jaxseg.methods.seam import segment_stage

  config = _config("seam", "synthetic,runlocal")
  s = config if bf16_section is None else config[bf16_section]
  s.train.update(compute_dtype="bfloat16", batch_size=6)
  calls = _record(monkeypatch, segment_stage)
  segment_stage.train(config, str(tmp_path), [])
  assert [c["section"] for c in calls] == ["segment"]
  h, w = config.segment.crop_size
  batch = dict(image=np.zeros((2, h, w, 3), np.float32), mask=np.zeros((2, h, w), np.int32))
  _check(calls, bf16_section, lambda section: batch)
