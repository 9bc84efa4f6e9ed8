"""Config strings and strict keys."""

import os
import subprocess
import sys

import pytest

from jaxseg.config import check_keys, parse_arg
from jaxseg.errors import ConfigError
from jaxseg.methods.supervised import default_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_parse_arg():
  arg = parse_arg("voc,steps=50,runlocal=true", variant="synthetic", steps=0, runlocal=False)
  assert (arg.variant, arg.steps, arg.runlocal) == ("voc", 50, True)
  flag = parse_arg("synthetic,runlocal", variant="voc", runlocal=False)
  assert (flag.variant, flag.runlocal) == ("synthetic", True)
  with pytest.raises(ConfigError, match="unknown config arg 'stpes'"):
    parse_arg("stpes=3", variant="x", steps=0)
  with pytest.raises(ConfigError, match="boolean"):
    parse_arg("runlocal=maybe", runlocal=False)


def test_default_config_is_locked():
  config = default_config()
  with pytest.raises(AttributeError):
    config.train.learning_rate = 0.1  # lives in config.optimizer


def test_check_keys_names_unknown_key():
  reference = default_config()
  config = default_config()
  with config.unlocked():
    config.model.widht = 2
  with pytest.raises(ConfigError, match="model.widht"):
    check_keys(config, reference)


def test_launch_rejects_unknown_override(tmp_path):
  proc = subprocess.run(
      [
          sys.executable,
          "launch.py",
          "--config=configs/supervised.py:synthetic",
          f"--workdir={tmp_path}",
          "--config.train.total_stepz=3",
      ],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert proc.returncode != 0
  assert "total_stepz" in proc.stderr
