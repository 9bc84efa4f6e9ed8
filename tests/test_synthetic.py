"""Tests for the embedded synthetic dataset (jaxseg/data/synthetic/sources.py) and the VOC palette."""

import concurrent.futures
import dataclasses
import hashlib
import multiprocessing
import pickle

import numpy as np
import pytest

from jaxseg.data import palette as palette_lib
from jaxseg.data.synthetic import sources as synthetic


def _assert_samples_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert np.asarray(a[key]).dtype == np.asarray(b[key]).dtype, key


def _coverage(scene, obj, height, width, time=0.0):
  """bool [H, W]: where `obj` would be visible if it were alone in the scene."""
  alone = dataclasses.replace(scene, objects=(obj,))
  return synthetic.render_scene(alone, height=height, width=width, time=time)["mask"] > 0


@pytest.fixture(scope="module")
def scenes():
  return synthetic.SyntheticScenes(200, num_classes=6, image_size=(64, 64), seed=3)


@pytest.fixture(scope="module")
def samples(scenes):
  return [scenes[i] for i in range(len(scenes))]


# ---------------------------------------------------------------------------------------------- determinism


def test_same_index_gives_identical_sample_in_any_order(scenes):
  forward = [scenes[i] for i in range(6)]
  backward = [scenes[i] for i in reversed(range(6))][::-1]
  rebuilt = synthetic.SyntheticScenes(200, num_classes=6, image_size=(64, 64), seed=3)
  for i in range(6):
    _assert_samples_equal(forward[i], backward[i])
    _assert_samples_equal(forward[i], rebuilt[i])
  # A longer dataset with the same arguments shares its prefix: sample i depends on (seed, i, args) only.
  _assert_samples_equal(forward[2], synthetic.SyntheticScenes(1000, num_classes=6, seed=3)[2])


def _render_in_worker(args):
  dataset, index = args
  return dataset[index]


def test_identical_in_another_process_after_pickling():
  dataset = synthetic.SyntheticScenes(
      10, num_classes=5, image_size=(32, 48), seed=7, with_depth=True, style="shifted"
  )
  restored = pickle.loads(pickle.dumps(dataset))
  assert len(restored) == len(dataset) and restored.config == dataset.config
  _assert_samples_equal(restored[4], dataset[4])
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
    remote = pool.submit(_render_in_worker, (dataset, 4)).result(timeout=60)
  _assert_samples_equal(remote, dataset[4])

  videos = synthetic.SyntheticVideos(3, num_frames=3, image_size=32, seed=2)
  _assert_samples_equal(pickle.loads(pickle.dumps(videos))[1], videos[1])


def test_different_indices_and_seeds_differ(scenes):
  images = [scenes[i]["image"] for i in range(20)]
  for i in range(len(images)):
    for j in range(i):
      assert not np.array_equal(images[i], images[j]), (i, j)
  other_seed = synthetic.SyntheticScenes(200, num_classes=6, image_size=(64, 64), seed=4)
  assert not np.array_equal(other_seed[0]["image"], scenes[0]["image"])


# ---------------------------------------------------------------------------------------------- layout


@pytest.mark.parametrize("image_size", [(64, 64), (48, 80)])
def test_sample_layout(image_size):
  height, width = image_size
  dataset = synthetic.SyntheticScenes(4, num_classes=6, image_size=image_size)
  sample = dataset[3]
  assert set(sample) == {"image", "mask", "instances", "labels", "index"}
  assert sample["image"].shape == (height, width, 3) and sample["image"].dtype == np.uint8
  assert sample["mask"].shape == (height, width) and sample["mask"].dtype == np.uint8
  assert sample["instances"].shape == (height, width) and sample["instances"].dtype == np.int32
  assert sample["labels"].shape == (6,) and sample["labels"].dtype == np.float32
  assert (
      sample["index"].dtype == np.int64 and np.ndim(sample["index"]) == 0 and sample["index"] == 3
  )
  assert sample["mask"].max() <= 6 and sample["image"].std() > 5

  with_depth = synthetic.SyntheticScenes(4, num_classes=6, image_size=image_size, with_depth=True)[
      3
  ]
  assert with_depth["depth"].shape == (height, width) and with_depth["depth"].dtype == np.float32
  assert with_depth["intrinsics"].shape == (3, 3) and with_depth["intrinsics"].dtype == np.float32
  assert np.all(np.isfinite(with_depth["depth"])) and with_depth["depth"].min() > 0
  # Depth output must not change anything else.
  for key in sample:
    np.testing.assert_array_equal(with_depth[key], sample[key], err_msg=key)


