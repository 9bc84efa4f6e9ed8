"""Property tests of per-kind transforms: depth + intrinsics, image/mask alignment, ignore, normals, clips.

Depth maps hold distinct values, so the source pixel of every output pixel can be found by value
without trusting the transform's own bookkeeping. Intrinsics are float64 to test at tight
tolerance.
"""

import pickle

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jaxseg.data import transforms as T
from jaxseg.data.errors import DataError

# derandomize: CI runs the same examples every time (a failure reproduces).
SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)
sides = st.integers(2, 32)
seeds = st.integers(0, 2**32 - 1)
IGNORE = 255


def _matrix(intrinsics):
  intrinsics = np.asarray(intrinsics, np.float64)
  if intrinsics.shape == (4,):
    fx, fy, cx, cy = intrinsics
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
  return intrinsics


@st.composite
def intrinsics(draw):
  """float64 [3, 3] K (sometimes with skew) or [4] (fx, fy, cx, cy)."""
  fx, fy = draw(st.floats(5.0, 60.0)), draw(st.floats(5.0, 60.0))
  cx, cy = draw(st.floats(-3.0, 35.0)), draw(st.floats(-3.0, 35.0))
  if draw(st.booleans()):
    return np.array([fx, fy, cx, cy])
  skew = draw(st.sampled_from([0.0, 1.5]))
  return np.array([[fx, skew, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _depth_example(h, w, k, seed):
  """Distinct depths 1 + i / 64 in a random order, ~10% invalid (0)."""
  rng = np.random.default_rng(seed)
  depth = 1.0 + rng.permutation(h * w).reshape(h, w) / 64.0
  depth[rng.random((h, w)) < 0.1] = 0.0
  image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
  return {"image": image, "depth": depth, "intrinsics": k}


def _points(depth, k):
  """[H, W, 3]: pixel (r, c) back-projected to d K^-1 [c, r, 1]."""
  v, u = np.mgrid[0 : depth.shape[0], 0 : depth.shape[1]]
  pixels = np.stack([u, v, np.ones_like(u)], -1).astype(np.float64)
  return (pixels @ np.linalg.inv(_matrix(k)).T) * depth[..., None]


def _sources(src_depth, out_depth):
  """valid [h, w] (depth > 0) and the (rows, cols) of the source pixel of each valid output pixel."""
  lookup = {v: i for i, v in enumerate(src_depth.ravel()) if v > 0}
  valid = out_depth > 0
  flat = np.array([lookup[v] for v in out_depth[valid]], np.int64)
  return valid, np.unravel_index(flat, src_depth.shape)


def _close(a, b):
  np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------
# (a) Depth back-projected with the transformed intrinsics.
# ----------------------------------------------------------------------------
@SETTINGS
@given(sides, sides, sides, sides, intrinsics(), seeds)
def test_crop_and_pad_keep_every_3d_point(h, w, ch, cw, k, seed):
  ex = _depth_example(h, w, k, seed)
  out = T.random_crop(ex, np.random.default_rng(seed), (ch, cw))
  assert np.shape(out["intrinsics"]) == np.shape(k)
  valid, (rows, cols) = _sources(ex["depth"], out["depth"])
  _close(_points(out["depth"], out["intrinsics"])[valid], _points(ex["depth"], k)[rows, cols])
  # Padding is invalid depth (0); the placed window keeps every valid source pixel of it.
  assert (out["depth"] == 0).sum() >= ch * cw - min(h, ch) * min(w, cw)
  assert valid.sum() <= min(h, ch) * min(w, cw)


@SETTINGS
@given(sides, sides, intrinsics(), seeds)
def test_flip_negates_x_of_the_point_cloud(h, w, k, seed):
  ex = _depth_example(h, w, k, seed)
  out = T.random_flip(ex, np.random.default_rng(seed), prob=1.0)
  fx = _matrix(out["intrinsics"])[0, 0]
  assert fx == _matrix(k)[0, 0] > 0
  valid, (rows, cols) = _sources(ex["depth"], out["depth"])
  expected = _points(ex["depth"], k)[rows, cols] * [-1.0, 1.0, 1.0]
  _close(_points(out["depth"], out["intrinsics"])[valid], expected)


@SETTINGS
@given(sides, sides, sides, sides, intrinsics(), seeds)
def test_nearest_resize_puts_source_depth_on_the_output_ray(h, w, oh, ow, k, seed):
  ex = _depth_example(h, w, k, seed)
  out = T.resize(ex, (oh, ow))
  valid, (rows, cols) = _sources(ex["depth"], out["depth"])
  assert set(np.unique(out["depth"])) <= set(np.unique(ex["depth"]))  # No depth is mixed.
  # Output pixel (r', c') centres on the continuous source point (u, v), u = (c' + 0.5) W / W' - 0.5.
  v_out, u_out = np.mgrid[0:oh, 0:ow]
  u = (u_out + 0.5) * w / ow - 0.5
  v = (v_out + 0.5) * h / oh - 0.5
  rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(_matrix(k)).T
  expected = rays[valid] * out["depth"][valid, None]
  _close(_points(out["depth"], out["intrinsics"])[valid], expected)
  # The depth came from the source pixel nearest to that point.
  assert np.all(np.abs(u[valid] - cols) <= 0.5) and np.all(np.abs(v[valid] - rows) <= 0.5)


@SETTINGS
@given(
    sides,
    sides,
    intrinsics(),
    seeds,
    st.sampled_from([0.0, 1.0]),
    st.tuples(st.integers(1, 32), st.integers(1, 32)),
    st.booleans(),
)
def test_augment_keeps_depth_and_intrinsics_consistent(h, w, k, seed, flip, crop, long_side):
  # One resize step (SEAM's long-side resize or a scale): two nearest steps in a row would add
  # their half-pixel errors, each in its own pixel size.
  spec = {
      "scale_range": None if long_side else (0.5, 2.0),
      "flip": flip,
      "crop_size": crop,
      "normalize": False,
      "resize_long": (8, 40) if long_side else None,
  }
  ex = _depth_example(h, w, k, seed)
  out = T.build_augment(spec)(ex, np.random.default_rng(seed))
  valid, (rows, cols) = _sources(ex["depth"], out["depth"])
  points = _points(out["depth"], out["intrinsics"])[valid]
  points *= [-1.0 if flip else 1.0, 1.0, 1.0]  # Back to the unmirrored scene.
  _close(points[:, 2], ex["depth"][rows, cols])
  # Each point projects into the source camera within half a pixel of the pixel it was sampled from.
  projected = points @ _matrix(k).T
  u, v = projected[:, 0] / projected[:, 2], projected[:, 1] / projected[:, 2]
  assert np.all(np.abs(u - cols) <= 0.5 + 1e-9) and np.all(np.abs(v - rows) <= 0.5 + 1e-9)


def test_both_intrinsics_layouts_agree():
  k = np.array([[30.0, 0.0, 11.5], [0.0, 25.0, 7.25], [0.0, 0.0, 1.0]])
  vec = np.array([30.0, 25.0, 11.5, 7.25])
  aug = T.build_augment({"scale_range": (0.5, 2.0), "flip": 1.0, "crop_size": (9, 13)})
  for seed in range(5):
    a = aug(_depth_example(16, 24, k, 0), np.random.default_rng(seed))["intrinsics"]
    b = aug(_depth_example(16, 24, vec, 0), np.random.default_rng(seed))["intrinsics"]
    _close(b, [a[0, 0], a[1, 1], a[0, 2], a[1, 2]])
  with pytest.raises(DataError, match="intrinsics"):
    T.random_flip(
        {"image": np.zeros((4, 4, 3), np.uint8), "intrinsics": np.eye(2)}, np.random.default_rng(0)
    )


# ----------------------------------------------------------------------------
# (b) image/mask alignment and (c) the ignore label.
# ----------------------------------------------------------------------------
PALETTE = np.array(
    [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255]],
    np.uint8,
)  # Classes 0..5; last = ignore.


def _block_example(h, w, block, seed):
  """Mask constant on block x block tiles (some ignore); image colour = PALETTE[class]."""
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 7, (h // block + 1, w // block + 1))
  ids = np.repeat(np.repeat(coarse, block, 0), block, 1)[:h, :w]
  mask = np.where(ids == 6, IGNORE, ids).astype(np.uint8)
  # Where each output pixel was sampled from: 1 + flat source index (0 = padding); kind 'map'.
  src = (1 + np.arange(h * w).reshape(h, w)).astype(np.int32)
  return {"image": PALETTE[ids], "mask": mask, "src": src, "labels": np.ones(3, np.float32)}


def _interior(mask, radius):
  """Pixels whose (2 radius + 1)^2 neighbourhood (clamped to the image) holds one class."""
  padded = np.pad(mask, radius, mode="edge")
  h, w = mask.shape
  same = np.ones((h, w), bool)
  for dy in range(2 * radius + 1):
    for dx in range(2 * radius + 1):
      same &= padded[dy : dy + h, dx : dx + w] == mask
  return same


def _check_alignment(ex, out, ignore=IGNORE):
  mask, src = out["mask"], out["src"]
  placed = src > 0
  source_mask = ex["mask"].ravel()[src[placed] - 1].astype(np.int64)
  # (c) Padding is ignore, and every placed pixel keeps its source label (ignore stays ignore).
  assert np.all(mask[~placed] == ignore)
  np.testing.assert_array_equal(mask[placed], source_mask)
  # (b) The image colour still names the class, wherever the resampling window saw one class
  # (radius 3 source pixels covers PIL's bilinear support at scales >= 0.5).
  inside = np.zeros_like(placed)
  inside[placed] = _interior(ex["mask"], 3).ravel()[src[placed] - 1]
  labelled = inside & (mask != ignore)
  if not labelled.any():
    return
  colours = out["image"][labelled].astype(np.int64)
  distance = np.abs(colours[:, None, :] - PALETTE[None].astype(np.int64)).max(-1)
  assert distance.min(-1).max() <= 2
  np.testing.assert_array_equal(distance.argmin(-1), mask[labelled])


@SETTINGS
@given(
    st.integers(8, 32),
    st.integers(8, 32),
    st.integers(7, 12),
    seeds,
    st.tuples(st.integers(4, 32), st.integers(4, 32)),
    st.floats(0.0, 1.0),
)
def test_augment_keeps_image_and_mask_aligned(h, w, block, seed, crop, flip):
  ex = _block_example(h, w, block, seed)
  aug = T.build_augment(
      {"scale_range": (0.5, 2.0), "flip": flip, "crop_size": crop, "normalize": False}
  )
  out = aug(ex, np.random.default_rng(seed))
  assert out["mask"].dtype == np.int32
  _check_alignment(ex, out)


@SETTINGS
@given(
    st.integers(8, 32),
    st.integers(8, 32),
    st.integers(7, 12),
    seeds,
    st.tuples(st.floats(0.5, 2.0), st.floats(0.5, 2.0)),
    st.sampled_from([250, 255]),
)
def test_eval_transform_keeps_alignment_and_ignore(h, w, block, seed, factors, ignore):
  # Not below half size: `_check_alignment`'s radius covers the bilinear support down to 0.5.
  size = (int(np.ceil(h * factors[0])), int(np.ceil(w * factors[1])))
  ex = _block_example(h, w, block, seed)
  ex["mask"] = np.where(ex["mask"] == IGNORE, ignore, ex["mask"]).astype(np.uint8)
  tf = T.build_eval_transform(
      {
          "resize": size,
          "crop_size": (size[0] + 3, size[1] - 2),
          "normalize": False,
          "ignore_index": ignore,
      }
  )
  _check_alignment(ex, tf(ex), ignore)


@SETTINGS
@given(sides, sides, seeds, st.tuples(sides, sides))
def test_random_masks_never_invent_classes(h, w, seed, crop):
  rng = np.random.default_rng(seed)
  mask = np.where(rng.random((h, w)) < 0.3, IGNORE, rng.integers(0, 21, (h, w))).astype(np.uint8)
  ex = {
      "image": np.zeros((h, w, 3), np.uint8),
      "mask": mask,
      "src": (1 + np.arange(h * w).reshape(h, w)).astype(np.int32),
  }
  aug = T.build_augment({"scale_range": (0.3, 3.0), "crop_size": crop, "normalize": False})
  out = aug(ex, np.random.default_rng(seed))
  placed = out["src"] > 0
  assert np.all(out["mask"][~placed] == IGNORE)
  np.testing.assert_array_equal(out["mask"][placed], mask.ravel()[out["src"][placed] - 1])


# ----------------------------------------------------------------------------
# (d) Normals.
# ----------------------------------------------------------------------------
def _normals(h, w, seed):
  rng = np.random.default_rng(seed)
  n = rng.normal(size=(h, w, 3))
  n /= np.linalg.norm(n, axis=-1, keepdims=True)
  n[rng.random((h, w)) < 0.2] = 0.0
  return n.astype(np.float32)


@SETTINGS
@given(sides, sides, st.integers(1, 32), st.integers(1, 32), seeds)
@example(h=30, w=3, oh=11, ow=1, seed=0)  # an exact centre that float rounding moves (see below)
def test_resized_normals_are_unit_or_zero(h, w, oh, ow, seed):
  normals = _normals(h, w, seed)
  ex = {"image": np.zeros((h, w, 3), np.uint8), "normals": normals}
  out = T.resize(ex, (oh, ow))["normals"]
  assert out.shape == (oh, ow, 3) and out.dtype == np.float32
  zero = np.all(out == 0, axis=-1)
  # Invalid pixels follow nearest sampling, like depth; valid ones are renormalised.
  src_zero = np.all(normals == 0, axis=-1)
  # PIL's nearest rule in PIL's arithmetic, (i + 0.5) * (in / out): the scale is rounded first, so
  # an exact centre such as 5.5 * 30 / 11 = 15 lands on 14.999... and picks 14 (found by hypothesis).
  rows = np.floor((np.arange(oh) + 0.5) * (h / oh)).astype(int)
  cols = np.floor((np.arange(ow) + 0.5) * (w / ow)).astype(int)
  np.testing.assert_array_equal(zero, src_zero[rows][:, cols])
  np.testing.assert_allclose(np.linalg.norm(out[~zero], axis=-1), 1.0, atol=1e-6)


@SETTINGS
@given(sides, sides, seeds, st.floats(-0.05, 0.05), st.floats(-0.05, 0.05))
def test_flip_negates_normal_x_and_keeps_planes_planar(h, w, seed, a, b):
  k = np.array([[6.0, 0.0, w / 3], [0.0, 7.0, h / 2], [0.0, 0.0, 1.0]])
  n = np.array([a, b, 1.0]) / np.linalg.norm([a, b, 1.0])
  rays = _points(np.ones((h, w)), k)
  depth = 5.0 / (rays @ n)  # The plane n . P = 5.
  normals = _normals(h, w, seed)
  ex = {
      "image": np.zeros((h, w, 3), np.uint8),
      "depth": depth,
      "intrinsics": k,
      "normals": normals,
      "plane_normal": np.broadcast_to(n, (h, w, 3)).copy(),
  }
  out = T.random_flip(ex, np.random.default_rng(seed), prob=1.0, kinds={"plane_normal": "normals"})
  np.testing.assert_array_equal(out["normals"][..., 0], -normals[:, ::-1, 0])
  np.testing.assert_array_equal(out["normals"][..., 1:], normals[:, ::-1, 1:])
  points = _points(out["depth"], out["intrinsics"])
  _close(np.sum(points * out["plane_normal"], -1), 5.0)


# ----------------------------------------------------------------------------
# (e) Clips: one draw for every frame.
# ----------------------------------------------------------------------------
@SETTINGS
@given(st.integers(1, 4), sides, sides, seeds, st.tuples(sides, sides), st.booleans())
def test_clip_frames_share_one_draw(t, h, w, seed, crop, jitter):
  rng = np.random.default_rng(seed)
  frames = rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)
  masks = rng.integers(0, 5, (t, h, w)).astype(np.uint8)
  depths = 1.0 + rng.random((t, h, w))
  spec = {
      "scale_range": (0.5, 2.0),
      "crop_size": crop,
      "flip": True,
      "color_jitter": (0.4, 0.4, 0.4, 0.1) if jitter else None,
  }
  aug = T.build_augment(spec)
  clip = aug(
      {"frames": frames, "masks": masks, "depths": depths, "index": 7}, np.random.default_rng(seed)
  )
  assert clip["frames"].shape == (t, *crop, 3) and clip["masks"].dtype == np.int32
  assert clip["index"] == 7
  for i in range(t):  # Frame i alone, with the same draws, gives the same result.
    one = aug(
        {"image": frames[i], "mask": masks[i], "depth": depths[i]}, np.random.default_rng(seed)
    )
    np.testing.assert_array_equal(clip["frames"][i], one["image"])
    np.testing.assert_array_equal(clip["masks"][i], one["mask"])
    np.testing.assert_array_equal(clip["depths"][i], one["depth"])


# ----------------------------------------------------------------------------
# The kind table and declarations.
# ----------------------------------------------------------------------------
def test_kinds_by_name_inference_and_declaration():
  h, w = 6, 8
  ex = {
      "image": np.zeros((h, w, 3), np.uint8),
      "mask": np.zeros((h, w), np.uint8),
      "depth": np.ones((h, w)),
      "normals": np.zeros((h, w, 3)),
      "intrinsics": np.eye(3),
      "cam": np.zeros((h, w, 4)),
      "instances": np.zeros((2, h, w), np.int32),
      "labels": np.ones(3),
      "id": "x",
      "index": 1,
  }
  assert T.resolve_kinds(ex) == {
      "image": "image",
      "mask": "mask",
      "depth": "depth",
      "normals": "normals",
      "intrinsics": "intrinsics",
      "cam": "map",
      "instances": "clip_map",
      "labels": "other",
      "id": "other",
      "index": "other",
  }
  # An undeclared array of another size is an error, not a silent skip.
  half = {**ex, "aux": np.ones((h // 2, w // 2))}
  with pytest.raises(DataError, match=r"'aux'.*kinds=\{'aux': 'other'\}"):
    T.random_crop(half, np.random.default_rng(0), (4, 4))
  out = T.random_crop(half, np.random.default_rng(0), (4, 4), kinds={"aux": "other"})
  assert out["aux"] is half["aux"]
  # A declared kind must fit its layout; an unknown kind is a ValueError.
  with pytest.raises(DataError, match="'aux' of kind 'depth'"):
    T.resolve_kinds(half, {"aux": "depth"})
  with pytest.raises(ValueError, match="unknown key kinds"):
    T.resolve_kinds(ex, {"cam": "heatmap"})
  with pytest.raises(ValueError, match="unknown key kinds"):
    T.build_augment({"kinds": {"cam": "heatmap"}})


def test_declared_depth_kind_in_the_spec_resamples_nearest_and_pickles():
  rng = np.random.default_rng(0)
  ex = {
      "image": np.zeros((10, 12, 3), np.uint8),
      "disparity": rng.random((10, 12)),
      "intrinsics": np.array([10.0, 10.0, 5.5, 4.5]),
  }
  aug = T.build_augment({"kinds": {"disparity": "depth"}, "scale_range": (1.7, 1.7), "flip": False})
  out = pickle.loads(pickle.dumps(aug))(ex, np.random.default_rng(0))
  assert out["disparity"].shape == (17, 20)
  assert set(np.unique(out["disparity"])) <= set(np.unique(ex["disparity"]))
  np.testing.assert_allclose(
      out["intrinsics"], [10 * 20 / 12, 10 * 17 / 10, 6 * 20 / 12 - 0.5, 5 * 17 / 10 - 0.5]
  )
  plain = T.build_augment({"scale_range": (1.7, 1.7), "flip": False})(ex, np.random.default_rng(0))[
      "disparity"
  ]  # Undeclared: a float map, bilinear.
  assert not set(np.unique(plain)) <= set(np.unique(ex["disparity"]))
