"""Three official SEAM training iterations reproduced by jaxseg's own trainer step.

Golden: shared/golden/seam/seam_trajectory.npz (README section 6), copied unchanged to
tests/data/seam/trajectory.npz. The official `train_SEAM.py` loop ran 3 steps with the official
`PolyOptimizer` (groups [backbone: lr, wd], [new layers: 10 lr, wd]; SGD momentum 5e-4 by the
positional-argument quirk; poly power 0.9, lr set before the step; max_step 6), frozen conv1a/b2*,
frozen BatchNorm, dropout off, on seeded weights.

Here the state and the step come from `loop.setup` / `loop.make_train_step` with the paper config
(`seam.method.default_config()`), changing only what the golden run changes: total_steps 6
(max_step), batch 2, dropout off. The dataset is never read (`data.name='synthetic'` avoids needing
a VOC root on disk). With dropout off and frozen BatchNorm the step is deterministic: the rng is
not used and `model_state` must come back unchanged.
"""

import jax
import numpy as np
import optax
import pytest

from jaxseg.methods.seam import method
from jaxseg.models import convert
from jaxseg.train import loop
from jaxseg.train import sharding as shd
from jaxseg.train.sharding import leaf_path

import seam_golden as sg

# ~55 s of CPU on 2 cores, 75 s to 2.5 min wall (full-width ResNet-38 at 64x64: state init and step
# compilation, then 3 steps).
pytestmark = [pytest.mark.slow, pytest.mark.ci]

STEPS = 3
LOSS_RTOL = 1e-4
TENSOR_RTOL = 1e-3
# Per-tensor ||p_final - p_init||. Not the README's 1e-3: this float32 trajectory is sensitive at
# step 1 (a step-1 gradient moves up to 1.7% between two parameter sets that differ only by float32
# rounding), so jaxseg in float32 lands 1.05e-3 (b3.conv_branch2a) from jaxseg run in float64, while
# jaxseg in float64 matches the golden to 6.1e-5, the README's own float32-vs-float64 figure.
# Optimiser errors still fail here (measured: no weight decay 4e-3 to 7e-3 on several tensors;
# momentum 0.9 instead of 5e-4 fails every check), and `test_weight_decay_only_row_of_fc8` checks
# the update rule without that sensitivity.
DELTA_RTOL = 2e-3
# README section 6, "Known sensitivity": one f8_3 pre-activation sits 1.7e-5 from the ReLU kink at
# step 1 and a second gate (official z = -4.5e-4) flips at step 2. An implementation on the other
# side ends with exactly one element of final_f8_3.weight (row 31, column 383) 1.2e-3 of max|value|
# away, and param_delta_norm[f8_3.weight] 1.06e-3 relative. jaxseg in float32 is on the other side
# (measured: that element 1.19e-3, the rest of f8_3 <= 1e-3, delta norm 8.8e-4); in float64 it is
# on the golden's side.
KINK_PARAM = "f8_3.weight"
KINK_ELEMENT = (31, 383, 0, 0)
KINK_ELEMENT_RTOL = 2e-3
LOSS_KEYS = (("loss", "loss"), ("cls", "loss_cls"), ("er", "loss_er"), ("ecr", "loss_ecr"))


def _golden():
  return sg.fixture("trajectory")


def _config():
  config = method.default_config()
  config.data.name = "synthetic"  # the data source is built but never read
  config.train.total_steps = int(_golden()["max_step"])
  config.train.batch_size = 2
  config.model.dropout = False  # the golden run puts the 5 Dropout2d in eval mode
  config.mesh.data = 1  # batch 2 on one device (the test session has 8 fake CPU devices)
  return config


def _state_dict(params, model_state) -> dict[str, np.ndarray]:
  """{official name: numpy array (OIHW)} of params and the frozen BatchNorm collection."""
  return convert.variables_to_state_dict(jax.device_get({"params": params, **model_state}))


