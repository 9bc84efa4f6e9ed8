"""Bad input through the whole stack: a clear error naming the file, key or step."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxseg.data.errors import DataError
from jaxseg.methods.supervised import method

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _folder_dataset(root, n=8, size=32):
  os.makedirs(root / "images")
  os.makedirs(root / "masks")
  rng = np.random.default_rng(0)
  for i in range(n):
    Image.fromarray(rng.integers(0, 255, (size, size, 3), np.uint8)).save(
        root / "images" / f"{i}.jpg"
    )
    Image.fromarray(rng.integers(0, 3, (size, size), np.uint8)).save(root / "masks" / f"{i}.png")
  (root / "train.txt").write_text("".join(f"{i}\n" for i in range(n)))
  (root / "val.txt").write_text("".join(f"{i}\n" for i in range(n)))


def _config(root):
  config = method.default_config()
  config.data.name = "folder"
  config.data.root = str(root)
  config.data.num_classes = 3
  config.augment.crop_size = (32, 32)
  config.train.batch_size = 8
  config.train.total_steps = 2
  config.train.progress_bar = False
  config.model.width_multiplier = 0.125
  return config


@pytest.mark.parametrize(
    "damage, message",
    [
        ("corrupt_image", r"images/3\.jpg"),
        ("mask_size", r"masks/3\.png|3\.jpg"),
        ("label_range", r"3(.|\n)*(7|range)"),
    ],
)
def test_bad_file_in_training_names_it(tmp_path, damage, message):
  root = tmp_path / "data"
  _folder_dataset(root)
  if damage == "corrupt_image":
    (root / "images" / "3.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
  elif damage == "mask_size":
    Image.fromarray(np.zeros((16, 32), np.uint8)).save(root / "masks" / "3.png")
  else:
    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(root / "masks" / "3.png")
  with pytest.raises(DataError, match=message):
    method.train(_config(root), str(tmp_path / "work"))
  # No checkpoint was written from a run that never got good data.
  assert not os.path.exists(tmp_path / "work" / "checkpoints" / "2")


def test_missing_dataset_root_names_path_and_synthetic_variant(tmp_path):
  missing = tmp_path / "VOCdevkit"
  proc = subprocess.run(
      [
          sys.executable,
          "launch.py",
          "--config=configs/supervised.py:voc",
          f"--config.data.root={missing}",
          f"--workdir={tmp_path / 'w'}",
      ],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode != 0
  assert str(missing) in proc.stderr and ":synthetic" in proc.stderr


def test_empty_dataset_root_is_an_error(tmp_path):
  config = _config(tmp_path)
  config.data.root = ""
  with pytest.raises(DataError, match="config.data.root is empty"):
    method.train(config, str(tmp_path / "work"))


def test_loader_error_in_prefetch_thread_reaches_the_caller():
  from jaxseg.data import pipeline

  def batches():
    yield {"x": np.zeros(2)}
    raise DataError("/data/images/bad.jpg: image file is truncated")

  prefetcher = pipeline.DevicePrefetcher(batches(), put=lambda b: b, depth=2, record_state=False)
  next(prefetcher)
  with pytest.raises(DataError, match="bad.jpg"):
    next(prefetcher)
