"""Behaviour of jaxseg.cam beyond library parity: target checks, layer lookup, jit, batching, chunking,
smoothing, metrics, pictures and the CLI (demo path and a stand-in load_inference_model)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxseg import cam as cam_lib
from jaxseg.cam import __main__ as cli
from jaxseg.cam import activations, demo, methods, metrics, overlay, postprocess
from jaxseg.cam import targets as targets_lib
from jaxseg.models import resize

B, S = 3, 16


@pytest.fixture(scope="module")
def cnn():
  model = demo.SmallCNN(num_classes=6)
  variables = demo.random_variables(model, seed=1, size=S)
  images = jax.random.normal(jax.random.key(2), (B, S, S, 3))
  return model.apply, variables, images


@pytest.fixture(scope="module")
def fcn():
  model = demo.SmallFCN(num_classes=4)
  variables = demo.random_variables(model, seed=3, size=S)
  images = jax.random.normal(jax.random.key(4), (B, S, S, 3))
  return model.apply, variables, images


# --- targets -----------------------------------------------------------------------------------------------


def test_one_target_per_image_is_enforced(cnn):
  apply_fn, variables, images = cnn
  compute = functools.partial(
      methods.compute_cam, "gradcam", apply_fn, variables, images, layer="block3"
  )
  with pytest.raises(ValueError, match="1 targets for 3 images"):
    compute([2])  # pytorch-grad-cam would silently zero images 1 and 2
  with pytest.raises(ValueError, match="2 targets for 3 images"):
    compute([lambda o: o[0], lambda o: o[1]])
  with pytest.raises(ValueError, match="one scalar per image"):
    compute(targets_lib.TargetFn(lambda logits: logits[:, :2]))
  with pytest.raises(ValueError, match="out of range"):
    compute([0, 1, 6])
  with pytest.raises(ValueError, match="class ids"):
    compute(np.array([0.5, 1.0, 2.0]))


def test_segmentation_target_checks(fcn):
  apply_fn, variables, images = fcn
  with pytest.raises(ValueError, match="masks have shape"):
    methods.compute_cam(
        "gradcam",
        apply_fn,
        variables,
        images,
        targets_lib.SegmentationTarget(np.zeros(B, int), np.ones((B, 8, 8))),
        layer="block3",
    )
  with pytest.raises(ValueError, match="SegmentationTarget"):  # class target on segmentation logits
    methods.compute_cam("gradcam", apply_fn, variables, images, [0, 1, 2], layer="block3")


def test_target_forms_agree(cnn):
  apply_fn, variables, images = cnn
  class_ids = np.asarray(jnp.argmax(apply_fn(variables, images), -1))
  compute = functools.partial(
      methods.compute_cam, "gradcam", apply_fn, variables, images, layer="block3"
  )
  reference = compute(class_ids)
  np.testing.assert_allclose(compute(None), reference, atol=1e-6)  # None = arg-max class
  np.testing.assert_allclose(
      compute([lambda o, c=c: o[c] for c in class_ids]), reference, atol=1e-6
  )
  np.testing.assert_allclose(
      compute(lambda logits: jnp.take_along_axis(logits, jnp.asarray(class_ids)[:, None], 1)[:, 0]),
      reference,
      atol=1e-6,
  )
  other = compute((class_ids + 1) % 6)
  assert np.abs(np.asarray(other) - np.asarray(reference)).max() > 0.05  # the target matters


def test_softmax_and_segmentation_scores():
  logits = jnp.array([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
  np.testing.assert_allclose(
      targets_lib.ClassSoftmax(np.array([1, 2]))(logits),
      jax.nn.softmax(logits)[jnp.arange(2), jnp.array([1, 2])],
  )
  seg = jnp.arange(2 * 2 * 2 * 3, dtype=jnp.float32).reshape(2, 2, 2, 3)
  masks = np.array([[[1, 0], [0, 1]], [[0, 0], [1, 1]]], np.float32)
  scores = targets_lib.SegmentationTarget(np.array([0, 2]), masks)(seg)
  np.testing.assert_allclose(
      scores, [seg[0, 0, 0, 0] + seg[0, 1, 1, 0], seg[1, 1, 0, 2] + seg[1, 1, 1, 2]]
  )


# --- layers ------------------------------------------------------------------------------------------------


def test_unknown_layer_lists_available_layers(cnn):
  apply_fn, variables, images = cnn
  with pytest.raises(ValueError, match=r"blok3.*block3/conv"):
    methods.compute_cam("gradcam", apply_fn, variables, images, layer="blok3")
  layers = activations.list_layers(apply_fn, variables, images)
  assert layers["block3"] == (B, S // 2, S // 2, 32) and layers["fc"] == (B, 6)


def test_separately_jitted_apply_fn_is_an_error(cnn):
  apply_fn, variables, images = cnn
  jitted = jax.jit(apply_fn)
  jitted(variables, images)  # a cached trace bypasses the interceptor
  with pytest.raises(ValueError, match="jitted"):
    methods.compute_cam("gradcam", jitted, variables, images, layer="block3")


def test_shared_module_and_non_array_layers_are_errors():
  class Shared(nn.Module):

    @nn.compact
    def __call__(self, x):
      conv = nn.Conv(4, (3, 3), name="conv")
      x = conv(nn.Conv(4, (3, 3), name="first")(x))
      x = conv(x)
      return nn.Dense(2, name="fc")(x.mean((1, 2)))

  class DictOut(nn.Module):

    @nn.compact
    def __call__(self, x):
      return {"a": nn.Conv(2, (1, 1), name="conv")(x)}

  x = jnp.ones((1, 8, 8, 3))
  # Abstract variables suffice: both errors are raised while tracing, before any computation.
  shared = Shared()
  with pytest.raises(ValueError, match="more than once"):
    methods.compute_cam(
        "gradcam", shared.apply, jax.eval_shape(shared.init, jax.random.key(0), x), x, layer="conv"
    )

  class Wrapper(nn.Module):

    @nn.compact
    def __call__(self, x):
      return nn.Dense(2)(DictOut(name="body")(x)["a"].mean((1, 2)))

  wrapper = Wrapper()
  with pytest.raises(ValueError, match="not an array"):
    methods.compute_cam(
        "gradcam",
        wrapper.apply,
        jax.eval_shape(wrapper.init, jax.random.key(0), x),
        x,
        layer="body",
    )


def test_gradients_are_per_image(cnn):
  """Each image's CAM depends only on that image (batched = one at a time)."""
  apply_fn, variables, images = cnn
  targets = np.array([0, 3, 5])
  batched = methods.compute_cam("gradcam++", apply_fn, variables, images, targets, layer="block2")
  single = methods.compute_cam(
      "gradcam++", apply_fn, variables, images[1:2], targets[1:2], layer="block2"
  )
  np.testing.assert_allclose(batched[1], single[0], atol=1e-5)