def test_labels_and_instances_agree_with_mask(scenes, samples):
  min_pixels = scenes.config.min_visible_pixels
  assert min_pixels == 16  # 0.4% of 64 x 64
  for index, sample in enumerate(samples[:60]):
    mask, instances = sample["mask"], sample["instances"]
    counts = np.bincount(mask.ravel(), minlength=7)
    np.testing.assert_array_equal(sample["labels"], (counts[1:] >= min_pixels).astype(np.float32))
    assert not np.any(mask == 255)
    np.testing.assert_array_equal(instances > 0, mask > 0)
    objects = scenes.scene(index).objects
    for instance_id in np.unique(instances[instances > 0]):
      classes = np.unique(mask[instances == instance_id])
      assert classes.tolist() == [objects[instance_id - 1].class_id], (index, instance_id)
  assert np.mean([s["labels"].any() for s in samples]) > 0.9


def test_image_labels_threshold_is_inclusive():
  mask = np.zeros((8, 8), np.uint8)
  mask[0, :5] = 1  # 5 pixels: labelled at min_visible_pixels=5
  mask[1, :4] = 3  # 4 pixels: not labelled
  np.testing.assert_array_equal(synthetic.image_labels(mask, 4, 5), [1.0, 0.0, 0.0, 0.0])
  np.testing.assert_array_equal(synthetic.image_labels(mask, 4, 4), [1.0, 0.0, 1.0, 0.0])


def test_every_class_appears_with_balanced_frequency_and_random_cooccurrence(samples):
  labels = np.stack([s["labels"] for s in samples])  # [200, 6]
  frequency = labels.mean(axis=0)
  assert np.all(frequency > 0.6 * frequency.mean()) and np.all(
      frequency < 1.4 * frequency.mean()
  ), frequency
  # No class implies another: each ordered pair has images with the first class and without the second.
  for a in range(6):
    for b in range(6):
      if a != b:
        assert np.any((labels[:, a] == 1) & (labels[:, b] == 0)), (a, b)
  # Many classes with few samples: all 20 still show up.
  many = synthetic.SyntheticScenes(200, num_classes=20, image_size=32, seed=5)
  labels20 = np.stack([many[i]["labels"] for i in range(200)])
  assert np.all(labels20.sum(axis=0) >= 5), labels20.sum(axis=0)


def test_occlusion_happens(scenes):
  occluded = total = 0
  for index in range(40):
    scene, instances = scenes.scene(index), scenes[index]["instances"]
    for i, obj in enumerate(scene.objects):
      visible = np.sum(instances == i + 1)
      full = np.sum(_coverage(scene, obj, 64, 64))
      assert visible <= full
      occluded += visible < full
      total += 1
  assert 0.1 * total < occluded < 0.9 * total, (occluded, total)


# ---------------------------------------------------------------------------------------------- style


@pytest.mark.parametrize("style", ["shifted", "foggy", synthetic.Style(hue_rotation=90.0)])
def test_style_changes_appearance_not_geometry(style):
  default = synthetic.SyntheticScenes(8, image_size=48, with_depth=True)
  styled = synthetic.SyntheticScenes(8, image_size=48, with_depth=True, style=style)
  differences = []
  for i in range(8):
    a, b = default[i], styled[i]
    for key in ("mask", "instances", "labels", "depth", "intrinsics", "index"):
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    differences.append(np.abs(a["image"].astype(np.int32) - b["image"]).mean())
  assert min(differences) > 8.0, differences


# ---------------------------------------------------------------------------------------------- depth


