"""Bad input through the whole stack: a clear error naming the file, key or step."""

import os
import pickle
import shutil
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


# ---------------------------------------------------------------------------------------------------------
# Every reader x every kind of bad file -> a DataError naming the file.

READERS = ("voc", "sbd", "folder", "gta5", "cityscapes")
FAULTS = (
    "truncated_image",
    "corrupt_image",
    "truncated_mask",
    "corrupt_mask",
    "rgba_mask",
    "16bit_image",
    "16bit_mask",
    "size_mismatch",
    "label_range",
    "missing_image",
    "missing_mask",
    "empty_split",
    "non_utf8_name",
)
N, SIZE = 3, 16


def _reader_dataset(reader, root):
  """A 3-example dataset in `reader`'s layout -> (build() -> source, files of example 1, bad label)."""
  from jaxseg.data.readers import driving, sources

  rng = np.random.default_rng(0)
  image = lambda: Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8))
  mask = lambda values: Image.fromarray(rng.choice(values, (SIZE, SIZE)).astype(np.uint8), "L")
  files = []
  if reader in ("voc", "sbd", "folder"):
    image_dir, mask_dir = {
        "voc": ("JPEGImages", "SegmentationClass"),
        "sbd": ("JPEGImages", "SegmentationClassAug"),
        "folder": ("images", "masks"),
    }[reader]
    split = {
        "voc": "ImageSets/Segmentation/train.txt",
        "sbd": "ImageSets/SegmentationAug/train_aug.txt",
        "folder": "train.txt",
    }[reader]
    for d in (image_dir, mask_dir, os.path.dirname(split)):
      os.makedirs(root / d, exist_ok=True)
    lines = []
    for i in range(N):
      name = f"2007_00000{i}"
      image().save(root / image_dir / f"{name}.jpg")
      mask([0, 1, 2, 255]).save(root / mask_dir / f"{name}.png")
      files.append((root / image_dir / f"{name}.jpg", root / mask_dir / f"{name}.png"))
      two = reader == "sbd"
      lines.append(f"/{image_dir}/{name}.jpg /{mask_dir}/{name}.png" if two else name)
    (root / split).write_text("\n".join(lines) + "\n")
    if reader == "folder":
      build = lambda: sources.SegmentationFolderSource(
          root, split_file=split, image_dir=image_dir, mask_dir=mask_dir, num_classes=3
      )
    else:
      build = lambda: sources.voc_segmentation_source(
          root, "train" if reader == "voc" else "train_aug"
      )
    return build, files, root / split, (7 if reader == "folder" else 30)
  ids = [0, 7, 8, 26, 34]
  if reader == "gta5":
    os.makedirs(root / "images")
    os.makedirs(root / "labels")
    for i in range(N):
      image().save(root / "images" / f"{i:05d}.png")
      mask(ids).save(root / "labels" / f"{i:05d}.png")
      files.append((root / "images" / f"{i:05d}.png", root / "labels" / f"{i:05d}.png"))
    return lambda: driving.gta5_source(root), files, root / "images", 40
  image_dir, label_dir = (
      root / "leftImg8bit" / "train" / "aachen",
      root / "gtFine" / "train" / "aachen",
  )
  os.makedirs(image_dir)
  os.makedirs(label_dir)
  for i in range(N):
    name = f"aachen_{i:06d}_000019"
    image().save(image_dir / f"{name}_leftImg8bit.png")
    mask(ids).save(label_dir / f"{name}_gtFine_labelIds.png")
    files.append((image_dir / f"{name}_leftImg8bit.png", label_dir / f"{name}_gtFine_labelIds.png"))
  return lambda: driving.cityscapes_source(root, "train"), files, image_dir.parent, 40


