"""Tests for jaxseg.data.readers.sources and jaxseg.data.readers.tfds_source on small files written to tmp_path."""

import os
import pickle
import subprocess
import sys

import grain
import numpy as np
import pytest
from PIL import Image

from jaxseg.data.errors import DataError
from jaxseg.data.readers import sources as S
from jaxseg.data.readers import tfds_source as TS
from jaxseg.data.transforms import build_augment

IDS = ("2007_000032", "2007_000039", "2008_000123")
SIZES = {"2007_000032": (20, 28), "2007_000039": (24, 16), "2008_000123": (18, 18)}
# VOC-style palette: index i -> some colour; 255 -> the VOC boundary colour.
PALETTE = np.zeros((256, 3), np.uint8)
PALETTE[:21] = np.random.default_rng(0).integers(0, 256, (21, 3))
PALETTE[255] = (224, 224, 192)


def _image(h, w, seed):
  """Smooth colour image (JPEG keeps it within a few levels)."""
  y, x = np.mgrid[:h, :w]
  base = np.stack(
      [x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), np.full((h, w), 40 + 50 * seed)], -1
  )
  return base.astype(np.uint8)


def _mask(h, w, seed):
  rng = np.random.default_rng(seed)
  mask = rng.integers(0, 21, (h, w)).astype(np.uint8)
  mask[0] = 255
  return mask


def _save_palette_png(mask, path):
  im = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())  # pixels = indices
  im.putpalette(PALETTE.flatten().tolist())
  im.save(path)


def _xml(objects):
  parts = ["<annotation><filename>x.jpg</filename>"]
  for name, difficult, with_parts in objects:
    parts.append(f"<object><name>{name}</name><difficult>{int(difficult)}</difficult>")
    if with_parts:
      parts.append("<part><name>head</name></part><part><name>hand</name></part>")
    parts.append("</object>")
  parts.append("</annotation>")
  return "".join(parts)


@pytest.fixture()
def voc_root(tmp_path):
  """A fake VOCdevkit/VOC2012 with 3 images, palette masks, SBD 'L' masks and XML annotations."""
  root = tmp_path / "VOCdevkit" / "VOC2012"
  for d in (
      "JPEGImages",
      "SegmentationClass",
      "SegmentationClassAug",
      "Annotations",
      "ImageSets/Segmentation",
  ):
    (root / d).mkdir(parents=True)
  for i, example_id in enumerate(IDS):
    h, w = SIZES[example_id]
    Image.fromarray(_image(h, w, i)).save(root / "JPEGImages" / f"{example_id}.jpg", quality=95)
    _save_palette_png(_mask(h, w, i), root / "SegmentationClass" / f"{example_id}.png")
    Image.fromarray(_mask(h, w, i) % 21, mode="L").save(
        root / "SegmentationClassAug" / f"{example_id}.png"
    )
  annotations = {
      IDS[0]: [("person", False, True), ("dog", True, False)],
      IDS[1]: [("aeroplane", False, False), ("aeroplane", False, False)],
      IDS[2]: [("tvmonitor", True, False), ("cat", False, False)],
  }
  for example_id, objects in annotations.items():
    (root / "Annotations" / f"{example_id}.xml").write_text(_xml(objects))
  sets = root / "ImageSets" / "Segmentation"
  (sets / "train.txt").write_text(f"{IDS[0]}\n{IDS[1]}\n\n")
  (sets / "val.txt").write_text(f"{IDS[2]}\n")
  (sets / "train_aug.txt").write_text(
      "".join(f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png\n" for i in IDS)
  )
  return root


# ----------------------------------------------------------------------------
# Decoding.
# ----------------------------------------------------------------------------
def test_decode_image_modes(tmp_path):
  rgb = _image(6, 7, 0)
  cases = {
      "rgb.png": Image.fromarray(rgb),
      "grey.png": Image.fromarray(rgb[..., 0]),
      "rgba.png": Image.fromarray(np.concatenate([rgb, np.full((6, 7, 1), 9, np.uint8)], -1)),
      "pal.png": Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=16),
  }
  for name, im in cases.items():
    im.save(tmp_path / name)
    out = S.decode_image(tmp_path / name)
    assert out.dtype == np.uint8 and out.shape == (6, 7, 3), name
  np.testing.assert_array_equal(S.decode_image(tmp_path / "rgb.png"), rgb)
  np.testing.assert_array_equal(S.decode_image(tmp_path / "rgba.png"), rgb)
  grey = S.decode_image(tmp_path / "grey.png")
  np.testing.assert_array_equal(grey[..., 2], rgb[..., 0])


