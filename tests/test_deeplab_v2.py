"""DeepLab-v2 (ADVENT): golden parity with the official code (full width), small-width parity, BN flags."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import convert
from jaxseg.models.deeplab_v2 import DeepLabV2
from jaxseg.models.seeded import seeded_state_dict, seeded_variables

DATA = os.path.join(os.path.dirname(__file__), "data", "backbones")


def rel_err(a, ref):
  return float(np.abs(np.asarray(a, np.float64) - ref).max() / np.abs(ref).max())


def template(model, shape=(1, 33, 33, 3)):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))


def run_both_modes(model, variables, x):
  eval_out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  train_out, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
      variables, x
  )
  return eval_out, train_out, convert.variables_to_state_dict(updates)


def test_golden_official_advent_full_width():
  """Official ADVENT model (shared/golden/esl), seeded weights rebuilt from our variable names: the names
  must be the official ones or the weights (seeded by name) would differ."""
  golden = np.load(os.path.join(DATA, "golden_esl_deeplab.npz"))
  model = DeepLabV2(num_classes=19)
  shapes = convert.torch_shapes(template(model))
  assert sum(int(np.prod(s)) for s in shapes.values()) == 44_706_904  # the official count (README)
  variables = convert.convert_deeplab_v2(seeded_state_dict(shapes, 0), model, imagenet_init=False)
  eval_out, train_out, stats = run_both_modes(model, variables, jnp.asarray(golden["x"]))
  assert eval_out["main"].shape == (1, 9, 13, 19)
  for head in ("aux", "main"):
    assert rel_err(eval_out[head], golden[f"deeplab_eval_{head}"]) < 1e-5
    # Official float32 vs float64 differ by up to 3.5e-4 relative in train mode (golden README).
    assert rel_err(train_out[head], golden[f"deeplab_train_{head}"]) < 1e-3
  for name, key in (("bn1", "bn1"), ("layer4.2.bn3", "layer4_2_bn3")):
    for stat in ("running_mean", "running_var"):
      ref = golden[f"deeplab_train_updated_{key}_{stat}"]
      assert rel_err(stats[f"{name}.{stat}"], ref) < 1e-4, (name, stat)


def test_small_width_parity_eval_and_train():
  fx = np.load(os.path.join(DATA, "deeplab_v2_w0125.npz"))
  shapes = dict(zip(fx["state_dict_names"].tolist(), json.loads(str(fx["state_dict_shapes"]))))
  model = DeepLabV2(**json.loads(str(fx["config"])))
  variables = convert.convert_deeplab_v2(seeded_state_dict(shapes, 0), model)
  eval_out, train_out, stats = run_both_modes(model, variables, jnp.asarray(fx["x"]))
  assert eval_out["main"].shape == (2, 5, 6, 5)  # 33x41 -> 17x21 -> 9x11 (ceil-mode pool) -> 5x6
  for head in ("aux", "main"):
    assert rel_err(eval_out[head], fx[f"eval__{head}"]) < 1e-5
    assert rel_err(train_out[head], fx[f"train__{head}"]) < 2e-3  # torch float32 itself: 3.4e-4
  for key in [k for k in fx.files if k.startswith("train_stats__")]:
    name = key[len("train_stats__") :]
    assert rel_err(stats[name], fx[key]) < 1e-3, name


def test_small_width_train_mode_parity_in_float64():
  """In float64 (the reference's precision) train-mode BN matches far below the 1e-5 target."""
  fx = np.load(os.path.join(DATA, "deeplab_v2_w0125.npz"))
  shapes = dict(zip(fx["state_dict_names"].tolist(), json.loads(str(fx["state_dict_shapes"]))))
  with jax.enable_x64(True):
    model = DeepLabV2(**json.loads(str(fx["config"])), dtype=jnp.float64, param_dtype=jnp.float64)
    variables = convert.convert_deeplab_v2(seeded_state_dict(shapes, 0), model)
    _, train_out, stats = run_both_modes(model, variables, jnp.asarray(fx["x"], jnp.float64))
  for head in ("aux", "main"):
    assert rel_err(train_out[head], fx[f"train__{head}"]) < 1e-6
  for key in [k for k in fx.files if k.startswith("train_stats__")]:
    assert rel_err(stats[key[len("train_stats__") :]], fx[key]) < 1e-6, key


def small_model(**kwargs):
  return DeepLabV2(num_classes=3, width_multiplier=0.0625, depth_blocks=(1, 1, 2, 1), **kwargs)


def test_official_bn_quirk_is_the_default():
  x = jax.random.normal(jax.random.key(0), (2, 33, 33, 3))
  model = small_model()
  variables = seeded_variables(template(model), 0)
  # Affine parameters are frozen: they are not in 'params' at all.
  assert "bn1" not in variables["params"]
  assert set(variables["batch_stats"]["bn1"]) == {"scale", "bias", "mean", "var"}
  eval_out, train_out, stats = run_both_modes(model, variables, x)
  # ...but training normalises with batch statistics and updates the running ones.
  assert rel_err(train_out["main"], np.asarray(eval_out["main"], np.float64)) > 1e-3
  assert not np.allclose(
      stats["bn1.running_mean"], np.asarray(variables["batch_stats"]["bn1"]["mean"])
  )
  np.testing.assert_array_equal(stats["bn1.weight"], variables["batch_stats"]["bn1"]["scale"])

  frozen = small_model(frozen_bn=True)
  eval_out, train_out, stats = run_both_modes(frozen, variables, x)
  np.testing.assert_array_equal(train_out["main"], eval_out["main"])
  np.testing.assert_array_equal(stats["bn1.running_mean"], variables["batch_stats"]["bn1"]["mean"])

  trainable = small_model(bn_affine_trainable=True)
  assert "scale" in template(trainable)["params"]["bn1"]


def test_single_level_has_no_aux_head():
  model = small_model(multi_level=False)
  tmpl = template(model)
  assert "layer5" not in tmpl["params"] and "layer6" in tmpl["params"]
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, 65, 97, 3)), train=False), tmpl)
  assert "aux" not in out and out["main"].shape == (1, 9, 13, 3)