# --- methods -----------------------------------------------------------------------------------------------


def test_method_names():
  assert methods.canonical_method("Grad-CAM++") == "gradcam++"
  assert methods.canonical_method("GradCAMPlusPlus") == "gradcam++"
  assert methods.canonical_method("GradCAMElementWise") == "gradcam_elementwise"
  assert methods.canonical_method("ScoreCAM") == "scorecam"
  with pytest.raises(ValueError, match="unknown CAM method"):
    methods.canonical_method("gradcam+++")


def test_cam_equals_gradcam_before_gap_dense(cnn):
  """For GAP + Dense after the layer, dy/dA = W[:, c] / (h w): CAM and Grad-CAM coincide."""
  apply_fn, variables, images = cnn
  targets = np.array([1, 2, 4])
  gradcam = methods.compute_cam("gradcam", apply_fn, variables, images, targets, layer="block4")
  cam = methods.compute_cam(
      "cam", apply_fn, variables, images, targets, layer="block4", fc_layer="fc"
  )
  np.testing.assert_allclose(cam, gradcam, atol=1e-5)
  kernel = variables["params"]["fc"]["kernel"]
  np.testing.assert_allclose(
      methods.compute_cam(
          "cam", apply_fn, variables, images, targets, layer="block4", fc_kernel=kernel
      ),
      cam,
      atol=1e-6,
  )
  with pytest.raises(ValueError, match="fc_layer"):
    methods.compute_cam("cam", apply_fn, variables, images, targets, layer="block4")
  with pytest.raises(ValueError, match="K=16"):
    methods.compute_cam("cam", apply_fn, variables, images, targets, layer="block1", fc_layer="fc")


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_chunk_size_does_not_change_the_result(cnn, method):
  apply_fn, variables, images = cnn
  maps = [
      methods.compute_cam(
          method, apply_fn, variables, images, [0, 1, 2], layer="block3", chunk_size=c
      )
      for c in (1, 7, 64)
  ]
  for other in maps[1:]:
    np.testing.assert_allclose(other, maps[0], atol=1e-5)


