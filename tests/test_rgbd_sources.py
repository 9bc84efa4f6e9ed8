"""Tests for jaxseg.data.readers.nyu (NYU Depth v2 labelled .mat) and jaxseg.data.readers.rgbd (RGB-D folders).

The NYU file is written the way MATLAB writes `-v7.3` files: HDF5 behind a 512-byte user block that
holds the MATLAB header, every array stored with its axes reversed (column-major): images
[N, 3, W, H], depths and labels [N, W, H]. Images are H != W with random pixels, so any transposition
error shows. Mapping and split files are small MATLAB v5 files written with scipy.io.savemat.
"""

import os
import pickle

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from jaxseg.data import transforms
from jaxseg.data.errors import DataError
from jaxseg.data.readers import nyu as N
from jaxseg.data.readers import rgbd as R

H, W, COUNT = 4, 6, 5
K_SMALL = np.array([[5.0, 0, 2.5], [0, 5.0, 1.5], [0, 0, 1]], np.float32)


def _matlab_header() -> bytes:
  text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
  return text.ljust(116, b" ") + b" " * 8 + b"\x00\x02IM"


def _write_v73(path, arrays):
  """arrays: name -> MATLAB-order array [..., H, W(, 3)] as numpy sees it after transposing back."""
  with h5py.File(path, "w", userblock_size=512) as f:
    for name, value in arrays.items():
      f[name] = value
  with open(path, "r+b") as f:
    f.write(_matlab_header().ljust(512, b"\x00"))


def _data(h=H, w=W, n=COUNT, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, h, w, 3), np.uint8)
  depths = rng.uniform(0.5, 9.0, (n, h, w)).astype(np.float32)
  raw = depths.copy()
  raw[:, 0, 0] = 0.0
  raw[:, 1, 1] = np.nan
  labels = rng.integers(0, 895, (n, h, w)).astype(np.uint16)
  labels[:, 0, :3] = (0, 1, 894)
  return images, depths, raw, labels


def _nyu_arrays(images, depths, raw, labels):
  return {
      "images": images.transpose(0, 3, 2, 1),  # [N, 3, W, H]
      "depths": depths.transpose(0, 2, 1),  # [N, W, H]
      "rawDepths": raw.transpose(0, 2, 1),
      "labels": labels.transpose(0, 2, 1),
  }


MAP40 = (np.arange(894) * 7 % 41).astype(np.uint8)  # values 0..40; 0 = unlabelled
MAP13 = (np.arange(40) % 13 + 1).astype(np.uint8)  # 40 classes -> 1..13


@pytest.fixture()
def nyu(tmp_path):
  data = _data()
  path = tmp_path / "nyu_depth_v2_labeled.mat"
  _write_v73(path, _nyu_arrays(*data))
  scipy.io.savemat(tmp_path / "classMapping40.mat", {"mapClass": MAP40[None].astype(np.float64)})
  names = np.array([f"c{i}" for i in range(13)], dtype=object)[None]
  scipy.io.savemat(
      tmp_path / "class13Mapping.mat",
      {"classMapping13": {"labelsForClass13": MAP13[None], "className": names}},
  )
  scipy.io.savemat(tmp_path / "splits.mat", {"trainNdxs": [[2], [4], [5]], "testNdxs": [[1], [3]]})
  return tmp_path, data


def _expected40(labels):
  one_based = np.concatenate([[0], MAP40])[labels]
  return np.where(one_based == 0, 255, one_based.astype(np.int64) - 1).astype(np.uint8)


def test_the_fake_file_is_a_matlab_v73_file(nyu):
  root, _ = nyu
  path = root / "nyu_depth_v2_labeled.mat"
  assert h5py.is_hdf5(path)
  assert path.read_bytes()[:10] == b"MATLAB 7.3" and path.read_bytes()[126:128] == b"IM"
  with h5py.File(path, "r") as f:
    assert f.userblock_size == 512 and f["images"].shape == (COUNT, 3, W, H)