def test_depth_is_consistent_with_occlusion_and_the_floor():
  dataset = synthetic.SyntheticScenes(
      30, image_size=(48, 64), with_depth=True, max_objects=5, seed=1
  )
  checked_overlaps = 0
  for index in range(len(dataset)):
    sample, scene = dataset[index], dataset.scene(index)
    depth, instances = sample["depth"], sample["instances"]
    poses = [synthetic.object_pose(o, scene.camera, height=48, width=64) for o in scene.objects]
    covers = [_coverage(scene, o, 48, 64) for o in scene.objects]
    for i, pose in enumerate(poses):
      np.testing.assert_allclose(depth[instances == i + 1], pose.depth, rtol=1e-6)
    # Wherever objects overlap, the visible one is the nearest of those covering the pixel.
    if covers:
      covers = np.stack(covers)
      overlap = covers.sum(axis=0) >= 2
      depths = np.where(covers, np.array([p.depth for p in poses])[:, None, None], np.inf)
      np.testing.assert_array_equal(instances[overlap], np.argmin(depths, axis=0)[overlap] + 1)
      checked_overlaps += overlap.any()
    # Objects stand on the floor, so they are never behind the background at their own pixels.
    background_only = synthetic.render_scene(dataclasses.replace(scene, objects=()))["depth"]
    assert np.all(depth <= background_only + 1e-5)
    # Background floor pixels back-project (with the intrinsics) onto a plane camera.height below the camera.
    rows = np.arange(40, 48)
    v, u = np.meshgrid(rows, np.arange(64), indexing="ij")
    floor = instances[rows] == 0
    rays = np.linalg.solve(
        sample["intrinsics"].astype(np.float64),
        np.stack([u[floor], v[floor], np.ones(floor.sum())]),
    )
    points = rays * depth[rows][floor]
    centred = points - points.mean(axis=1, keepdims=True)
    normal = np.linalg.svd(centred)[0][:, -1]
    np.testing.assert_allclose(np.abs(centred.T @ normal).max(), 0.0, atol=1e-3)
    np.testing.assert_allclose(abs(points.mean(axis=1) @ normal), scene.camera.height, rtol=1e-3)
  assert checked_overlaps > 5


# ---------------------------------------------------------------------------------------------- video


def test_video_objects_move_and_occlusions_change():
  videos = synthetic.SyntheticVideos(
      12,
      num_frames=6,
      frame_interval=2.0,
      image_size=48,
      with_depth=True,
      min_objects=3,
      max_objects=4,
      seed=2,
  )
  images = synthetic.SyntheticScenes(12, image_size=48, min_objects=3, max_objects=4, seed=2)
  occlusion_changes = 0
  for index in range(len(videos)):
    clip = videos[index]
    assert clip["frames"].shape == (6, 48, 48, 3) and clip["frames"].dtype == np.uint8
    assert clip["masks"].shape == (6, 48, 48) and clip["masks"].dtype == np.uint8
    assert clip["instances"].shape == (6, 48, 48) and clip["instances"].dtype == np.int32
    assert clip["depths"].shape == (6, 48, 48) and clip["frame_labels"].shape == (6, 6)
    np.testing.assert_array_equal(clip["times"], np.arange(6) * 2.0)
    np.testing.assert_array_equal(clip["labels"], clip["frame_labels"].max(axis=0))
    # Frame 0 is the still image with the same arguments.
    np.testing.assert_array_equal(clip["frames"][0], images[index]["image"])
    np.testing.assert_array_equal(clip["masks"][0], images[index]["mask"])
    # Things move: masks change, and each instance id keeps its class in every frame.
    assert not np.array_equal(clip["masks"][0], clip["masks"][-1])
    scene = videos.scene(index)
    for t in range(6):
      for instance_id in np.unique(clip["instances"][t][clip["instances"][t] > 0]):
        classes = np.unique(clip["masks"][t][clip["instances"][t] == instance_id])
        assert classes.tolist() == [scene.objects[instance_id - 1].class_id]
    # Occlusion changes over time: some object's visible fraction varies across frames.
    for i, obj in enumerate(scene.objects):
      fractions = []
      for t, time_value in enumerate(clip["times"]):
        full = _coverage(scene, obj, 48, 48, time=float(time_value)).sum()
        fractions.append(np.sum(clip["instances"][t] == i + 1) / max(full, 1))
      occlusion_changes += max(fractions) - min(fractions) > 0.2
  assert occlusion_changes >= 2


# ---------------------------------------------------------------------------------------------- video dynamics


