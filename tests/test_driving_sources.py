"""Tests for jaxseg.data.readers.driving (GTA5 / Cityscapes) on tiny fake trees written to tmp_path.

`tests/data/esl/id_tables.npz` holds the official id tables from /work/shared/golden/esl/
esl_golden.npz (`gta5_id_to_trainid`, `cityscapes_labelid_to_trainid`: ADVENT's GTA5 dict and
Cityscapes `info.json: label2train` applied to ids 0..255).
"""

import os
import pickle

import numpy as np
import pytest
from PIL import Image

from jaxseg.data import datasets
from jaxseg.data.errors import DataError
from jaxseg.data.readers import driving as D

TABLES = os.path.join(os.path.dirname(__file__), "data", "esl", "id_tables.npz")
H, W = 8, 12
# Every train class, some ignored ids (0..6, 9, 10, 14..16, 18, 29, 30, 34).
IDS = np.array([7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33, 0, 34])


def _image(seed):
  return np.random.default_rng(seed).integers(0, 256, (H, W, 3), np.uint8)


def _labels(seed):
  return np.random.default_rng(100 + seed).choice(IDS, (H, W)).astype(np.uint8)


def _save_palette(ids, path):
  """GTA5 labels are palette PNGs (pixel = id)."""
  im = Image.frombytes("P", (ids.shape[1], ids.shape[0]), ids.tobytes())
  im.putpalette(list(range(256)) * 3)
  im.save(path)


@pytest.fixture()
def gta5_root(tmp_path):
  root = tmp_path / "GTA5"
  (root / "images").mkdir(parents=True)
  (root / "labels").mkdir()
  for i in (3, 1, 2):
    Image.fromarray(_image(i)).save(root / "images" / f"{i:05d}.png")
    _save_palette(_labels(i), root / "labels" / f"{i:05d}.png")
  return root


CITIES = {"train": ("aachen", "bremen"), "val": ("frankfurt", "lindau")}


def _city_name(city, k):
  return f"{city}_{k:06d}_000019"


@pytest.fixture()
def cityscapes_root(tmp_path):
  root = tmp_path / "Cityscapes"
  for s, (split, cities) in enumerate(CITIES.items()):
    for c, city in enumerate(cities):
      (root / "leftImg8bit" / split / city).mkdir(parents=True)
      (root / "gtFine" / split / city).mkdir(parents=True)
      for k in range(2):
        seed = 10 * s + 2 * c + k
        name = _city_name(city, k)
        Image.fromarray(_image(seed)).save(
            root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png"
        )
        Image.fromarray(_labels(seed), mode="L").save(
            root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png"
        )
  return root


# ----------------------------------------------------------------------------
# Tables.
# ----------------------------------------------------------------------------
def test_tables_match_the_official_golden_arrays():
  golden = np.load(TABLES)
  for key, table in (
      ("gta5_id_to_trainid", D.GTA5_ID_TO_TRAINID),
      ("cityscapes_labelid_to_trainid", D.CITYSCAPES_LABELID_TO_TRAINID),
  ):
    assert table.dtype == np.uint8 and table.shape == (256,)
    np.testing.assert_array_equal(table, golden[key], err_msg=key)
  assert sorted(set(D.LABELID_TO_TRAINID.tolist()) - {255}) == list(range(19))
  assert len(D.CITYSCAPES_CLASS_NAMES) == D.NUM_CLASSES == 19


# ----------------------------------------------------------------------------
# GTA5.
# ----------------------------------------------------------------------------
def test_gta5_all_is_every_image_sorted_and_mapped(gta5_root):
  source = D.gta5_source(gta5_root)
  assert len(source) == 3 and source.ids == ("00001", "00002", "00003")
  for index, i in enumerate((1, 2, 3)):
    example = source[index]
    assert example["id"] == f"{i:05d}" and example["index"] == index
    assert example["image"].dtype == np.uint8 and example["image"].shape == (H, W, 3)
    np.testing.assert_array_equal(example["image"], _image(i))
    assert example["mask"].dtype == np.uint8 and example["mask"].shape == (H, W)
    np.testing.assert_array_equal(example["mask"], D.GTA5_ID_TO_TRAINID[_labels(i)])
  assert {0, 18, 255} <= set(np.unique(source[0]["mask"]).tolist())
  assert D.gta5_source(gta5_root, "train").ids == source.ids
  assert "mask" not in D.gta5_source(gta5_root, with_labels=False)[0]
  again = pickle.loads(pickle.dumps(source))
  np.testing.assert_array_equal(again[2]["mask"], source[2]["mask"])


