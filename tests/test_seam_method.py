"""SEAM method wiring: configs, the two-view train step on 1 vs 8 devices, the stage pipeline."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.data import pipeline
from jaxseg.errors import ConfigError
from jaxseg.methods.seam import method
from jaxseg.train import loop
from jaxseg.train import sharding as shd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _get_config(arg):
  spec = importlib.util.spec_from_file_location(
      "seam_config", os.path.join(ROOT, "configs", "seam.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_paper_recipe_defaults():
  config = _get_config("")
  assert config.data.name == "voc" and config.data.train_split == "train_aug"
  assert config.train.batch_size == 8 and config.train.total_steps == 10576
  # The official PolyOptimizer quirk: momentum 5e-4, 10x on new layers, conv1a/b2* frozen.
  assert config.optimizer.momentum == 5e-4 and config.optimizer.weight_decay == 5e-4
  assert config.optimizer.lr_multipliers[0][1] == 10.0
  assert config.optimizer.frozen and config.model.frozen_bn
  assert tuple(config.infer.scales) == (0.5, 1.0, 1.5, 2.0)
  assert config.loss.view_align_corners and config.loss.view_scale == 0.3
  baseline = _get_config("synthetic_cam")
  assert baseline.loss.name == "cam" and not baseline.model.use_pcm
  with pytest.raises(ConfigError):
    _get_config("synthetic,stepz=3")


def test_missing_voc_root_points_to_synthetic(tmp_path):
  config = _get_config("")
  config.data.root = str(tmp_path / "VOC2012")
  with pytest.raises(Exception, match=r"VOC2012(.|\n)*:synthetic"):
    method.make_task(config)


def _tiny_config(frozen_bn=True):
  config = _get_config("synthetic")
  config.model.width_multiplier = 1 / 32
  config.model.frozen_bn = frozen_bn
  config.data.synthetic.num_train = 16
  config.data.synthetic.image_size = (32, 32)
  config.augment.crop_size = (32, 32)
  config.train.batch_size = 8
  return config


# Slow tier with the other methods' cases (tests/test_eight_devices.py): ~90 s of CI.
@pytest.mark.slow
@pytest.mark.parametrize("frozen_bn", [False])
def test_train_step_same_on_one_and_eight_devices(frozen_bn):
  config = _tiny_config(frozen_bn)
  # SGD, as the paper recipe: AdamW's update g / (sqrt(v) + eps) turns rounding-level gradient differences of
  # near-zero gradients into lr-sized parameter differences, which says nothing about the sharding.
  config.optimizer.name = "momentum"
  config.optimizer.momentum = 0.9
  config.optimizer.learning_rate = 0.01
  task = method.make_task(config)
  ds = pipeline.train_dataset(
      task.train_source, task.augment, seed=0, global_batch_size=8, keys=task.keys
  )
  results = []
  for n in (1, 8):
    config.mesh.data = n
    mesh = shd.make_mesh(config.mesh, jax.devices()[:n])
    ts = loop.setup(config, task, ds[0], mesh=mesh)
    step = loop.make_train_step(task, ts)
    state = ts.init_state()
    losses = []
    for i in range(2):
      state, m, _ = step(state, shd.global_batch(ds[i], ts.batch_sharding))
      losses.append({k: float(v) for k, v in m.items()})
    results.append((losses, jax.device_get(state["params"])))
  (l1, p1), (l8, p8) = results
  for a, b in zip(l1, l8):
    for key in ("loss", "cls", "er", "ecr"):
      assert a[key] == pytest.approx(b[key], rel=2e-4, abs=1e-6), key
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5), p1, p8)
  assert np.isfinite(l1[-1]["loss"])


def _find(tree, name):
  """The subtree called `name` anywhere in a nested dict (the backbone's place differs per network)."""
  if name in tree:
    return tree[name]
  for value in tree.values():
    if isinstance(value, dict) and (found := _find(value, name)) is not None:
      return found
  return None


def test_imagenet_weights_load_into_train_and_affinity_tasks(tmp_path):
  """config.init.weights (MXNet .params, the official ImageNet format) fills the backbone of both stages."""
  from jaxseg.methods.seam import affinity_stage

  weights = os.path.join(ROOT, "tests", "data", "backbones", "resnet38_w003125.params")
  config = _tiny_config()
  config.init.weights = weights
  expected = method.read_backbone_weights(weights, config.model.width_multiplier)["params"]
  task = method.make_task(config)
  state, _ = loop.restore_or_init(
      loop.setup(config, task, method.example_batch(config)), None, task.init_weights
  )
  np.testing.assert_array_equal(
      np.asarray(state["params"]["conv1a"]["kernel"]), expected["conv1a"]["kernel"]
  )
  aff_task = affinity_stage.make_task(config, [])
  # AffinityNet's own parameters (abstract shapes are enough to merge into), then its init_weights.
  image = np.zeros((1, 48, 48, 3), np.float32)
  fresh = jax.eval_shape(aff_task.init_fn, jax.random.key(0), {"image": image})
  fresh = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), fresh)
  aff_params, _ = aff_task.init_weights(
      fresh["params"], {k: v for k, v in fresh.items() if k != "params"}
  )
  np.testing.assert_array_equal(
      np.asarray(_find(aff_params, "conv1a")["kernel"]), expected["conv1a"]["kernel"]
  )
  config.init.weights = str(tmp_path / "missing.params")
  with pytest.raises(FileNotFoundError, match="missing.params"):
    method.make_task(config)


def _dropout_on(config):
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.model.dropout = True
  return config


def test_affinitynet_follows_model_dropout():
  """AffinityNet's b6/b7 dropout follows `model.dropout` as the CAM network's does: on in the paper
  config (official resnet38_aff.Net trains with resnet38d's Dropout2d), off in the from-scratch demo.
  """
  from jaxseg.methods.seam import affinity_stage

  assert affinity_stage.build_model(_get_config("")).dropout
  config = _get_config("synthetic")
  assert not config.model.dropout
  model = affinity_stage.build_model(config)
  assert not model.dropout
  # Traced, not compiled (compiling ResNet-38's init alone takes ~15 s): a training forward pass draws
  # random bits only when dropout is on.
  image = jax.ShapeDtypeStruct((1, 40, 40, 3), jnp.float32)

  def draws_random_bits(model) -> bool:
    variables = jax.eval_shape(
        lambda k, x: model.init({"params": k}, x, train=False), jax.random.key(0), image
    )

    def forward(variables, x, key):
      return model.apply(variables, x, train=True, rngs={"dropout": key}, mutable=True)[0]

    jaxpr = jax.make_jaxpr(forward)(variables, image, jax.random.key(1))
    return "random_bits" in str(jaxpr)

  assert not draws_random_bits(model)
  assert draws_random_bits(affinity_stage.build_model(_dropout_on(config)))
