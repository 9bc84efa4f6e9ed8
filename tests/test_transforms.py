"""Tests for jaxseg.data.transforms: joint resampling, crops, flips, photometric ops, grain wrappers."""

import colorsys
import pickle

import grain
import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image, ImageEnhance

from jaxseg.data import transforms as T
from jaxseg.data.errors import DataError


def _stripes_example(h=48, w=64, stripe=8, seed=0):
  """Vertical stripes: mask id = x // stripe; red = 20 * id; depth = id + 0.5; instances = id + 1.

  Every key encodes the same function of x, so any misalignment between keys
  (different crop window / flip / scale) shows up as a mismatch.
  """
  rng = np.random.default_rng(seed)
  ids = np.broadcast_to((np.arange(w) // stripe)[None, :], (h, w))
  image = np.zeros((h, w, 3), np.uint8)
  image[..., 0] = 20 * ids
  image[..., 1] = rng.integers(0, 256, (h, w))
  return {
      "image": image,
      "mask": ids.astype(np.uint8),
      "instances": (ids + 1).astype(np.int32),
      "depth": (ids + 0.5).astype(np.float32),
      "cam": np.stack([ids, -ids], -1).astype(np.float32),
      "labels": np.array([1.0, 0.0], np.float32),
      "intrinsics": np.eye(3, dtype=np.float32),
      "index": 3,
  }


def _copy(example):
  return {k: np.array(v, copy=True) for k, v in example.items()}


def _assert_unchanged(before, after):
  for k in before:
    np.testing.assert_array_equal(before[k], after[k], err_msg=f"input key {k} mutated")


def _assert_aligned(ex):
  """Keys agree pixel-wise wherever the mask is labelled.

  Bilinear maps blur stripe edges, so: the two bilinear keys (red, cam) agree
  everywhere, and the nearest-neighbour mask lies within half a class of them.
  The nearest-neighbour keys (instances, depth) match the mask exactly.
  A window or flip that differs between keys breaks both by whole classes.
  """
  mask = ex["mask"].astype(np.int64)
  valid = mask != 255
  assert valid.mean() > 0.2
  np.testing.assert_array_equal(ex["instances"][valid], mask[valid] + 1)
  np.testing.assert_array_equal(ex["depth"][valid], mask[valid] + 0.5)
  cam_id = ex["cam"][..., 0][valid]
  red_id = ex["image"][..., 0][valid] / 20.0
  assert np.abs(red_id - cam_id).max() < 0.1
  assert np.abs(cam_id - mask[valid]).max() <= 0.5 + 1e-4


def test_spatial_keys_detection_and_explicit_list():
  ex = _stripes_example()
  assert set(T.spatial_keys_of(ex)) == {"image", "mask", "instances", "depth", "cam"}
  assert T.spatial_keys_of(ex, ["mask"]) == ("image", "mask")
  with pytest.raises(DataError, match="'labels'"):
    T.spatial_keys_of(ex, ["labels"])
  with pytest.raises(DataError, match="'nope'"):
    T.spatial_keys_of(ex, ["nope"])
  # A tiny 3x3 image must not drag the 3x3 intrinsics along.
  tiny = {"image": np.zeros((3, 3, 3), np.uint8), "intrinsics": np.eye(3)}
  assert T.spatial_keys_of(tiny) == ("image",)


@pytest.mark.parametrize("size", [(20, 25), (77, 107), (50, 30)])
def test_float_bilinear_matches_jax_antialiased_linear(size):
  x = np.random.default_rng(1).random((37, 53)).astype(np.float32)
  ex = {"image": np.zeros((37, 53, 3), np.uint8), "feature": x}  # A float map (kind 'map').
  out = T.resize(ex, size)["feature"]
  ref = np.asarray(jax.image.resize(x, size, "linear", antialias=True))
  assert out.dtype == np.float32 and out.shape == size
  np.testing.assert_allclose(out, ref, atol=1e-5)


def test_image_bilinear_matches_float_path_and_keeps_uint8():
  rng = np.random.default_rng(2)
  image = rng.integers(0, 256, (31, 45, 3), dtype=np.uint8)
  out = T.resize({"image": image}, (62, 20))["image"]
  assert out.dtype == np.uint8 and out.shape == (62, 20, 3)
  ref = np.asarray(
      jax.image.resize(image.astype(np.float32), (62, 20, 3), "linear", antialias=True)
  )
  assert np.abs(out.astype(np.float32) - ref).max() <= 1.0


def test_nearest_for_integer_maps_uses_half_pixel_rule():
  rng = np.random.default_rng(3)
  mask = rng.integers(0, 21, (37, 53), dtype=np.uint8)
  inst = rng.integers(0, 10**6, (37, 53)).astype(np.int32)
  ex = {"image": np.zeros((37, 53, 3), np.uint8), "mask": mask, "instances": inst}
  before = _copy(ex)
  out = T.resize(ex, (80, 29))
  _assert_unchanged(before, ex)
  assert out["mask"].dtype == np.uint8 and out["instances"].dtype == np.int32
  rows = np.floor((np.arange(80) + 0.5) * 37 / 80).astype(int)
  cols = np.floor((np.arange(29) + 0.5) * 53 / 29).astype(int)
  np.testing.assert_array_equal(out["mask"], mask[rows][:, cols])
  np.testing.assert_array_equal(out["instances"], inst[rows][:, cols])
  # Same rule as PIL's NEAREST along one axis (output row 0 samples input row 0).
  assert rows[0] == 0
  pil = np.asarray(Image.fromarray(mask[:1]).resize((29, 1), Image.NEAREST))
  np.testing.assert_array_equal(out["mask"][0], pil[0])


def test_random_scale_consistent_and_within_range():
  ex = _stripes_example()
  sizes = set()
  for seed in range(6):
    out = T.random_scale(ex, np.random.default_rng(seed), (0.5, 2.0))
    h, w = out["image"].shape[:2]
    assert 24 <= h <= 96 and abs(w / h - 64 / 48) < 0.1
    for k in ("mask", "instances", "depth", "cam"):
      assert out[k].shape[:2] == (h, w), k
    np.testing.assert_array_equal(out["labels"], ex["labels"])
    # K = I scaled with half-pixel centres: fx' = sx, cx' = (0 + 0.5) sx - 0.5.
    sx, sy = w / 64, h / 48
    np.testing.assert_allclose(
        out["intrinsics"],
        [[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]],
        rtol=1e-6,
        atol=1e-7,
    )
    _assert_aligned(out)
    sizes.add(h)
  assert len(sizes) > 1


def test_random_crop_smaller_image_pads_each_key_with_its_fill():
  ex = _stripes_example(h=10, w=16)
  before = _copy(ex)
  out = T.random_crop(ex, np.random.default_rng(0), (20, 24), fill=7)
  _assert_unchanged(before, ex)
  for k in ("image", "mask", "instances", "depth", "cam"):
    assert out[k].shape[:2] == (20, 24) and out[k].dtype == ex[k].dtype, k
  placed = out["mask"] != 255
  assert placed.sum() == 10 * 16
  rows, cols = np.nonzero(placed)
  y0, x0 = rows.min(), cols.min()
  window = (slice(y0, y0 + 10), slice(x0, x0 + 16))
  for k in ("image", "mask", "instances", "depth", "cam"):
    np.testing.assert_array_equal(out[k][window], ex[k], err_msg=k)
  assert np.all(out["image"][~placed] == 7)
  assert np.all(out["instances"][~placed] == 0) and np.all(out["depth"][~placed] == 0)
  np.testing.assert_array_equal(out["intrinsics"][:2, 2], [x0, y0])  # Principal point moves along.
  # The offset is random.
  offsets = {
      tuple(np.argwhere(T.random_crop(ex, np.random.default_rng(s), (20, 24))["mask"] != 255)[0])
      for s in range(8)
  }
  assert len(offsets) > 1


def test_random_crop_larger_image_takes_same_window_everywhere():
  ex = _stripes_example(h=48, w=64)
  ex["depth"] = np.random.default_rng(0).random((48, 64)).astype(np.float32)  # Unique content.
  out = T.random_crop(ex, np.random.default_rng(5), (16, 24))
  hits = [
      (y, x)
      for y in range(48 - 16 + 1)
      for x in range(64 - 24 + 1)
      if np.array_equal(ex["depth"][y : y + 16, x : x + 24], out["depth"])
  ]
  assert len(hits) == 1
  y, x = hits[0]
  for k in ("image", "mask", "instances", "cam"):
    np.testing.assert_array_equal(out[k], ex[k][y : y + 16, x : x + 24], err_msg=k)
  np.testing.assert_array_equal(out["intrinsics"][:2, 2], [-x, -y])


def test_random_crop_mixed_axes_and_pad_override():
  ex = _stripes_example(h=10, w=64)
  out = T.random_crop(
      ex, np.random.default_rng(1), (16, 8), ignore_index=250, pad_values={"depth": -1.0}
  )
  assert out["mask"].shape == (16, 8)
  assert np.sum(np.all(out["mask"] == 250, axis=1)) == 6  # 6 padded rows.
  assert np.sum(np.all(out["depth"] == -1.0, axis=1)) == 6


def test_center_crop_exact_windows():
  ex = _stripes_example(h=10, w=64)
  out = T.center_crop(ex, (14, 20))
  np.testing.assert_array_equal(out["mask"][2:12], ex["mask"][:, 22:42])
  assert np.all(out["mask"][:2] == 255) and np.all(out["mask"][12:] == 255)
  np.testing.assert_array_equal(out["image"][2:12], ex["image"][:, 22:42])
  assert np.all(out["image"][:2] == 0)


def test_random_flip():
  ex = _stripes_example()
  before = _copy(ex)
  flipped = T.random_flip(ex, np.random.default_rng(0), prob=1.0)
  kept = T.random_flip(ex, np.random.default_rng(0), prob=0.0)
  _assert_unchanged(before, ex)
  for k in ("image", "mask", "instances", "depth", "cam"):
    np.testing.assert_array_equal(flipped[k], ex[k][:, ::-1], err_msg=k)
    np.testing.assert_array_equal(kept[k], ex[k], err_msg=k)
  # The mirrored camera: cx' = W - 1 - cx, fx stays positive.
  np.testing.assert_array_equal(flipped["intrinsics"], [[1, 0, 63], [0, 1, 0], [0, 0, 1]])
  np.testing.assert_array_equal(kept["intrinsics"], ex["intrinsics"])
  outcomes = {
      bool(T.random_flip(ex, np.random.default_rng(s))["mask"][0, 0] != ex["mask"][0, 0])
      for s in range(16)
  }
  assert outcomes == {True, False}


def _smooth_image(h=24, w=32, seed=0):
  """Random colours, mostly dark (mean grey far from mid-range, so contrast's pivot matters)."""
  rng = np.random.default_rng(seed)
  return (rng.random((h, w, 3)) ** 2 * 255).astype(np.uint8)


@pytest.mark.parametrize("factor", [0.0, 0.6, 1.4])
def test_photometric_ops_match_pil_enhance(factor):
  image = _smooth_image()
  pil = Image.fromarray(image)
  x = image.astype(np.float32)
  for ours, theirs in (
      (T.adjust_brightness, ImageEnhance.Brightness),
      (T.adjust_contrast, ImageEnhance.Contrast),
      (T.adjust_saturation, ImageEnhance.Color),
  ):
    ref = np.asarray(theirs(pil).enhance(factor)).astype(np.float32)
    assert np.abs(ours(x, factor) - ref).max() <= 2.0, ours.__name__


def test_hsv_round_trip_matches_colorsys_and_hue_shift():
  rgb = np.random.default_rng(4).random((50, 3))
  hsv = T.rgb_to_hsv(rgb)
  ref = np.array([colorsys.rgb_to_hsv(*p) for p in rgb])
  np.testing.assert_allclose(hsv, ref, atol=1e-6)
  np.testing.assert_allclose(T.hsv_to_rgb(hsv), rgb, atol=1e-6)
  red = np.array([[[255.0, 0.0, 0.0]]], np.float32)
  np.testing.assert_allclose(T.adjust_hue(red, 0.5), [[[0.0, 255.0, 255.0]]], atol=1e-3)
  np.testing.assert_allclose(T.adjust_hue(red, 1 / 3), [[[0.0, 255.0, 0.0]]], atol=1e-3)


def test_color_jitter_touches_only_the_image():
  ex = {"image": _smooth_image(), "mask": np.ones((24, 32), np.uint8)}
  before = _copy(ex)
  same = T.color_jitter(ex, np.random.default_rng(0))
  np.testing.assert_array_equal(same["image"], ex["image"])
  outs = [T.color_jitter(ex, np.random.default_rng(s), 0.4, 0.4, 0.4, 0.1) for s in range(3)]
  _assert_unchanged(before, ex)
  for out in outs:
    assert out["image"].dtype == np.uint8 and out["image"].shape == ex["image"].shape
    np.testing.assert_array_equal(out["mask"], ex["mask"])
  assert not np.array_equal(outs[0]["image"], outs[1]["image"])
  # Brightness only: a single factor in [0.7, 1.3] scales every pixel.
  bright = T.color_jitter(ex, np.random.default_rng(9), brightness=0.3)["image"].astype(float)
  src = ex["image"].astype(float)
  sel = (src > 40) & (src < 180)
  ratio = bright[sel] / src[sel]
  assert 0.7 - 0.02 <= ratio.mean() <= 1.3 + 0.02 and ratio.std() < 0.02
  # Each op alone changes the image.
  for kwargs in ({"brightness": 0.5}, {"contrast": 0.5}, {"saturation": 0.5}, {"hue": 0.2}):
    out = T.color_jitter(ex, np.random.default_rng(1), **kwargs)["image"]
    assert np.abs(out.astype(int) - ex["image"]).mean() > 1, kwargs
  with pytest.raises(ValueError, match="hue"):
    T.color_jitter(ex, np.random.default_rng(0), hue=(0.0, 0.7))


def test_normalize():
  image = _smooth_image()
  out = T.normalize({"image": image})["image"]
  assert out.dtype == np.float32
  expected = (image / 255.0 - np.array(T.IMAGENET_MEAN)) / np.array(T.IMAGENET_STD)
  np.testing.assert_allclose(out, expected, atol=1e-5)
  with pytest.raises(ValueError, match="0..1 scale"):
    T.normalize({"image": image}, mean=(123.7, 116.3, 103.5), std=(58.4, 57.1, 57.4))
  with pytest.raises(DataError, match="normalized twice"):
    T.normalize({"image": out})


def test_validate_example():
  image = np.zeros((4, 5, 3), np.uint8)
  mask = np.array([[0, 1, 255, 20, 3]] * 4, np.uint8)
  assert T.validate_example({"image": image, "mask": mask}, 21) is not None
  with pytest.raises(DataError, match=r"voc/x\.png.*\(4, 4\).*\(4, 5\)"):
    T.validate_example({"image": image, "mask": mask[:, :4]}, 21, source="voc/x.png")
  bad = mask.copy()
  bad[0, 0], bad[1, 1] = 21, 40
  with pytest.raises(DataError, match=r"src1: .*\[21, 40\]"):
    T.validate_example({"image": image, "mask": bad}, 21, source="src1")
  with pytest.raises(DataError, match="254"):
    T.validate_example({"image": image, "mask": mask}, 21, ignore_index=254)
  with pytest.raises(DataError, match="uint8"):
    T.validate_example({"image": image.astype(np.float32)}, 21)


AUG_SPEC = {
    "scale_range": (0.5, 1.5),
    "crop_size": (32, 40),
    "flip": True,
    "color_jitter": (0.3, 0.3, 0.3, 0.05),
    "normalize": True,
    "ignore_index": 255,
}


def test_build_augment_output_contract_and_pickle():
  aug = T.build_augment(AUG_SPEC)
  assert isinstance(aug, grain.transforms.RandomMap)
  ex = _stripes_example()
  before = _copy(ex)
  out = aug.random_map(ex, np.random.default_rng(0))
  _assert_unchanged(before, ex)
  assert out["image"].dtype == np.float32 and out["image"].shape == (32, 40, 3)
  assert out["mask"].dtype == np.int32 and out["mask"].shape == (32, 40)
  for k in ("instances", "depth", "cam"):
    assert out[k].shape[:2] == (32, 40), k
  np.testing.assert_array_equal(out["labels"], ex["labels"])
  assert out["index"] == 3
  clone = pickle.loads(pickle.dumps(aug))
  again = clone.random_map(ex, np.random.default_rng(0))
  for k in out:
    np.testing.assert_array_equal(out[k], again[k])


def test_augment_keeps_keys_aligned_without_jitter():
  aug = T.build_augment({**AUG_SPEC, "color_jitter": None, "normalize": False})
  for seed in range(5):
    out = aug(_stripes_example(), np.random.default_rng(seed))
    assert out["image"].dtype == np.uint8
    _assert_aligned(out)


def test_build_augment_accepts_configdict_and_rejects_unknown_keys():
  aug = T.build_augment(ml_collections.ConfigDict({"crop_size": (8, 8), "flip": 0.25}))
  assert aug.flip_prob == 0.25 and aug.crop_size == (8, 8)
  with pytest.raises(ValueError, match=r"\['crop', 'scale'\]"):
    T.build_augment({"crop": (8, 8), "scale": 2})
  with pytest.raises(ValueError, match="scale_range"):
    T.build_augment({"scale_range": (1.5, 0.5)})
  with pytest.raises(ValueError, match="0..1 scale"):
    T.build_augment({"mean": (123.0, 117.0, 104.0)})
  with pytest.raises(ValueError, match="hue"):
    T.build_augment({"color_jitter": (0.1, 0.1, 0.1, 0.9)})


def test_augment_deterministic_through_grain():
  examples = [_stripes_example(seed=i) for i in range(4)]
  aug = T.build_augment(AUG_SPEC)

  def run(seed):
    return list(grain.MapDataset.source(examples).seed(seed).random_map(aug))

  first, second, other = run(7), run(7), run(8)
  for a, b in zip(first, second):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  assert any(not np.array_equal(a["image"], c["image"]) for a, c in zip(first, other))


def test_image_fill_mean_is_zero_after_normalize():
  ex = {"image": np.full((4, 4, 3), 200, np.uint8), "mask": np.zeros((4, 4), np.uint8)}
  aug = T.build_augment(
      {"scale_range": None, "crop_size": (8, 8), "flip": False, "image_fill": "mean"}
  )
  out = aug(ex, np.random.default_rng(0))
  padded = out["mask"] == 255
  assert padded.sum() == 64 - 16
  assert np.abs(out["image"][padded]).max() < 0.02  # Mean colour rounded to uint8.


def test_build_eval_transform():
  tf = T.build_eval_transform({"resize": (24, 32), "crop_size": (24, 24)})
  assert isinstance(tf, grain.transforms.Map)
  ex = _stripes_example()
  out = tf(ex)
  assert out["image"].dtype == np.float32 and out["image"].shape == (24, 24, 3)
  assert out["mask"].dtype == np.int32 and out["mask"].shape == (24, 24)
  expected_mask = T.resize(ex, (24, 32))["mask"][:, 4:28]
  np.testing.assert_array_equal(out["mask"], expected_mask)
  np.testing.assert_array_equal(tf.map(ex)["mask"], out["mask"])
  np.testing.assert_array_equal(pickle.loads(pickle.dumps(tf))(ex)["image"], out["image"])
  with pytest.raises(ValueError, match=r"\['scale_range'\]"):
    T.build_eval_transform({"scale_range": (0.5, 1.0)})


def test_random_resize_long_keeps_aspect_and_uses_the_inclusive_range():
  rng = np.random.default_rng(0)
  example = {"image": np.zeros((30, 60, 3), np.uint8), "mask": np.ones((30, 60), np.uint8)}
  longs = set()
  for _ in range(200):
    out = T.random_resize_long(example, rng, (10, 12))
    h, w = out["image"].shape[:2]
    assert out["mask"].shape == (h, w) and h == round(w / 2)
    longs.add(w)
  assert longs == {10, 11, 12}
  aug = T.build_augment({"resize_long": (20, 20), "scale_range": None, "crop_size": (8, 8)})
  assert aug(example, np.random.default_rng(1))["image"].shape == (8, 8, 3)