def _digest(samples, keys):
  """A short hash of the arrays `keys` of every sample (floats rounded to 1e-3, so only real changes count)."""
  h = hashlib.sha256()
  for sample in samples:
    for key in keys:
      a = np.asarray(sample[key])
      if a.dtype.kind == "f":
        a = np.round(a.astype(np.float64), 3)
      h.update(key.encode())
      h.update(str(a.shape).encode())
      h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()[:16]


_STILL = ("image", "mask", "instances", "labels")


@pytest.mark.parametrize(
    "name,make,keys,expected",
    [
        (
            "default",
            lambda: synthetic.SyntheticScenes(6, num_classes=6, image_size=(64, 64), seed=3),
            _STILL,
            "9e0e586c2f12d3dc",
        ),
        (
            "shifted_depth",
            lambda: synthetic.SyntheticScenes(
                4,
                num_classes=5,
                image_size=(32, 48),
                seed=7,
                with_depth=True,
                style="shifted",
                object_scale=1.6,
            ),
            _STILL + ("depth", "intrinsics"),
            "fbedc541eb2d5f40",
        ),
        (
            "foggy",
            lambda: synthetic.SyntheticScenes(
                3,
                num_classes=20,
                image_size=40,
                seed=11,
                style="foggy",
                min_objects=2,
                max_objects=6,
            ),
            _STILL,
            "def82116eda791fc",
        ),
        (
            "videos",
            lambda: synthetic.SyntheticVideos(
                3,
                num_frames=4,
                frame_interval=1.5,
                image_size=48,
                seed=2,
                min_objects=3,
                max_objects=4,
            ),
            ("frames", "masks", "instances", "frame_labels"),
            "eb62c40289413151",
        ),
        (
            "clips",
            lambda: synthetic.SyntheticClips(
                3, num_clips=4, clip_length=2, num_frames=12, image_size=40, seed=5
            ),
            ("clip",),
            "fc603fce5f304067",
        ),
    ],
)
def test_outputs_are_those_from_before_the_video_dynamics(name, make, keys, expected):
  """Still images (SEAM, UDA, supervised demos) and dynamics-free videos are bit for bit what the code
  rendered before the video dynamics existed (hashes recorded from that code)."""
  dataset = make()
  assert _digest([dataset[i] for i in range(len(dataset))], keys) == expected, name


_DYNAMICS = dict(
    background_speed=0.03, scale_amplitude=0.25, illumination_amplitude=0.2, colour_drift=0.1
)


def test_video_dynamics_start_from_the_still_image_and_change_later_frames():
  kwargs = dict(num_frames=8, image_size=48, seed=4, min_objects=2, max_objects=3)
  plain = synthetic.SyntheticVideos(6, **kwargs)
  moving = synthetic.SyntheticVideos(6, **kwargs, **_DYNAMICS)
  images = synthetic.SyntheticScenes(6, image_size=48, seed=4, min_objects=2, max_objects=3)
  for index in range(6):
    a, b = plain[index], moving[index]
    assert plain.scene(index) == moving.scene(index)  # the dynamics draw from their own generator
    np.testing.assert_array_equal(b["frames"][0], images[index]["image"])
    np.testing.assert_array_equal(b["masks"][0], images[index]["mask"])
    np.testing.assert_array_equal(b["instances"][0], images[index]["instances"])
    assert not np.array_equal(a["frames"][-1], b["frames"][-1])
    assert not np.array_equal(a["instances"][-1], b["instances"][-1])  # objects scale
    # The object ids keep their classes.
    scene = moving.scene(index)
    for t in range(8):
      for instance_id in np.unique(b["instances"][t][b["instances"][t] > 0]):
        assert np.all(
            b["masks"][t][b["instances"][t] == instance_id]
            == scene.objects[instance_id - 1].class_id
        )
  # Clips are cut from the same videos.
  clips = synthetic.SyntheticClips(
      6, num_clips=12, clip_length=3, frame_gaps=(2,), **kwargs, **_DYNAMICS
  )
  for item in (0, 7):
    frames = clips.frame_indices(item)
    np.testing.assert_array_equal(clips[item]["clip"], moving[item % 6]["frames"][frames])


