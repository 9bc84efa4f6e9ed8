"""The `uda` method: objectives route gradients as ADVENT's two optimiser steps do; the embedded
pipeline (source-only -> AdvEnt -> pseudo labels -> self-training -> evaluation) runs end to end."""

import json
import os
import subprocess
import sys

import inference_check
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.methods.uda import method
from jaxseg.tools import results

import subprocs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(objective):
  config = method.default_config()
  config.model.update(width_multiplier=0.0625, depth_blocks=(1, 1, 1, 1), discriminator_width=4)
  config.target_data.num_classes = 5
  config.loss.name = objective
  segmenter, disc = method.build_networks(config)
  rng = np.random.default_rng(0)
  batch = {
      "source": {
          "image": jnp.asarray(rng.normal(size=(2, 40, 48, 3)), jnp.float32),
          "mask": jnp.asarray(rng.integers(0, 5, (2, 40, 48)), jnp.int32),
      },
      "target": {"image": jnp.asarray(rng.normal(size=(2, 32, 40, 3)), jnp.float32)},
  }
  # Compiled: run eagerly, the init's forward pass dispatches one small program per layer (~15 s).
  variables = jax.jit(lambda k, b: method.init_variables(config, k, b))(jax.random.key(0), batch)
  params = variables.pop("params")
  return config, segmenter, disc, params, variables, batch


def _term_grads(config, segmenter, disc, params, state, batch):
  """{term: gradient of that loss term w.r.t. every parameter}, one compiled reverse pass; as numpy
  arrays, so that summing and comparing them below dispatches no small eager JAX programs."""

  def terms(p):
    _, (t, _) = method.uda_loss(
        segmenter, disc, config.loss, config.loss.name, p, state, batch, None
    )
    return t

  return jax.device_get(jax.jit(jax.jacrev(terms))(params))


def _grads(config, term_grads, keep):
  """The gradient of the objective's weighted terms selected by `keep` (as `uda_loss` weights them)."""
  weights = {
      "adv_trg_main": config.loss.adv_main,
      "adv_trg_aux": config.loss.adv_aux,
      "seg_src_main": config.loss.seg_main,
      "seg_src_aux": config.loss.seg_aux,
      "ent_trg_main": config.loss.ent_main,
      "ent_trg_aux": config.loss.ent_aux,
  }
  kept = [(weights.get(k, 1.0), g) for k, g in term_grads.items() if keep(k)]
  return jax.tree.map(lambda *gs: sum(w * g for (w, _), g in zip(kept, gs)), *[g for _, g in kept])


def _norm(tree):
  return float(np.sqrt(sum(np.sum(np.square(x, dtype=np.float64)) for x in jax.tree.leaves(tree))))


def test_advent_gradients_reach_each_network_from_its_own_terms():
  config, seg, disc, params, state, batch = _tiny("advent")
  term_grads = _term_grads(config, seg, disc, params, state, batch)
  full = _grads(config, term_grads, lambda k: True)
  d_only = _grads(config, term_grads, lambda k: k.startswith("d_"))
  g_only = _grads(config, term_grads, lambda k: not k.startswith("d_"))
  # Discriminators learn only from their own losses (inputs detached) ...
  for d in ("d_main", "d_aux"):
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9), full[d], d_only[d]
    )
    assert _norm(g_only[d]) == 0.0 and _norm(full[d]) > 0
  # ... and the segmenter only from segmentation + adversarial terms (D frozen there).
  assert _norm(d_only["segmenter"]) == 0.0
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9),
      full["segmenter"],
      g_only["segmenter"],
  )
  adv_only = _grads(config, term_grads, lambda k: k.startswith("adv"))
  assert _norm(adv_only["segmenter"]) > 0  # the adversarial term does reach the segmenter


@pytest.mark.parametrize("objective", ["source_only", "minent"])
def test_source_only_and_minent_never_touch_the_discriminators(objective):
  config, seg, disc, params, state, batch = _tiny(objective)
  grads = _grads(config, _term_grads(config, seg, disc, params, state, batch), lambda k: True)
  assert _norm(grads["d_main"]) == 0.0 and _norm(grads["d_aux"]) == 0.0
  _, (terms, _) = method.uda_loss(seg, disc, config.loss, objective, params, state, batch, None)
  assert ("ent_trg_main" in terms) == (objective == "minent")


def test_bgr_weights_on_rgb_images_compute_the_official_function():
  config = method.default_config()
  config.model.update(width_multiplier=0.0625, depth_blocks=(1, 1, 1, 1))
  segmenter, _ = method.build_networks(config)
  bgr_image = jnp.asarray(np.random.default_rng(0).normal(size=(1, 33, 41, 3)), jnp.float32)
  variables = jax.jit(lambda x: segmenter.init(jax.random.key(0), x, train=False))(bgr_image)
  forward = jax.jit(lambda v, x: segmenter.apply(v, x, train=False)["main"])
  official = forward(variables, bgr_image)
  ours = forward(method.bgr_to_rgb_input(variables), bgr_image[..., ::-1])
  np.testing.assert_allclose(np.asarray(ours), np.asarray(official), atol=1e-5)


