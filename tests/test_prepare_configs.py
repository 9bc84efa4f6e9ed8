"""`source='raw' | 'tfds'` in every method's data sections: both give the same examples.

Each dataset is the small made-up layout of its reader's tests, prepared with
`jaxseg.data.prepare`; each method's own source-building function is called twice, once per
`source`, and the examples compared key by key.
"""

import numpy as np
import pytest
import scipy.io
from test_driving_sources import cityscapes_root, gta5_root  # noqa: F401
from test_prepare import _prepare, assert_same_source
from test_rgbd_sources import K_SMALL, MAP13, MAP40, _data, _nyu_arrays, _write_v73, nyu  # noqa: F401
from test_sources import voc_root  # noqa: F401
from test_vos_sources import _save_annotation, davis_root, video_root  # noqa: F401

from jaxseg.data import datasets
from jaxseg.data.errors import DataError
from jaxseg.evaluation import davis as davis_eval
from jaxseg.methods import hn, seam, supervised, uda, vos


def _both(section, data_dir, build):
  """(raw source, prepared source) of a data section."""
  section.source = "raw"
  raw = build()
  section.source = "tfds"
  section.tfds.data_dir = data_dir
  ours = build()
  section.source = "raw"
  return raw, ours


def test_supervised_and_seam_voc_raw_equals_tfds(voc_root, tmp_path):  # noqa: F811
  data_dir = _prepare("voc_aug", voc_root, tmp_path)
  for method, calls in (
      (supervised, [("train", {}), ("eval", {})]),
      (
          seam,
          [("train", dict(with_labels=True, with_masks=False)), ("eval", dict(with_labels=True))],
      ),
  ):
    config = method.method.default_config()
    config.data.update(name="voc", root=str(voc_root), num_classes=21)
    config.data.update(train_split="train_aug", eval_split="val")
    for split, kwargs in calls:
      raw, ours = _both(
          config.data,
          data_dir,
          lambda s=split, k=kwargs: datasets.build_source(config.data, s, **k),
      )
      assert_same_source(raw, ours, f"{method.__name__} {split} {kwargs}")


def test_uda_source_and_target_raw_equal_tfds(gta5_root, cityscapes_root, tmp_path):  # noqa: F811
  gta = _prepare("gta5", gta5_root, tmp_path / "g")
  city = _prepare("cityscapes", cityscapes_root, tmp_path / "c")
  config = uda.method.default_config()
  config.source_data.update(name="gta5", root=str(gta5_root), train_split="all")
  config.target_data.update(name="cityscapes", root=str(cityscapes_root))
  for section in (config.source_data, config.target_data):
    section.update(num_classes=19, ignore_index=255)
  raw, ours = _both(
      config.source_data, gta, lambda: datasets.build_source(config.source_data, "train")
  )
  assert_same_source(raw, ours, "gta5 train")
  for split, kwargs in (("train", dict(with_masks=False)), ("eval", {})):
    raw, ours = _both(
        config.target_data,
        city,
        lambda s=split, k=kwargs: datasets.build_source(config.target_data, s, **k),
    )
    assert_same_source(raw, ours, f"cityscapes {split}")
  config.target_data.source = "bogus"
  with pytest.raises(DataError, match="target_data|data.source='bogus'"):
    datasets.build_source(config.target_data, "eval")
  config.target_data.source = "tfds"
  config.target_data.tfds.data_dir = ""
  with pytest.raises(DataError, match=r"data.tfds.data_dir is empty.*\n.*jaxseg.data.prepare"):
    datasets.build_source(config.target_data, "eval")


@pytest.fixture()
def nyu_full_frame(tmp_path):
  """A NYU-layout folder whose 3 images have the 480x640 frame of the default Kinect intrinsics."""
  root = tmp_path / "nyu"
  root.mkdir()
  _write_v73(root / "nyu_depth_v2_labeled.mat", _nyu_arrays(*_data(480, 640, 3)))
  scipy.io.savemat(root / "classMapping40.mat", {"mapClass": MAP40[None].astype(np.float64)})
  names = np.array([f"c{i}" for i in range(13)], dtype=object)[None]
  scipy.io.savemat(
      root / "class13Mapping.mat",
      {"classMapping13": {"labelsForClass13": MAP13[None], "className": names}},
  )
  scipy.io.savemat(root / "splits.mat", {"trainNdxs": [[2], [3]], "testNdxs": [[1]]})
  return root