def test_clip_frames_are_rendered_once_within_the_cache_budget(monkeypatch):
  kwargs = dict(num_frames=8, image_size=32, seed=2, noise_std=0.05, **_DYNAMICS)
  clips = synthetic.SyntheticClips(2, num_clips=40, frame_gaps=(1, 3), **kwargs)
  renders = []
  real_render = synthetic.render_scene
  monkeypatch.setattr(
      synthetic, "render_scene", lambda *a, **k: renders.append(k["time"]) or real_render(*a, **k)
  )
  first = [clips[i]["clip"].copy() for i in range(40)]
  assert len(renders) == 16  # 2 videos x 8 frames, each rendered once
  for i in range(40):  # a second epoch renders nothing
    np.testing.assert_array_equal(clips[i]["clip"], first[i])
  assert len(renders) == 16
  fresh = synthetic.SyntheticVideos(2, **kwargs)
  for i in (0, 13, 39):  # kept frames are exact: the videos' own frames
    np.testing.assert_array_equal(first[i], fresh[i % 2]["frames"][clips.frame_indices(i)])
  # A pickled source (grain's worker processes) starts without the parent's frames.
  assert "_frames" not in pickle.loads(pickle.dumps(clips)).__dict__
  # Past the byte budget, frames are rendered again each time rather than kept.
  monkeypatch.setattr(synthetic, "FRAME_CACHE_BYTES", 32 * 32 * 3 * 5)
  small = synthetic.SyntheticClips(2, num_clips=40, frame_gaps=(1, 3), **kwargs)
  renders.clear()
  for i in range(40):
    np.testing.assert_array_equal(small[i]["clip"], first[i])
  assert len(small._frames) == 5 and len(renders) > 16


def _render(scene, dynamics, time, noise=0.0):
  style = synthetic.Style(noise_std=noise)
  return synthetic.render_scene(scene, time=time, style=style, dynamics=dynamics)


def _dynamics(**changes):
  still = synthetic.Dynamics(
      background_velocity=(0.0, 0.0),
      background_waves=(),
      object_scales=(),
      illumination=(0.0, 1.0, 0.0),
      colour=((0.0, 1.0, 0.0),) * 3,
      noise_std=None,
  )
  return dataclasses.replace(still, **changes)


def test_each_dynamic_does_what_it_says():
  scene = synthetic.SyntheticScenes(1, image_size=64, seed=1, min_objects=1, max_objects=1).scene(0)
  empty = dataclasses.replace(scene, objects=())
  # Pan: at time 2 the background texture has slid 2 x 3/64 of the width = 6 pixels to the left.
  pan = _dynamics(
      background_velocity=(0.0, 3.0 / 64.0),
      background_waves=((5.0, 0.3, 0.2, 0.1, (1.0, -1.0, 0.5)),),
  )
  start, later = _render(empty, pan, 0.0)["image"], _render(empty, pan, 2.0)["image"]
  assert np.abs(start[:, 6:].astype(int) - later[:, :-6]).max() <= 1
  assert np.abs(start.astype(int) - later).mean() > 1.0
  assert (
      _render(empty, pan, 0.0)["image"].std(axis=(0, 1))
      > _render(empty, None, 0.0)["image"].std(axis=(0, 1))
  ).all()
  # Scale: the object's area follows the radius scale squared; its foot stays on the floor.
  grow = _dynamics(object_scales=((0.3, 0.5, 0.0),))
  scale = grow.object_scale(0, 2.0)
  area = lambda d, t: (_render(scene, d, t)["mask"] > 0).sum()
  np.testing.assert_allclose(area(grow, 2.0) / area(None, 2.0), scale**2, rtol=0.15)
  assert grow.object_scale(0, 0.0) == 1.0
  # Illumination and colour drift: a gain on the image, geometry untouched.
  light = _dynamics(
      illumination=(0.2, 0.5, 0.0), colour=((0.1, 0.4, 0.0), (0.0, 1.0, 0.0), (0.0, 1.0, 0.0))
  )
  gain = light.gain(2.0)
  assert gain[0] > gain[1] == gain[2] > 1.0
  np.testing.assert_array_equal(light.gain(0.0), np.ones(3, np.float32))
  lit, plain = _render(scene, light, 2.0), _render(scene, None, 2.0)
  np.testing.assert_array_equal(lit["mask"], plain["mask"])
  ratio = lit["image"].astype(float).mean((0, 1)) / plain["image"].astype(float).mean((0, 1))
  np.testing.assert_allclose(ratio, gain, rtol=0.05)
  # Noise: the style's by default, or the dynamics' own.
  noisy = _render(scene, _dynamics(noise_std=0.06), 1.0)["image"].astype(float)
  clean = _render(scene, None, 1.0)["image"].astype(float)
  assert 0.04 < (noisy - clean).std() / 255.0 < 0.08


