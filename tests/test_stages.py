"""`jaxseg.train.stages`: a finished stage is skipped on relaunch, and says which settings changed since."""

import ml_collections

from jaxseg.train.stages import run_stages


def test_skipped_stage_names_the_settings_changed_since_it_finished(tmp_path, capsys):
  calls = []

  def propagate(config, workdir):
    calls.append(config.propagate.radius)

  def launch(radius):
    config = ml_collections.ConfigDict({"stages": ("propagate",), "propagate": {"radius": radius}})
    return run_stages(config, str(tmp_path), {"propagate": propagate}, method="toy")

  launch(4)
  capsys.readouterr()
  launch(4)
  same = capsys.readouterr().out
  assert "finished earlier" in same and "other settings" not in same
  launch(2)
  changed = capsys.readouterr().out
  assert "with other settings (propagate.radius: 4 -> 2)" in changed
  assert "delete that file to run it again with these" in changed
  assert calls == [4]  # skipped, as before: only the user decides to rerun a finished stage
  (tmp_path / "stages" / "propagate.json").unlink()
  launch(2)
  assert calls == [4, 2]


def test_a_marker_written_before_a_trainer_key_existed_reads_as_its_default(tmp_path, capsys):
  """A stage finished before `train.conv_algorithm` existed computed with 'direct': no changed setting."""
  import json

  def train(config, workdir):
    pass

  def launch(**train_keys):
    config = ml_collections.ConfigDict(
        {"stages": ("train",), "train": {"total_steps": 5, **train_keys}}
    )
    return run_stages(config, str(tmp_path), {"train": train}, method="toy")

  launch()  # the old marker: its train section has no conv_algorithm
  marker = tmp_path / "stages" / "train.json"
  assert (
      "conv_algorithm" not in marker.read_text()
      and "total_steps" in json.loads(marker.read_text())["config"]["train"]
  )
  capsys.readouterr()
  launch(conv_algorithm="direct")
  assert "other settings" not in capsys.readouterr().out
  launch(conv_algorithm="winograd")
  assert "train.conv_algorithm: 'direct' -> 'winograd'" in capsys.readouterr().out