def test_decode_image_corrupt_and_missing(tmp_path):
  good = tmp_path / "good.jpg"
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
  data = good.read_bytes()
  (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
  with pytest.raises(DataError, match=r"trunc\.jpg.*truncated"):
    S.decode_image(tmp_path / "trunc.jpg")
  (tmp_path / "junk.jpg").write_bytes(b"this is not an image at all")
  with pytest.raises(DataError, match=r"junk\.jpg: cannot read image"):
    S.decode_image(tmp_path / "junk.jpg")
  with pytest.raises(DataError, match=r"nothere\.jpg: image file not found"):
    S.decode_image(tmp_path / "nothere.jpg")


def test_decode_mask_palette_grey_and_refusals(tmp_path):
  mask = _mask(5, 9, 1)
  _save_palette_png(mask, tmp_path / "pal.png")
  assert Image.open(tmp_path / "pal.png").mode == "P"
  np.testing.assert_array_equal(S.decode_mask(tmp_path / "pal.png"), mask)  # indices, not colours
  Image.fromarray(mask, mode="L").save(tmp_path / "grey.png")
  np.testing.assert_array_equal(S.decode_mask(tmp_path / "grey.png"), mask)
  Image.fromarray(PALETTE[mask]).save(tmp_path / "colour.png")
  with pytest.raises(DataError, match=r"colour\.png: mask has mode 'RGB'.*palette PNG"):
    S.decode_mask(tmp_path / "colour.png")
  Image.fromarray(mask, mode="L").save(tmp_path / "lossy.jpg")
  with pytest.raises(DataError, match=r"lossy\.jpg: mask is a JPEG"):
    S.decode_mask(tmp_path / "lossy.jpg")
  (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
  with pytest.raises(DataError, match=r"bad\.png: cannot read mask"):
    S.decode_mask(tmp_path / "bad.png")


def test_voc_image_labels(tmp_path):
  path = tmp_path / "a.xml"
  path.write_text(_xml([("person", False, True), ("dog", True, False), (" cat ", False, False)]))
  labels = S.voc_image_labels(path)
  assert labels.dtype == np.float32 and labels.shape == (20,)
  names = [S.VOC_CLASS_NAMES[1 + i] for i in np.flatnonzero(labels)]
  assert names == ["cat", "dog", "person"]  # difficult dog included, parts (head/hand) ignored
  easy = S.voc_image_labels(path, include_difficult=False)
  assert [S.VOC_CLASS_NAMES[1 + i] for i in np.flatnonzero(easy)] == ["cat", "person"]
  path.write_text(_xml([("zebra", False, False)]))
  with pytest.raises(DataError, match=r"a\.xml: unknown VOC object name 'zebra'"):
    S.voc_image_labels(path)
  path.write_text("<annotation><object>")
  with pytest.raises(DataError, match=r"a\.xml: cannot parse"):
    S.voc_image_labels(path)


# ----------------------------------------------------------------------------
# Folder / VOC sources.
# ----------------------------------------------------------------------------
def test_voc_source_loads_images_masks_and_labels(voc_root):
  # Point at the VOCdevkit parent: the VOC2012 folder is found.
  source = S.voc_segmentation_source(voc_root.parent.parent, "train", with_labels=True)
  assert len(source) == 2 and source.ids == IDS[:2]
  for i in range(2):
    ex = source[i]
    example_id = IDS[i]
    h, w = SIZES[example_id]
    assert ex["id"] == example_id and ex["index"] == i
    assert ex["image"].dtype == np.uint8 and ex["image"].shape == (h, w, 3)
    assert np.abs(ex["image"].astype(int) - _image(h, w, i)).mean() < 3  # JPEG
    np.testing.assert_array_equal(ex["mask"], _mask(h, w, i))
    assert ex["mask"].dtype == np.uint8
  assert [S.VOC_CLASS_NAMES[1 + j] for j in np.flatnonzero(source[0]["labels"])] == [
      "dog",
      "person",
  ]
  assert [S.VOC_CLASS_NAMES[1 + j] for j in np.flatnonzero(source[1]["labels"])] == ["aeroplane"]
  assert source[-1]["id"] == IDS[1]
  with pytest.raises(IndexError):
    source[2]


def test_voc_train_aug_two_column_list_and_sbd(voc_root):
  aug = S.voc_segmentation_source(voc_root, "train_aug")
  assert aug.ids == IDS
  assert aug.mask_dir.endswith("SegmentationClassAug")
  ex = aug[2]
  h, w = SIZES[IDS[2]]
  np.testing.assert_array_equal(ex["mask"], _mask(h, w, 2) % 21)  # 255 -> 3 in the SBD copy
  weak = S.voc_segmentation_source(voc_root, "train_aug", use_sbd=False, with_labels=True)
  ex = weak[2]
  assert "mask" not in ex and ex["labels"].sum() == 2


def test_source_is_picklable_and_works_in_grain(voc_root):
  source = S.voc_segmentation_source(voc_root, "train_aug", with_labels=True)
  clone = pickle.loads(pickle.dumps(source))
  np.testing.assert_array_equal(clone[1]["mask"], source[1]["mask"])
  aug = build_augment({"crop_size": (16, 16), "color_jitter": (0.2, 0.2, 0.2, 0.05)})
  ds = grain.MapDataset.source(source).seed(3).random_map(aug).batch(3)
  batch = next(iter(ds))
  assert batch["image"].shape == (3, 16, 16, 3) and batch["image"].dtype == np.float32
  assert batch["mask"].shape == (3, 16, 16) and batch["labels"].shape == (3, 20)


def test_missing_root_names_path_and_hint(tmp_path):
  missing = tmp_path / "no_voc_here"
  hint = "use configs/supervised.py:synthetic for the embedded synthetic dataset"
  with pytest.raises(DataError) as info:
    S.voc_segmentation_source(missing, "train", hint=hint)
  assert str(missing) in str(info.value) and hint in str(info.value)
  with pytest.raises(DataError, match=r"root directory not found: .*no_voc_here(.|\n)*hint: try X"):
    S.SegmentationFolderSource(
        missing, split_file="a.txt", image_dir="img", num_classes=2, hint="try X"
    )


def test_missing_split_file_and_dirs(voc_root):
  with pytest.raises(DataError, match=r"split file not found: .*ImageSets.Segmentation.test\.txt"):
    S.voc_segmentation_source(voc_root, "test")
  with pytest.raises(DataError, match=r"image directory not found: .*Images"):
    S.SegmentationFolderSource(
        voc_root, split_file="ImageSets/Segmentation/train.txt", image_dir="Images", num_classes=21
    )
  (voc_root / "ImageSets" / "Segmentation" / "empty.txt").write_text("\n\n")
  with pytest.raises(DataError, match=r"empty\.txt: split file lists no ids"):
    S.voc_segmentation_source(voc_root, "empty")


def test_listed_id_without_image_or_mask(voc_root):
  sets = voc_root / "ImageSets" / "Segmentation"
  (sets / "ghost.txt").write_text(f"{IDS[0]}\n2012_999999\n")
  source = S.voc_segmentation_source(voc_root, "ghost")
  source[0]
  with pytest.raises(DataError, match=r"image of id '2012_999999' .*ghost\.txt.* not found"):
    source[1]
  os.remove(voc_root / "SegmentationClass" / f"{IDS[0]}.png")
  with pytest.raises(DataError, match=rf"mask of id '{IDS[0]}' .* not found: .*{IDS[0]}\.png"):
    source[0]


def test_corrupt_image_in_source(voc_root):
  path = voc_root / "JPEGImages" / f"{IDS[1]}.jpg"
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 3])
  source = S.voc_segmentation_source(voc_root, "train")
  source[0]
  with pytest.raises(DataError, match=rf"{IDS[1]}\.jpg: cannot read image"):
    source[1]