def test_nyu_40_classes_train_split(nyu):
  root, (images, depths, _, labels) = nyu
  source = N.NyuDepthV2Source(
      root / "nyu_depth_v2_labeled.mat",
      "train",
      splits_path=root / "splits.mat",
      mapping40=root / "classMapping40.mat",
      intrinsics=K_SMALL,
  )
  assert len(source) == 3 and source.ids == ("00002", "00004", "00005")
  assert "NyuDepthV2Source(" in repr(source) and "len=3" in repr(source)
  for index, k in enumerate((1, 3, 4)):
    ex = source[index]
    assert ex["image"].dtype == np.uint8 and ex["image"].shape == (H, W, 3)
    np.testing.assert_array_equal(ex["image"], images[k])
    assert ex["depth"].dtype == np.float32 and ex["depth"].shape == (H, W)
    np.testing.assert_array_equal(ex["depth"], depths[k])
    assert ex["mask"].dtype == np.uint8
    np.testing.assert_array_equal(ex["mask"], _expected40(labels[k]))
    # Id 0 and id 1 (table entry 0) are unlabelled; id 894 -> table entry 19 -> class 18.
    assert tuple(ex["mask"][0, :3]) == (255, 255, 18) and MAP40[893] == 19
    np.testing.assert_array_equal(ex["intrinsics"], K_SMALL)
    assert ex["index"] == index and ex["id"] == f"{k + 1:05d}"
  assert set(np.unique(source[0]["mask"])) <= set(range(40)) | {255}
  test = N.NyuDepthV2Source(
      root / "nyu_depth_v2_labeled.mat",
      "test",
      splits_path=root / "splits.mat",
      mapping40=MAP40,
      intrinsics=K_SMALL,
  )
  assert test.ids == ("00001", "00003")
  np.testing.assert_array_equal(test[1]["image"], images[2])
  # Kinds: depth and intrinsics follow the geometric transforms.
  ex = source[0]
  kinds = transforms.resolve_kinds(ex)
  assert (
      kinds["depth"] == "depth" and kinds["intrinsics"] == "intrinsics" and kinds["mask"] == "mask"
  )
  flipped = transforms.random_flip(dict(ex), np.random.default_rng(0), 1.0)
  np.testing.assert_array_equal(flipped["depth"], ex["depth"][:, ::-1])
  assert flipped["intrinsics"][0, 2] == pytest.approx(W - 1 - K_SMALL[0, 2])
  # Pickling: before and after the file was opened; the copy opens its own handle.
  again = pickle.loads(pickle.dumps(source))
  assert again._file is None
  np.testing.assert_array_equal(again[2]["mask"], source[2]["mask"])
  source.close()
  np.testing.assert_array_equal(source[2]["image"], images[4])


def test_nyu_13_and_894_classes_and_raw_depth(nyu, tmp_path):
  root, (images, _, raw, labels) = nyu
  mat = root / "nyu_depth_v2_labeled.mat"
  s13 = N.NyuDepthV2Source(
      mat,
      "all",
      classes=13,
      mapping40=root / "classMapping40.mat",
      mapping13=root / "class13Mapping.mat",
      intrinsics=K_SMALL,
  )
  assert len(s13) == COUNT and s13.ids[0] == "00001"
  one40 = np.concatenate([[0], MAP40])[labels[0]]
  one13 = np.concatenate([[0], MAP13])[one40]
  expected = np.where(one13 == 0, 255, one13.astype(np.int64) - 1).astype(np.uint8)
  np.testing.assert_array_equal(s13[0]["mask"], expected)
  assert set(np.unique(s13[0]["mask"])) <= set(range(13)) | {255}
  # A 13-class table straight from the 894 ids (an array) needs no 40-class table.
  direct = (np.arange(894) % 14).astype(np.int64)
  s13b = N.NyuDepthV2Source(mat, "all", classes=13, mapping13=direct, intrinsics=K_SMALL)
  one = np.concatenate([[0], direct])[labels[2]]
  np.testing.assert_array_equal(s13b[2]["mask"], np.where(one == 0, 255, one - 1))
  with pytest.raises(ValueError, match="needs mapping40"):
    N.NyuDepthV2Source(mat, "all", classes=13, mapping13=MAP13, intrinsics=K_SMALL)
  # Raw ids: uint16, unlabelled 65535.
  s894 = N.NyuDepthV2Source(mat, "all", classes=894, depth_key="rawDepths", intrinsics=K_SMALL)
  ex = s894[3]
  assert ex["mask"].dtype == np.uint16 and s894.ignore_index == 65535
  np.testing.assert_array_equal(
      ex["mask"], np.where(labels[3] == 0, 65535, labels[3].astype(np.int64) - 1)
  )
  assert ex["mask"][0, 2] == 893
  # rawDepths: holes (0) and NaN both read as 0 = invalid.
  assert ex["depth"][0, 0] == 0 and ex["depth"][1, 1] == 0
  valid = np.isfinite(raw[3]) & (raw[3] > 0)
  np.testing.assert_array_equal(ex["depth"][valid], raw[3][valid])
  # A v7.3 (HDF5) mapping file is read too (MATLAB stores a 1x894 row as [894, 1]).
  h5map = tmp_path / "map40_v73.mat"
  _write_v73(h5map, {"mapClass": MAP40[:, None].astype(np.float64)})
  s40 = N.NyuDepthV2Source(mat, "all", mapping40=h5map, intrinsics=K_SMALL)
  np.testing.assert_array_equal(s40[1]["mask"], _expected40(labels[1]))
  with pytest.raises(ValueError, match="classes=40 needs mapping40"):
    N.NyuDepthV2Source(mat, "all", intrinsics=K_SMALL)
  with pytest.raises(ValueError, match="classes must be 40, 13 or 894"):
    N.NyuDepthV2Source(mat, "all", classes=37, intrinsics=K_SMALL)


