"""Two official ADVENT `train_advent` iterations reproduced by the `uda` method's own trainer step.

Golden: shared/golden/esl/advent_trajectory.npz (README section 6), copied unchanged to
tests/data/esl/advent_trajectory.npz. The official function ran unchanged for 2 iterations:
DeepLab-v2 R101 multi-level in `model.train()` (BatchNorm on batch statistics, running statistics
updated by the source then the target forward, affine frozen), two FC discriminators, SGD
(momentum 0.9, wd 5e-4, heads 10x) + two Adams (betas (0.9, 0.99)), poly 0.9 over MAX_ITERS 4, on
seeded weights, with PyTorch 2.x's per-listing update of the backbone tensors that
`get_1x_lr_params_no_scale` lists 3x / 4x (`method.ADVENT_LISTING_MULTIPLICITY`).

Here the state and the step come from `loop.setup` / `loop.make_train_step` with the paper config
(`uda.method.default_config()`), changing only what the golden run changes: sizes (source 65x97,
target 57x81), total_steps 2 (EARLY_STOP + 1) with the poly horizon `optimizer.decay_steps` 4
(MAX_ITERS) in both groups, and one device. The datasets are built but never read ('synthetic').

Tolerances. Iteration 0 is sharp: every loss term matches to <= 2.1e-6. The second iteration is
not: this seeded, train-mode-BN R101 on 0-255 inputs is so curved that float32 rounding decides
the direction of the backbone updates. Measured (jaxseg float32 and float64, float64 through the
losses too, against the golden and against each other):
  * the iteration-0 backbone gradient of jaxseg float32 is 2-5% (every tensor, every loss term)
    away from jaxseg float64, while the heads' is <= 1e-4 away; the float64 gradient is the
    accurate one (central differences along it and along a random direction agree with it to
    4e-4 / 1e-6);
  * the SGD step (|g| = 536, x3 listings, lr 2.5e-4: ~0.4 in parameter norm) is far outside the
    linear region (the directional derivative along g, 536, averages 120 over +-1e-3);
  * so after 2 iterations the backbone deltas of jaxseg float32 and float64 differ in direction as
    much as either differs from the golden (cosine 0.72-0.74 / 0.91 for layer1.0.conv1 / conv1 in
    all three comparisons), and the heads', discriminators' and optimiser moments follow.
Norms survive it (an error orthogonal to a delta moves its norm at second order). Every tolerance
below is about 2x the largest of the three measured spreads (float32-golden, float64-golden,
float32-float64; the float32-golden figure is quoted), so a correct port passes in either
precision; the single-update optimiser (`listing_multiplicity=()`) misses the backbone delta
norms by 69-79%, its momentum norms by 44-60%.
"""

import functools
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxseg.methods.uda import method
from jaxseg.methods.uda import optimizer as advent_optimizer
from jaxseg.models import convert
from jaxseg.models.seeded import seeded_state_dict
from jaxseg.train import loop
from jaxseg.train import optimizer as optim
from jaxseg.train import sharding as shd
from jaxseg.train.sharding import leaf_path

GOLDEN = os.path.join(os.path.dirname(__file__), "data", "esl", "advent_trajectory.npz")

# Two full-width R101 train-step compilations (paper optimiser and single update) and 2 steps
# each: ~2 x 2 min wall on 2 loaded CPU cores.
pytestmark = pytest.mark.slow  # each test but the single-update one is also marked ci