def _momentum_buffers(opt_state) -> dict[str, np.ndarray]:
  """{official name: SGD momentum buffer} from every optax TraceState of the optimiser state."""
  is_trace = lambda x: isinstance(x, optax.TraceState)
  out = {}
  for node in jax.tree.leaves(opt_state, is_leaf=is_trace):
    if not is_trace(node):
      continue
    # Parameters of other groups are MaskedNode (no leaves) in this group's trace.
    for path, buf in jax.tree_util.tree_leaves_with_path(node.trace):
      name = convert.torch_name(leaf_path(path).split("/"))
      assert name not in out, name
      out[name] = np.asarray(jax.device_get(buf))
  return out


@pytest.fixture(scope="module")
def run():
  """Runs the 3 golden steps with jaxseg's trainer step; returns what the tests compare."""
  g = _golden()
  config = _config()
  assert config.model.frozen_bn  # official: BatchNorm on running statistics, affine frozen
  task = method.make_task(config)
  batches = [
      {"image": sg.nhwc(g["x_steps"][k]), "labels": g["labels_steps"][k]} for k in range(STEPS)
  ]
  mesh = shd.make_mesh(config.mesh, jax.devices()[:1])
  ts = loop.setup(config, task, batches[0], mesh=mesh)
  _, variables = sg.seeded_seam()
  params, model_state = loop.split_variables(variables)
  assert jax.tree.structure(params) == jax.tree.structure(ts.abstract_state["params"])
  assert jax.tree.structure(model_state) == jax.tree.structure(ts.abstract_state["model_state"])
  # The trainer's own pretrained-weight path places them in the state's shardings (the optimiser
  # state does not depend on the parameter values).
  state, _ = loop.restore_or_init(ts, None, lambda p, ms: (params, model_state))
  init = _state_dict(state["params"], state["model_state"])
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
      final=_state_dict(state["params"], state["model_state"]),
      momentum=_momentum_buffers(state["opt_state"]),
      step=int(state["step"]),
  )


def _rel(ours, ref) -> float:
  return abs(float(ours) - float(ref)) / max(abs(float(ref)), 1e-30)


def test_seeded_init_is_the_golden_init(run):
  g = _golden()
  names = g["param_names"].tolist()
  assert set(names) <= set(run["init"])  # every official parameter has a jaxseg counterpart
  ours = np.array([np.linalg.norm(run["init"][n].astype(np.float64)) for n in names])
  np.testing.assert_allclose(ours, g["param_norm_init"], rtol=1e-6)


def test_every_loss_term_per_step(run):
  g = _golden()
  assert run["step"] == STEPS
  for k, m in enumerate(run["metrics"]):
    for ours, golden in LOSS_KEYS:
      assert _rel(m[ours], g[golden][k]) <= LOSS_RTOL, (k, ours, m[ours], float(g[golden][k]))


def test_poly_learning_rate_and_gradient_norm_per_step(run):
  g = _golden()
  np.testing.assert_array_equal(g["global_step_after"], np.arange(1, STEPS + 1))
  # Official lr_g = init_lr_g * (1 - k / max_step) ** 0.9 set before step k; group 2 = 10x group 0.
  np.testing.assert_allclose(g["lr_steps"][:, 2], 10 * g["lr_steps"][:, 0], rtol=1e-12)
  for k, m in enumerate(run["metrics"]):
    assert m["learning_rate"] == pytest.approx(g["lr_steps"][k, 0], rel=1e-6), k
    # Raw gradients (no weight decay) of every parameter; frozen ones have none (0) on both sides.
    golden = np.sqrt(np.sum(np.square(g["grad_norm_steps"][k])))
    assert _rel(m["grad_norm"], golden) <= TENSOR_RTOL, (k, m["grad_norm"], golden)


def _kink_flipped(run, g) -> bool:
  """True when the documented f8_3 ReLU-kink effect (and only it) separates the f8_3 weights."""
  ours, ref = run["final"][KINK_PARAM], g[f"final_{KINK_PARAM}"]
  err = np.abs(ours.astype(np.float64) - ref) / np.abs(ref).max()
  outliers = np.argwhere(err > TENSOR_RTOL)
  if not len(outliers):
    return False
  assert [tuple(o) for o in outliers] == [KINK_ELEMENT], (
      f"{KINK_PARAM}: {len(outliers)} elements off by > {TENSOR_RTOL} of max|value| (first "
      f"{outliers[:5].tolist()}); the README's kink effect is the one element {KINK_ELEMENT}"
  )
  assert err[KINK_ELEMENT] <= KINK_ELEMENT_RTOL, err[KINK_ELEMENT]
  return True