def test_colour_is_not_enough_terms_do_what_they_say():
  """Camouflage puts the objects' colours in the background, flicker jumps the gain per frame (never at
  time 0), shadows darken where they pass, deformation stretches an object without changing its area.
  """
  scene = synthetic.SyntheticScenes(1, image_size=64, seed=1, min_objects=1, max_objects=1).scene(0)
  rng = np.random.default_rng(0)
  options = synthetic.VideoDynamics(camouflage=1.0, flicker=0.2, shadows=0.8, deformation=0.3)
  drawn = synthetic.sample_dynamics(rng, scene, options)
  # Camouflage 1: the object's base and pattern colours are two palette colours; the background shows
  # every palette colour (the blotches), so no colour of the object is its own.
  base, pattern = drawn.object_colours(0, scene.objects[0])
  palette = np.asarray(drawn.palette)
  nearest = lambda c: np.abs(palette - np.asarray(c)).max(axis=1).argmin()
  assert [nearest(base), nearest(pattern)] == list(drawn.colour_slots[0])
  np.testing.assert_allclose([base, pattern], palette[list(drawn.colour_slots[0])], atol=1e-12)
  assert drawn.colour_slots[0][0] != drawn.colour_slots[0][1]
  camo = _dynamics(
      palette=drawn.palette,
      camouflage=1.0,
      colour_slots=drawn.colour_slots,
      blotch_waves=drawn.blotch_waves,
  )
  empty = dataclasses.replace(scene, objects=())
  background = _render(empty, camo, 0.0)["image"].reshape(-1, 3).astype(float)
  for colour in drawn.palette:
    # Each palette colour (under the background's +-25 % shading) covers part of the background.
    direction = np.float64(colour) / np.linalg.norm(colour)
    cosine = background @ direction / np.maximum(np.linalg.norm(background, axis=1), 1e-6)
    assert (cosine > 0.999).mean() > 0.02, colour
  plain_background = _render(empty, None, 0.0)["image"]
  assert np.abs(_render(empty, camo, 0.0)["image"].astype(int) - plain_background).mean() > 5
  # Flicker: a per-frame gain, identity at time 0, different at every other time, repeatable.
  flicker = _dynamics(flicker=0.2, flicker_seed=drawn.flicker_seed)
  np.testing.assert_array_equal(flicker.gain(0.0), np.ones(3, np.float32))
  gains = [flicker.gain(float(t)) for t in range(1, 6)]
  assert len({tuple(g) for g in gains}) == 5 and max(np.abs(np.log(g)).max() for g in gains) > 0.05
  np.testing.assert_array_equal(flicker.gain(3.0), gains[2])
  lit, plain = _render(scene, flicker, 2.0), _render(scene, None, 2.0)
  np.testing.assert_array_equal(lit["mask"], plain["mask"])
  # Shadows: darker where a shadow is, masks untouched, and they move.
  shade = _dynamics(shadows=((0.5, 0.5, 0.0, 0.02, 0.3, 0.8),))
  dark = _render(empty, shade, 0.0)["image"].astype(float)
  light = _render(empty, None, 0.0)["image"].astype(float)
  np.testing.assert_allclose(dark[32, 32] / np.maximum(light[32, 32], 1.0), 0.2, atol=0.05)
  np.testing.assert_allclose(dark[2, 2], light[2, 2], atol=1.0)
  assert not np.array_equal(shade.shadow_map(64, 64, 0.0), shade.shadow_map(64, 64, 5.0))
  # Deformation: u x s and v / s keep the area; the silhouette changes.
  squash = _dynamics(object_deformations=((0.3, 0.5, 0.0),))
  assert squash.object_stretch(0, 0.0) == 1.0 and squash.object_stretch(0, 2.0) > 1.2
  area = lambda d, t: (_render(scene, d, t)["mask"] > 0).sum()
  np.testing.assert_allclose(area(squash, 2.0) / area(None, 2.0), 1.0, rtol=0.1)
  assert not np.array_equal(_render(scene, squash, 2.0)["mask"], _render(scene, None, 2.0)["mask"])