def test_nyu_default_intrinsics_need_the_full_frame(tmp_path):
  data = _data(h=480, w=640, n=1, seed=3)
  path = tmp_path / "full.mat"
  _write_v73(path, _nyu_arrays(*data))
  ex = N.NyuDepthV2Source(path, "all", mapping40=MAP40)[0]
  assert ex["image"].shape == (480, 640, 3)
  np.testing.assert_array_equal(ex["image"], data[0][0])
  np.testing.assert_allclose(
      ex["intrinsics"],
      [[518.857901, 0, 325.582449], [0, 519.469611, 253.736166], [0, 0, 1]],
      rtol=1e-6,
  )
  assert ex["intrinsics"].dtype == np.float32
  small = tmp_path / "small.mat"
  _write_v73(small, _nyu_arrays(*_data()))
  with pytest.raises(DataError, match=r"small\.mat: images are 4x6 .*\n.*pass intrinsics="):
    N.NyuDepthV2Source(small, "all", mapping40=MAP40)


def test_nyu_not_a_v73_file(tmp_path, nyu):
  root, _ = nyu
  with pytest.raises(DataError, match=r"not found: .*nothere\.mat(.|\n)*hint"):
    N.NyuDepthV2Source(tmp_path / "nothere.mat", "all", mapping40=MAP40)
  v5 = tmp_path / "v5.mat"
  scipy.io.savemat(v5, {"images": np.zeros((2, 2), np.uint8)})
  with pytest.raises(
      DataError, match=r"v5\.mat: a MATLAB v5/v7 \.mat file, not v7\.3(.|\n)*-v7\.3"
  ):
    N.NyuDepthV2Source(v5, "all", mapping40=MAP40)
  text = tmp_path / "text.mat"
  text.write_text("hello")
  with pytest.raises(DataError, match=r"text\.mat: not an HDF5 \(MATLAB v7\.3\) file"):
    N.NyuDepthV2Source(text, "all", mapping40=MAP40)


def test_nyu_missing_datasets_and_wrong_shapes(tmp_path):
  images, depths, raw, labels = _data()
  arrays = _nyu_arrays(images, depths, raw, labels)
  cases = {
      "nolabels": ({k: v for k, v in arrays.items() if k != "labels"}, r"no dataset 'labels'"),
      "hw": ({**arrays, "labels": labels}, r"dataset 'labels' has shape \(5, 4, 6\); expected"),
      "rgb_last": (
          {**arrays, "images": images},
          r"dataset 'images' is uint8 \(5, 4, 6, 3\); expected uint8 \[N, 3, W, H\]",
      ),
      "count": ({**arrays, "depths": arrays["depths"][:3]}, r"dataset 'depths' has shape \(3,"),
      "float_labels": (
          {**arrays, "labels": arrays["labels"].astype(np.float32)},
          r"dataset 'labels' has dtype float32; expected integer",
      ),
  }
  for name, (content, message) in cases.items():
    path = tmp_path / f"{name}.mat"
    _write_v73(path, content)
    with pytest.raises(DataError, match=rf"{name}\.mat: {message}"):
      N.NyuDepthV2Source(path, "all", mapping40=MAP40, intrinsics=K_SMALL)
  bad = labels.copy()
  bad[2, 1, 1] = 900
  path = tmp_path / "bigid.mat"
  _write_v73(path, _nyu_arrays(images, depths, raw, bad))
  source = N.NyuDepthV2Source(path, "all", mapping40=MAP40, intrinsics=K_SMALL)
  source[1]
  with pytest.raises(
      DataError, match=r"bigid\.mat image 3: label values \[0, 900\] not in 0\.\.894"
  ):
    source[2]