def test_final_tensors(run):
  g = _golden()
  for key in (k for k in g if k.startswith("final_")):
    name = key.removeprefix("final_")
    ref = g[key]
    rows = ref.shape[0]  # b6.conv_branch2a: the golden keeps the first 32 rows
    ours = run["final"][name][:rows]
    if name == KINK_PARAM and _kink_flipped(run, g):
      keep = np.ones(ref.shape, bool)
      keep[KINK_ELEMENT] = False
      ours, ref = ours[keep], ref[keep]
    sg.assert_close(ours, ref, rel=TENSOR_RTOL, atol=0.0, what=name)
  # Frozen tensors are bit-identical to the seeded init.
  for name in ("conv1a.weight", "b2.conv_branch1.weight"):
    np.testing.assert_array_equal(run["final"][name], g[f"final_{name}"])


def test_param_norms_and_deltas_with_the_frozen_zero_pattern(run):
  g = _golden()
  names = np.array(g["param_names"].tolist())
  final = {n: run["final"][n].astype(np.float64) for n in names}
  norm = np.array([np.linalg.norm(final[n]) for n in names])
  delta = np.array([np.linalg.norm(final[n] - run["init"][n]) for n in names])
  np.testing.assert_allclose(norm, g["param_norm_final"], rtol=TENSOR_RTOL)
  golden_zero = g["param_delta_norm"] == 0
  assert golden_zero.sum() == 82  # 8 frozen convs + 74 BatchNorm weights / biases
  np.testing.assert_array_equal(delta == 0, golden_zero)
  # BatchNorm running statistics are not parameters: also unchanged.
  for name in run["init"]:
    if name.endswith(("running_mean", "running_var")):
      np.testing.assert_array_equal(run["final"][name], run["init"][name])
  moved = ~golden_zero
  rel = np.abs(delta[moved] - g["param_delta_norm"][moved]) / g["param_delta_norm"][moved]
  bad = rel > DELTA_RTOL
  assert not bad.any(), dict(zip(names[moved][bad].tolist(), rel[bad].tolist()))


def test_weight_decay_only_row_of_fc8(run):
  """fc8 row 0 (the bg slot) gets no gradient and moves by weight decay alone.

  A gradient-free check of the 10x lr of the new layers, the poly lr of each step, the coupled
  weight decay and the momentum-5e-4 buffer (measured: bit-identical to the golden).
  """
  g = _golden()
  init, ours = run["init"]["fc8.weight"][0], run["final"]["fc8.weight"][0]
  golden_delta = g["final_fc8.weight"][0].astype(np.float64) - init
  # Invisible at the final-tensor tolerance.
  assert 0 < np.abs(golden_delta).max() < 1e-3 * np.abs(init).max()
  err = np.linalg.norm(ours.astype(np.float64) - init - golden_delta)
  assert err <= TENSOR_RTOL * np.linalg.norm(golden_delta), err


def test_momentum_buffers(run):
  g = _golden()
  has_buffer = g["momentum_buffer_norm"] >= 0
  names = np.array(g["param_names"].tolist())[has_buffer]
  # Buffers exist exactly for the 39 trained tensors (frozen convs and BN are not in the optimiser).
  assert sorted(run["momentum"]) == sorted(names.tolist())
  assert has_buffer.sum() == 39
  ours = np.array([np.linalg.norm(run["momentum"][n].astype(np.float64)) for n in names])
  ref = g["momentum_buffer_norm"][has_buffer]
  assert _rel(np.linalg.norm(ours), np.linalg.norm(ref)) <= TENSOR_RTOL
  # Per tensor: the README's float32-port tolerance.
  np.testing.assert_allclose(ours, ref, rtol=1e-2)
