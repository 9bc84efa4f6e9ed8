"""The trainer's extension points for multi-network, multi-source, multi-stage methods.

Optimiser groups with their own optimiser (vs PyTorch's SGD and Adam update rules in numpy),
per-term / per-group metrics and the NaN guard, several named data sources, evaluation during
training with a best checkpoint, the post-update hook (EMA) and per-stage trainer configs.
"""

import json
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.errors import ConfigError
from jaxseg.train import loop
from jaxseg.train import sharding as shd
from jaxseg.train.config import check_config_keys, stage_trainer_config, trainer_config
from jaxseg.train.metrics import read_metrics
from jaxseg.train.optimizer import build_optimizer, optimizer_group

import subprocs
import toy
import toy_multi

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# An analytic two-network objective: L = 0.5 sum c1 (w - a)^2 + 0.5 sum c2 (h - b)^2 + sum d v^2 + e v.
A, B = np.array([0.5, -1.0, 2.0, 0.0]), np.array([1.0, -0.5, 0.25])
C1, C2 = np.array([1.0, 2.0, 0.5, 3.0]), np.array([0.7, 1.3, 2.0])
D, E = np.array([0.3, 1.0, 2.0]), np.array([0.5, -0.2, 1.5])
INIT = {
    "seg": {
        "body": np.array([1.0, 1.0, -1.0, 0.5]),
        "head": np.array([0.0, 0.3, -0.7]),
        "stem": np.array([2.0, 2.0]),
    },
    "disc": {"v": np.array([0.4, -1.2, 0.9])},
}


def _analytic_task():
  def init_fn(rng, batch):
    del rng, batch
    return {"params": jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), INIT)}

  def loss_fn(params, model_state, batch, rng):
    del batch, rng
    w, h, v = params["seg"]["body"], params["seg"]["head"], params["disc"]["v"]
    seg = (
        0.5 * jnp.sum(C1 * (w - A) ** 2)
        + 0.5 * jnp.sum(C2 * (h - B) ** 2)
        + 0 * jnp.sum(params["seg"]["stem"])
    )
    disc = jnp.sum(D * v**2 + E * v)
    return seg + disc, ({"seg": seg, "disc": disc}, model_state)

  return loop.TrainTask(
      init_fn=init_fn, loss_fn=loss_fn, train_source=toy.ToySource(16), augment=toy.ToyAugment()
  )


def _reference(steps, total):
  """PyTorch SGD(momentum 0.9, wd 5e-4, head 10x) + Adam(betas (0.9, 0.99)) under poly, in numpy."""
  p = jax.tree.map(lambda x: x.astype(np.float64), INIT)
  buf, m, v2 = {}, np.zeros(3), np.zeros(3)
  trajectory = []
  for t in range(steps):
    poly = (1 - t / total) ** 0.9
    grads = {"body": C1 * (p["seg"]["body"] - A), "head": C2 * (p["seg"]["head"] - B)}
    for name, mult in (("body", 1.0), ("head", 10.0)):
      d_p = grads[name] + 5e-4 * p["seg"][name]
      buf[name] = d_p if t == 0 else 0.9 * buf[name] + d_p
      p["seg"][name] = p["seg"][name] - 0.05 * mult * poly * buf[name]
    g = 2 * D * p["disc"]["v"] + E
    m = 0.9 * m + 0.1 * g
    v2 = 0.99 * v2 + 0.01 * g * g
    step_size = 1e-2 * poly / (1 - 0.9 ** (t + 1))
    denom = np.sqrt(v2) / np.sqrt(1 - 0.99 ** (t + 1)) + 1e-8
    p["disc"]["v"] = p["disc"]["v"] - step_size * m / denom
    trajectory.append(jax.tree.map(np.copy, p))
  return trajectory


