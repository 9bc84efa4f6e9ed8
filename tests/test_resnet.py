"""ResNet backbone: torchvision parity (fixtures from tools/make_backbone_fixtures.py), options, dtypes."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import convert
from jaxseg.models.resnet import ResNet, out_channels
from jaxseg.models.seeded import seeded_state_dict, seeded_variables

DATA = os.path.join(os.path.dirname(__file__), "data", "backbones")
CASES = [
    "resnet18_os32",
    "resnet18_os8_crw",
    "resnet18_os4_mast",
    "resnet34_os16",
    "resnet50_os8",
    "resnet101_os16",
]
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")


def load_case(tag):
  fx = np.load(os.path.join(DATA, f"{tag}.npz"))
  shapes = dict(zip(fx["state_dict_names"].tolist(), json.loads(str(fx["state_dict_shapes"]))))
  return fx, seeded_state_dict(shapes, seed=0), json.loads(str(fx["config"]))


def init(model, x, seed=0):
  """Seeded variables without `model.init` (whose XLA compile is slow on a busy CPU)."""
  return seeded_variables(
      jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False)), seed
  )


def rel_err(a, ref):
  return float(np.abs(np.asarray(a, np.float64) - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("tag", CASES)
def test_parity_eval_and_train(tag):
  fx, state_dict, config = load_case(tag)
  model = ResNet(**config)
  variables = convert.convert_torchvision_resnet(state_dict, model, source=tag)
  x = jnp.asarray(fx["x"])

  out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  for stage in STAGES:
    assert rel_err(out[stage], fx[f"eval__{stage}"]) < 1e-5, stage

  out, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
      variables, x
  )
  # Train-mode BN on a 2-image batch is ill-conditioned in deep nets: PyTorch's own float32 run is off from
  # float64 by up to 3e-4 (resnet101) at layer4, so the bound scales with depth.
  tolerance = {18: 1e-5, 34: 5e-5, 50: 3e-4, 101: 1e-3}[config["depth"]]
  for stage in STAGES:
    assert rel_err(out[stage], fx[f"train__{stage}"]) < tolerance, stage
  new_stats = convert.variables_to_state_dict(updates)
  stat_keys = [k[len("train_stats__") :] for k in fx.files if k.startswith("train_stats__")]
  assert len(stat_keys) == 4
  for key in stat_keys:
    np.testing.assert_allclose(new_stats[key], fx[f"train_stats__{key}"], rtol=1e-4, atol=1e-5)


def test_train_mode_parity_in_float64():
  """The train-mode gaps above are float32 conditioning, not a different computation: in float64 (as the
  reference was computed) the deepest net matches to the float32 storage precision of the fixture.
  """
  fx, state_dict, config = load_case("resnet101_os16")
  with jax.enable_x64(True):
    model = ResNet(**config, dtype=jnp.float64, param_dtype=jnp.float64)
    variables = convert.convert_torchvision_resnet(state_dict, model)
    assert variables["params"]["conv1"]["kernel"].dtype == np.float64
    x = jnp.asarray(fx["x"], jnp.float64)
    out = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables, x
    )[0]
    for stage in STAGES:
      assert rel_err(out[stage], fx[f"train__{stage}"]) < 1e-6, stage


def test_output_strides_and_channels():
  x = jnp.zeros((1, 64, 64, 3))
  for depth in (18, 50):
    for os_ in (32, 16, 8, 4):
      model = ResNet(depth, width_multiplier=0.125, output_stride=os_)
      shapes = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), x, train=False)[0])
      channels = out_channels(depth, 0.125)
      assert shapes["layer4"].shape == (1, 64 // os_, 64 // os_, channels["layer4"])
      assert shapes["stem"].shape[1] == (32 if os_ == 4 else 16)
  with pytest.raises(ValueError, match="output_stride"):
    jax.eval_shape(lambda: ResNet(18, output_stride=2).init(jax.random.key(0), x, train=False))
  with pytest.raises(ValueError, match="depth"):
    jax.eval_shape(lambda: ResNet(20).init(jax.random.key(0), x, train=False))


def test_frozen_bn_uses_running_stats_and_affine_option():
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  frozen = ResNet(18, width_multiplier=0.125, frozen_bn=True, bn_affine_trainable=False)
  variables = init(frozen, x)
  # Affine parameters live outside 'params' (never seen by the optimiser).
  assert "bn1" not in variables["params"] and "scale" in variables["batch_stats"]["bn1"]
  train_out, updates = jax.jit(lambda v: frozen.apply(v, x, train=True, mutable=["batch_stats"]))(
      variables
  )
  eval_out = jax.jit(lambda v: frozen.apply(v, x, train=False))(variables)
  np.testing.assert_array_equal(train_out["layer4"], eval_out["layer4"])
  jax.tree_util.tree_map(
      np.testing.assert_array_equal, updates["batch_stats"], variables["batch_stats"]
  )

  live = ResNet(18, width_multiplier=0.125)
  variables = init(live, x)
  train_out, updates = jax.jit(lambda v: live.apply(v, x, train=True, mutable=["batch_stats"]))(
      variables
  )
  eval_out = jax.jit(lambda v: live.apply(v, x, train=False))(variables)
  assert not np.allclose(train_out["layer4"], eval_out["layer4"])
  assert not np.allclose(
      updates["batch_stats"]["bn1"]["mean"], variables["batch_stats"]["bn1"]["mean"]
  )


def test_bfloat16_compute_keeps_float32_params():
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  model32 = ResNet(18, width_multiplier=0.125)
  variables = init(model32, x)
  model16 = ResNet(18, width_multiplier=0.125, dtype=jnp.bfloat16)
  out16 = jax.jit(lambda v: model16.apply(v, x, train=False))(variables)
  out32 = jax.jit(lambda v: model32.apply(v, x, train=False))(variables)
  assert out16["layer4"].dtype == jnp.bfloat16
  assert all(v.dtype == jnp.float32 for v in jax.tree_util.tree_leaves(variables))
  assert (
      rel_err(out16["layer4"].astype(jnp.float32), np.asarray(out32["layer4"], np.float64)) < 5e-2
  )

  def loss(params):
    out = model16.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])[0]
    return jnp.mean(out["layer4"].astype(jnp.float32) ** 2)

  grads = jax.jit(jax.grad(loss))(variables["params"])
  assert all(g.dtype == jnp.float32 for g in jax.tree_util.tree_leaves(grads))
  assert all(np.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads))


def test_names_match_torchvision_layout():
  model = ResNet(50, width_multiplier=0.25)
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
  )
  names = set(
      convert.variables_to_state_dict(jax.tree_util.tree_map(lambda s: np.zeros(s.shape), shapes))
  )
  fx, state_dict, _ = load_case("resnet50_os8")
  assert names == set(state_dict)
  assert "layer1.0.downsample.0.weight" in names and "layer4.2.bn3.running_var" in names