def test_bad_dynamics_arguments_raise():
  for kwargs, message in [
      (dict(background_speed=-0.1), "background_speed"),
      (dict(scale_amplitude=2.0), "scale_amplitude"),
      (dict(colour_drift=True), "colour_drift"),
      (dict(noise_std=1.0), "noise_std"),
      (dict(camouflage=1.5), "camouflage"),
      (dict(flicker=-0.1), "flicker"),
  ]:
    with pytest.raises(ValueError, match=message):
      synthetic.SyntheticVideos(2, **kwargs)
    with pytest.raises(ValueError, match=message):
      synthetic.SyntheticClips(2, num_clips=2, **kwargs)


# ---------------------------------------------------------------------------------------------- learnability


def _object_features(dataset, count):
  """Per visible instance (>= 30 pixels): mean and std of RGB and mean |gradient| inside the object."""
  features, classes = [], []
  for index in range(count):
    sample = dataset[index]
    image = sample["image"].astype(np.float32) / 255.0
    grad_y = np.abs(np.diff(image, axis=0)).sum(-1)
    grad_x = np.abs(np.diff(image, axis=1)).sum(-1)
    for instance_id in np.unique(sample["instances"])[1:]:
      inside = sample["instances"] == instance_id
      if inside.sum() < 30:
        continue
      pixels = image[inside]
      inner_y, inner_x = inside[1:] & inside[:-1], inside[:, 1:] & inside[:, :-1]
      texture = [
          grad_y[inner_y].mean() if inner_y.any() else 0.0,
          grad_x[inner_x].mean() if inner_x.any() else 0.0,
      ]
      features.append(np.concatenate([pixels.mean(0), pixels.std(0), texture]))
      classes.append(sample["mask"][inside][0])
  return np.asarray(features), np.asarray(classes)


@pytest.mark.parametrize(
    "num_classes,style,min_accuracy", [(6, "default", 0.8), (20, "shifted", 0.6)]
)
def test_classes_are_told_apart_by_object_pixel_statistics(num_classes, style, min_accuracy):
  """A nearest-centroid classifier on simple object-pixel statistics beats chance (1/K) by far."""
  train_x, train_y = _object_features(
      synthetic.SyntheticScenes(300, num_classes=num_classes, style=style, seed=10), 250
  )
  test_x, test_y = _object_features(
      synthetic.SyntheticScenes(80, num_classes=num_classes, style=style, seed=11), 80
  )
  mean, std = train_x.mean(0), train_x.std(0) + 1e-6
  train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
  centroids = np.stack([train_x[train_y == c].mean(0) for c in range(1, num_classes + 1)])
  predicted = np.argmin(((test_x[:, None] - centroids[None]) ** 2).sum(-1), axis=1) + 1
  accuracy = np.mean(predicted == test_y)
  assert len(test_y) > 100 and accuracy > min_accuracy, accuracy


# ---------------------------------------------------------------------------------------------- rendering


def test_scene_renders_consistently_at_another_resolution(scenes):
  scene = scenes.scene(8)
  small = synthetic.render_scene(scene)["mask"]
  large = synthetic.render_scene(scene, height=128, width=128)["mask"]
  downsampled = large[::2, ::2]  # samples near the 64 x 64 pixel centres
  foreground = (small > 0) | (downsampled > 0)
  assert foreground.any() and np.mean(small[foreground] == downsampled[foreground]) > 0.85


def test_works_as_a_grain_source():
  import grain

  dataset = synthetic.SyntheticScenes(10, image_size=32)
  batch = grain.MapDataset.source(dataset).batch(4)[1]
  assert batch["image"].shape == (4, 32, 32, 3) and batch["labels"].shape == (4, 6)
  np.testing.assert_array_equal(batch["index"], [4, 5, 6, 7])
  np.testing.assert_array_equal(batch["mask"][2], dataset[6]["mask"])


# ---------------------------------------------------------------------------------------------- errors