STEPS = 2
NETS = ("seg", "d_main", "d_aux")
LOSS_KEYS = tuple(
    f"{kind}_{head}"
    for kind in ("seg_src", "adv_trg", "d_src", "d_trg")
    for head in ("main", "aux")
)
LOSS_RTOL = (1e-5, 1.2e-2)  # per iteration; measured 2.1e-6 / 5.7e-3 (seg_src_main)
LR_RTOL = 1e-6  # the float32 schedule (measured 4.7e-8)
# Final norm of every entry: parameters move ~2% of their norm (measured 3.1e-5); BN running
# statistics are mostly their update (measured 2.7e-3, layer4.1.bn2.running_mean).
NORM_RTOL = {"param": 1e-4, "stat": 5e-3}
# ||final - init|| per entry. Backbone tensors listed 3x / 4x and the discriminators: measured
# 2.6e-2 (layer1.1.conv1; float32-float64 2.7e-2) / 2.2e-2 (d_aux 2.bias); conv1 (listed once),
# heads and BN running statistics: 6.0e-4 (float64 6.7e-3) / 5.5e-3 (float32-float64 7.0e-3) /
# 6.6e-3. conv1's delta is set by its iteration-1 gradient, nearly orthogonal to the iteration-0
# one and chaotic in float32 (the official code at 1 vs 2 threads: 130% apart in direction, up to
# 15% in norm); the official run itself varies on conv1's delta by up to 7.3e-3 at this golden
# (threads 1/2/3/4 and float64; 1.0e-2 at other seeds), jaxseg measures 4.2e-3 - 6.0e-4.
DELTA_RTOL = {"backbone": 6e-2, "discriminator": 5e-2, "conv1": 1e-2, "head": 1.5e-2}
DELTA_RTOL["stat"] = 1.5e-2
# Optimiser state norms per entry: SGD momentum buffers measured 6.0e-2 (layer2.0.conv2), Adam
# exp_avg 6.3e-2 (d_main 0.bias), exp_avg_sq 9.9e-2 (d_aux 0.weight; float32-float64 1.4e-1).
MOMENT_RTOL = {"momentum": 0.12, "exp_avg": 0.13, "exp_avg_sq": 0.3}
# Final tensors, max |ours - golden| / max |golden|: backbone measured 1.7e-2 (float64 2.2e-2,
# layer1.0.conv1), heads and discriminators 4.5e-3 (d_main 8.weight), stem BN running stats 2.7e-4.
# conv1 (listed once): measured 7.8e-3; the official run itself varies by 7.5e-3 (threads 1/2/3/4,
# float64; 9.8e-3 at other seeds).
FINAL_RTOL = {"backbone": 5e-2, "conv1": 1.5e-2, "other": 1e-2, "stat": 1e-3}
SINGLE_UPDATE_MIN_MISS = 0.5  # `listing_multiplicity=()`: measured 0.69 - 0.79 on backbone deltas


@functools.cache
def _golden():
  with np.load(GOLDEN) as data:
    return {k: data[k] for k in data.files}


def nhwc(x):
  return np.ascontiguousarray(np.moveaxis(np.asarray(x), 1, -1))


def _config(listing_multiplicity=None):
  g = _golden()
  config = method.default_config()
  for data in (config.source_data, config.target_data):
    data.name = "synthetic"  # the data sources are built but never read
  config.input.source_size = tuple(g["src_images"].shape[-2:])
  config.input.target_size = tuple(g["trg_images"].shape[-2:])
  config.train.total_steps = STEPS  # EARLY_STOP + 1 iterations
  # Official lr at iteration i: base * (1 - i / MAX_ITERS) ** 0.9, MAX_ITERS 4.
  config.optimizer.decay_steps = int(g["max_iters"])
  config.optimizer.groups.discriminators.decay_steps = int(g["max_iters"])
  if listing_multiplicity is not None:
    config.optimizer.listing_multiplicity = listing_multiplicity
  config.mesh.data = 1  # batch 1 + 1 on one device (the test session has 8 fake CPU devices)
  return config


def _template(model):
  x = jnp.zeros((1, 33, 33, 3))
  return jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))


def _seeded_variables(config):
  """Official seeded weights: segmenter (official names), d_main / d_aux (prefixed names)."""
  segmenter, disc = method.build_networks(config)
  shapes = convert.torch_shapes(_template(segmenter))
  seg = convert.convert_deeplab_v2(seeded_state_dict(shapes, 0), segmenter, imagenet_init=False)
  info = jnp.zeros((1, 32, 32, config.target_data.num_classes))
  d_shapes = convert.torch_shapes(jax.eval_shape(lambda: disc.init(jax.random.key(0), info)))
  params = {"segmenter": seg["params"]}
  for name in ("d_main", "d_aux"):  # the golden seeds each D on its prefixed names
    prefixed = {f"{name}.{k}": v for k, v in d_shapes.items()}
    d = convert.convert_fc_discriminator(seeded_state_dict(prefixed, 0), disc, prefix=f"{name}.")
    params[name] = d["params"]
  return params, {"batch_stats": seg["batch_stats"]}


def _state_dicts(params, model_state) -> dict[str, dict[str, np.ndarray]]:
  """{'seg' | 'd_main' | 'd_aux': {official name: numpy array}} (segmenter with its BN buffers)."""
  params, model_state = jax.device_get((params, model_state))
  out = {"seg": convert.variables_to_state_dict({"params": params["segmenter"], **model_state})}
  for name in ("d_main", "d_aux"):
    out[name] = convert.variables_to_state_dict({"params": params[name]})
  return out


