"""Winograd F(2x2, 3x3) convolutions (jaxseg/models/winograd.py): values and gradients equal XLA's
convolution to fp32 rounding; what `train.conv_algorithm` switches, and what it leaves alone."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.errors import ConfigError
from jaxseg.models import conv_lowering, winograd
from jaxseg.models.correspondence_encoders import MastEncoder
from jaxseg.models.layers import conv2d
from jaxseg.train import step as train_step
from jaxseg.train.config import trainer_config
from jaxseg.train.task import TrainTask

DN = ("NHWC", "HWIO", "NHWC")


def xla_conv(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=DN)


def _inputs(n, h, w, c, o, seed=0):
  kx, kw, kd = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(kx, (n, h, w, c))
  kernel = jax.random.normal(kw, (3, 3, c, o)) / np.sqrt(9 * c)
  dy = jax.random.normal(kd, (n, h, w, o))
  return x, kernel, dy


def _relative_error(a, b):
  return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


@pytest.mark.parametrize(
    "n,h,w,c,o",
    [
        (2, 8, 8, 16, 16),
        (1, 6, 10, 32, 16),  # non-square, tiles 3 x 5
        (3, 4, 2, 16, 48),  # one tile column, O > C
    ],
)
def test_values_and_both_gradients_equal_the_convolution_op(n, h, w, c, o):
  x, kernel, dy = _inputs(n, h, w, c, o, seed=h * 100 + w)

  def value_and_grads(conv):
    @jax.jit
    def run(x, kernel, dy):
      y, vjp = jax.vjp(conv, x, kernel)
      return (y, *vjp(dy))

    return run

  want = value_and_grads(xla_conv)(x, kernel, dy)
  wino = value_and_grads(winograd.conv3x3)
  got = wino(x, kernel, dy)
  assert got[0].dtype == jnp.float32
  for g, w_ in zip(got, want):  # y, dx, dkernel
    assert g.shape == w_.shape
    assert _relative_error(g, w_) < 1e-5
  # Not trivially equal: a kernel flipped in height gives other values and gradients.
  wrong = wino(x, jnp.flip(kernel, 0), dy)
  assert _relative_error(wrong[0], want[0]) > 0.1


def test_output_transform_adjoint_is_the_transpose():
  """<output_transform(m), dy> == <m, adjoint(dy)> for random m and dy."""
  km, kd = jax.random.split(jax.random.key(3))
  shape = (2, 6, 4, 5)
  m = jax.random.normal(km, (16, 2 * 3 * 2, 5))
  dy = jax.random.normal(kd, shape)
  lhs = jnp.sum(winograd.output_transform(m, shape) * dy)
  rhs = jnp.sum(m * winograd.output_transform_adjoint(dy))
  np.testing.assert_allclose(lhs, rhs, rtol=1e-5)


def test_bf16_stays_bf16_and_close_to_f32():
  x, kernel, dy = _inputs(2, 8, 8, 32, 32, seed=7)
  y32 = xla_conv(x, kernel)
  y16, vjp = jax.vjp(winograd.conv3x3, x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16))
  dx, dk = vjp(dy.astype(jnp.bfloat16))
  assert y16.dtype == dx.dtype == dk.dtype == jnp.bfloat16
  assert _relative_error(y16.astype(jnp.float32), y32) < 3e-2


@pytest.mark.parametrize(
    "lhs,rhs,strides,padding,dilation,expected",
    [
        ((2, 8, 8, 16), (3, 3, 16, 16), (1, 1), ((1, 1), (1, 1)), (1, 1), True),
        ((2, 7, 8, 16), (3, 3, 16, 16), (1, 1), ((1, 1), (1, 1)), (1, 1), False),  # odd height
        ((2, 8, 8, 16), (3, 3, 16, 16), (2, 2), ((1, 1), (1, 1)), (1, 1), False),  # strided
        ((2, 8, 8, 16), (3, 3, 16, 16), (1, 1), ((2, 2), (2, 2)), (2, 2), False),  # dilated
        ((2, 8, 8, 16), (3, 3, 16, 16), (1, 1), ((0, 0), (0, 0)), (1, 1), False),  # valid padding
        (
            (2, 8, 8, 3),
            (3, 3, 3, 16),
            (1, 1),
            ((1, 1), (1, 1)),
            (1, 1),
            False,
        ),  # an image's 3 channels
        ((2, 8, 8, 16), (1, 1, 16, 16), (1, 1), ((0, 0), (0, 0)), (1, 1), False),  # 1x1
    ],
)
def test_supports_only_3x3_stride_1_same_padding_even_maps(
    lhs, rhs, strides, padding, dilation, expected
):
  assert winograd.supports(lhs, rhs, strides, padding, dilation) is expected


def _primitives(fn, *args):
  # A fresh function each time: traces are cached per function, and the algorithm is read while tracing.
  return {e.primitive.name for e in jax.make_jaxpr(lambda *a: fn(*a))(*args).jaxpr.eqns}


def test_conv_algorithm_routes_supported_convolutions_and_leaves_the_rest():
  x, kernel, _ = _inputs(2, 8, 8, 16, 16)

  def conv(x, k, strides=(1, 1)):
    return conv_lowering.conv_general_dilated(x, k, strides, ((1, 1), (1, 1)), dimension_numbers=DN)

  assert "conv_general_dilated" in _primitives(conv, x, kernel)  # direct by default
  with conv_lowering.conv_algorithm("winograd"):
    assert "conv_general_dilated" not in _primitives(conv, x, kernel)
    np.testing.assert_allclose(conv(x, kernel), xla_conv(x, kernel), rtol=1e-5, atol=1e-5)
    # Strided: not supported, so the direct convolution, bit for bit.
    strided = conv(x, kernel, (2, 2))
    np.testing.assert_array_equal(
        strided,
        conv_lowering.conv_general_dilated(
            x, kernel, (2, 2), ((1, 1), (1, 1)), dimension_numbers=DN
        ),
    )
    with conv_lowering.conv_lowering("xla"):  # XLA's own ops: no rewrite of any kind
      assert "conv_general_dilated" in _primitives(conv, x, kernel)
  with pytest.raises(ValueError, match="conv algorithm must be one of"):
    with conv_lowering.conv_algorithm("fft"):
      pass


@pytest.mark.slow  # ~17 s (two ResNet-18 gradients); the convolution itself is checked above
def test_mast_encoder_features_and_gradients_match_direct():
  """The VOS encoder (ResNet-18 at stride 4, the benchmark's model) at a small width: the same features
  and parameter gradients with either algorithm, to fp32 rounding."""
  encoder = MastEncoder(width_multiplier=0.25)
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-1, maxval=1)
  variables = encoder.init(jax.random.key(1), x, train=False)

  def loss(params):
    out, _ = encoder.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
    return jnp.mean(out**2), out

  results = {}
  for algorithm in ("direct", "winograd"):
    with conv_lowering.conv_algorithm(algorithm):
      results[algorithm] = jax.jit(jax.grad(loss, has_aux=True))(variables["params"])
  (g_direct, out_direct), (g_wino, out_wino) = results["direct"], results["winograd"]
  assert _relative_error(out_wino, out_direct) < 1e-4
  for path, got in jax.tree_util.tree_leaves_with_path(g_wino):
    want = dict(jax.tree_util.tree_leaves_with_path(g_direct))[path]
    assert _relative_error(got, want) < 1e-3, jax.tree_util.keystr(path)


class _TwoConvs(nn.Module):

  @nn.compact
  def __call__(self, x, train):
    x = nn.relu(conv2d(16, 3, name="a")(x))
    return conv2d(4, 3, name="b")(x)


def _task():
  model = _TwoConvs()

  def init_fn(rng, batch):
    return model.init(rng, batch["image"], train=False)

  def loss_fn(params, model_state, batch, rng):
    return jnp.mean(model.apply({"params": params}, batch["image"], train=True) ** 2), ({}, {})

  return TrainTask(init_fn=init_fn, loss_fn=loss_fn, train_source=None, augment=None)


def _step_setup(algorithm):
  config = trainer_config()
  config.train.batch_size = 2
  config.train.conv_algorithm = algorithm
  config.optimizer.name = "sgd"
  batch = {"image": np.random.default_rng(0).standard_normal((2, 8, 8, 16)).astype(np.float32)}
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("data", "model"))
  return train_step.setup(config, _task(), batch, mesh=mesh), batch


def test_train_step_reads_train_conv_algorithm():
  losses, programs = {}, {}
  for algorithm in ("direct", "winograd"):
    ts, batch = _step_setup(algorithm)
    assert ts.conv_algorithm == algorithm
    step = train_step.make_train_step(_task(), ts)
    state = ts.init_state()
    programs[algorithm] = step.lower(state, batch).as_text()
    _, metrics, _ = step(state, batch)
    losses[algorithm] = float(metrics["loss"])
  # The first layer has 16 channels (Winograd); the second's 4 outputs keep the convolution op.
  assert programs["direct"].count("stablehlo.convolution") > programs["winograd"].count(
      "stablehlo.convolution"
  )
  np.testing.assert_allclose(losses["winograd"], losses["direct"], rtol=1e-5)


def test_unknown_conv_algorithm_is_a_config_error_naming_the_key():
  with pytest.raises(ConfigError, match=r"train\.conv_algorithm must be one of direct, winograd"):
    _step_setup("fft")
