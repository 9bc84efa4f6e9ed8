"""SyntheticIndoorScenes: layout, determinism, Kinect-like depth, and geometric consistency."""

from __future__ import annotations

import pickle
import time

import numpy as np
import pytest

from jaxseg.data import transforms as T
from jaxseg.data.synthetic.indoor import (
    CEILING,
    FLOOR,
    INDOOR_CLASSES,
    WALL,
    SyntheticIndoorScenes,
    kinect_noise_std,
)

EXPECTED = {
    "image": (np.uint8, (3,)),
    "mask": (np.uint8, ()),
    "depth": (np.float32, ()),
    "normals_true": (np.float32, (3,)),
    "height_true": (np.float32, ()),
}


def _rays(k, h, w):
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  return np.stack([(cols - k[0, 2]) / k[0, 0], (rows - k[1, 2]) / k[1, 1], np.ones((h, w))], -1)


@pytest.mark.parametrize("size", [(64, 64), (48, 80)])
def test_layout_shapes_and_dtypes(size):
  src = SyntheticIndoorScenes(3, image_size=size, seed=1)
  assert len(src) == 3 and src.num_classes == len(INDOOR_CLASSES) == 5
  s = src[2]
  assert set(s) == set(SyntheticIndoorScenes.KINDS)
  for key, (dtype, tail) in EXPECTED.items():
    assert s[key].dtype == dtype and s[key].shape == size + tail, key
  assert s["intrinsics"].dtype == np.float32 and s["intrinsics"].shape == (3, 3)
  assert s["gravity"].dtype == np.float32 and s["gravity"].shape == (3,)
  assert s["index"] == 2 and s["index"].dtype == np.int64
  for key in ("camera_height", "camera_pitch", "camera_roll"):
    assert s[key].dtype == np.float32 and s[key].shape == ()
  assert s["mask"].max() < 5
  np.testing.assert_allclose(s["intrinsics"][0, 0], 0.8107 * size[1], rtol=1e-3)  # Kinect-like
  np.testing.assert_allclose(s["intrinsics"][:2, 2], [(size[1] - 1) / 2, (size[0] - 1) / 2])
  # The declared kinds resolve (dense keys match the image) and validate as a segmentation sample.
  assert T.resolve_kinds(s, src.KINDS)["normals_true"] == "normals"
  T.validate_example(s, num_classes=src.num_classes)


def test_deterministic_per_seed_and_index_and_picklable():
  src = SyntheticIndoorScenes(4, seed=3)
  again = pickle.loads(pickle.dumps(src))
  for i in range(4):
    a, b = src[i], again[i]
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  np.testing.assert_array_equal(src[1]["depth"], SyntheticIndoorScenes(4, seed=3)[1]["depth"])
  assert not np.array_equal(src[0]["image"], src[1]["image"])
  assert not np.array_equal(src[0]["image"], SyntheticIndoorScenes(4, seed=4)[0]["image"])
  # The noise and holes are part of the sample, drawn from the scene: same geometry without them.
  clean = SyntheticIndoorScenes(4, seed=3, depth_noise=0.0, holes=False)
  np.testing.assert_array_equal(clean[2]["mask"], src[2]["mask"])
  np.testing.assert_array_equal(clean[2]["gravity"], src[2]["gravity"])


def test_camera_pose_varies_and_gravity_matches_it():
  src = SyntheticIndoorScenes(24, seed=0)
  samples = [src[i] for i in range(len(src))]
  pitch = np.array([s["camera_pitch"] for s in samples])
  roll = np.array([s["camera_roll"] for s in samples])
  height = np.array([s["camera_height"] for s in samples])
  assert np.all((pitch >= 0) & (pitch <= np.radians(30)))
  assert np.all(np.abs(roll) <= np.radians(12)) and np.all((height >= 1.0) & (height <= 1.7))
  assert np.std(np.degrees(pitch)) > 4 and np.std(np.degrees(roll)) > 3 and np.std(height) > 0.1
  gravity = np.stack([s["gravity"] for s in samples])
  expected = np.stack(
      [-np.sin(roll) * np.cos(pitch), -np.cos(roll) * np.cos(pitch), -np.sin(pitch)], -1
  )
  np.testing.assert_allclose(gravity, expected, atol=1e-6)
  # Tilted cameras: gravity is far from the camera's -y axis on some scenes.
  tilt = np.degrees(np.arccos(-gravity[:, 1]))
  assert tilt.max() > 15