def _optimizer_moments(opt_state) -> dict[str, dict[tuple[str, str], np.ndarray]]:
  """{'momentum' | 'exp_avg' | 'exp_avg_sq': {(net, official name): array}} from the optax state."""
  kinds = (advent_optimizer.PytorchSgdState, optax.TraceState, optax.ScaleByAdamState)
  is_node = lambda x: isinstance(x, kinds)  # noqa: E731
  out = {"momentum": {}, "exp_avg": {}, "exp_avg_sq": {}}
  for node in jax.tree.leaves(opt_state, is_leaf=is_node):
    if isinstance(node, optax.ScaleByAdamState):
      trees = {"exp_avg": node.mu, "exp_avg_sq": node.nu}
    elif isinstance(node, optax.TraceState):
      trees = {"momentum": node.trace}
    elif isinstance(node, advent_optimizer.PytorchSgdState):
      trees = {"momentum": node.momentum_buffer}
    else:
      continue
    # Parameters of other optax slots are MaskedNode (no leaves) in this slot's state.
    for path, value in jax.tree_util.tree_leaves_with_path(trees):
      kind, net, *rest = leaf_path(path).split("/")
      key = ("seg" if net == "segmenter" else net, convert.torch_name(rest))
      assert key not in out[kind], (kind, key)
      out[kind][key] = np.asarray(jax.device_get(value))
  return out


def trajectory(listing_multiplicity=None) -> dict:
  """Runs the 2 golden iterations with jaxseg's trainer step; returns what the tests compare."""
  g = _golden()
  config = _config(listing_multiplicity)
  assert not config.model.frozen_bn  # official model.train(): batch statistics
  assert config.loss.name == "advent"
  task = method.make_task(config)
  batches = [
      {
          "source": {
              "image": nhwc(g["src_images"][k]),  # already mean-subtracted BGR, 0-255
              "mask": g["src_labels"][k].astype(np.int32),
          },
          "target": {"image": nhwc(g["trg_images"][k])},
      }
      for k in range(STEPS)
  ]
  mesh = shd.make_mesh(config.mesh, jax.devices()[:1])
  ts = loop.setup(config, task, batches[0], mesh=mesh)
  params, model_state = _seeded_variables(config)
  assert jax.tree.structure(params) == jax.tree.structure(ts.abstract_state["params"])
  assert jax.tree.structure(model_state) == jax.tree.structure(ts.abstract_state["model_state"])
  # The trainer's own pretrained-weight path places them in the state's shardings (the optimiser
  # state does not depend on the parameter values).
  state, _ = loop.restore_or_init(ts, None, lambda p, ms: (params, model_state))
  init = _state_dicts(state["params"], state["model_state"])
  step = loop.make_train_step(task, ts)
  metrics = []
  for batch in batches:
    state, m, flags = step(state, shd.global_batch(batch, ts.batch_sharding))
    flags = jax.device_get(flags)
    assert not any(bool(v) for v in flags.values()), flags
    metrics.append({k: float(v) for k, v in jax.device_get(m).items()})
  return dict(
      metrics=metrics,
      init=init,
      final=_state_dicts(state["params"], state["model_state"]),
      moments=_optimizer_moments(state["opt_state"]),
      step=int(state["step"]),
  )


@pytest.fixture(scope="module")
def run():
  return trajectory()


def _rel(ours, ref) -> np.ndarray:
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  return np.abs(ours - ref) / np.maximum(np.abs(ref), 1e-30)


def _norms(tensors: dict, names) -> np.ndarray:
  return np.array([np.linalg.norm(tensors[n].astype(np.float64)) for n in names])


def _delta_norms(run, net, names) -> np.ndarray:
  init, final = run["init"][net], run["final"][net]
  return np.array([np.linalg.norm(final[n].astype(np.float64) - init[n]) for n in names])


def _is_stat(name: str) -> bool:
  return name.endswith(("running_mean", "running_var"))


def _delta_class(net: str, name: str, multiplicity: int) -> str:
  if net != "seg":
    return "discriminator"
  if _is_stat(name):
    return "stat"
  if name.startswith(("layer5.", "layer6.")):
    return "head"
  return "conv1" if multiplicity == 1 else "backbone"


def _assert_within(what, names, ours, ref, rtol):
  bad = _rel(ours, ref) > rtol
  assert not bad.any(), (what, rtol, dict(zip(np.asarray(names)[bad], _rel(ours, ref)[bad])))