def test_nyu_bad_splits_and_mappings(nyu, tmp_path):
  root, _ = nyu
  mat = root / "nyu_depth_v2_labeled.mat"
  with pytest.raises(DataError, match=r"split 'train' needs splits_path="):
    N.NyuDepthV2Source(mat, "train", mapping40=MAP40, intrinsics=K_SMALL)
  for name, content, message in (
      ("zero", {"trainNdxs": [[0], [1]]}, r"1-based image numbers 1\.\.5"),
      ("big", {"trainNdxs": [[6]]}, r"1-based image numbers 1\.\.5 .*\[6, 6\]"),
      ("twice", {"trainNdxs": [[2], [2]]}, r"twice"),
      ("nokey", {"testNdxs": [[1]]}, r"no variable 'trainNdxs' \(has \['testNdxs'\]\)"),
  ):
    scipy.io.savemat(tmp_path / f"{name}.mat", content)
    with pytest.raises(DataError, match=rf"{name}\.mat: .*{message}"):
      N.NyuDepthV2Source(
          mat, "train", splits_path=tmp_path / f"{name}.mat", mapping40=MAP40, intrinsics=K_SMALL
      )
  with pytest.raises(DataError, match=r"mapClass array: expected a numeric table of 894 entries"):
    N.NyuDepthV2Source(mat, "all", mapping40=MAP40[:40], intrinsics=K_SMALL)
  with pytest.raises(DataError, match=r"class table values \[0, 41\] not in 0\.\.40"):
    N.NyuDepthV2Source(mat, "all", mapping40=np.arange(894) % 42, intrinsics=K_SMALL)
  scipy.io.savemat(tmp_path / "wrongvar.mat", {"mapping": MAP40[None]})
  with pytest.raises(
      DataError, match=r"wrongvar\.mat: no variable 'mapClass' \(has \['mapping'\]\)"
  ):
    N.NyuDepthV2Source(mat, "all", mapping40=tmp_path / "wrongvar.mat", intrinsics=K_SMALL)
  scipy.io.savemat(tmp_path / "struct.mat", {"classMapping13": {"names": np.array(["a"])}})
  with pytest.raises(DataError, match=r"struct\.mat .*no numeric field of 40 or 894 entries"):
    N.NyuDepthV2Source(
        mat,
        "all",
        classes=13,
        mapping13=tmp_path / "struct.mat",
        mapping40=MAP40,
        intrinsics=K_SMALL,
    )


# ----------------------------------------------------------------------------
# RGB-D folders.
# ----------------------------------------------------------------------------
def _rgb(seed, h=H, w=W):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)


def _depth_mm(seed, h=H, w=W):
  depth = np.random.default_rng(100 + seed).integers(0, 12000, (h, w)).astype(np.uint16)
  depth[0, 0] = 0
  return depth


SCENES = {  # scene -> (frames, intrinsics text)
    "scene10": (2, "[[5, 0, 2.5],\n [0, 6, 1.5],\n [0, 0, 1]]\n"),
    "scene2": (3, "5.0 6.0 2.5 1.5\n"),
    "scene3": (1, "5 0 2.5 0\n0 6 1.5 0\n0 0 1 0\n0 0 0 1\n"),  # ScanNet's 4x4
}
K_RGBD = np.array([[5, 0, 2.5], [0, 6, 1.5], [0, 0, 1]], np.float32)


@pytest.fixture()
def rgbd_root(tmp_path):
  root = tmp_path / "captures"
  for s, (scene, (frames, text)) in enumerate(SCENES.items()):
    (root / scene / "rgb").mkdir(parents=True)
    (root / scene / "depth").mkdir()
    (root / scene / "intrinsics.txt").write_text(text)
    for t in range(frames):
      Image.fromarray(_rgb(10 * s + t)).save(root / scene / "rgb" / f"frame{t * 5}.png")
      Image.fromarray(_depth_mm(10 * s + t)).save(root / scene / "depth" / f"frame{t * 5}.png")
  (root / "readme.txt").write_text("not a scene")
  (root / "empty_dir").mkdir()  # no rgb/: not a scene
  return root