def test_mask_of_different_size(voc_root):
  h, w = SIZES[IDS[0]]
  _save_palette_png(_mask(h + 1, w, 0), voc_root / "SegmentationClass" / f"{IDS[0]}.png")
  source = S.voc_segmentation_source(voc_root, "train")
  with pytest.raises(
      DataError, match=rf"{IDS[0]}\.png.*mask shape \({h + 1}, {w}\) != image size \({h}, {w}\)"
  ):
    source[0]


def test_out_of_range_labels(voc_root):
  h, w = SIZES[IDS[1]]
  mask = _mask(h, w, 1)
  mask[3, 3], mask[4, 4] = 21, 77
  _save_palette_png(mask, voc_root / "SegmentationClass" / f"{IDS[1]}.png")
  source = S.voc_segmentation_source(voc_root, "train")
  with pytest.raises(DataError, match=rf"{IDS[1]}.*outside \[0, 21\).*\[21, 77\]"):
    source[1]


def test_importing_data_modules_does_not_import_tfds():
  code = (
      "import sys, jaxseg.data, jaxseg.data.readers.sources, jaxseg.data.transforms, "
      "jaxseg.data.readers.tfds_source; "
      "assert 'tensorflow_datasets' not in sys.modules, 'tfds imported'; "
      "assert 'tensorflow' not in sys.modules"
  )
  subprocess.run(
      [sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__))
  )