@pytest.mark.ci
def test_paper_config_defaults_and_single_update_flag():
  c = method.default_config()
  for section in (c, c.source_only, c.self_train):
    o = section.optimizer
    assert o.listing_multiplicity == method.ADVENT_LISTING_MULTIPLICITY
    assert o.decay_steps == o.groups.discriminators.decay_steps == method.ADVENT_MAX_ITERS
    assert section.train.total_steps == 120000  # EARLY_STOP, before the 250000-step horizon
  c.optimizer.listing_multiplicity = ()  # --config.optimizer.listing_multiplicity=()
  assert c.optimizer.listing_multiplicity == ()
  # Horizon: decay_steps replaces total_steps; 0 keeps total_steps.
  o = optim.optimizer_group("x", learning_rate=1.0, schedule="poly", poly_power=0.9)
  o.decay_steps = 4
  horizon = optim.make_schedule(o, total_steps=2)
  o.decay_steps = 0
  default = optim.make_schedule(o, total_steps=4)
  for i in range(3):
    assert float(horizon(i)) == float(default(i)) == pytest.approx((1 - i / 4) ** 0.9, rel=1e-6)


@pytest.mark.ci
def test_paper_multiplicities_are_the_official_listings():
  """ADVENT_LISTING_MULTIPLICITY on jaxseg's paths == the golden `seg_param_multiplicity`."""
  g = _golden()
  segmenter, _ = method.build_networks(_config())
  paths = {
      convert.torch_name(leaf_path(p).split("/")): "segmenter/" + leaf_path(p)
      for p, _ in jax.tree_util.tree_leaves_with_path(_template(segmenter)["params"])
  }

  def count(path):
    return next((k for rx, k in method.ADVENT_LISTING_MULTIPLICITY if re.search(rx, path)), 1)

  trained = g["seg_param_group"] >= 0
  assert sorted(paths) == sorted(g["seg_names"][trained].tolist())  # BN affine: not params
  ours = [count(paths[n]) for n in g["seg_names"][trained]]
  np.testing.assert_array_equal(ours, g["seg_param_multiplicity"][trained])
  assert (g["seg_param_multiplicity"][~trained] == 0).all()
  # Group 0 (1x) lists 314 entries: conv1 + 99 Bottleneck convs x3 + 4 downsample convs x4.
  np.testing.assert_array_equal(g["seg_group_sizes"], [1 + 99 * 3 + 4 * 4, 16])


@pytest.mark.ci
def test_seeded_init_is_the_golden_init(run):
  g = _golden()
  for net in NETS:
    names = g[f"{net}_names"].tolist()
    assert sorted(names) == sorted(run["init"][net]), net
    np.testing.assert_allclose(_norms(run["init"][net], names), g[f"{net}_norm_init"], rtol=1e-6)


@pytest.mark.ci
def test_every_loss_term_per_iteration(run):
  g = _golden()
  assert run["step"] == STEPS
  for k, m in enumerate(run["metrics"]):
    ours = [m[key] for key in LOSS_KEYS]
    _assert_within(
        f"iteration {k}", LOSS_KEYS, ours, [g[f"loss_{key}"][k] for key in LOSS_KEYS], LOSS_RTOL[k]
    )


@pytest.mark.ci
def test_learning_rates_per_iteration(run):
  g = _golden()
  # The heads' group is 10x the backbone's (the 'default/x10' optax slot).
  np.testing.assert_allclose(g["lr_seg"][:, 1], 10 * g["lr_seg"][:, 0], rtol=1e-12)
  assert method.default_config().optimizer.lr_multipliers == ((method.HEADS, 10.0),)
  for k, m in enumerate(run["metrics"]):
    assert _rel(m["learning_rate/default"], g["lr_seg"][k, 0]) <= LR_RTOL, k
    for name in ("d_main", "d_aux"):
      assert _rel(m["learning_rate/discriminators"], g[f"lr_{name}"][k]) <= LR_RTOL, (k, name)


@pytest.mark.ci
def test_final_tensors(run):
  g = _golden()
  for key in (k for k in g if k.startswith("final_")):
    net, name = key.removeprefix("final_").split(".", 1)
    ref = g[key]
    ours = run["final"][net][name][tuple(slice(0, s) for s in ref.shape)]  # layer5: 256 of 1024
    err = np.abs(ours.astype(np.float64) - ref).max() / np.abs(ref).max()
    kind = "stat" if _is_stat(name) else "other"
    if net == "seg" and name.startswith(("conv1.", "layer1.")):
      kind = "conv1" if name.startswith("conv1.") else "backbone"
    assert err <= FINAL_RTOL[kind], (key, err)


