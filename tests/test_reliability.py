"""Reliability: preemption (SIGTERM), damaged checkpoints, NaN exit status, one-line CLI errors,
config changes on resume, one metrics row per step."""

import json
import os
import re
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxseg import methods
from jaxseg.errors import ConfigError
from jaxseg.train import checkpoint as ckpt_lib
from jaxseg.train import loop
from jaxseg.train.metrics import read_metrics

import subprocs
import toy
import toy_multi

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _params(state):
  return jax.device_get(state["params"])


@pytest.mark.parametrize("damage", ["truncated_array", "missing_metadata", "missing_data_state"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage, capsys):
  straight = loop.train(toy.toy_config(total_steps=8), str(tmp_path / "straight"), toy.toy_task())
  work = tmp_path / "work"
  loop.train(toy.toy_config(total_steps=6, keep_checkpoints=3), str(work), toy.toy_task())
  newest = work / "checkpoints" / "6"
  if damage == "truncated_array":
    for array_file in (newest / "state").rglob("d/*"):  # every array data file (OCDBT)
      with open(array_file, "r+b") as f:
        f.truncate(array_file.stat().st_size // 2)
  elif damage == "missing_metadata":
    (newest / "state" / "_METADATA").unlink()
  else:
    (newest / "data" / "process_0-of-1.json").unlink()
  capsys.readouterr()
  resumed = loop.train(toy.toy_config(total_steps=8, keep_checkpoints=3), str(work), toy.toy_task())
  out = capsys.readouterr().out
  lines = [line for line in out.splitlines() if "does not load" in line]
  assert len(lines) == 1, (out, sorted(str(p) for p in newest.parent.rglob("*")))
  assert "checkpoint step 6" in lines[0] and "checkpoints_damaged" in lines[0]
  assert "resuming from step 4" in out
  assert (work / "checkpoints_damaged" / "6").is_dir()  # moved aside, not deleted
  # Resumed from step 4, the run ends exactly where an uninterrupted one does.
  jax.tree.map(np.testing.assert_array_equal, _params(straight), _params(resumed))
  steps = [r["step"] for r in read_metrics(str(work))]
  assert steps == sorted(set(steps)) == [2, 4, 6, 8]  # one row per step: 6's row was replayed


def test_no_loadable_checkpoint_is_a_clear_error(tmp_path):
  work = tmp_path / "work"
  loop.train(toy.toy_config(total_steps=2), str(work), toy.toy_task())
  (work / "checkpoints" / "2" / "state" / "_METADATA").unlink()
  with pytest.raises(ckpt_lib.CheckpointLoadError, match=r"no checkpoint in .*checkpoints loads"):
    loop.train(toy.toy_config(total_steps=4), str(work), toy.toy_task())


def test_a_checkpoint_of_another_model_is_refused_and_never_moved(tmp_path, capsys):
  """Resuming with a changed model (another width) is not damage: a one-line error naming the differing
  shapes; both checkpoints stay where they are and still load with the original model."""
  work = str(tmp_path)
  loop.train(toy.toy_config(total_steps=4), work, toy.toy_task())
  steps = sorted(os.listdir(tmp_path / "checkpoints"))
  with pytest.raises(ckpt_lib.IncompatibleCheckpointError) as info:
    loop.train(toy.toy_config(total_steps=6), work, toy.toy_task(width=32))
  message = str(info.value)
  assert "params/conv1/kernel: checkpoint (3, 3, 3, 64) vs config (3, 3, 3, 32)" in message
  assert "new --workdir" in message and len(message.splitlines()) == 2
  assert sorted(os.listdir(tmp_path / "checkpoints")) == steps
  assert not (tmp_path / "checkpoints_damaged").exists()
  assert "does not load" not in capsys.readouterr().out
  loop.train(toy.toy_config(total_steps=6), work, toy.toy_task())  # the original model resumes


def test_a_stage_whose_checkpoints_were_all_damaged_does_not_restart_silently(tmp_path):
  stage = tmp_path / "adapt"
  (stage / "checkpoints_damaged" / "10").mkdir(parents=True)
  (stage / "checkpoints").mkdir()
  with pytest.raises(ConfigError, match=r"adapt: every checkpoint was damaged.*\n.*--restart"):
    methods.check_no_silent_restart(str(tmp_path))
  methods.check_no_silent_restart(str(tmp_path), restart=True)  # told to: train from step 0
  (stage / "checkpoints" / "20").mkdir()  # a usable checkpoint is left: resume as usual
  methods.check_no_silent_restart(str(tmp_path))


def test_resume_with_changed_training_keys_is_refused(tmp_path):
  from jaxseg.methods.supervised import default_config

  config = default_config()
  methods.save_config(config, str(tmp_path))
  methods.check_resume_config(config, str(tmp_path))  # no checkpoints yet: anything goes
  (tmp_path / "checkpoints" / "10").mkdir(parents=True)
  changed = default_config()
  changed.train.batch_size = 32
  changed.train.log_every = 7  # harmless
  with pytest.raises(ConfigError, match=r"train\.batch_size: 16 -> 32") as info:
    methods.check_resume_config(changed, str(tmp_path))
  assert "log_every" not in str(info.value) and "--allow_config_change" in str(info.value)
  methods.check_resume_config(changed, str(tmp_path), allow_change=True)
  harmless = default_config()
  harmless.train.log_every = 7
  methods.check_resume_config(harmless, str(tmp_path))
  methods.save_config(changed, str(tmp_path))
  assert len(os.listdir(tmp_path / "config_history")) == 2  # every launch is kept


def test_a_config_saved_before_conv_algorithm_resumes_as_direct(tmp_path):
  """A workdir written before `train.conv_algorithm` existed computed with the direct convolutions: it
  resumes under the default, and a switch to winograd is a changed key like any other (every stage).
  """
  from jaxseg.methods.uda import default_config

  config = default_config()
  methods.save_config(config, str(tmp_path))
  path = tmp_path / "config.json"
  saved = json.loads(path.read_text())
  for section in (saved, *(v for v in saved.values() if isinstance(v, dict))):
    if "train" in section and "total_steps" in section["train"]:
      del section["train"]["conv_algorithm"]
  path.write_text(json.dumps(saved))
  assert "conv_algorithm" not in path.read_text()
  (tmp_path / "checkpoints" / "10").mkdir(parents=True)
  methods.check_resume_config(config, str(tmp_path))
  config.self_train.train.conv_algorithm = "winograd"
  with pytest.raises(
      ConfigError, match=r"self_train\.train\.conv_algorithm: 'direct' -> 'winograd'"
  ):
    methods.check_resume_config(config, str(tmp_path))


@pytest.mark.parametrize(
    "method,safe,refused",
    [
        ("uda", "self_train.train.log_every", "self_train.optimizer.learning_rate"),
        ("uda", "source_only.train.checkpoint_every", "source_only.train.batch_size"),
        ("hn", "finetune.train.log_every", "finetune.train.compute_dtype"),
        ("hn", "pretrain_data.root", "pretrain_data.depth_scale"),
        ("seam", "affinity.train.log_every", "affinity.train.total_steps"),
        ("seam", "segment.test_scales", "segment.pseudo_masks"),
        ("vos", "train_data.root", "train_data.frame_gaps"),
        ("supervised", "data.skip_bad", "data.num_classes"),
    ],
)
def test_resume_safety_is_declared_per_section(tmp_path, method, safe, refused):
  """Every stage's trainer section and every method's data roots follow their declarations (trainer
  keys in jaxseg/train/config.py, method keys next to the method's default_config)."""

  def with_change(key):
    config = methods.get_method(method).default_config()
    *path, leaf = key.split(".")
    section = config
    for part in path:
      section = section[part]
    old = section[leaf]
    section[leaf] = {str: "/moved", bool: not old, tuple: (1, 2)}.get(type(old), old)
    if type(old) is int:
      section[leaf] = old + 3
    if isinstance(old, float):
      section[leaf] = old * 2
    assert section[leaf] != old, key
    return config

  methods.save_config(methods.get_method(method).default_config(), str(tmp_path))
  (tmp_path / "checkpoints" / "10").mkdir(parents=True)
  methods.check_resume_config(with_change(safe), str(tmp_path))
  with pytest.raises(ConfigError, match=re.escape(refused)):
    methods.check_resume_config(with_change(refused), str(tmp_path))


def _launch(workdir, *extra):
  cmd = [
      sys.executable,
      "launch.py",
      "--config=configs/supervised.py:runlocal",
      f"--workdir={workdir}",
  ]
  return subprocess.run(
      cmd + list(extra),
      cwd=ROOT,
      env=subprocs.one_device_env(),
      capture_output=True,
      text=True,
      timeout=600,
  )


def test_unknown_config_key_is_a_short_error(tmp_path):
  proc = _launch(tmp_path, "--config.train.batchsize=3")
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 2 and len(lines) <= 3, proc.stderr
  assert "--config.train.batchsize" in lines[0] and "batch_size" in lines[0]
  proc = _launch(tmp_path, "--config.data.name=voc", "--config.data.root=/nonexistent/voc")
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 1 and len(lines) <= 3 and "/nonexistent/voc" in lines[0], proc.stderr


@pytest.mark.slow
@pytest.mark.ci
def test_nan_exits_with_status_1_and_one_message(tmp_path):
  proc = _launch(tmp_path, "--config.optimizer.learning_rate=1e12", "--config.train.total_steps=30")
  assert proc.returncode == 1, proc.stderr[-2000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "non-finite values at step" in errors[0]
  assert "Traceback" not in proc.stderr and "Fatal Python error" not in proc.stderr


@pytest.mark.slow
@pytest.mark.ci
def test_sigterm_checkpoints_exits_0_and_relaunch_matches_uninterrupted(tmp_path):
  straight, stopped = tmp_path / "straight", tmp_path / "stopped"
  script = [sys.executable, os.path.join(ROOT, "tests", "toy_multi.py")]

  def run_to_completion(workdir):
    subprocess.run(
        script + [str(workdir)],
        cwd=ROOT,
        env=subprocs.one_device_env(),
        check=True,
        capture_output=True,
    )

  run_to_completion(straight)
  proc = subprocess.Popen(
      script + [str(stopped)],
      cwd=ROOT,
      env=subprocs.one_device_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
  )
  ckpt_dir = stopped / "checkpoints"
  out = subprocs.signal_after_checkpoint(proc, ckpt_dir, min_step=4, sig=signal.SIGTERM)
  assert proc.returncode == 0, out[-3000:]
  assert "SIGTERM: stopped after step" in out and "rerun the same command to resume" in out
  stopped_at = int(out.split("stopped after step ")[1].split(",")[0])
  assert stopped_at < 40 and (ckpt_dir / str(stopped_at)).is_dir()
  assert not (stopped / "stages" / "train.json").exists()
  run_to_completion(stopped)
  task, config = toy_multi.two_network_task(), toy_multi.main_config()
  a, _ = loop.load_state(config, str(straight), task, toy_multi.example_batch())
  b, _ = loop.load_state(config, str(stopped), task, toy_multi.example_batch())
  jax.tree.map(
      np.testing.assert_array_equal, jax.device_get(a["params"]), jax.device_get(b["params"])
  )
  steps = [r["step"] for r in read_metrics(str(stopped))]
  assert steps == sorted(set(steps))


def test_a_second_job_on_a_locked_workdir_is_refused_and_a_dead_holder_leaves_no_lock(tmp_path):
  """One workdir, one job: a live holder blocks a second launch with one line naming it; once the
  holder is killed (no clean exit) the lock is free again."""
  from jaxseg.errors import WorkdirBusyError
  from jaxseg.train.workdir_lock import lock_workdir

  holder = subprocess.Popen(
      [
          sys.executable,
          "-c",
          "import sys, time; sys.path.insert(0, sys.argv[1]);"
          "from jaxseg.train.workdir_lock import lock_workdir;"
          "lock = lock_workdir(sys.argv[2]); print('locked', flush=True); time.sleep(60)",
          ROOT,
          str(tmp_path),
      ],
      stdout=subprocess.PIPE,
      text=True,
  )
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(WorkdirBusyError, match=rf"in use by pid {holder.pid} on .*\n.*--workdir"):
      lock_workdir(str(tmp_path))
    out = subprocess.run(
        [
            sys.executable,
            "launch.py",
            "--config=configs/supervised.py:runlocal",
            f"--workdir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 1 and f"in use by pid {holder.pid}" in out.stderr, out.stderr[-2000:]
    assert len(out.stderr.strip().splitlines()) <= 3, out.stderr
  finally:
    holder.kill()
    holder.wait()
  lock_workdir(str(tmp_path)).close()  # the killed holder's lock went with it


def test_loading_a_trained_model_falls_back_past_a_damaged_newest_checkpoint(tmp_path, capsys):
  """Evaluation / inference read the newest checkpoint that loads, as training does (read-only: nothing
  is moved)."""
  import jax

  from jaxseg.train import inference
  from jaxseg.train import sharding as shd

  loop.train(toy.toy_config(total_steps=4), str(tmp_path), toy.toy_task())
  for path in (tmp_path / "checkpoints" / "4" / "state").rglob("*"):  # truncated array data
    if path.is_file() and path.parent.name == "d":
      path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  model = toy.ToyNet()
  mesh = shd.make_mesh(toy.toy_config().mesh, jax.devices()[:1])
  variables, step, _ = inference.load_variables(
      str(tmp_path),
      lambda rng: model.init({"params": rng}, np.zeros((1, 16, 16, 3), np.float32), train=False),
      mesh=mesh,
  )
  assert step == 2 and set(variables) == {"params", "batch_stats"}
  assert "checkpoints/4 does not load" in capsys.readouterr().out
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]


def test_config_json_of_the_previous_optimiser_keys_still_loads_and_resumes(tmp_path):
  """Before the optimiser registry every optimiser section had `listing_multiplicity`: a workdir of
  that version loads, and resumes without a config-change refusal."""
  from jaxseg.methods.supervised import default_config

  config = default_config()
  old = json.loads(config.to_json())
  old["optimizer"]["listing_multiplicity"] = []  # as the previous version wrote every section
  (tmp_path / "config.json").write_text(json.dumps(old))
  (tmp_path / "checkpoints" / "10").mkdir(parents=True)
  assert methods.load_config(str(tmp_path)).optimizer.name == "momentum"
  methods.check_resume_config(default_config(), str(tmp_path))
  uda_old = {"name": "momentum", "learning_rate": 1.0, "listing_multiplicity": [["conv", 3]]}
  assert methods.upgrade_saved_config({"optimizer": uda_old})["optimizer"]["name"] == "advent_sgd"


def _self_signal(signum=signal.SIGTERM):
  os.kill(os.getpid(), signum)


def test_a_signal_between_stages_stops_before_the_next_and_the_rerun_goes_on(tmp_path):
  """A SIGTERM during a stage that is not training (evaluate, a host pass) is not lost: that stage
  finishes and is marked, the next one does not start, and the same command continues with it."""
  import ml_collections

  from jaxseg.train import preemption
  from jaxseg.train.stages import run_stages

  ran = []
  stages = {
      "first": lambda c, w: (ran.append("first"), _self_signal())[0],
      "second": lambda c, w: ran.append("second"),
  }
  config = ml_collections.ConfigDict(dict(stages=("first", "second")))
  with pytest.raises(preemption.StopRequested, match="SIGTERM: stopped before stage second"):
    run_stages(config, str(tmp_path), stages, method="toy")
  assert ran == ["first"] and (tmp_path / "stages" / "first.json").exists()
  run_stages(config, str(tmp_path), stages, method="toy")
  assert ran == ["first", "second"]
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the guard put the handler back


def test_a_signal_in_a_host_pass_ends_the_current_item_then_stops(tmp_path):
  from jaxseg.train import multihost, preemption

  done = []
  with preemption.PreemptionGuard():
    with pytest.raises(preemption.StopRequested, match="in labels after 3 of 10 items"):
      for i in multihost.host_pass(10, "labels"):
        done.append(i)
        if i == 2:
          _self_signal(signal.SIGINT)
  assert done == [0, 1, 2]


def test_a_stop_request_is_one_line_and_exit_status_0(capsys):
  from jaxseg import cli
  from jaxseg.train import preemption

  with pytest.raises(SystemExit) as exit_info, cli.user_errors(verbose=False):
    raise preemption.StopRequested("SIGTERM: stopped in infer after 4 of 9 items; rerun ...")
  assert exit_info.value.code == 0
  assert capsys.readouterr().err.strip().splitlines() == [
      "SIGTERM: stopped in infer after 4 of 9 items; rerun ..."
  ]


def test_a_file_in_place_of_the_checkpoint_folder_is_one_line_before_training(tmp_path):
  (tmp_path / "checkpoints").write_text("")
  with pytest.raises(ckpt_lib.CheckpointWriteError, match="checkpoints is a file, not a folder"):
    ckpt_lib.Checkpointer(str(tmp_path))


def test_a_full_disk_stops_the_save_in_one_line_and_keeps_the_checkpoints(tmp_path, monkeypatch):
  import shutil

  state = {"w": jax.numpy.ones((64, 64))}
  checkpointer = ckpt_lib.Checkpointer(str(tmp_path), async_save=False)
  checkpointer.save(1, state, b"it")
  checkpointer.wait()
  usage = shutil.disk_usage(str(tmp_path))
  monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1 << 20))
  with pytest.raises(
      ckpt_lib.CheckpointWriteError,
      match=r"not enough disk space for checkpoint step 2 .* 1 MiB free",
  ):
    checkpointer.save(2, state, b"it")
  checkpointer.close()
  monkeypatch.undo()
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
  )
  step, restored, data = ckpt_lib.Checkpointer(str(tmp_path)).restore_latest_usable(abstract)
  assert step == 1 and data == b"it"
  np.testing.assert_array_equal(restored["w"], state["w"])


def test_a_failed_background_save_is_one_line_naming_the_folder(tmp_path, monkeypatch):
  checkpointer = ckpt_lib.Checkpointer(str(tmp_path))

  def failed():
    raise ValueError("RESOURCE_EXHAUSTED: Failed to write 2953216 bytes: No space left on device")

  monkeypatch.setattr(checkpointer._manager, "check_for_errors", failed)
  with pytest.raises(
      ckpt_lib.CheckpointWriteError, match=f"in {tmp_path}/checkpoints failed: .*No space"
  ):
    checkpointer.save(3, {"w": jax.numpy.ones(3)}, b"")
  monkeypatch.undo()
  checkpointer.close()


def test_an_unwritable_workdir_is_one_line(tmp_path):
  from jaxseg.train.workdir_lock import lock_workdir

  (tmp_path / "file").write_text("")
  with pytest.raises(
      PermissionError, match=r"cannot write in the workdir .*file/w: Not a directory"
  ):
    lock_workdir(str(tmp_path / "file" / "w"))


def test_config_files_that_fail_are_one_line_with_exit_status_2(tmp_path):
  from jaxseg import cli

  (tmp_path / "syntax.py").write_text("def get_config(:\n")
  (tmp_path / "raises.py").write_text("def get_config():\n  raise RuntimeError('boom')\n")
  out = subprocess.run(
      [
          sys.executable,
          "launch.py",
          f"--config={tmp_path / 'syntax.py'}",
          f"--workdir={tmp_path / 'w'}",
      ],
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
      capture_output=True,
      text=True,
  )
  assert out.returncode == 2
  assert out.stderr.strip().splitlines() == [
      f"error: --config={tmp_path / 'syntax.py'}: {tmp_path / 'syntax.py'}:1: invalid syntax"
  ]
  scope = {}
  exec(compile((tmp_path / "raises.py").read_text(), str(tmp_path / "raises.py"), "exec"), scope)
  with pytest.raises(RuntimeError) as raised:
    scope["get_config"]()
  line = cli.config_file_error([f"--config={tmp_path / 'raises.py'}:x"], raised.value)
  assert (
      line
      == f"--config={tmp_path / 'raises.py'}:x: RuntimeError: boom ({tmp_path / 'raises.py'}:2)"
  )


def test_garbage_weight_files_name_the_file(tmp_path):
  from jaxseg.models import checkpoint_files

  garbage = tmp_path / "weights.msgpack"
  garbage.write_bytes(np.random.default_rng(0).bytes(1000))
  with pytest.raises(ValueError, match=r"weights.msgpack: not a jaxseg .msgpack variables file"):
    checkpoint_files.load_variables(garbage)
  pytest.importorskip("torch")
  pth = tmp_path / "weights.pth"
  pth.write_bytes(np.random.default_rng(0).bytes(1000))
  with pytest.raises(ValueError, match=r"weights.pth: not a readable PyTorch checkpoint"):
    checkpoint_files.read_torch_checkpoint(pth)


def test_every_batch_size_is_checked_against_the_devices_before_training():
  sys.path.insert(
      0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
  )
  import uda

  config = uda.get_config("synthetic")  # evaluate.batch_size=20: not on the 8 test devices
  with pytest.raises(
      ConfigError, match=r"evaluate.batch_size=20 does not split over the 8 devices"
  ):
    methods.check_batch_sizes(config)
  config.evaluate.batch_size = 16
  config.self_train.train.batch_size = 6
  with pytest.raises(ConfigError, match=r"self_train.train.batch_size=6 does not split"):
    methods.check_batch_sizes(config)