# ----------------------------------------------------------------------------
# TFDS adapter.
# ----------------------------------------------------------------------------
def test_map_tfds_record_with_fake_records():
  rng = np.random.default_rng(0)
  record = {
      "image": rng.integers(0, 256, (5, 6, 1), dtype=np.uint8),
      "segmentation_mask": np.array([[1, 2, 3, 255, 1, 2]] * 5, np.int64)[..., None],
      "file_name": b"Abyssinian_1.jpg",
  }
  ex = TS.map_tfds_record(record, 4, label_offset=-1, num_classes=3, extra_keys={"file_name": "id"})
  assert ex["image"].shape == (5, 6, 3) and ex["index"] == 4 and ex["id"] == "Abyssinian_1.jpg"
  np.testing.assert_array_equal(ex["mask"][0], [0, 1, 2, 255, 0, 1])
  assert ex["mask"].dtype == np.uint8
  mapped = TS.map_tfds_record(record, 0, label_map={1: 0, 2: 255, 3: 1, 255: 255})
  np.testing.assert_array_equal(mapped["mask"][0], [0, 255, 1, 255, 0, 255])
  with pytest.raises(
      DataError, match=r"tfds\[0\] 'segmentation_mask': mask values \[3, 255\] are not in label_map"
  ):
    TS.map_tfds_record(record, 0, label_map={1: 0, 2: 1})
  with pytest.raises(DataError, match=r"outside \[0, 2\).*\[2\]"):
    TS.map_tfds_record(record, 0, label_offset=-1, num_classes=2)
  with pytest.raises(DataError, match=r"\[-1\]"):
    TS.map_tfds_record(record, 0, label_offset=-2)
  with pytest.raises(DataError, match="no mask key 'label'"):
    TS.map_tfds_record(record, 0, mask_key="label")
  only_image = TS.map_tfds_record(record, 0, mask_key=None)
  assert "mask" not in only_image


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory):
  """A 4-record segmentation dataset written as array_record by a local TFDS builder (no TF)."""
  import tensorflow_datasets as tfds

  class TinyPetsLike(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self,
          features=tfds.features.FeaturesDict(
              {
                  "image": tfds.features.Image(shape=(None, None, 3)),
                  "segmentation_mask": tfds.features.Image(shape=(None, None, 1)),
                  "file_name": tfds.features.Text(),
              }
          ),
      )

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples(4)}

    def _generate_examples(self, n):
      for i in range(n):
        # PIL inputs are PNG-encoded by PIL, not tf.image, so TF is not needed.
        yield i, {
            "image": Image.fromarray(_image(10 + i, 12, i)),
            "segmentation_mask": Image.fromarray(1 + _mask(10 + i, 12, i) % 3),
            "file_name": f"img_{i}.png",
        }

  data_dir = tmp_path_factory.mktemp("tfds")
  TinyPetsLike(data_dir=os.fspath(data_dir), file_format="array_record").download_and_prepare()
  return os.fspath(data_dir)