def test_gta5_list_files(gta5_root):
  (gta5_root / "gta5_list").mkdir()
  (gta5_root / "gta5_list" / "all.txt").write_text("00003.png\n00001.png\n\n")
  assert D.gta5_source(gta5_root).ids == ("00003", "00001")  # list order kept
  (gta5_root / "mine.txt").write_text("00002\n")
  source = D.gta5_source(gta5_root, list_file="mine.txt")
  np.testing.assert_array_equal(source[0]["image"], _image(2))
  with pytest.raises(DataError, match=r"gta5_list/val\.txt"):
    D.gta5_source(gta5_root, "val")
  with pytest.raises(DataError, match=r"nolist\.txt"):
    D.gta5_source(gta5_root, list_file="nolist.txt")
  (gta5_root / "gta5_list" / "all.txt").write_text("00009.png\n")
  with pytest.raises(DataError, match=r"images/00009\.png: image file not found.*all\.txt"):
    D.gta5_source(gta5_root)[0]


# ----------------------------------------------------------------------------
# Cityscapes.
# ----------------------------------------------------------------------------
def test_cityscapes_val_labelled_and_train_unlabelled(cityscapes_root):
  val = D.cityscapes_source(cityscapes_root, "val")
  expected = [_city_name(c, k) for c in CITIES["val"] for k in range(2)]
  assert val.ids == tuple(expected)
  for index in range(len(val)):
    example = val[index]
    seed = 10 + index
    np.testing.assert_array_equal(example["image"], _image(seed))
    assert example["mask"].dtype == np.uint8
    np.testing.assert_array_equal(example["mask"], D.CITYSCAPES_LABELID_TO_TRAINID[_labels(seed)])
  # The target-domain train split needs no gtFine/train.
  for city in CITIES["train"]:
    for k in range(2):
      os.remove(
          cityscapes_root / "gtFine/train" / city / f"{_city_name(city, k)}_gtFine_labelIds.png"
      )
  train = D.cityscapes_source(cityscapes_root, "train", with_labels=False)
  assert len(train) == 4 and set(train[3]) == {"image", "index", "id"}
  assert train[0]["id"] == "aachen_000000_000019"
  assert pickle.loads(pickle.dumps(train)).ids == train.ids


def test_cityscapes_list_file(cityscapes_root):
  (cityscapes_root / "cityscapes_list").mkdir()
  lst = cityscapes_root / "cityscapes_list" / "val.txt"
  lst.write_text("lindau/lindau_000001_000019_leftImg8bit.png\n")
  source = D.cityscapes_source(cityscapes_root, "val")
  assert source.ids == ("lindau_000001_000019",)
  np.testing.assert_array_equal(source[0]["image"], _image(13))
  lst.write_text("lindau_000001_000019.png\n")
  with pytest.raises(DataError, match=r"cityscapes_list/val\.txt:1: expected"):
    D.cityscapes_source(cityscapes_root, "val")


# ----------------------------------------------------------------------------
# Errors: each names the file.
# ----------------------------------------------------------------------------
def test_missing_roots_and_folders(tmp_path, gta5_root, cityscapes_root):
  with pytest.raises(DataError, match=r"GTA5 root directory not found: .*nothere(.|\n)*hint"):
    D.gta5_source(tmp_path / "nothere")
  os.rename(gta5_root / "labels", gta5_root / "labels_old")
  with pytest.raises(DataError, match=r"GTA5 label directory not found: .*GTA5/labels"):
    D.gta5_source(gta5_root)
  with pytest.raises(DataError, match=r"Cityscapes root directory not found: .*nothere"):
    D.cityscapes_source(tmp_path / "nothere")
  with pytest.raises(DataError, match=r"leftImg8bit/test"):
    D.cityscapes_source(cityscapes_root, "test")
  os.rename(cityscapes_root / "gtFine", cityscapes_root / "gt")
  with pytest.raises(DataError, match=r"label directory for split 'val' not found: .*gtFine/val"):
    D.cityscapes_source(cityscapes_root, "val")
  assert len(D.cityscapes_source(cityscapes_root, "val", with_labels=False)) == 4


