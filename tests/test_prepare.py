"""Tests for jaxseg.data.prepare (TFDS ArrayRecord builders) and jaxseg.data.readers.prepared.

Every dataset is prepared from the small made-up layout its reader's tests write (the fixtures are
imported from those test modules), then read back both ways: the prepared examples must equal the
raw reader's, key by key and bit for bit.
"""

import json
import os
import pickle
import signal
import time

import numpy as np
import pytest
from test_driving_sources import cityscapes_root, gta5_root  # noqa: F401
from test_rgbd_sources import K_SMALL, nyu  # noqa: F401
from test_sources import voc_root  # noqa: F401
from test_vos_sources import davis_root, video_root  # noqa: F401

from jaxseg.data.errors import DataError
from jaxseg.data.prepare import __main__ as cli
from jaxseg.data.readers import davis, driving, prepared, sources, videos
from jaxseg.data.readers import nyu as nyu_reader


def assert_same_example(raw, other, where=""):
  assert sorted(raw) == sorted(other), (where, sorted(raw), sorted(other))
  for key, value in raw.items():
    got = other[key]
    if isinstance(value, np.ndarray):
      assert isinstance(got, np.ndarray) and got.dtype == value.dtype, (where, key, got)
      np.testing.assert_array_equal(got, value, err_msg=f"{where} {key}")
    else:
      assert type(got) is type(value) and got == value, (where, key, value, got)


def assert_same_source(raw, other, where=""):
  assert len(raw) == len(other), where
  for i in range(len(raw)):
    assert_same_example(raw[i], other[i], f"{where}[{i}]")


def _prepare(name, root, tmp_path, **kwargs):
  data_dir = str(tmp_path / "tfds")
  cli.prepare(name, str(root), data_dir, **kwargs)
  return data_dir


def test_voc_aug_prepared_equals_raw(voc_root, tmp_path):  # noqa: F811
  data_dir = _prepare("voc_aug", voc_root, tmp_path)
  for split in ("train_aug", "val"):
    for kwargs in ({"with_labels": True}, {"with_labels": False, "use_sbd": False}):
      raw = sources.voc_segmentation_source(voc_root, split, **kwargs)
      options = {"with_labels": kwargs["with_labels"], "with_masks": raw.mask_dir is not None}
      ours = prepared.PreparedSource("voc_aug", split, data_dir, options)
      assert_same_source(raw, ours, f"voc_aug/{split} {kwargs}")
  assert cli.verify("voc_aug", data_dir)["val"] == (1, [])


def test_gta5_and_cityscapes_prepared_equal_raw(
    gta5_root,  # noqa: F811
    cityscapes_root,  # noqa: F811
    tmp_path,
    monkeypatch,
):
  from tensorflow_datasets.core import shuffle

  from jaxseg.data.prepare import tfds_build

  gta = _prepare("gta5", gta5_root, tmp_path / "g")
  # Splits over 1 GB spill TFDS's shuffler to disk buckets (tf.io.gfile): written without TensorFlow.
  monkeypatch.setattr(shuffle, "MAX_MEM_BUFFER_SIZE", 1)
  city = _prepare("cityscapes", cityscapes_root, tmp_path / "c")
  # TFDS's own `tfds build` command writes the same records.
  built = str(tmp_path / "built")
  tfds_build.main(
      ["gta5", f"--manual_dir={gta5_root}", f"--data_dir={built}", "--file_format=array_record"]
  )
  a, b = prepared.open_split("gta5", "train", gta), prepared.open_split("gta5", "train", built)
  assert len(a) == len(b) == 3
  for k in range(3):
    for key in a[k]:
      np.testing.assert_array_equal(np.asarray(a[k][key]), np.asarray(b[k][key]), err_msg=key)
  for with_labels in (True, False):
    options = {"with_masks": with_labels}
    raw = driving.gta5_source(gta5_root, "all", with_labels=with_labels)
    assert_same_source(raw, prepared.PreparedSource("gta5", "train", gta, options), "gta5")
    for split in ("train", "val"):
      raw = driving.cityscapes_source(cityscapes_root, split, with_labels=with_labels)
      ours = prepared.PreparedSource("cityscapes", split, city, options)
      assert_same_source(raw, ours, f"cityscapes/{split}")


def test_nyu_depth_v2_prepared_equals_raw(nyu, tmp_path):  # noqa: F811
  root, _ = nyu
  (root / "intrinsics.txt").write_text(" ".join(str(float(v)) for v in K_SMALL.reshape(-1)))
  data_dir = _prepare("nyu_depth_v2", root, tmp_path / "n")
  for split in ("train", "test"):
    for classes in (40, 13):
      raw = nyu_reader.NyuDepthV2Source(
          root / "nyu_depth_v2_labeled.mat",
          split,
          splits_path=root / "splits.mat",
          classes=classes,
          mapping40=root / "classMapping40.mat",
          mapping13=root / "class13Mapping.mat",
          intrinsics=K_SMALL,
      )
      ours = prepared.PreparedSource("nyu_depth_v2", split, data_dir, {"classes": classes})
      assert_same_source(raw, ours, f"nyu/{split}/{classes}")