def test_true_geometry_is_consistent_with_the_depth():
  src = SyntheticIndoorScenes(6, image_size=(48, 64), seed=5, depth_noise=0.0, holes=False)
  for i in range(len(src)):
    s = src[i]
    h, w = s["depth"].shape
    assert np.all(s["depth"] > 0)  # a closed room: every ray hits
    points = s["depth"][..., None] * _rays(s["intrinsics"], h, w)
    # Height above the floor = camera height + p . up.
    np.testing.assert_allclose(
        s["height_true"], s["camera_height"] + points @ s["gravity"], atol=1e-4
    )
    normals = s["normals_true"]
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-5)
    assert np.all(np.sum(normals * points, -1) < 1e-6)  # facing the camera
    floor, ceiling = s["mask"] == FLOOR, s["mask"] == CEILING
    np.testing.assert_allclose(normals[floor], np.broadcast_to(s["gravity"], normals[floor].shape))
    np.testing.assert_allclose(
        normals[ceiling], -np.broadcast_to(s["gravity"], normals[ceiling].shape)
    )
    np.testing.assert_allclose(s["height_true"][floor], 0.0, atol=1e-4)
    assert np.all(np.abs(normals[s["mask"] == WALL] @ s["gravity"]) < 1e-5)  # vertical walls
    # A plane's points satisfy n . p = const: walls, floor are planes in the camera frame.
    offsets = np.sum(normals * points, -1)[floor]
    assert np.ptp(offsets) < 1e-4


def test_kinect_like_holes_and_noise():
  noisy = SyntheticIndoorScenes(8, seed=2)
  clean = SyntheticIndoorScenes(8, seed=2, depth_noise=0.0, holes=False)
  no_holes = SyntheticIndoorScenes(8, seed=2, holes=False)
  residuals = []
  for i in range(8):
    depth, true = noisy[i]["depth"], clean[i]["depth"]
    holes = depth == 0
    assert 0.01 < holes.mean() < 0.6  # dropout blobs, depth edges, grazing and far range
    # The far side of every depth edge is a hole.
    edge = np.zeros_like(holes)
    edge[:, :-1] |= true[:, 1:] < 0.95 * true[:, :-1]
    edge[:, 1:] |= true[:, :-1] < 0.95 * true[:, 1:]
    assert np.all(holes[edge])
    noisy_only = no_holes[i]["depth"]
    assert np.all(noisy_only > 0)
    residuals.append((noisy_only - true) / kinect_noise_std(true))
  residuals = np.concatenate([r.ravel() for r in residuals])
  assert abs(residuals.mean()) < 0.05 and 0.9 < residuals.std() < 1.1  # sigma(z) as documented


def test_classes_present():
  src = SyntheticIndoorScenes(16, seed=9)
  counts = np.stack([np.bincount(src[i]["mask"].ravel(), minlength=5) for i in range(16)])
  assert np.all(counts[:, WALL] > 0)
  assert np.mean(counts[:, FLOOR] > 0) > 0.8 and np.mean(counts[:, 2] > 0) > 0.8  # furniture
  assert counts[:, 3].sum() > 0 and counts[:, CEILING].sum() > 0


def test_transforms_with_declared_kinds():
  src = SyntheticIndoorScenes(1, seed=4)
  s = src[0]
  rng = np.random.default_rng(0)
  flipped = T.random_flip(s, rng, prob=1.0, kinds=src.KINDS)
  np.testing.assert_array_equal(flipped["normals_true"][:, ::-1, 0], -s["normals_true"][..., 0])
  np.testing.assert_array_equal(flipped["gravity"], s["gravity"])  # `other`: left alone
  cropped = T.random_crop(s, rng, (40, 48), kinds=src.KINDS)
  assert cropped["height_true"].shape == (40, 48) and cropped["normals_true"].shape == (40, 48, 3)
  scaled = T.resize(s, (32, 32), kinds=src.KINDS)
  np.testing.assert_allclose(np.linalg.norm(scaled["normals_true"], axis=-1), 1.0, atol=1e-5)


def test_render_is_fast():
  src = SyntheticIndoorScenes(10, seed=0)
  src[0]
  start = time.perf_counter()
  for i in range(10):
    src[i]
  assert (time.perf_counter() - start) / 10 < 0.05  # measured ~9 ms per 64 x 64 sample


def test_argument_checks():
  with pytest.raises(ValueError):
    SyntheticIndoorScenes(-1)
  with pytest.raises(ValueError):
    SyntheticIndoorScenes(2, image_size=(8, 64))
  with pytest.raises(ValueError):
    SyntheticIndoorScenes(2, depth_noise=-1.0)
  with pytest.raises(ValueError):
    SyntheticIndoorScenes(2, pitch_range_deg=(30.0, 10.0))
  src = SyntheticIndoorScenes(2)
  with pytest.raises(IndexError):
    src[2]
  with pytest.raises(TypeError):
    src[0.5]