def test_every_method_jits(cnn):
  apply_fn, variables, images = cnn
  targets = targets_lib.ClassLogit(jnp.array([0, 1, 2]))
  for method in methods.ALL_METHODS:
    options = dict(
        layer="block4" if method == "cam" else "block3",
        chunk_size=8,
        fc_layer="fc" if method == "cam" else None,
    )
    cam_fn = methods.make_cam_fn(method, apply_fn, **options)
    if method not in (
        "gradcam",
        "scorecam",
    ):  # tracing + lowering is enough; all run eagerly in test_cam_parity
      out = jax.eval_shape(cam_fn, variables, images, targets)
      assert out.shape == (B, S, S) and out.dtype == jnp.float32, method
      cam_fn.lower(variables, images, targets)
      continue
    jitted = cam_fn(variables, images, targets)
    assert float(jitted.min()) >= 0 and float(jitted.max()) <= 1 + 1e-6, method
    eager = methods.compute_cam(method, apply_fn, variables, images, targets, **options)
    np.testing.assert_allclose(jitted, eager, atol=1e-5, err_msg=method)


def test_multiple_layers_are_averaged(cnn):
  apply_fn, variables, images = cnn
  layers = ["block2", "block3/conv", "block4"]
  per_layer = methods.compute_layer_cams(
      "layercam", apply_fn, variables, images, [0, 1, 2], layer=layers
  )
  assert per_layer.shape == (3, B, S, S)
  for i, name in enumerate(layers):
    single = methods.compute_layer_cams(
        "layercam", apply_fn, variables, images, [0, 1, 2], layer=name
    )
    np.testing.assert_allclose(per_layer[i], single[0], atol=1e-6)
  combined = methods.compute_cam("layercam", apply_fn, variables, images, [0, 1, 2], layer=layers)
  np.testing.assert_allclose(combined, postprocess.aggregate_layers(per_layer), atol=1e-6)


def test_segmentation_aug_smoothing_flips_the_mask(fcn):
  apply_fn, variables, images = fcn
  masks = np.zeros((B, S, S), np.float32)
  masks[:, :, : S // 3] = 1  # left third: asymmetric on purpose
  target = targets_lib.SegmentationTarget(np.array([0, 1, 2]), masks)
  smoothed = methods.compute_cam(
      "gradcam",
      apply_fn,
      variables,
      images,
      target,
      layer="block3",
      aug_smooth=True,
      aug_multipliers=(1.0,),
  )
  plain = methods.compute_cam("gradcam", apply_fn, variables, images, target, layer="block3")
  flipped_target = targets_lib.SegmentationTarget(np.array([0, 1, 2]), masks[:, :, ::-1])
  mirrored = methods.compute_cam(
      "gradcam", apply_fn, variables, jnp.flip(images, 2), flipped_target, layer="block3"
  )
  np.testing.assert_allclose(smoothed, (plain + jnp.flip(mirrored, 2)) / 2, atol=1e-6)


def test_aug_smoothing_spatial_scales(cnn, fcn):
  apply_fn, variables, images = cnn
  smoothed = methods.compute_cam(
      "gradcam",
      apply_fn,
      variables,
      images,
      [0, 1, 2],
      layer="block3",
      aug_smooth=True,
      aug_flips=(False,),
      aug_multipliers=(1.0,),
      aug_scales=(2.0,),
  )
  upscaled = postprocess.resize_bilinear(images, (2 * S, 2 * S))
  manual = methods.compute_cam("gradcam", apply_fn, variables, upscaled, [0, 1, 2], layer="block3")
  np.testing.assert_allclose(smoothed, postprocess.resize_bilinear(manual, (S, S)), atol=1e-6)
  apply_fcn, fcn_vars, fcn_images = fcn
  target = targets_lib.SegmentationTarget(np.zeros(B, int), np.ones((B, S, S), np.float32))
  with pytest.raises(ValueError, match="scales"):
    methods.compute_cam(
        "gradcam",
        apply_fcn,
        fcn_vars,
        fcn_images,
        target,
        layer="block3",
        aug_smooth=True,
        aug_scales=(1.0, 0.5),
    )


def test_eigen_projection_sign_conventions():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 5, 4, 6)).astype(np.float32))
  flat = np.asarray(x).reshape(2, 20, 6)
  centred = flat - flat.mean(1, keepdims=True)
  for sign in ("activation", "max_abs", "none"):
    projection = np.asarray(postprocess.first_component_projection(x, sign)).reshape(2, 20)
    for b in range(2):
      vt = np.linalg.svd(centred[b], full_matrices=False)[2]
      expected = centred[b] @ vt[0]
      assert (
          min(np.abs(projection[b] - expected).max(), np.abs(projection[b] + expected).max()) < 1e-4
      )
      if sign == "activation":
        reference = flat[b].sum(1)
        assert np.dot(projection[b], reference - reference.mean()) >= 0
      if sign == "max_abs":
        assert abs(projection[b].min()) <= abs(projection[b].max())
  with pytest.raises(ValueError, match="eigen sign"):
    postprocess.first_component_projection(x, "positive")