def test_hn_nyu_raw_equals_tfds(nyu_full_frame, tmp_path):
  root = nyu_full_frame
  data_dir = _prepare("nyu_depth_v2", root, tmp_path / "out")
  config = hn.method.default_config()
  for section in (config.pretrain_data, config.data):
    section.update(
        mat_path=str(root / "nyu_depth_v2_labeled.mat"),
        splits_path=str(root / "splits.mat"),
        mapping40=str(root / "classMapping40.mat"),
        mapping13=str(root / "class13Mapping.mat"),
    )
  raw, ours = _both(config.pretrain_data, data_dir, lambda: hn.data.depth_source(config))
  assert_same_source(raw, ours, "hn pretrain_data")
  for classes in (40, 13):
    config.data.classes = classes
    for split in ("train", "eval"):
      raw, ours = _both(config.data, data_dir, lambda s=split: hn.data.semantic_source(config, s))
      assert_same_source(raw, ours, f"hn data {split} {classes}")


def test_vos_train_clips_and_davis_eval_raw_equal_tfds(video_root, davis_root, tmp_path):  # noqa: F811
  frames = _prepare("video_frames", video_root, tmp_path / "v")
  davis_dir = _prepare("davis2017", davis_root, tmp_path / "d")
  config = vos.method.default_config()
  config.train_data.update(name="videos", root=str(video_root))
  config.input.clip_length = 2
  with pytest.warns(UserWarning, match="skipped"):
    raw, ours = _both(config.train_data, frames, lambda: vos.data.train_source(config))
  assert_same_source(raw, ours, "vos train clips")
  config.eval_data.update(name="davis", root=str(davis_root), split="val")
  raw, ours = _both(
      config.eval_data, davis_dir, lambda: vos.stages._sequences(config, str(tmp_path))
  )
  assert raw[0] == str(davis_root) and ours[0] is None and raw[2] == ours[2] == 2
  assert_same_source(raw[1], ours[1], "vos eval sequences")
  # The evaluation reads the same annotations from the prepared set.
  results = tmp_path / "results"
  names = []
  for i in range(raw[2]):
    example = raw[1][i]
    names.append(example["sequence"])
    first = np.where(example["first_mask"] == 255, 0, example["first_mask"])
    for name in example["frame_names"]:  # copy the first mask: J&F below 1, above 0
      _save_annotation(str(results / example["sequence"] / f"{name}.png"), first)
  from_files = davis_eval.evaluate_davis(str(davis_root), str(results), sequences=names)
  from_prepared = davis_eval.evaluate_davis(
      None,
      str(results),
      sequences=names,
      annotations=vos.stages._prepared_annotations(ours[1], names),
  )
  assert from_files["global"] == from_prepared["global"]
  assert 0 < from_files["global"]["J&F-Mean"] < 1
  for seq, (j, f) in from_files["per_frame"].items():
    np.testing.assert_array_equal(from_prepared["per_frame"][seq][0], j)
    np.testing.assert_array_equal(from_prepared["per_frame"][seq][1], f)


@pytest.mark.slow  # compiles the HN labeller (~5-15 s on 2 cores)
def test_nyu_hn_config_stores_the_hn_labels_of_the_default_settings(nyu, tmp_path):  # noqa: F811
  from jaxseg.depth.hn_labels import default_hn_config
  from jaxseg.depth.hn_labels import hn_labels as compute
  from jaxseg.methods.hn.stages import precomputed_hn_labels

  root, _ = nyu
  (root / "intrinsics.txt").write_text(" ".join(str(float(v)) for v in K_SMALL.reshape(-1)))
  data_dir = _prepare("nyu_depth_v2/hn", root, tmp_path / "out")
  config = hn.method.default_config()
  config.pretrain_data.update(name="nyu", source="tfds", split="train")
  config.pretrain_data.tfds.update(name="nyu_depth_v2/hn", data_dir=data_dir)
  source = hn.data.depth_source(config)
  assert len(source) == 3
  for i in range(len(source)):
    example = source[i]
    expected, _ = compute(example["depth"][None], example["intrinsics"][None], default_hn_config())
    np.testing.assert_array_equal(example["hn_labels"], np.asarray(expected[0]).astype(np.uint8))
  assert precomputed_hn_labels(config, source)
  config.hn.normal_radius = 5  # other settings: the stage computes its own
  assert not precomputed_hn_labels(config, source)
  plain = _prepare("nyu_depth_v2", root, tmp_path / "plain")
  config.pretrain_data.tfds.update(name="nyu_depth_v2", data_dir=plain)
  assert "hn_labels" not in hn.data.depth_source(config)[0]