def test_davis2017_and_video_frames_prepared_equal_raw(davis_root, video_root, tmp_path):  # noqa: F811
  data_dir = _prepare("davis2017", davis_root, tmp_path / "d")
  for split in ("train", "val"):
    raw = davis.DavisSequenceSource(davis_root, split)
    ours = prepared.PreparedSource("davis2017", split, data_dir)
    assert_same_source(raw, ours, f"davis2017/{split}")
  frames_dir = _prepare("video_frames", video_root, tmp_path / "v")
  for kwargs in (
      dict(clip_length=2, frame_gaps=(2, 5, 8), gap_probs=(0.4, 0.4, 0.2), seed=3),
      dict(clip_length=4, frame_gaps=(3,), gap_probs=None, image_size=(5, 7), num_samples=9),
  ):
    with pytest.warns(UserWarning, match="skipped"):
      raw = videos.VideoFolderSource(video_root, **kwargs)
    with pytest.warns(UserWarning, match="skipped"):
      ours = prepared.PreparedClips("video_frames", "train", frames_dir, **kwargs)
    assert ours.videos == raw.videos
    assert_same_source(raw, ours, f"video_frames {kwargs}")


def test_skip_bad_resume_and_verify(gta5_root, tmp_path, monkeypatch):  # noqa: F811
  from jaxseg.data.prepare.images import Gta5

  (gta5_root / "images" / "00002.png").write_bytes(b"not a png")
  data_dir = str(tmp_path / "tfds")
  monkeypatch.setattr(Gta5, "chunk_size", 1)
  with pytest.raises(DataError, match=r"00002.png.*\n.*--skip_bad"):
    cli.prepare("gta5", str(gta5_root), data_dir)
  staging = tmp_path / "tfds" / "gta5" / "_staging-1.0.0" / "train"
  assert sorted(p.name for p in staging.glob("*.pkl")) == ["chunk-00000-of-00003.pkl"]
  # Resuming reuses the finished chunk: its file is not read again (now unreadable, it still passes).
  good = (gta5_root / "images" / "00001.png").read_bytes()
  (gta5_root / "images" / "00001.png").write_bytes(b"broken after its chunk was staged")
  assert cli.main(["gta5", f"--root={gta5_root}", f"--data_dir={data_dir}", "--skip_bad"]) == 0
  (gta5_root / "images" / "00001.png").write_bytes(good)
  skipped = json.loads((tmp_path / "tfds" / "gta5" / "1.0.0" / "skipped.json").read_text())
  assert [i for i, _ in skipped["train"]] == [1] and "00002.png" in skipped["train"][0][1]
  assert not staging.exists()  # removed after a finished preparation
  ours = prepared.PreparedSource("gta5", "train", data_dir)
  assert [ours[i]["id"] for i in range(2)] == ["00001", "00003"]
  assert [ours[i]["index"] for i in range(2)] == [0, 2]  # the reader's indices
  raw = driving.gta5_source(gta5_root, "all")
  assert_same_example(raw[0], ours[0])
  assert_same_example(raw[2], ours[1])
  assert cli.verify("gta5", data_dir) == {"train": (2, [])}
  assert cli.main(["gta5", f"--data_dir={data_dir}", "--verify"]) == 0
  # A record that no longer decodes to what was written is reported.
  original = Gta5.from_record.__func__

  def altered(cls, record, options):
    example = original(cls, record, options)
    example["mask"] = example["mask"].copy()
    example["mask"][0, 0] ^= 1
    return example

  monkeypatch.setattr(Gta5, "from_record", classmethod(altered))
  problems = cli.verify("gta5", data_dir)["train"][1]
  assert len(problems) == 2 and "checksum differs" in problems[0]
  assert cli.main(["gta5", f"--data_dir={data_dir}", "--verify"]) == 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_prepare_with_one_line_and_a_rerun_resumes(
    gta5_root,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
    signum,
):
  """SIGTERM (a cluster's preemption) or Ctrl-C while the second chunk is encoded: exit 128 + signal,
  one line naming what is kept, no traceback; the same command then finishes from the staged chunk.
  """
  from jaxseg.data.prepare.images import Gta5

  data_dir = str(tmp_path / "tfds")
  monkeypatch.setattr(Gta5, "chunk_size", 1)
  original = Gta5.to_record.__func__
  calls = []

  def signalled_on_the_second_example(cls, example):
    calls.append(example["id"])
    if len(calls) == 2:
      os.kill(os.getpid(), signum)  # delivered to this (main) thread before the call returns
      time.sleep(1)  # not reached past the handler's exception
    return original(cls, example)

  monkeypatch.setattr(Gta5, "to_record", classmethod(signalled_on_the_second_example))
  argv = ["gta5", f"--root={gta5_root}", f"--data_dir={data_dir}"]
  handler_before = signal.getsignal(signal.SIGTERM)
  assert cli.main(argv) == 128 + signum
  err = capsys.readouterr().err  # TFDS's progress bars, then the one line
  assert "Traceback" not in err
  assert err.strip().splitlines()[-1] == (
      f"gta5: stopped by {signal.Signals(signum).name} before it finished; the chunks encoded so far "
      f"stay staged under {data_dir}: rerun the same command to resume from them"
  )
  staging = tmp_path / "tfds" / "gta5" / "_staging-1.0.0" / "train"
  assert sorted(p.name for p in staging.glob("*.pkl")) == ["chunk-00000-of-00003.pkl"]
  assert signal.getsignal(signal.SIGTERM) is handler_before  # main() put the handler back
  monkeypatch.setattr(Gta5, "to_record", classmethod(original))
  assert cli.main(argv) == 0
  assert not staging.exists()
  assert len(prepared.PreparedSource("gta5", "train", data_dir)) == 3


