"""ResNet-38 (SEAM resnet38d): golden parity with the official code (full width), small-width parity,
frozen BN and Dropout2d behaviour."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import convert
from jaxseg.models.resnet38 import OUT_CHANNELS, ResNet38
from jaxseg.models.seeded import seeded_state_dict, seeded_variables

DATA = os.path.join(os.path.dirname(__file__), "data", "backbones")


def rel_err(a, ref):
  return float(np.abs(np.asarray(a, np.float64) - ref).max() / np.abs(ref).max())


def template(model, shape=(1, 16, 16, 3)):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))


def test_golden_official_seam_full_width():
  """shared/golden/seam `Net.forward_as_dict` (eval); weights seeded by our (= official) names."""
  golden = np.load(os.path.join(DATA, "golden_seam_backbone.npz"))
  model = ResNet38()
  shapes = convert.torch_shapes(template(model))
  assert len(shapes) == 191  # 39 convs + 38 BN x 4
  variables = convert.convert_resnet38(seeded_state_dict(shapes, 0), model)
  out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, jnp.asarray(golden["x"]))
  assert out["conv4"].shape == (2, 8, 8, 512) and out["conv6"].shape == (2, 8, 8, 4096)
  assert rel_err(out["conv4"], golden["bb_conv4"]) < 1e-5
  assert rel_err(out["conv5"], golden["bb_conv5"]) < 1e-5
  assert rel_err(out["conv6"][..., ::8], golden["bb_conv6_every8"]) < 1e-5


def test_small_width_parity():
  fx = np.load(os.path.join(DATA, "resnet38_w00625.npz"))
  shapes = dict(zip(fx["state_dict_names"].tolist(), json.loads(str(fx["state_dict_shapes"]))))
  model = ResNet38(**json.loads(str(fx["config"])))
  variables = convert.convert_resnet38(seeded_state_dict(shapes, 0), model)
  x = jnp.asarray(fx["x"])  # 36x44: odd intermediate sizes (18x22 -> 9x11 -> 5x6)
  out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  for tap in OUT_CHANNELS:
    assert rel_err(out[tap], fx[f"eval__{tap}"]) < 1e-5, tap
  # Official training mode = frozen BN; with dropout off it is exactly eval mode.
  no_drop = ResNet38(dropout=False, **json.loads(str(fx["config"])))
  train_out, updates = jax.jit(
      lambda v, x: no_drop.apply(v, x, train=True, mutable=["batch_stats"])
  )(variables, x)
  np.testing.assert_array_equal(train_out["conv6"], out["conv6"])
  jax.tree_util.tree_map(
      np.testing.assert_array_equal, updates["batch_stats"], variables["batch_stats"]
  )


def test_dropout2d_in_training():
  model = ResNet38(width_multiplier=0.03125)
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  variables = seeded_variables(template(model), 0)
  assert "bn7" not in variables["params"]  # frozen affine by default
  apply = jax.jit(lambda v, x, rng: model.apply(v, x, train=True, rngs={"dropout": rng}))
  a = apply(variables, x, jax.random.key(1))
  b = apply(variables, x, jax.random.key(2))
  evaluated = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  # conv5 is tapped before b6's dropout; conv6 comes after both Dropout2d.
  np.testing.assert_array_equal(a["conv5"], evaluated["conv5"])
  assert not np.allclose(a["conv6"], b["conv6"])
  with pytest.raises(Exception, match="dropout"):
    model.apply(variables, x, train=True)


def test_dropout_is_channelwise():
  """Dropout2d drops whole channels per sample: each (sample, channel) of b6's first dropout output is either
  all zero or the input scaled by 1 / (1 - 0.3)."""
  model = ResNet38(width_multiplier=0.125)
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  variables = seeded_variables(template(model), 0)

  def first_dropout_output(train):
    _, state = model.apply(
        variables,
        x,
        train=train,
        rngs={"dropout": jax.random.key(3)},
        capture_intermediates=lambda mdl, _: type(mdl).__name__ == "Dropout",
        mutable=["intermediates"],
    )
    return np.asarray(jax.tree_util.tree_leaves(state["intermediates"]["b6"])[0])

  kept_input = first_dropout_output(train=False)  # deterministic dropout = its input
  dropped = first_dropout_output(train=True)
  n, h, w, c = dropped.shape
  inp, out = kept_input.reshape(n, h * w, c), dropped.reshape(n, h * w, c)
  channel_dropped = (out == 0).all(axis=1)
  channel_kept = np.isclose(out, inp / 0.7, rtol=1e-5, atol=1e-6).all(axis=1)
  assert (channel_dropped | channel_kept).all()
  live = (inp != 0).any(axis=1)
  assert 0.1 < (channel_dropped & live).sum() / live.sum() < 0.5  # about 30% of the channels