@pytest.mark.ci
def test_norms_and_deltas_per_entry(run):
  """Every state-dict entry: final norm and ||final - init|| (BN running stats move; affine frozen)."""
  g = _golden()
  for net in NETS:
    names = np.array(g[f"{net}_names"].tolist())
    stat = np.array([_is_stat(n) for n in names])
    norm = _norms(run["final"][net], names)
    for kind, sel in (("param", ~stat), ("stat", stat)):
      _assert_within(
          f"{net} norm", names[sel], norm[sel], g[f"{net}_norm_final"][sel], NORM_RTOL[kind]
      )
    delta = _delta_norms(run, net, names)
    golden_zero = g[f"{net}_delta_norm"] == 0
    # Exactly the frozen BN affine parameters stay bit-identical (103 + stem; running stats move).
    np.testing.assert_array_equal(delta == 0, golden_zero, err_msg=net)
    if net == "seg":
      assert golden_zero.sum() == 2 * 104 and not (golden_zero & stat).any()
    mult = g["seg_param_multiplicity"] if net == "seg" else np.zeros(len(names), int)
    classes = np.array([_delta_class(net, n, k) for n, k in zip(names, mult)])
    for kind in set(classes[~golden_zero]):
      sel = (classes == kind) & ~golden_zero
      _assert_within(
          f"{net} delta", names[sel], delta[sel], g[f"{net}_delta_norm"][sel], DELTA_RTOL[kind]
      )


@pytest.mark.ci
def test_optimizer_moments(run):
  g = _golden()
  momentum = run["moments"]["momentum"]
  has_buffer = g["seg_opt_momentum_buffer_norm"] >= 0
  names = g["seg_names"][has_buffer]
  # Buffers exist for exactly the 120 trained tensors (BN is not in the optimiser).
  assert sorted(momentum) == sorted(("seg", n) for n in names) and len(names) == 120
  ours = _norms({n: momentum[("seg", n)] for n in names}, names)
  _assert_within(
      "momentum",
      names,
      ours,
      g["seg_opt_momentum_buffer_norm"][has_buffer],
      MOMENT_RTOL["momentum"],
  )
  for net in ("d_main", "d_aux"):
    names = g[f"{net}_names"].tolist()
    for kind in ("exp_avg", "exp_avg_sq"):
      ours = _norms({n: run["moments"][kind][(net, n)] for n in names}, names)
      _assert_within(f"{net} {kind}", names, ours, g[f"{net}_opt_{kind}_norm"], MOMENT_RTOL[kind])


# Slow tier only (a second full-width R101 compilation, ~1 min of CI): that the listing quirk moves the
# listed tensors and nothing else is checked in CI on the optimiser alone by
# tests/test_optimizer_listing.py::test_repeated_listings_match_pytorch_single_tensor_sgd.
def test_single_update_misses_the_backbone_but_not_heads_and_discriminators():
  """`listing_multiplicity=()` (each tensor updated once per step: the recipe's intent)."""
  g = _golden()
  single = trajectory(listing_multiplicity=())
  names = np.array(g["seg_names"].tolist())
  mult = g["seg_param_multiplicity"]
  delta = _delta_norms(single, "seg", names)
  listed = mult > 1  # every Bottleneck / downsample conv
  rel = _rel(delta[listed], g["seg_delta_norm"][listed])
  assert (rel > SINGLE_UPDATE_MIN_MISS).all(), dict(zip(names[listed], rel))
  heads = np.array([n.startswith(("layer5.", "layer6.")) for n in names])
  _assert_within(
      "single: heads", names[heads], delta[heads], g["seg_delta_norm"][heads], DELTA_RTOL["head"]
  )
  for net in ("d_main", "d_aux"):
    d_names = g[f"{net}_names"].tolist()
    _assert_within(
        f"single: {net}",
        d_names,
        _delta_norms(single, net, d_names),
        g[f"{net}_delta_norm"],
        DELTA_RTOL["discriminator"],
    )
  for key in LOSS_KEYS:  # iteration 0 precedes any update
    assert _rel(single["metrics"][0][key], g[f"loss_{key}"][0]) <= LOSS_RTOL[0], key