def test_imagenet_init_checkpoint_format():
  """ADVENT's DeepLab_resnet_pretrained_imagenet.pth: 'Scale.'-prefixed keys and a foreign layer5."""
  model = small_model()
  tmpl = template(model)
  backbone = {
      k: v
      for k, v in seeded_state_dict(convert.torch_shapes(tmpl), 1).items()
      if not k.startswith(("layer5.", "layer6."))
  }
  checkpoint = {f"Scale.{k}": v for k, v in backbone.items()}
  checkpoint["Scale.layer5.conv2d_list.0.weight"] = np.zeros(
      (21, 64, 3, 3), np.float32
  )  # VOC classifier
  variables = convert.convert_deeplab_v2(checkpoint, model, head_seed=3)
  state = convert.variables_to_state_dict(variables)
  for k, v in backbone.items():
    np.testing.assert_array_equal(state[k], v)
  head = state["layer6.conv2d_list.2.weight"]
  assert head.shape == (3, 128, 3, 3) and 0.005 < head.std() < 0.015  # fresh N(0, 0.01) init
  np.testing.assert_array_equal(state["layer5.conv2d_list.0.bias"], 0.0)

  del checkpoint["Scale.layer2.0.conv1.weight"]
  with pytest.raises(convert.CheckpointMismatchError, match=r"layer2\.0\.conv1\.weight"):
    convert.convert_deeplab_v2(checkpoint, model)
  # A trained checkpoint (no prefix) must contain the heads.
  with pytest.raises(convert.CheckpointMismatchError, match=r"layer6\.conv2d_list\.0\.weight"):
    convert.convert_deeplab_v2(backbone, model)
