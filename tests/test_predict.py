"""`python -m jaxseg.predict` on a small network: any image size (padded, never resized), batching by
size, resumable outputs, bad files, SIGTERM, multi-scale + flip, and video propagation's DAVIS layout.
The trained workdirs of every method are run through it in their own tests (`inference_check`)."""

import os
import signal

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from jaxseg import predict
from jaxseg.train.inference import InferenceModel

NUM_CLASSES = 4


class _Tiny(nn.Module):
  """Stride-2 conv net: logits at half the input size (as a network's output stride)."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3), strides=2)(x))
    return nn.Conv(NUM_CLASSES, (3, 3))(x)


def _config():
  return ml_collections.ConfigDict(
      dict(method="supervised", normalize=dict(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)))
  )


def _model(apply_hook=None):
  net = _Tiny()
  variables = net.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))

  def apply_fn(v, x):
    if apply_hook is not None:
      apply_hook()
    return net.apply(v, x)

  mesh = jax.sharding.Mesh(np.array(jax.local_devices()[:1]), ("data",))
  return InferenceModel(
      _config(), "train", 7, variables, apply_fn, mesh, class_names=("a", "b", "c", "d")
  )


def _write_images(folder, sizes, seed=0):
  rng = np.random.default_rng(seed)
  os.makedirs(folder, exist_ok=True)
  images = {}
  for i, (h, w) in enumerate(sizes):
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(image).save(os.path.join(folder, f"img{i}.png"))
    images[f"img{i}"] = image
  return images


def _reference_mask(model, image, scales=(1.0,), flip=False):
  """One image alone through the network: padded to a multiple of 32, argmax, cropped."""
  x = predict.pad_image(model.prepare(image), predict.padded_size(image.shape[:2], 32))
  probs = predict.segmentation_probs_fn(model, scales, flip)(model.variables, x[None], x.shape[:2])
  return np.asarray(jnp.argmax(probs, -1))[0, : image.shape[0], : image.shape[1]]


def _read(path):
  return np.asarray(Image.open(path))


def test_any_size_is_padded_not_resized_and_batched_by_size(tmp_path):
  model = _model()
  sizes = [(37, 50), (64, 64), (20, 21), (37, 50), (50, 33)]  # two padded sizes
  images = _write_images(tmp_path / "in", sizes)
  out = tmp_path / "out"
  result = predict.predict_images(
      model, str(tmp_path / "in"), str(out), predict.Options(batch_size=2, progress=False)
  )
  assert result == dict(written=5, existing=0, bad=0, total=5)
  for name, image in images.items():
    mask = _read(out / "masks" / f"{name}.png")
    assert mask.shape == image.shape[:2]  # the image's own size
    np.testing.assert_array_equal(mask, _reference_mask(model, image))
    picture = _read(out / "overlays" / f"{name}.png")
    assert picture.shape[1] == image.shape[1] and picture.shape[0] > image.shape[0]  # + legend


def test_outputs_are_resumed_not_recomputed(tmp_path):
  calls = []
  model = _model(apply_hook=lambda: calls.append(1))
  _write_images(tmp_path / "in", [(40, 40)] * 3)
  out = str(tmp_path / "out")
  predict.predict_images(model, str(tmp_path / "in"), out, predict.Options(progress=False))
  os.remove(os.path.join(out, "masks", "img1.png"))
  calls.clear()
  result = predict.predict_images(model, str(tmp_path / "in"), out, predict.Options(progress=False))
  assert result["written"] == 1 and result["existing"] == 2
  assert os.path.exists(os.path.join(out, "masks", "img1.png"))


def test_sigterm_stops_after_the_current_batch(tmp_path):
  # The network's trace runs inside the first batch: a SIGTERM there must let that batch finish
  # and write, then stop; the rerun does the rest.
  sent = []

  def terminate():
    if not sent:
      sent.append(1)
      os.kill(os.getpid(), signal.SIGTERM)

  _write_images(tmp_path / "in", [(40, 40)] * 5)
  out = str(tmp_path / "out")
  options = predict.Options(batch_size=2, progress=False)
  first = predict.predict_images(_model(terminate), str(tmp_path / "in"), out, options)
  assert first["written"] == 2
  assert sorted(os.listdir(os.path.join(out, "masks"))) == ["img0.png", "img1.png"]
  second = predict.predict_images(_model(), str(tmp_path / "in"), out, options)
  assert second == dict(written=3, existing=2, bad=0, total=5)


def test_bad_files_name_the_file_or_are_skipped(tmp_path):
  folder = tmp_path / "in"
  _write_images(folder, [(30, 30)])
  (folder / "broken.jpg").write_bytes(b"not a jpeg")
  Image.fromarray(np.full((10, 12), 90, np.uint8), mode="L").save(folder / "grey.png")
  model = _model()
  with pytest.raises(predict.BadImageError, match="broken.jpg: not a readable image"):
    predict.predict_images(
        model, str(folder), str(tmp_path / "o1"), predict.Options(progress=False)
    )
  options = predict.Options(progress=False, skip_bad=True)
  result = predict.predict_images(model, str(folder), str(tmp_path / "o2"), options)
  assert result == dict(written=2, existing=0, bad=1, total=3)
  assert "broken.jpg" in (tmp_path / "o2" / "skipped.txt").read_text()
  assert _read(tmp_path / "o2" / "masks" / "grey.png").shape == (10, 12)  # grey read as RGB


def test_inputs_glob_names_and_collisions(tmp_path):
  _write_images(tmp_path / "a" / "x", [(8, 8)])
  _write_images(tmp_path / "a" / "y", [(8, 8)])
  root, paths = predict.list_images(str(tmp_path / "a" / "**" / "*.png"))
  assert predict.output_names(root, paths) == ["x/img0", "y/img0"]
  root, paths = predict.list_images(str(tmp_path / "a" / "x" / "img*.png"))  # names stay inside
  assert predict.output_names(root, paths) == ["img0"]
  Image.new("RGB", (4, 4)).save(tmp_path / "a" / "x" / "img0.jpg")
  with pytest.raises(ValueError, match="would both write"):
    predict.output_names(*predict.list_images(str(tmp_path / "a" / "x")))
  with pytest.raises(FileNotFoundError, match="no images"):
    predict.list_images(str(tmp_path / "a"))
  assert predict.process_share(list(range(7)), 1, 3) == [1, 4]


def test_scales_and_flip_average_the_softmax(tmp_path):
  model = _model()
  images = _write_images(tmp_path / "in", [(48, 40)])
  out = tmp_path / "out"
  options = predict.Options(scales=(0.5, 1.0), flip=True, progress=False)
  predict.predict_images(model, str(tmp_path / "in"), str(out), options)
  image = images["img0"]
  expected = _reference_mask(model, image, (0.5, 1.0), True)
  np.testing.assert_array_equal(_read(out / "masks" / "img0.png"), expected)
  # A mirrored pass is mirrored back: the flip-averaged prediction of a mirrored image is the mirror.
  mirrored = _reference_mask(model, image[:, ::-1].copy(), (1.0,), True)
  x = predict.pad_image(model.prepare(image), (64, 64))
  xm = predict.pad_image(model.prepare(image[:, ::-1].copy()), (64, 64))
  fn = predict.segmentation_probs_fn(model, (1.0,), True)
  a = np.asarray(fn(model.variables, x[None, :48, :40], (48, 40)))
  b = np.asarray(fn(model.variables, xm[None, :48, :40], (48, 40)))
  np.testing.assert_allclose(a[:, :, ::-1], b, atol=1e-5)
  assert mirrored.shape == image.shape[:2]


def test_crf_refines_the_probabilities(tmp_path):
  model = _model()
  _write_images(tmp_path / "in", [(24, 20)])
  options = predict.Options(crf=True, progress=False)
  result = predict.predict_images(model, str(tmp_path / "in"), str(tmp_path / "out"), options)
  assert result["written"] == 1
  assert _read(tmp_path / "out" / "masks" / "img0.png").shape == (24, 20)


def _features_model():
  from jaxseg.methods.vos import default_config

  config = default_config()

  class Encoder(nn.Module):

    @nn.compact
    def __call__(self, x):
      return nn.Conv(16, (3, 3), strides=4)(x)

  net = Encoder()
  variables = net.init(jax.random.key(1), jnp.zeros((1, 32, 32, 3)))
  mesh = jax.sharding.Mesh(np.array(jax.local_devices()[:1]), ("data",))
  return InferenceModel(
      config,
      "train",
      3,
      variables,
      lambda v, x: net.apply(v, x),
      mesh,
      kind="features",
      prepare=lambda f: f.astype(np.float32) / 255.0,
  )


def test_video_writes_davis_layout_gif_and_keeps_the_given_ids(tmp_path):
  rng = np.random.default_rng(0)
  frames_dir = tmp_path / "frames" / "walk"
  os.makedirs(frames_dir)
  for t in range(4):
    Image.fromarray(rng.integers(0, 256, (36, 44, 3), dtype=np.uint8)).save(
        frames_dir / f"{t:05d}.jpg"
    )
  first = np.zeros((36, 44), np.uint8)
  first[5:15, 5:15], first[20:30, 25:40] = 3, 7  # non-contiguous DAVIS ids
  mask = Image.fromarray(first, mode="P")
  mask.putpalette([0, 0, 0] + [255, 0, 0] * 255)
  mask.save(tmp_path / "first.png")
  out = tmp_path / "out"
  model = _features_model()
  result = predict.predict_videos(
      model, str(frames_dir), str(tmp_path / "first.png"), str(out), predict.Options(progress=False)
  )
  assert result == dict(written=1, existing=0, total=1)
  masks = [_read(out / "walk" / f"{t:05d}.png") for t in range(4)]
  np.testing.assert_array_equal(masks[0], first)
  for m in masks:
    assert m.shape == (36, 44) and set(np.unique(m)) <= {0, 3, 7}
  assert (out / "walk.gif").exists() and (out / "overlays" / "walk" / "00003.png").exists()
  again = predict.predict_videos(
      model, str(frames_dir), str(tmp_path / "first.png"), str(out), predict.Options(progress=False)
  )
  assert again == dict(written=0, existing=1, total=1)
  Image.new("RGB", (44, 36)).save(tmp_path / "rgb.png")
  with pytest.raises(predict.BadImageError, match="indexed"):
    predict.read_first_mask(str(tmp_path / "rgb.png"), (36, 44))