def _analytic_config(total=5):
  c = toy.toy_config(total_steps=total)
  c.optimizer.update(
      name="momentum",
      learning_rate=0.05,
      momentum=0.9,
      weight_decay=5e-4,
      schedule="poly",
      poly_power=0.9,
      lr_multipliers=((r"^seg/head", 10.0),),
      frozen=r"^seg/stem",
  )
  with c.unlocked():
    c.optimizer.groups.disc = optimizer_group(
        r"^disc/",
        name="adam",
        learning_rate=1e-2,
        b1=0.9,
        b2=0.99,
        weight_decay=0.0,
        schedule="poly",
        poly_power=0.9,
    )
  return c


def test_two_optimizer_groups_match_pytorch_sgd_and_adam():
  total = 5
  config = _analytic_config(total)
  task = _analytic_task()
  example = toy.ToySource(16)[0]
  example = {k: np.stack([v] * 8) for k, v in example.items()}
  ts = loop.setup(config, task, example)
  step = loop.make_train_step(task, ts)
  state = ts.init_state()
  batch = shd.global_batch(example, ts.batch_sharding)
  reference = _reference(total, total)
  for t in range(total):
    state, metrics, flags = step(state, batch)
    got = jax.device_get(state["params"])
    for path in (("seg", "body"), ("seg", "head"), ("disc", "v")):
      np.testing.assert_allclose(
          got[path[0]][path[1]],
          reference[t][path[0]][path[1]],
          rtol=2e-5,
          atol=1e-6,
          err_msg=f"step {t} {path}",
      )
    np.testing.assert_array_equal(
        got["seg"]["stem"], INIT["seg"]["stem"].astype(np.float32)
    )  # frozen
    # Per-group learning rates and gradient norms; every loss term; the non-finite flags.
    assert float(metrics["learning_rate/default"]) == pytest.approx(
        0.05 * (1 - t / total) ** 0.9, rel=1e-5
    )
    assert float(metrics["learning_rate/disc"]) == pytest.approx(
        1e-2 * (1 - t / total) ** 0.9, rel=1e-5
    )
    prev = INIT if t == 0 else reference[t - 1]
    g_disc = 2 * D * prev["disc"]["v"] + E
    assert float(metrics["grad_norm/disc"]) == pytest.approx(np.linalg.norm(g_disc), rel=1e-4)
    assert {"loss", "seg", "disc"} <= set(metrics) and "grad_norm" not in metrics
    assert set(flags) == {"loss", "seg", "disc", "grad/default", "grad/disc"}
    assert not any(bool(v) for v in jax.device_get(flags).values())


def test_group_config_keys_are_checked():
  config = _analytic_config()
  check_config_keys(config, trainer_config())  # named groups with optimiser keys are fine
  with config.unlocked():
    config.optimizer.groups.disc.betas = (0.9, 0.99)  # not a key: b1 / b2
  with pytest.raises(ConfigError, match=r"optimizer\.groups\.disc\.betas"):
    check_config_keys(config, trainer_config())
  with pytest.raises(ConfigError, match=r"optimizer\.groups\.disc\.betas"):
    build_optimizer(config.optimizer, {"d": np.zeros(2)}, 10)  # where groups are built, too
  with pytest.raises(ConfigError, match="momentumm"):
    optimizer_group(r"^d", momentumm=0.9)


def _diverging_task():
  """'adv' = sqrt(v0): SGD on it drives v0 below zero within a few steps (NaN value and gradient)."""

  def init_fn(rng, batch):
    del rng, batch
    return {"params": {"seg": {"w": jnp.ones(3)}, "disc": {"v": jnp.ones(2)}}}

  def loss_fn(params, model_state, batch, rng):
    del batch, rng
    seg = jnp.sum((params["seg"]["w"] - 2.0) ** 2)
    adv = jnp.sqrt(params["disc"]["v"][0])
    return seg + adv, ({"seg": seg, "adv": adv}, model_state)

  return loop.TrainTask(
      init_fn=init_fn, loss_fn=loss_fn, train_source=toy.ToySource(16), augment=toy.ToyAugment()
  )


