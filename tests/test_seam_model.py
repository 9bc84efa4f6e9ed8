"""SEAMNet (ResNet-38 + PCM): parity with the official network (shared/golden/seam, fixtures in tests/data/seam),
PCM semantics, initialisers, parameter groups, baseline / dropout / bf16 variants."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import convert
from jaxseg.models import seam as seam_model
from jaxseg.models.seam import SEAMNet, pcm_cam_input, pcm_propagate, resize_bilinear
from jaxseg.models.seeded import seeded_variables
from jaxseg.train.sharding import leaf_path

import seam_golden as sg


def small_template(model, shape=(1, 16, 16, 3)):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))


def test_variable_names_are_the_official_state_dict():
  model, variables = sg.seeded_seam()
  names = set(convert.torch_shapes(variables))
  official_params = set(
      sg.fixture("train")["param_names"].tolist()
  )  # named_parameters(): convs + BN affine
  assert official_params <= names
  assert names - official_params == {
      n for n in names if n.endswith((".running_mean", ".running_var"))
  }
  assert variables["params"]["f9"]["kernel"].shape == (1, 1, 195, 192)
  assert variables["params"]["fc8"]["kernel"].shape == (1, 1, 4096, 21)
  assert "bias" not in variables["params"]["fc8"]  # no biases anywhere


@pytest.mark.parametrize(
    "ours, golden",
    [
        ("cam_lowres", "cam_lowres"),  # fc8(conv6)
        ("pcm_cam_in", "pcm_cam_in"),  # no-grad cam_d_norm
        ("pcm_features", "pcm_f_in"),  # [x_s, relu(f8_3(conv4)), relu(f8_4(conv5))]
        ("f9", "f9_out"),
        ("cam_rv_lowres", "pcm_out"),  # PCM before the final upsample
    ],
)
def test_forward_internals_match_official(ours, golden):
  out = sg.golden_view_outputs(1)
  sg.assert_close(out[ours], sg.nhwc(sg.fixture("forward")[golden]), what=ours)


def test_forward_outputs_and_backbone_taps_match_official():
  fx = sg.fixture("forward")
  out = sg.golden_view_outputs(1)
  ch = fx["channels"]
  assert out["cam"].shape == out["cam_rv"].shape == (2, 64, 64, 21)
  sg.assert_close(out["cam"][..., ch], sg.nhwc(fx["cam_channels"]), what="cam")
  sg.assert_close(out["cam_rv"][..., ch], sg.nhwc(fx["cam_rv_channels"]), what="cam_rv")
  sg.assert_close(out["conv4"][..., ::8], sg.nhwc(fx["bb_conv4_every8"]), what="conv4")
  sg.assert_close(out["conv5"][..., ::8], sg.nhwc(fx["bb_conv5_every8"]), what="conv5")
  sg.assert_close(out["conv6"][..., ::32], sg.nhwc(fx["bb_conv6_every32"]), what="conv6")


def test_resize_bilinear_matches_torch_conventions():
  x = jnp.arange(12.0).reshape(1, 3, 4, 1)
  # align_corners=True keeps the corners and samples i * (in - 1) / (out - 1).
  up = np.asarray(resize_bilinear(x, (5, 7), align_corners=True))[0, ..., 0]
  assert up[0, 0] == 0 and up[-1, -1] == 11 and up[0, -1] == 3 and up[-1, 0] == 8
  np.testing.assert_allclose(up[2], [4, 4.5, 5, 5.5, 6, 6.5, 7], atol=1e-6)
  # align_corners=False: half-pixel centres; 2x upsample of [0, 1] gives [0, .25, .75, 1] (torch).
  row = np.asarray(resize_bilinear(jnp.asarray([[[[0.0], [1.0]]]]), (1, 4), align_corners=False))
  np.testing.assert_allclose(row.ravel(), [0, 0.25, 0.75, 1.0], atol=1e-7)
  # align_corners=False downsample without antialiasing: 4 -> 2 averages the two middle neighbours.
  down = np.asarray(
      resize_bilinear(jnp.asarray([[[[0.0], [1.0], [2.0], [3.0]]]]), (1, 2), align_corners=False)
  )
  np.testing.assert_allclose(down.ravel(), [0.5, 2.5], atol=1e-7)


def test_pcm_cam_input_rules():
  cam = np.zeros((1, 2, 2, 4), np.float32)  # channels: bg slot, c1, c2, c3
  cam[0, :, :, 0] = 100.0  # the fc8 bg logit is discarded
  cam[0, 0, 0, 1:] = [2.0, 1.0, -1.0]
  cam[0, 0, 1, 1:] = [1.0, 4.0, 0.0]
  cam[0, 1, 0, 1:] = [0.5, 0.5, 0.0]  # equal logits, but normalised per channel: 0.25 vs 0.125
  cam[0, 1, 1, 1:] = [-3.0, -3.0, -3.0]  # nothing active
  out = np.asarray(pcm_cam_input(jnp.asarray(cam)))[0]
  norm = lambda v, peak: max(v - 1e-5, 0) / (peak + 1e-5)
  # c1 peak 2, c2 peak 4, c3 peak 0 (relu).
  close = lambda a, b: abs(float(a) - b) < 1e-6
  assert close(out[0, 0, 1], norm(2, 2)) and out[0, 0, 2] == 0 and out[0, 0, 3] == 0
  assert close(out[0, 0, 0], 1 - norm(2, 2))
  assert (
      out[0, 1, 1] == 0 and close(out[0, 1, 2], norm(4, 4)) and close(out[0, 1, 0], 1 - norm(4, 4))
  )
  assert (
      close(out[1, 0, 1], norm(0.5, 2))
      and out[1, 0, 2] == 0
      and close(out[1, 0, 0], 1 - norm(0.5, 2))
  )
  np.testing.assert_array_equal(out[1, 1], [1, 0, 0, 0])  # bg = 1 - 0, all fg zero
  # Exact ties keep every tied channel.
  tied = np.asarray(
      pcm_cam_input(jnp.asarray(np.stack([cam[..., 0], cam[..., 2], cam[..., 2]], -1)))
  )[0]
  np.testing.assert_array_equal(tied[..., 1], tied[..., 2])
  assert tied[0, 1, 1] > 0
  # No gradient flows into the PCM input.
  grad = jax.grad(lambda c: jnp.sum(pcm_cam_input(c)))(jnp.asarray(cam))
  assert not np.any(np.asarray(grad))


def test_pcm_propagate_is_a_column_normalised_relu_cosine_affinity():
  rng = np.random.default_rng(0)
  cam = rng.random((1, 3, 2, 5)).astype(np.float32)
  emb = rng.standard_normal((1, 3, 2, 7)).astype(np.float32)
  f = emb.reshape(6, 7)
  f = f / (np.linalg.norm(f, axis=1, keepdims=True) + 1e-5)
  aff = np.maximum(f @ f.T, 0)
  aff = aff / (aff.sum(axis=0, keepdims=True) + 1e-5)
  expected = (cam.reshape(6, 5).T @ aff).T.reshape(1, 3, 2, 5)
  np.testing.assert_allclose(
      pcm_propagate(jnp.asarray(cam), jnp.asarray(emb)), expected, rtol=1e-5, atol=1e-6
  )
  # Scaling the embeddings does not change a cosine affinity.
  np.testing.assert_allclose(
      pcm_propagate(jnp.asarray(cam), jnp.asarray(3 * emb)), expected, rtol=1e-4, atol=1e-6
  )


def test_official_initialisers():
  # The head alone (initialising the whole net compiles the backbone for nothing).
  features = {
      "conv4": jnp.zeros((1, 2, 2, 512)),
      "conv5": jnp.zeros((1, 2, 2, 1024)),
      "conv6": jnp.zeros((1, 2, 2, 4096)),
  }
  head = seam_model.SEAMHead()
  params = head.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), features, train=False)["params"]
  f9 = np.asarray(params["f9"]["kernel"]).ravel()  # xavier_uniform gain 4: U(-a, a)
  bound = 4 * np.sqrt(6 / (195 + 192))
  assert np.abs(f9).max() <= bound and np.abs(f9).max() > 0.95 * bound
  fc8 = np.asarray(params["fc8"]["kernel"])  # xavier_uniform gain 1
  fan_in = fc8.shape[2]
  assert np.abs(fc8).max() <= np.sqrt(6 / (fan_in + 21))
  for name in ("f8_3", "f8_4"):  # kaiming_normal, fan_in: std sqrt(2 / fan_in)
    k = np.asarray(params[name]["kernel"])
    assert k.std() == pytest.approx(np.sqrt(2 / k.shape[2]), rel=0.1)
    assert np.abs(k).max() > 2.5 * np.sqrt(2 / k.shape[2])  # not truncated at 2 std


def test_param_groups_match_the_official_optimizer_groups():
  model, variables = sg.seeded_seam()
  params = variables["params"]
  # The groups the trainer really builds from the paper config (frozen / 10x / 1x).
  from jaxseg.methods.seam import default_config
  from jaxseg.train.optimizer import group_labels

  names = {"frozen": "not_training", "default/x10": "from_scratch", "default/x1": "backbone"}
  labels = jax.tree.map(names.get, group_labels(default_config().optimizer, params))
  by_name = {
      convert.torch_name(tuple(leaf_path(p).split("/"))): label
      for p, label in jax.tree_util.tree_leaves_with_path(labels)
  }
  fx = sg.fixture("train")
  requires_grad = dict(zip(fx["param_names"].tolist(), fx["param_requires_grad"].tolist()))
  for name, label in by_name.items():  # every conv weight (BN is not in 'params': frozen)
    assert requires_grad[name] == (label != "not_training"), name
    assert (label == "from_scratch") == (name.split(".")[0] in ("fc8", "f8_3", "f8_4", "f9")), name
  assert (
      sum(requires_grad.values())
      == sum(label != "not_training" for label in by_name.values())
      == 39
  )
  # The exported regexes work on optimiser paths with or without the collection prefix.
  for prefix in ("", "params/"):
    assert re.search(seam_model.FROM_SCRATCH_LAYERS, prefix + "fc8/kernel")
    assert re.search(seam_model.NOT_TRAINING_LAYERS, prefix + "b2_1/conv_branch2a/kernel")
    assert not re.search(seam_model.NOT_TRAINING_LAYERS, prefix + "b3/conv_branch2a/kernel")


def test_plain_cam_baseline_has_no_pcm():
  model = SEAMNet(width_multiplier=0.0625, use_pcm=False)
  template = small_template(model)
  assert not {"f8_3", "f8_4", "f9"} & set(template["params"])
  variables = seeded_variables(template, 0)
  out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, jnp.zeros((1, 20, 28, 3)))
  assert out["cam"].shape == (1, 20, 28, 21) and out["cam_lowres"].shape == (1, 3, 4, 21)
  assert "cam_rv" not in out


def test_dropout_and_bf16():
  model = SEAMNet(width_multiplier=0.0625)
  variables = seeded_variables(small_template(model), 0)
  x = jax.random.normal(jax.random.key(0), (2, 24, 24, 3))
  train = jax.jit(lambda v, x, r: model.apply(v, x, train=True, rngs={"dropout": r}))
  a, b = train(variables, x, jax.random.key(1)), train(variables, x, jax.random.key(2))
  assert not np.allclose(a["cam_lowres"], b["cam_lowres"])  # dropout7 / b6 / b7 active
  with pytest.raises(Exception, match="dropout"):
    jax.eval_shape(lambda: model.apply(variables, x, train=True))
  # dropout=False: training mode is deterministic (BN frozen), the reference for the bf16 run.
  no_drop = SEAMNet(width_multiplier=0.0625, dropout=False)
  ref = jax.jit(lambda v, x: no_drop.apply(v, x, train=True))(variables, x)
  bf16 = SEAMNet(width_multiplier=0.0625, dtype=jnp.bfloat16)
  out = jax.jit(lambda v, x: bf16.apply(v, x, train=False))(variables, x)
  for key in ("cam", "cam_rv", "pcm_cam_in"):
    assert out[key].dtype == jnp.float32
  assert out["conv6"].dtype == jnp.bfloat16
  assert jax.tree.leaves(variables["params"])[0].dtype == jnp.float32
  assert np.abs(out["cam"] - ref["cam"]).max() < 0.1 * np.abs(ref["cam"]).max()
  # cam_rv is not compared: bf16 rounding flips the per-pixel winning class of the PCM input (a step function).
  assert np.isfinite(out["cam_rv"]).all()


def test_bad_input_shape():
  model = SEAMNet(width_multiplier=0.0625)
  with pytest.raises(ValueError, match="NHWC RGB"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 3, 16, 16)), train=False))