def test_image_without_label(gta5_root, cityscapes_root):
  os.remove(gta5_root / "labels" / "00002.png")
  with pytest.raises(DataError, match=r"labels/00002\.png: label file not found.*images/00002"):
    D.gta5_source(gta5_root)[1]
  name = _city_name("frankfurt", 1)
  os.remove(cityscapes_root / "gtFine/val/frankfurt" / f"{name}_gtFine_labelIds.png")
  with pytest.raises(DataError, match=rf"{name}_gtFine_labelIds\.png: label file not found"):
    D.cityscapes_source(cityscapes_root, "val")[1]


def test_unreadable_image(gta5_root, cityscapes_root):
  (gta5_root / "images" / "00003.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
  with pytest.raises(DataError, match=r"images/00003\.png: cannot read image"):
    D.gta5_source(gta5_root)[2]
  name = _city_name("lindau", 0)
  (cityscapes_root / "leftImg8bit/val/lindau" / f"{name}_leftImg8bit.png").write_bytes(b"junk")
  with pytest.raises(DataError, match=rf"{name}_leftImg8bit\.png: cannot read image"):
    D.cityscapes_source(cityscapes_root, "val")[2]


def test_label_of_a_different_size(gta5_root, cityscapes_root):
  _save_palette(np.zeros((H, W + 1), np.uint8), gta5_root / "labels" / "00001.png")
  with pytest.raises(
      DataError, match=r"labels/00001\.png: label is 8x13 .*images/00001\.png is 8x12"
  ):
    D.gta5_source(gta5_root)[0]
  name = _city_name("frankfurt", 0)
  label = cityscapes_root / "gtFine/val/frankfurt" / f"{name}_gtFine_labelIds.png"
  Image.fromarray(np.zeros((H // 2, W // 2), np.uint8), mode="L").save(label)
  with pytest.raises(DataError, match=rf"{name}_gtFine_labelIds\.png: label is 4x6"):
    D.cityscapes_source(cityscapes_root, "val")[0]


def test_label_values_that_are_not_ids(gta5_root, cityscapes_root):
  bad = _labels(1)
  bad[0, :3] = (35, 200, 35)
  _save_palette(bad, gta5_root / "labels" / "00001.png")
  with pytest.raises(DataError, match=r"labels/00001\.png: label values \[35, 200\] are not"):
    D.gta5_source(gta5_root)[0]
  mask = D.gta5_source(gta5_root, check_ids=False)[0]["mask"]
  assert mask[0, 0] == mask[0, 1] == 255
  name = _city_name("lindau", 1)
  label = cityscapes_root / "gtFine/val/lindau" / f"{name}_gtFine_labelIds.png"
  Image.fromarray(np.full((H, W), 255, np.uint8), mode="L").save(label)
  with pytest.raises(DataError, match=rf"{name}_gtFine_labelIds\.png: label values \[255\]"):
    D.cityscapes_source(cityscapes_root, "val")[3]
  Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(label)  # a colour PNG
  with pytest.raises(DataError, match=rf"{name}_gtFine_labelIds\.png: mask has mode 'RGB'"):
    D.cityscapes_source(cityscapes_root, "val")[3]


def test_train_id_labels_without_table_are_validated(gta5_root):
  image = str(gta5_root / "images" / "00001.png")
  label = gta5_root / "pseudo.png"
  Image.fromarray(np.full((H, W), 18, np.uint8), mode="L").save(label)
  source = D.DrivingSource("pseudo", (("00001", image, str(label)),), table=None)
  assert (source[0]["mask"] == 18).all()
  Image.fromarray(np.full((H, W), 19, np.uint8), mode="L").save(label)
  with pytest.raises(DataError, match=r"pseudo\.png.*outside \[0, 19\)"):
    source[0]


# ----------------------------------------------------------------------------
# Registration.
# ----------------------------------------------------------------------------
def test_build_source_and_class_names(gta5_root, cityscapes_root):
  data = datasets.data_config()
  data.name, data.root, data.num_classes = "gta5", str(gta5_root), 19
  data.train_split = "all"
  assert datasets.build_source(data, "train").ids == ("00001", "00002", "00003")
  assert datasets.class_names(data) == list(D.CITYSCAPES_CLASS_NAMES)
  data.name, data.root, data.train_split = "cityscapes", str(cityscapes_root), "train"
  assert "mask" in datasets.build_source(data, "eval")[0]
  assert "mask" not in datasets.build_source(data, "train", with_masks=False)[0]
  assert datasets.class_names(data)[18] == "bicycle"
  with pytest.raises(ValueError, match="image-level labels"):
    datasets.build_source(data, "train", with_labels=True)
  data.num_classes = 7
  with pytest.raises(ValueError, match="num_classes=19"):
    datasets.build_source(data, "eval")