def test_nonfinite_error_names_step_terms_and_groups(tmp_path):
  config = toy.toy_config(total_steps=20, log_every=10, checkpoint_every=1, async_checkpoint=False)
  config.optimizer.update(name="sgd", learning_rate=0.3, weight_decay=0.0, schedule="constant")
  with config.unlocked():
    config.optimizer.groups.disc = optimizer_group(
        r"^disc/", name="sgd", learning_rate=0.3, weight_decay=0.0, schedule="constant"
    )
  with pytest.raises(loop.NonFiniteLossError) as info:
    loop.train(config, str(tmp_path), _diverging_task())
  message = str(info.value)
  v0, bad = np.float32(1.0), 0  # v0 -= 0.3 * 0.5 / sqrt(v0) until it is negative
  while v0 >= 0:
    v0, bad = v0 - np.float32(0.15) / np.sqrt(v0), bad + 1
  assert bad < 10  # found at once, not at log_every = 10
  assert f"at step {bad + 1} (optimiser step {bad})" in message
  assert "['adv', 'loss']" in message and "'seg'" not in message
  assert "['disc']" in message
  from jaxseg.train import checkpoint as ckpt_lib

  assert ckpt_lib.Checkpointer(str(tmp_path)).latest_step() == bad  # nothing written past the NaN


def test_two_sources_are_separate_streams(tmp_path):
  config = toy_multi.two_network_config(total_steps=4)
  task = toy_multi.two_network_task()
  seen = []
  real_step = loop.make_train_step

  def spy(task, ts):
    step = real_step(task, ts)

    def wrapped(state, batch):
      seen.append(jax.tree.map(lambda x: (x.shape, np.asarray(jax.device_get(x))), batch))
      return step(state, batch)

    wrapped._cache_size = step._cache_size
    return wrapped

  loop.make_train_step = spy
  try:
    loop.train(config, str(tmp_path), task)
  finally:
    loop.make_train_step = real_step
  assert len(seen) == 4
  first = seen[0]
  assert first["source"]["image"][0] == (16, 12, 16, 3) and first["source"]["mask"][0] == (
      16,
      12,
      16,
  )
  assert first["target"]["image"][0] == (8, 8, 8, 3) and "mask" not in first["target"]
  # Each source walks its own shuffled epoch: 4 target batches of 8 are 32 distinct of its 48 examples,
  # 4 source batches of 16 are 64 distinct of 96, and the two shuffles differ.
  target_ids = np.concatenate([b["target"]["index"][1] for b in seen])
  source_ids = np.concatenate([b["source"]["index"][1] for b in seen])
  assert len(set(target_ids.tolist())) == 32 and len(set(source_ids.tolist())) == 64
  assert not np.array_equal(target_ids[:8], np.sort(target_ids[:8]))
  assert not np.array_equal(source_ids[:8] % 48, target_ids[:8])
  data = list((tmp_path / "checkpoints" / "4" / "data").glob("*.json"))
  state = (
      json.loads(json.loads(data[0].read_text()))
      if isinstance(json.loads(data[0].read_text()), str)
      else json.loads(data[0].read_text())
  )
  assert set(state) == {"source", "target"}
  records = read_metrics(str(tmp_path))
  assert {
      "seg",
      "adv",
      "disc",
      "grad_norm/default",
      "grad_norm/discriminator",
      "learning_rate/discriminator",
  } <= set(records[-1])


def _score_evaluator(calls):
  """An evaluator whose score peaks at step 4, and whose jitted function must not recompile."""

  @jax.jit
  def score(params, step):
    return -jnp.abs(step.astype(jnp.float32) - 4.0) + 0.0 * jnp.sum(params["head"]["kernel"])

  def make(ts):
    del ts

    def evaluate(state):
      calls.append(score._cache_size())
      return {"score": float(score(state["params"], state["step"]))}

    return evaluate

  return make