def test_prepared_source_per_process_ranges_and_pickle(cityscapes_root, tmp_path):  # noqa: F811
  data_dir = _prepare("cityscapes", cityscapes_root, tmp_path)
  whole = prepared.PreparedSource("cityscapes", "train", data_dir)
  parts = [
      prepared.PreparedSource("cityscapes", "train", data_dir, process_index=p, process_count=3)
      for p in range(3)
  ]
  assert [len(p) for p in parts] == [1, 1, 2]
  ids = [e["id"] for p in parts for e in (p[i] for i in range(len(p)))]
  assert ids == [whole[i]["id"] for i in range(len(whole))]
  clone = pickle.loads(pickle.dumps(parts[2]))
  assert_same_example(parts[2][1], clone[1])
  with pytest.raises(DataError, match="prepare cityscapes"):
    prepared.PreparedSource("cityscapes", "train", str(tmp_path / "empty"))


@pytest.mark.slow
def test_beam_direct_runner_writes_the_same_records(cityscapes_root, tmp_path):  # noqa: F811
  """Apache Beam (DirectRunner) preparation equals the single-machine one, record by record.

  Needs apache-beam, whose every release pins protobuf < 7 (the project pins 7.36.2): run it in a
  separate environment (requirements-beam.txt; docs/datasets.md).
  """
  pytest.importorskip("apache_beam")
  from jaxseg.data.prepare.images import Cityscapes

  Cityscapes.chunk_size = 1  # one Beam element per example
  try:
    beam_dir = str(tmp_path / "beam")
    cli.prepare("cityscapes", str(cityscapes_root), beam_dir, beam_runner="DirectRunner")
  finally:
    Cityscapes.chunk_size = 64
  local_dir = _prepare("cityscapes", cityscapes_root, tmp_path / "local")
  for split in ("train", "val"):
    a = prepared.open_split("cityscapes", split, beam_dir)
    b = prepared.open_split("cityscapes", split, local_dir)
    assert len(a) == len(b) == 4
    for k in range(len(a)):
      ra, rb = a[k], b[k]
      assert sorted(ra) == sorted(rb)
      for key in ra:
        np.testing.assert_array_equal(np.asarray(ra[key]), np.asarray(rb[key]), err_msg=key)
  assert cli.verify("cityscapes", beam_dir) == {"train": (4, []), "val": (4, [])}


def test_two_processes_read_disjoint_ranges(cityscapes_root, tmp_path):  # noqa: F811
  """Two local JAX processes (jax.distributed) each read only their half of the prepared split,
  deterministically, and resume from the iterator state (tests/per_host_reader.py)."""
  import socket
  import subprocess
  import sys

  data_dir = _prepare("cityscapes", cityscapes_root, tmp_path)
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
  script = os.path.join(root, "tests", "per_host_reader.py")
  outs = [tmp_path / f"p{i}.json" for i in range(2)]
  procs = [
      subprocess.Popen(
          [sys.executable, script, data_dir, str(port), str(i), str(outs[i])],
          env=env,
          stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT,
          text=True,
      )
      for i in range(2)
  ]
  for p in procs:
    log, _ = p.communicate(timeout=120)
    assert p.returncode == 0, log[-3000:]
  r = [json.loads(o.read_text()) for o in outs]
  assert [x["process"] for x in r] == [[0, 2], [1, 2]]
  assert [x["range"] for x in r] == [[0, 2], [2, 4]]
  whole = prepared.PreparedSource("cityscapes", "train", data_dir)
  assert r[0]["ids"] + r[1]["ids"] == [whole[i]["id"] for i in range(len(whole))]
  for x in r:
    assert set(x["read"]) <= set(range(*x["range"]))  # only its own records
    assert sorted(sum(x["batches"][:2], [])) == sorted(x["ids"])  # an epoch of its range
    assert x["restored"] == x["batches"][2:]  # checkpointable