def test_rgbd_frames_depth_and_intrinsics(rgbd_root):
  source = R.RgbdFolderSource(rgbd_root)
  assert source.scenes == ("scene2", "scene3", "scene10")  # natural order
  assert len(source) == 6 and "RgbdFolderSource(" in repr(source)
  assert source.ids == (
      "scene2/frame0",
      "scene2/frame5",
      "scene2/frame10",
      "scene3/frame0",
      "scene10/frame0",
      "scene10/frame5",
  )
  seeds = [10, 11, 12, 20, 0, 1]
  for index, seed in enumerate(seeds):
    ex = source[index]
    np.testing.assert_array_equal(ex["image"], _rgb(seed))
    assert ex["depth"].dtype == np.float32 and ex["depth"].shape == (H, W)
    np.testing.assert_allclose(ex["depth"], _depth_mm(seed) / 1000.0, rtol=1e-6)
    assert ex["depth"][0, 0] == 0
    assert ex["intrinsics"].dtype == np.float32
    np.testing.assert_array_equal(ex["intrinsics"], K_RGBD)
    assert ex["index"] == index and ex["scene"] == ex["id"].split("/")[0]
  kinds = transforms.resolve_kinds(source[0])
  assert kinds["depth"] == "depth" and kinds["intrinsics"] == "intrinsics"
  tum = R.RgbdFolderSource(rgbd_root, depth_scale=5000.0)
  np.testing.assert_allclose(tum[2]["depth"], _depth_mm(12) / 5000.0, rtol=1e-6)
  again = pickle.loads(pickle.dumps(source))
  np.testing.assert_array_equal(again[5]["depth"], source[5]["depth"])


def test_rgbd_intrinsics_text():
  np.testing.assert_array_equal(R.parse_intrinsics("5,6,2.5,1.5", "x"), K_RGBD)
  for text, message in (
      ("5 6 2.5", r"expected 4 numbers \(fx fy cx cy\), 9 \(3x3 K\) or 16 \(4x4\), got 3"),
      ("fx fy cx cy", r"intrinsics are not numbers"),
      ("5 0 2.5 0 6 1.5 0 1 1", r"not a pinhole K"),
      ("-5 6 2.5 1.5", r"focal lengths must be finite and positive"),
      ("", r"expected 4 numbers .*, got 0"),
  ):
    with pytest.raises(DataError, match=rf"^here: {message}"):
      R.parse_intrinsics(text, "here")


def test_rgbd_build_errors(tmp_path, rgbd_root):
  with pytest.raises(DataError, match=r"RGB-D root folder not found: .*nothere(.|\n)*hint"):
    R.RgbdFolderSource(tmp_path / "nothere")
  (tmp_path / "noscenes").mkdir()
  with pytest.raises(DataError, match=r"noscenes: no scene folders with an rgb/ folder"):
    R.RgbdFolderSource(tmp_path / "noscenes")
  (rgbd_root / "scene3" / "intrinsics.txt").write_text("1 2 three 4\n")
  with pytest.raises(DataError, match=r"scene3/intrinsics\.txt: intrinsics are not numbers"):
    R.RgbdFolderSource(rgbd_root)
  os.remove(rgbd_root / "scene3" / "intrinsics.txt")
  with pytest.raises(DataError, match=r"scene3/intrinsics\.txt: intrinsics file not found"):
    R.RgbdFolderSource(rgbd_root)
  (rgbd_root / "scene3" / "intrinsics.txt").write_text(SCENES["scene3"][1])
  os.remove(rgbd_root / "scene10" / "depth" / "frame5.png")
  with pytest.raises(
      DataError, match=r"scene10/depth/frame5\.png: depth of frame .*scene10/rgb/frame5\.png not"
  ):
    R.RgbdFolderSource(rgbd_root)
  os.rename(rgbd_root / "scene10" / "depth", rgbd_root / "scene10" / "d")
  with pytest.raises(DataError, match=r"scene10/depth: depth folder not found"):
    R.RgbdFolderSource(rgbd_root)


def test_rgbd_bad_depth_files(rgbd_root):
  source = R.RgbdFolderSource(rgbd_root)
  depth = rgbd_root / "scene2" / "depth" / "frame5.png"
  Image.fromarray((_depth_mm(11) // 100).astype(np.uint8), mode="L").save(depth)
  with pytest.raises(
      DataError, match=r"frame5\.png: depth PNG has mode 'L', not 16-bit(.|\n)*8-bit"
  ):
    source[1]
  Image.fromarray(_rgb(0)).save(depth)
  with pytest.raises(DataError, match=r"frame5\.png: depth PNG has mode 'RGB'"):
    source[1]
  Image.fromarray(_depth_mm(11, h=H + 1)).save(depth)
  with pytest.raises(
      DataError, match=r"depth/frame5\.png: depth is 5x6 .*rgb/frame5\.png is 4x6(.|\n)*hint"
  ):
    source[1]
  depth.write_bytes(b"\x89PNG\r\n\x1a\n cut")
  with pytest.raises(DataError, match=r"depth/frame5\.png: cannot read depth"):
    source[1]
  (rgbd_root / "scene2" / "rgb" / "frame10.png").write_bytes(b"junk")
  with pytest.raises(DataError, match=r"rgb/frame10\.png: cannot read image"):
    source[2]