def test_eval_during_training_keeps_the_best_checkpoint(tmp_path):
  calls = []
  import dataclasses

  task = dataclasses.replace(toy.toy_task(), make_evaluator=_score_evaluator(calls))
  config = toy.toy_config(
      total_steps=8,
      eval_every=2,
      best_metric="score",
      best_mode="max",
      checkpoint_every=2,
      keep_checkpoints=1,
  )
  state = loop.train(config, str(tmp_path), task)
  assert int(state["step"]) == 8
  assert calls == [0, 1, 1, 1]  # evaluated at 2, 4, 6, 8; compiled once
  evals = [r for r in read_metrics(str(tmp_path)) if "eval/score" in r]
  assert [(r["step"], r["eval/score"]) for r in evals] == [
      (2, -2.0),
      (4, 0.0),
      (6, -2.0),
      (8, -4.0),
  ]
  best, _ = loop.load_state(config, str(tmp_path), task, _toy_example(), which="best")
  latest, _ = loop.load_state(config, str(tmp_path), task, _toy_example())
  assert int(best["step"]) == 4 and int(latest["step"]) == 8
  assert sorted(os.listdir(tmp_path / "checkpoints_best")) == ["4"]


def _toy_example():
  ex = toy.ToySource(8)[0]
  return {k: np.stack([v] * 8) for k, v in ex.items()}


def _ema_task(decay=0.5):
  import dataclasses

  base = toy.toy_task()

  def post_update(state):
    ema = jax.tree.map(
        lambda e, p: decay * e + (1 - decay) * p, state["extra"]["ema"], state["params"]
    )
    return dict(state, extra={"ema": ema})

  return dataclasses.replace(
      base, init_extra=lambda params, model_state: {"ema": params}, post_update=post_update
  )


def test_ema_post_update_hook_is_exact_and_checkpointed(tmp_path):
  task = _ema_task()
  config = toy.toy_config(total_steps=4)
  ts = loop.setup(config, task, _toy_example())
  step = loop.make_train_step(task, ts)
  state = ts.init_state()
  expected = jax.device_get(state["params"])
  batch = shd.global_batch(_toy_example(), ts.batch_sharding)
  for _ in range(4):
    state, _, _ = step(state, batch)
    expected = jax.tree.map(
        lambda e, p: 0.5 * e + 0.5 * p, expected, jax.device_get(state["params"])
    )
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
      jax.device_get(state["extra"]["ema"]),
      expected,
  )
  # The slot is part of the checkpoint: a resumed run ends with the same EMA as a straight one.
  straight = loop.train(toy.toy_config(total_steps=6), str(tmp_path / "a"), task)
  loop.train(toy.toy_config(total_steps=2), str(tmp_path / "b"), task)
  resumed = loop.train(toy.toy_config(total_steps=6), str(tmp_path / "b"), task)
  jax.tree.map(
      np.testing.assert_array_equal,
      jax.device_get(straight["extra"]),
      jax.device_get(resumed["extra"]),
  )
  assert not np.array_equal(
      jax.device_get(straight["extra"]["ema"]["head"]["kernel"]),
      jax.device_get(straight["params"]["head"]["kernel"]),
  )


def test_stage_trainer_config_is_complete_and_independent():
  from jaxseg.methods.seam import default_config

  config = default_config()
  config.affinity.optimizer.lr_multipliers = ((r"f9", 20.0),)
  config.affinity.train.total_steps = 7
  aff = stage_trainer_config(config, "affinity")
  main = stage_trainer_config(config, None)
  assert aff.train.total_steps == 7 and main.train.total_steps == config.train.total_steps
  assert aff.optimizer.lr_multipliers == ((r"f9", 20.0),)
  assert main.optimizer.lr_multipliers != aff.optimizer.lr_multipliers
  assert set(aff.train) == set(trainer_config().train) and set(aff.optimizer) == set(
      trainer_config().optimizer
  )
  assert aff.seed == config.seed and aff.mesh == config.mesh


def _run_toy(workdir, env_extra=None):
  env = dict(os.environ, JAX_PLATFORMS="cpu", **(env_extra or {}))
  return subprocess.Popen(
      [sys.executable, os.path.join(ROOT, "tests", "toy_multi.py"), str(workdir)],
      cwd=ROOT,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
  )


def _finish(proc, expect=0):
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == expect, out[-3000:]
  return out