def test_tfds_source_reads_array_record(tiny_tfds):
  source = TS.tfds_segmentation_source(
      "tiny_pets_like",
      "train",
      data_dir=tiny_tfds,
      label_offset=-1,
      num_classes=3,
      extra_keys={"file_name": "id"},
  )
  assert len(source) == 4
  by_id = {source[i]["id"]: source[i] for i in range(4)}
  assert sorted(by_id) == [f"img_{i}.png" for i in range(4)]
  for i in range(4):
    ex = by_id[f"img_{i}.png"]
    np.testing.assert_array_equal(ex["image"], _image(10 + i, 12, i))
    np.testing.assert_array_equal(ex["mask"], _mask(10 + i, 12, i) % 3)
    assert ex["mask"].dtype == np.uint8 and ex["mask"].shape == (10 + i, 12)
  batch = source.__getitems__([0, 2])
  np.testing.assert_array_equal(batch[1]["mask"], source[2]["mask"])
  clone = pickle.loads(pickle.dumps(source))
  np.testing.assert_array_equal(clone[3]["image"], source[3]["image"])
  aug = build_augment({"crop_size": (8, 8)})
  out = next(iter(grain.MapDataset.source(source).seed(0).random_map(aug).batch(4)))
  assert out["image"].shape == (4, 8, 8, 3) and out["mask"].shape == (4, 8, 8)
  shard = TS.tfds_segmentation_source(
      "tiny_pets_like", "train", data_dir=tiny_tfds, per_process=True, label_offset=-1
  )
  assert len(shard) == 4  # one process: the whole split


def test_tfds_source_errors(tiny_tfds, tmp_path):
  with pytest.raises(
      DataError,
      match=r"'tiny_pets_like'.*data_dir=.*empty(.|\n)*tfds build "
      r"tiny_pets_like --file_format=array_record(.|\n)*hint: H",
  ):
    TS.tfds_segmentation_source(
        "tiny_pets_like", "train", data_dir=os.fspath(tmp_path / "empty"), hint="H"
    )
  with pytest.raises(DataError, match="Unknown split 'test'"):
    TS.tfds_segmentation_source("tiny_pets_like", "test", data_dir=tiny_tfds)
  wrong_key = TS.tfds_segmentation_source(
      "tiny_pets_like", "train", data_dir=tiny_tfds, mask_key="mask"
  )
  with pytest.raises(
      DataError, match=r"tfds:tiny_pets_like/train\[0\]: record has no mask key 'mask'"
  ):
    wrong_key[0]