def _damage(fault, files, split, bad_label):
  """Damages example 1 (or the split) as `fault` says; returns the path the error must name."""
  image_path, mask_path = files[1]
  if fault in ("truncated_image", "truncated_mask"):
    path = image_path if fault == "truncated_image" else mask_path
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path
  if fault in ("corrupt_image", "corrupt_mask"):
    path = image_path if fault == "corrupt_image" else mask_path
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2)
    return path
  if fault == "rgba_mask":
    Image.fromarray(np.zeros((SIZE, SIZE, 4), np.uint8), "RGBA").save(mask_path, format="PNG")
    return mask_path
  if fault == "16bit_image":  # a 16-bit grey PNG (whatever the file's extension)
    Image.fromarray(np.full((SIZE, SIZE), 40000, np.uint16)).save(image_path, format="PNG")
    return image_path
  if fault == "16bit_mask":  # 16 bits where 8-bit class ids are expected
    Image.fromarray(np.full((SIZE, SIZE), 300, np.uint16)).save(mask_path, format="PNG")
    return mask_path
  if fault == "size_mismatch":
    Image.fromarray(np.zeros((SIZE // 2, SIZE), np.uint8), "L").save(mask_path, format="PNG")
    return mask_path
  if fault == "label_range":
    Image.fromarray(np.full((SIZE, SIZE), bad_label, np.uint8), "L").save(mask_path, format="PNG")
    return mask_path
  if fault in ("missing_image", "missing_mask"):
    path = image_path if fault == "missing_image" else mask_path
    if fault == "missing_image" and split.is_dir():  # an ADVENT-style list names every image
      gta5 = split.name == "images"
      root = split.parent if gta5 else split.parent.parent
      lst = root / ("gta5_list/all.txt" if gta5 else "cityscapes_list/train.txt")
      lst.parent.mkdir()
      lst.write_text("".join(f"{f.relative_to(split)}\n" for f, _ in files))
    path.unlink()
    return path
  if fault == "empty_split":
    if split.is_dir():  # listed from the image folder: an empty folder
      shutil.rmtree(split)
      split.mkdir()
    else:
      split.write_text("\n")
    return split
  assert fault == "non_utf8_name"
  if split.is_dir():  # a file whose name is not UTF-8 (Latin-1 'é') next to the good ones
    name = os.path.basename(str(image_path)).encode().replace(b"0", b"\xe9", 1)
    os.rename(image_path, os.path.join(os.fsencode(image_path.parent), name))
    return os.fsdecode(name).encode("utf-8", "backslashreplace").decode()
  with open(split, "ab") as f:
    f.write(b"2007_\xe9t\xe9\n")
  return split


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("reader", READERS)
def test_bad_file_is_a_data_error_naming_it(tmp_path, reader, fault):
  build, files, split, bad_label = _reader_dataset(reader, tmp_path)
  named = _damage(fault, files, split, bad_label)
  with pytest.raises(DataError) as error:
    source = build()
    for i in range(len(source)):
      source[i]
  assert os.path.basename(str(named)) in str(error.value), str(error.value)


@pytest.mark.parametrize("reader", READERS)
def test_good_reader_dataset_reads(tmp_path, reader):
  build, *_ = _reader_dataset(reader, tmp_path)
  source = build()
  assert len(source) == N and all(source[i]["mask"].shape == (SIZE, SIZE) for i in range(N))


# ---------------------------------------------------------------------------------------------------------
# data.skip_bad and python -m jaxseg.data.check.


def _corrupt_png(path):
  path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)


def test_skip_bad_replaces_a_corrupt_png_by_the_next_example(tmp_path, capsys):
  from jaxseg.data import datasets
  from jaxseg.data.skip_bad import SkipBadSource

  _folder_dataset(tmp_path, n=5)
  _corrupt_png(tmp_path / "masks" / "3.png")
  config = _config(tmp_path)
  strict = datasets.build_source(config.data, "train")
  with pytest.raises(DataError, match=r"masks/3\.png"):
    strict[3]
  config.data.skip_bad = True
  source = datasets.build_source(config.data, "train")
  assert isinstance(source, SkipBadSource) and len(source) == 5
  assert not isinstance(datasets.build_source(config.data, "eval"), SkipBadSource)  # eval: strict
  got = source[3]
  assert got["id"] == "4" and got["index"] == 4  # the next readable index, deterministically
  np.testing.assert_array_equal(got["image"], strict[4]["image"])
  warning = capsys.readouterr().err
  assert "masks/3.png" in warning and "1 bad example skipped" in warning, warning
  assert source[3]["id"] == "4" and source.num_skipped == 1  # known bad: no second read or warning
  assert capsys.readouterr().err == ""
  # Order-independent: a fresh copy (another worker process) maps index 3 the same way.
  assert SkipBadSource(strict)[3]["id"] == "4"
  assert pickle.loads(pickle.dumps(SkipBadSource(strict)))[3]["id"] == "4"
  assert [source[i]["id"] for i in range(5)] == ["0", "1", "2", "4", "4"]
  _corrupt_png(tmp_path / "masks" / "4.png")  # wraps around past the end
  assert SkipBadSource(strict)[4]["id"] == "0"
  for i in range(5):
    _corrupt_png(tmp_path / "masks" / f"{i}.png")
  with pytest.raises(DataError, match="all 5 examples are unreadable"):
    SkipBadSource(strict)[0]


@pytest.mark.slow  # ~50 s (compiles the train step); the replacement logic is tested above
def test_training_with_skip_bad_runs_past_a_corrupt_png(tmp_path, capsys):
  root = tmp_path / "data"
  _folder_dataset(root)
  _corrupt_png(root / "masks" / "3.png")
  config = _config(root)
  config.data.skip_bad = True
  method.train(config, str(tmp_path / "work"))
  assert os.path.isdir(tmp_path / "work" / "checkpoints" / "2")
  assert "masks/3.png" in capsys.readouterr().err


def _check(*args):
  return subprocess.run(
      [sys.executable, "-m", "jaxseg.data.check", "--noprogress", *args],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=120,
      env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )


def test_data_check_lists_bad_files_and_exits_1(tmp_path):
  from jaxseg.data import check

  root = tmp_path / "data"
  _folder_dataset(root, n=6)
  _corrupt_png(root / "masks" / "2.png")
  Image.fromarray(np.full((32, 32), 9, np.uint8)).save(root / "masks" / "4.png")
  (root / "val.txt").write_text("0\n1\nmissing\n")
  flags = [
      "--config=configs/supervised.py",
      "--config.data.name=folder",
      f"--config.data.root={root}",
      "--config.data.num_classes=3",
  ]
  proc = _check(*flags)
  assert proc.returncode == 1, proc.stderr
  rows = [line.split() for line in proc.stdout.splitlines()[1:] if line.startswith("data/")]
  assert [(r[0], r[2], r[3]) for r in rows] == [
      ("data/train", "2", f"{root}/masks/2.png:"),
      ("data/train", "4", "folder"),
      ("data/eval", "missing", "folder:"),
  ], proc.stdout
  assert "masks/4.png" in proc.stdout and "3 bad example(s) of 9 read" in proc.stdout
  # The same scan as a library call, with a thread pool and skip_bad ignored.
  config = _config(root)
  config.data.skip_bad = True
  bad, total = check.check(config, workers=4, progress=False)
  assert total == 9 and [(b[1]) for b in bad] == ["2", "4", "missing"]
  for i in (2, 4):
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "masks" / f"{i}.png")
  (root / "val.txt").write_text("0\n1\n")
  proc = _check(*flags)
  assert proc.returncode == 0 and "all 8 examples read" in proc.stdout, proc.stdout + proc.stderr


def test_data_check_config_errors_are_short(tmp_path):
  proc = _check("--config=configs/supervised.py", "--config.data.bogus=1")
  assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) <= 3, proc.stderr
  proc = _check("--config=configs/supervised.py:voc", f"--config.data.root={tmp_path / 'nope'}")
  assert proc.returncode == 1 and str(tmp_path / "nope") in proc.stdout, proc.stdout