def test_interpolation_matches_cv2_and_torch_conventions():
  # Half-pixel centres with edge clamp: 2 -> 4 gives [a, .75a+.25b, .25a+.75b, b].
  np.testing.assert_allclose(
      resize.interpolation_matrix(2, 4), [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]], atol=1e-7
  )
  # align_corners: 3 -> 5 hits the inputs at 0, 2, 4.
  np.testing.assert_allclose(
      resize.interpolation_matrix(3, 5, align_corners=True),
      [[1, 0, 0], [0.5, 0.5, 0], [0, 1, 0], [0, 0.5, 0.5], [0, 0, 1]],
      atol=1e-7,
  )
  x = jax.random.normal(jax.random.key(0), (2, 5, 7))
  np.testing.assert_allclose(
      postprocess.resize_bilinear(x, (15, 21)),
      jax.image.resize(x, (2, 15, 21), "linear", antialias=False),
      atol=1e-5,
  )


# --- FullGrad / ResNet -------------------------------------------------------------------------------------


def test_resnet_backbone_layers_and_fullgrad_layers():
  from jaxseg.models import resnet

  class Classifier(nn.Module):

    @nn.compact
    def __call__(self, x):
      features = resnet.ResNet(18, width_multiplier=0.125, name="backbone")(x, train=False)
      return nn.Dense(3, name="fc")(features["layer4"].mean((1, 2)))

  model = Classifier()
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  # Abstract variables: the whole pipeline is traced, nothing is compiled (a ResNet compiles slowly on CPU).
  variables = jax.eval_shape(model.init, jax.random.key(1), x)
  targets = targets_lib.ClassLogit(jnp.array([0, 2]))
  assert activations.list_layers(model.apply, variables, x)["backbone/layer4"] == (2, 1, 1, 64)
  for method in ("gradcam++", "scorecam", "fullgrad"):
    cams = jax.eval_shape(
        methods.make_cam_fn(method, model.apply, layer="backbone/layer3"), variables, x, targets
    )
    assert cams.shape == (2, 32, 32)
  bias_grads = jax.eval_shape(
      lambda v, images: activations.bias_activations_and_gradients(
          model.apply, v, images, targets
      ).gradients,
      variables,
      x,
  )
  # ResNet convs have no bias; every BatchNorm-like module (jaxseg.models.layers.BatchNorm) is found.
  assert len(bias_grads) == 20 and all(
      name.split("/")[-1].startswith("bn") or "downsample" in name for name in bias_grads
  ), sorted(bias_grads)


# --- metrics -----------------------------------------------------------------------------------------------


def test_imputation_solves_the_neighbour_mean_equations():
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.random((2, 12, 10, 3)).astype(np.float32))
  keep = jnp.asarray(rng.random((2, 12, 10)) < 0.4)
  filled = np.asarray(metrics.impute_linear(images, keep))
  kept = np.asarray(keep)
  np.testing.assert_array_equal(filled[kept], np.asarray(images)[kept])
  weights = np.array([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])
  for b, i, j in np.argwhere(~kept):
    total, weight = np.zeros(3), 0.0
    for di in (-1, 0, 1):
      for dj in (-1, 0, 1):
        if 0 <= i + di < 12 and 0 <= j + dj < 10:
          total += weights[di + 1, dj + 1] * filled[b, i + di, j + dj]
          weight += weights[di + 1, dj + 1]
    np.testing.assert_allclose(filled[b, i, j], total / weight, atol=1e-4)
  np.testing.assert_array_equal(metrics.impute_linear(images, jnp.ones((2, 12, 10), bool)), images)