def test_index_errors_name_the_index_and_length():
  dataset = synthetic.SyntheticScenes(5)
  for bad in (5, -1, 100):
    with pytest.raises(IndexError, match=rf"index {bad} .*length 5"):
      dataset[bad]
  with pytest.raises(TypeError, match="integer"):
    dataset[1.0]
  with pytest.raises(IndexError, match="length 2"):
    synthetic.SyntheticVideos(2, num_frames=2)[2]
  assert dataset[np.int64(4)]["index"] == 4


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(num_classes=0), "num_classes"),
        (dict(num_classes=synthetic.MAX_CLASSES + 1), "num_classes"),
        (dict(num_classes=2.5), "num_classes"),
        (dict(image_size=8), "height"),
        (dict(image_size=(64, 10)), "width"),
        (dict(image_size=(64,)), "image_size"),
        (dict(seed=-1), "seed"),
        (dict(min_objects=3, max_objects=2), "max_objects"),
        (dict(min_objects=-1), "min_objects"),
        (dict(max_objects=0, min_objects=0), "max_objects"),
        (dict(style="nope"), "style"),
        (dict(style=synthetic.Style(background_texture="stripes")), "background_texture"),
        (dict(min_visible_pixels=0), "min_visible_pixels"),
        (dict(with_depth="yes"), "with_depth"),
    ],
)
def test_bad_constructor_arguments_raise(kwargs, message):
  with pytest.raises(ValueError, match=message):
    synthetic.SyntheticScenes(4, **kwargs)


def test_bad_video_arguments_raise():
  with pytest.raises(ValueError, match="num_frames"):
    synthetic.SyntheticVideos(2, num_frames=0)
  with pytest.raises(ValueError, match="frame_interval"):
    synthetic.SyntheticVideos(2, frame_interval=0.0)
  with pytest.raises(ValueError, match="num_videos"):
    synthetic.SyntheticVideos(-1)


# ---------------------------------------------------------------------------------------------- names, palette


def test_class_names():
  assert synthetic.class_names(6) == [
      "background",
      "disc",
      "square",
      "triangle",
      "ring",
      "cross",
      "star",
  ]
  names = synthetic.class_names(synthetic.MAX_CLASSES)
  assert len(names) == synthetic.MAX_CLASSES + 1 and len(set(names)) == len(names)
  looks = {
      (a.shape, a.texture)
      for a in (
          synthetic.class_appearance(c, synthetic.MAX_CLASSES)
          for c in range(1, synthetic.MAX_CLASSES + 1)
      )
  }
  assert len(looks) == synthetic.MAX_CLASSES
  assert synthetic.SyntheticScenes(3, num_classes=4).class_names == synthetic.class_names(4)
  with pytest.raises(ValueError, match="num_classes"):
    synthetic.class_names(0)


def test_palette():
  colours = palette_lib.palette()
  assert colours.shape == (256, 3) and colours.dtype == np.uint8
  assert colours[0].tolist() == [0, 0, 0]
  assert colours[1].tolist() == [128, 0, 0] and colours[2].tolist() == [0, 128, 0]
  assert colours[15].tolist() == [192, 128, 128]  # VOC 'person'
  assert colours[255].tolist() == [224, 224, 192]  # VOC ignore
  assert len(np.unique(colours, axis=0)) == 256
  mask = np.array([[0, 1], [255, 2]], dtype=np.uint8)
  np.testing.assert_array_equal(palette_lib.colorize(mask), colours[mask])
  with pytest.raises(ValueError, match="integer"):
    palette_lib.colorize(np.zeros((2, 2), np.float32))


def test_object_scale_enlarges_objects_with_the_same_draws():
  small = synthetic.SyntheticScenes(20, num_classes=6, image_size=(64, 64), object_scale=1.0)
  large = synthetic.SyntheticScenes(20, num_classes=6, image_size=(64, 64), object_scale=1.6)
  for i in range(20):
    a, b = small.scene(i), large.scene(i)
    assert [o.class_id for o in a.objects] == [o.class_id for o in b.objects]
    np.testing.assert_allclose([o.radius * 1.6 for o in a.objects], [o.radius for o in b.objects])
  area = lambda source: np.mean([(source[i]["mask"] > 0).mean() for i in range(20)])
  assert area(large) > 1.5 * area(small)
  with pytest.raises(ValueError, match="object_scale"):
    synthetic.SyntheticScenes(1, object_scale=0.0)