@pytest.mark.slow
@pytest.mark.ci
def test_two_source_stages_resume_exactly_after_sigkill(tmp_path):
  """SIGKILL inside the training stage, then between stages: each relaunch continues exactly."""
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  _finish(_run_toy(straight))

  proc = _run_toy(killed)
  ckpt_dir = killed / "checkpoints"
  subprocs.signal_after_checkpoint(proc, ckpt_dir, min_step=8)
  assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
  saved = max(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
  assert saved < 40 and not (killed / "stages" / "train.json").exists()

  # Relaunch, killed this time inside the 'report' stage, after 'train' finished.
  _finish(_run_toy(killed, {"JAXSEG_TOY_KILL_IN_REPORT": "1"}), expect=-signal.SIGKILL)
  assert (killed / "stages" / "train.json").exists() and not (
      killed / "stages" / "report.json"
  ).exists()
  assert subprocs.iterator_state(straight, 40) == subprocs.iterator_state(
      killed, 40
  )  # both sources' positions
  a = {r["step"]: r for r in read_metrics(str(straight))}
  b = {r["step"]: r for r in read_metrics(str(killed))}
  for s in (36, 40):
    for key in ("seg", "adv", "disc", "grad_norm/discriminator"):
      assert a[s][key] == b[s][key], (s, key)

  task, config = toy_multi.two_network_task(), toy_multi.main_config()
  pa, _ = loop.load_state(config, str(straight), task, toy_multi.example_batch())
  pb, _ = loop.load_state(config, str(killed), task, toy_multi.example_batch())
  jax.tree.map(
      np.testing.assert_array_equal, jax.device_get(pa["params"]), jax.device_get(pb["params"])
  )
  jax.tree.map(
      np.testing.assert_array_equal,
      jax.device_get(pa["opt_state"]),
      jax.device_get(pb["opt_state"]),
  )

  out = _finish(_run_toy(killed))  # The same command: 'train' is skipped, 'report' runs.
  assert "stage train: finished earlier" in out
  assert (killed / "stages" / "report.json").exists() and (killed / "report.json").exists()
  out = _finish(_run_toy(killed))
  assert "stage report: finished earlier" in out


def test_supervised_evaluates_during_training_without_recompiling(tmp_path, monkeypatch):
  """The supervised method's evaluator: eval/miou rows, a best checkpoint, one compile, and the
  evaluate stage scoring the best checkpoint when asked."""
  from jaxseg.methods.supervised import method as sup

  compiled = []
  from jaxseg.evaluation import segmentation

  real = segmentation.confusion_step

  def spy(*args, **kwargs):
    step = real(*args, **kwargs)
    compiled.append(step)
    return step

  monkeypatch.setattr(segmentation, "confusion_step", spy)
  config = sup.default_config()
  config.data.synthetic.update(num_train=32, num_eval=16)
  config.train.update(
      batch_size=8,
      total_steps=4,
      log_every=2,
      checkpoint_every=2,
      eval_every=2,
      best_metric="miou",
      progress_bar=False,
  )
  config.evaluate.update(batch_size=8, num_pictures=0, checkpoint="best")
  config.model.update(width_multiplier=0.125, head_channels=16)
  sup.run(config, str(tmp_path))
  evals = [r for r in read_metrics(str(tmp_path)) if "eval/miou" in r]
  assert [r["step"] for r in evals] == [2, 4]
  assert all(0.0 <= r["eval/miou"] <= 1.0 for r in evals)
  best_step = max(evals, key=lambda r: r["eval/miou"])["step"]
  assert os.listdir(tmp_path / "checkpoints_best") == [str(best_step)]
  assert compiled[0]._cache_size() == 1
  summary = json.loads((tmp_path / "metrics.json").read_text())
  assert summary["step"] == best_step and summary["checkpoint"] == "best"
  assert summary["miou"] == pytest.approx(max(r["eval/miou"] for r in evals), abs=1e-6)


def test_batch_size_that_does_not_split_over_devices_names_the_key(tmp_path):
  config = toy.toy_config(total_steps=2, batch_size=12)  # the test session has 8 CPU devices
  with pytest.raises(ConfigError, match=r"train\.batch_size=12 does not split over the 8 devices"):
    loop.train(config, str(tmp_path), toy.toy_task())