def test_road_removes_the_requested_fraction():
  cams = jax.random.uniform(jax.random.key(0), (2, 10, 10))
  morf = metrics.road_keep_mask(cams, 70, most_relevant_first=True)
  lerf = metrics.road_keep_mask(cams, 70, most_relevant_first=False)
  np.testing.assert_allclose(np.asarray(morf).mean((1, 2)), 0.7, atol=0.02)
  np.testing.assert_allclose(np.asarray(lerf).mean((1, 2)), 0.7, atol=0.02)
  # MoRF removes the highest-CAM pixels, LeRF the lowest.
  per_image = dict(axis=(1, 2))
  assert (
      jnp.where(morf, cams, 0).max(**per_image) < jnp.where(morf, 1, cams).min(**per_image)
  ).all()
  assert (
      jnp.where(lerf, 0, cams).max(**per_image) < jnp.where(lerf, cams, 1).min(**per_image)
  ).all()


def test_confidence_metrics_are_consistent(cnn):
  apply_fn, variables, images = cnn
  targets = targets_lib.ClassSoftmax(np.array([0, 1, 2]))
  cams = methods.compute_cam("gradcam", apply_fn, variables, images, targets, layer="block3")
  change = metrics.confidence_change(apply_fn, variables, images, cams, targets)
  before = targets(apply_fn(variables, images))
  np.testing.assert_allclose(
      metrics.average_drop(apply_fn, variables, images, cams, targets),
      100 * np.mean(np.maximum(-np.asarray(change), 0) / np.asarray(before)),
      rtol=1e-5,
  )
  np.testing.assert_allclose(
      metrics.increase_rate(apply_fn, variables, images, cams, targets),
      100 * np.mean(np.asarray(change) > 0),
  )
  ones = metrics.confidence_change(apply_fn, variables, images, jnp.ones((B, S, S)), targets)
  np.testing.assert_allclose(ones, 0, atol=1e-6)
  # Jit-able with traced CAMs and targets.
  road = jax.jit(lambda x, c, t: metrics.road(apply_fn, variables, x, c, t, percentile=60))
  np.testing.assert_allclose(
      road(images, cams, targets),
      metrics.road(apply_fn, variables, images, cams, targets, percentile=60),
      atol=1e-6,
  )


# --- pictures and CLI --------------------------------------------------------------------------------------


def test_overlay_and_grid(tmp_path):
  image = np.zeros((8, 8, 3), np.uint8)
  cam = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
  picture = np.asarray(overlay.overlay_cam(image, cam))
  assert picture.dtype == np.uint8 and picture.shape == (8, 8, 3)
  assert (
      picture[0, 0, 2] > picture[0, 0, 0] and picture[-1, -1, 0] > picture[-1, -1, 2]
  )  # blue -> red
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    overlay.overlay_cam(np.full((8, 8, 3), 2.0, np.float32), cam)
  batch = overlay.overlay_cam(np.stack([image, image]), np.stack([cam, cam]))
  np.testing.assert_array_equal(batch[1], picture)
  path = tmp_path / "grid.png"
  grid = overlay.write_cam_grid(path, image, [cam, cam, cam], ["a", "b", "c"], columns=2)
  written = np.asarray(Image.open(path))
  np.testing.assert_array_equal(written, grid)
  assert (
      written.shape[0] > 2 * 128 and written.shape[1] > 2 * 128
  )  # 2 x 2 tiles, enlarged to 128 px


def test_cli_demo_all_methods_and_layers(tmp_path, capsys):
  out = tmp_path / "all.png"
  assert cli.main(["--demo", "--size=24", "--method=all", "--layer=block2", f"--out={out}"]) == 0
  printed = capsys.readouterr().out
  for method in methods.ALL_METHODS:
    assert method in printed
  assert np.asarray(Image.open(out)).shape[1] >= 7 * 128
  assert cli.main(["--demo", "--list-layers"]) == 0
  assert "block3/conv" in capsys.readouterr().out
  with pytest.raises(SystemExit) as exit_info:  # a bad option: exit status 2, one-line error
    cli.main(["--demo", "--method=nocam", f"--out={out}"])
  assert exit_info.value.code == 2 and "unknown CAM method" in capsys.readouterr().err


# The CLI's trained-model path on a real checkpoint: tests/test_launch.py::test_cam_cli_reads_the_demo_checkpoint
# (it reuses the supervised demo's workdir).


def test_public_api_exports():
  for name in (
      "compute_cam",
      "compute_layer_cams",
      "compute_raw_cams",
      "compute_channel_weights",
      "make_cam_fn",
      "overlay_cam",
      "write_cam_grid",
      "road",
      "road_combined",
      "average_drop",
      "ClassLogit",
      "ClassSoftmax",
      "SegmentationTarget",
      "TargetFn",
      "list_layers",
  ):
    assert hasattr(cam_lib, name), name