def test_images_resize_bicubic_as_advent_and_masks_nearest():
  from PIL import Image

  rng = np.random.default_rng(0)
  example = {
      "image": rng.integers(0, 256, (30, 50, 3)).astype(np.uint8),
      "mask": rng.integers(0, 19, (30, 50)).astype(np.uint8),
  }
  out = method.resize_image_and_mask(example, (12, 20), bicubic=True)
  expected = np.asarray(Image.fromarray(example["image"]).resize((20, 12), Image.BICUBIC))
  np.testing.assert_array_equal(out["image"], expected)
  np.testing.assert_array_equal(
      out["mask"], np.asarray(Image.fromarray(example["mask"]).resize((20, 12), Image.NEAREST))
  )
  bilinear = method.resize_image_and_mask(example, (12, 20), bicubic=False)["image"]
  assert not np.array_equal(bilinear, expected)


# The demo's headline claim at a CI budget (`configs/uda.py:synthetic,reduced`: 300 scenes per domain,
# 150 steps a stage, 60 target eval scenes), which also runs every stage and checks its outputs. The bounds
# and the seed study they come from: `jaxseg.tools.results` (study uda_ci, README "CI claims").
@pytest.mark.slow
@pytest.mark.ci
def test_reduced_demo_adaptation_beats_source_only(tmp_path, monkeypatch):
  env = subprocs.one_device_env()
  cmd = [
      sys.executable,
      "launch.py",
      "--config=configs/uda.py:synthetic,reduced",
      f"--workdir={tmp_path}",
      "--config.train.progress_bar=False",
  ]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
  assert proc.returncode == 0, proc.stderr[-3000:]
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  miou = {s: metrics[s]["miou"] for s in ("source_only", "adapt", "self_train")}
  assert miou["adapt"] > miou["source_only"] + results.bound("AdvEnt > source only"), metrics
  assert miou["self_train"] > miou["source_only"] + results.bound(
      "self-training > source only"
  ), metrics
  summary = metrics["pseudo_labels"]
  assert set(summary["thresholds"]) == {"esl", "maxprob"}
  assert all(t >= 0.1 for t in summary["thresholds"]["esl"])  # ESL's entropy floor
  assert all(t <= 0.9 for t in summary["thresholds"]["maxprob"])  # BDL's cap
  assert len(os.listdir(tmp_path / "pseudo_labels" / "esl")) == 300
  assert (tmp_path / "pictures" / "uda.png").stat().st_size > 1000
  for stage in ("source_only", "adapt", "pseudo_labels", "self_train", "evaluate"):
    assert (tmp_path / "stages" / f"{stage}.json").exists()
  _check_pseudo_label_pass_resumes(tmp_path)
  # The adapted segmenter loads with the data moved away (no discriminators, optimiser or source read),
  # and scoring the target eval split with it (one device, as the run) gives evaluate's mIoU bit for bit.
  from jaxseg.methods.uda import stages
  from jaxseg.train import sharding as shd

  which = json.loads((tmp_path / "config.json").read_text())["evaluate"]["checkpoint"]
  model = inference_check.load_without_data(tmp_path, monkeypatch, "adapt", which)
  mesh = shd.make_mesh(model.config.mesh, jax.devices()[:1])
  variables = jax.device_put(model.variables, shd.replicated(mesh))
  (scores, _), _ = stages._scorer(model.config, shd.batch_sharding(mesh), None)(variables)
  assert float(scores["miou"]) == miou["adapt"]
  # `python -m jaxseg.predict` resizes to the network input as ADVENT evaluates, masks at the image's size.
  from PIL import Image

  image = np.random.default_rng(0).integers(0, 256, (45, 70, 3), dtype=np.uint8)
  inference_check.write_images(tmp_path / "own_images", [image])
  result = inference_check.predict_without_data(
      tmp_path,
      monkeypatch,
      "--stage=adapt",
      f"--which={which}",
      f"--input={tmp_path / 'own_images'}",
      f"--out={tmp_path / 'predicted'}",
  )
  assert result["written"] == 1
  mask = np.asarray(Image.open(tmp_path / "predicted" / "masks" / "img0.png"))
  assert mask.shape == (45, 70) and mask.max() < len(model.class_names)


def _check_pseudo_label_pass_resumes(workdir):
  """An interrupted pass (some PNGs missing) resumes: the missing ones come back byte-identical, the
  complete ones are not rewritten, the thresholds are read back, not recomputed."""
  sys.path.insert(0, os.path.join(ROOT, "configs"))
  import uda as uda_config
  from jaxseg.methods.uda import stages

  label_dir = workdir / "pseudo_labels" / "esl"
  names = sorted(os.listdir(label_dir))
  lost = {n: (label_dir / n).read_bytes() for n in names[:5]}
  kept = {n: (label_dir / n).stat().st_mtime_ns for n in names[5:]}
  for n in lost:
    (label_dir / n).unlink()
  thresholds = (workdir / "pseudo_labels" / "thresholds.json").read_text()
  stages.pseudo_labels(uda_config.get_config("synthetic,reduced"), str(workdir))
  assert sorted(os.listdir(label_dir)) == names
  assert all((label_dir / n).read_bytes() == data for n, data in lost.items())
  assert all((label_dir / n).stat().st_mtime_ns == t for n, t in kept.items())
  assert (workdir / "pseudo_labels" / "thresholds.json").read_text() == thresholds
