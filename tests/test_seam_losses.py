"""SEAM losses: unit semantics, parity of every term / map / gradient with the official training step
(shared/golden/seam seam_train.npz, cut into tests/data/seam/train.npz)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.losses import seam as L
from jaxseg.models.seam import SEAMHead, resize_bilinear
from jaxseg.train.sharding import leaf_path

import seam_golden as sg

TERMS = ("cls1", "cls2", "er", "ecr1", "ecr2", "rvmin1", "rvmin2", "total")
GOLDEN_TERM = {t: ("loss" if t == "total" else f"loss_{t}") for t in TERMS}
HEAD = ("fc8", "f8_3", "f8_4", "f9")


# ------------------------------------------------------------------------------------------------------------
# Unit semantics.


def test_multilabel_soft_margin_loss():
  logits = np.array([[0.0, 2.0, -1.0], [3.0, -2.0, 0.5]], np.float32)
  labels = np.array([[1, 0, 1], [0, 0, 1]], np.float32)
  sig = 1 / (1 + np.exp(-logits.astype(np.float64)))
  expected = -np.mean(np.mean(labels * np.log(sig) + (1 - labels) * np.log(1 - sig), axis=1))
  assert float(
      L.multilabel_soft_margin_loss(jnp.asarray(logits), jnp.asarray(labels))
  ) == pytest.approx(expected)
  # Stable for large logits (log-sigmoid, no log(0)).
  big = L.multilabel_soft_margin_loss(jnp.asarray([[100.0, -100.0]]), jnp.asarray([[0.0, 1.0]]))
  assert float(big) == pytest.approx(100.0)
  with pytest.raises(AssertionError):
    L.multilabel_soft_margin_loss(jnp.zeros((2, 3)), jnp.zeros((2, 4)))


def test_max_norm_and_max_onehot():
  cam = np.array([[[-1.0, 1.0], [3.0, 5.0]]], np.float32)[..., None]  # one 2x2 map
  out = np.asarray(L.max_norm(jnp.asarray(cam)))[0, ..., 0]
  # relu -> [0, 1, 3, 5]; min 0, max 5: relu(p - 0 - 1e-5) / (5 + 1e-5)
  np.testing.assert_allclose(
      out, np.maximum(np.array([[0, 1], [3, 5]]) - 1e-5, 0) / (5 + 1e-5), rtol=1e-6
  )
  shifted = np.asarray(L.max_norm(jnp.asarray(cam + 10)))[
      0, ..., 0
  ]  # min is subtracted after the relu
  np.testing.assert_allclose(
      shifted, np.maximum(np.array([[9, 11], [13, 15]]) - 9 - 1e-5, 0) / (6 + 1e-5), rtol=1e-6
  )
  x = jnp.asarray([[[[0.7, 0.2, 0.5, 0.5], [0.1, 0.0, 0.0, 0.0]]]])
  onehot = np.asarray(L.max_onehot(x))
  np.testing.assert_allclose(
      onehot[0, 0], [[0.7, 0, 0.5, 0.5], [0.1, 0, 0, 0]]
  )  # value kept, ties kept, bg as is
  np.testing.assert_allclose(np.asarray(L.with_background(x))[0, 0, :, 0], [0.5, 1.0])


def test_adaptive_min_pooling_and_topk_mean():
  cam = np.zeros((2, 4, 4, 3), np.float32)
  cam[0, ..., 0] = np.arange(16).reshape(4, 4) - 2.0  # per-pixel max over channels = this channel
  cam[1] = 5.0
  # k = 16 // 4 = 4 smallest per sample: [-2, -1, 0, 1] -> relu sum 1; [5, 5, 5, 5] -> 20; / (4 * 2)
  assert float(L.adaptive_min_pooling_loss(jnp.asarray(cam))) == pytest.approx(21 / 8)
  errors = np.arange(2 * 2 * 2 * 5, dtype=np.float32).reshape(2, 2, 2, 5)
  k = int(5 * 2 * 2 * 0.2)
  expected = np.mean([np.sort(e.ravel())[-k:] for e in errors])
  assert float(L.topk_mean(jnp.asarray(errors), 0.2)) == pytest.approx(expected)
  with pytest.raises(ValueError, match="top-k"):
    L.topk_mean(jnp.asarray(errors), 0.01)


def test_rescale_view_sizes():
  assert L.rescaled_size((448, 448), 0.3) == (134, 134)
  assert L.rescaled_size((64, 50), 0.3) == (19, 15)
  x = jnp.arange(2 * 64 * 50 * 3, dtype=jnp.float32).reshape(2, 64, 50, 3)
  y = L.rescale_view(x)
  assert y.shape == (2, 19, 15, 3)
  np.testing.assert_allclose(y[:, 0, 0], x[:, 0, 0])  # align_corners=True keeps the corners
  np.testing.assert_allclose(y[:, -1, -1], x[:, -1, -1])
  with pytest.raises(ValueError, match="empty"):
    L.rescale_view(jnp.zeros((1, 3, 3, 1)))


def test_bad_inputs_name_the_problem():
  out = {"cam": jnp.zeros((2, 8, 8, 21))}
  with pytest.raises(ValueError, match="cam_rv"):
    L.seam_loss(out, out, jnp.zeros((2, 20)))
  full = {"cam": jnp.zeros((2, 10, 10, 21)), "cam_rv": jnp.zeros((2, 10, 10, 21))}
  small = {"cam": jnp.zeros((2, 3, 3, 21)), "cam_rv": jnp.zeros((2, 3, 3, 21))}
  with pytest.raises(ValueError, match=r"\[B, 20\]"):
    L.seam_loss(full, small, jnp.zeros((2, 19)))
  with pytest.raises(ValueError, match="batch"):
    L.seam_loss(full, small, jnp.zeros((3, 20)))


# ------------------------------------------------------------------------------------------------------------
# Parity with the official training step (dropout off, see the golden README).


def golden_outputs():
  """View-1 raw maps rebuilt from the official low-res maps (the model's align_corners=True upsample; the
  full-size golden cams are not stored), view-2 raw maps as stored."""
  fwd, tr = sg.fixture("forward"), sg.fixture("train")
  up = lambda a: resize_bilinear(jnp.asarray(sg.nhwc(a)), (64, 64), align_corners=True)
  out1 = {"cam": up(fwd["cam_lowres"]), "cam_rv": up(fwd["pcm_out"])}
  out2 = {
      "cam": jnp.asarray(sg.nhwc(tr["train_cam2_raw"])),
      "cam_rv": jnp.asarray(sg.nhwc(tr["train_cam_rv2_raw"])),
  }
  return out1, out2, jnp.asarray(tr["label"][:, 1:, 0, 0])


def test_view2_and_maps_match_official():
  tr = sg.fixture("train")
  img2 = L.rescale_view(jnp.asarray(sg.nhwc(sg.fixture("forward")["x"])))
  sg.assert_close(img2, sg.nhwc(tr["img2"]), what="img2")
  out1, out2, labels = golden_outputs()
  sg.assert_close(L.global_average_pool(out1["cam"]), tr["label1_gap"][..., 0, 0], what="gap1")
  sg.assert_close(L.global_average_pool(out2["cam"]), tr["label2_gap"][..., 0, 0], what="gap2")
  maps = L.prepare_views(out1, out2, labels)
  for key in ("cam1_s", "cam2_s", "cam_rv1_s", "cam_rv2_s"):
    sg.assert_close(maps[key], sg.nhwc(tr[f"train_{key}"]), what=key)
  sg.assert_close(
      L.ecr_error_map(maps["cam2_s"], maps["cam_rv1_s"]),
      sg.nhwc(tr["tensor_ecr1"]),
      what="ecr1 map",
  )
  sg.assert_close(
      L.ecr_error_map(maps["cam1_s"], maps["cam_rv2_s"]),
      sg.nhwc(tr["tensor_ecr2"]),
      what="ecr2 map",
  )


def test_every_loss_term_matches_official():
  tr = sg.fixture("train")
  out1, out2, labels = golden_outputs()
  total, terms = jax.jit(L.seam_loss)(out1, out2, labels)
  for ours, golden in {**GOLDEN_TERM, "ecr": "loss_ecr", "cls": "loss_cls"}.items():
    ref = float(tr[golden])
    assert abs(float(terms[ours]) - ref) <= 1e-4 * abs(ref) + 1e-7, (ours, float(terms[ours]), ref)
  assert float(total) == float(terms["total"])
  assert float(terms["rvmin2"]) == 0.0  # the official value is exactly 0 on this set


def test_network_view2_outputs_match_official():
  tr = sg.fixture("train")
  out = sg.golden_view_outputs(2)
  sg.assert_close(out["cam"], sg.nhwc(tr["train_cam2_raw"]), what="cam2")
  sg.assert_close(out["cam_rv"], sg.nhwc(tr["train_cam_rv2_raw"]), what="cam_rv2")


def head_gradients():
  """d(term)/d(head kernels) and d(term)/d(backbone taps), every term, on the official backbone features.

  The backbone only reaches the losses through conv4/conv5/conv6, so zero gradients on the taps mean zero
  gradients on every backbone layer.
  """
  _, variables = sg.seeded_seam()
  views = [sg.golden_view_outputs(v) for v in (1, 2)]
  taps = [{k: jnp.asarray(o[k]) for k in ("conv4", "conv5", "conv6")} for o in views]
  images = [
      jnp.asarray(sg.nhwc(sg.fixture("forward")["x"])),
      jnp.asarray(sg.nhwc(sg.fixture("train")["img2"])),
  ]
  labels = jnp.asarray(sg.fixture("train")["label"][:, 1:, 0, 0])
  head = SEAMHead()
  head_params = {k: variables["params"][k] for k in HEAD}

  def terms(hp, taps1, taps2):
    out1 = head.apply({"params": hp}, images[0], taps1, train=False)
    out2 = head.apply({"params": hp}, images[1], taps2, train=False)
    _, t = L.seam_loss(out1, out2, labels)
    return jnp.stack([t[name] for name in TERMS])

  @jax.jit
  def all_grads(hp, taps1, taps2):
    _, vjp = jax.vjp(terms, hp, taps1, taps2)
    return jax.vmap(vjp)(jnp.eye(len(TERMS)))

  return all_grads(head_params, *taps)


def test_head_gradients_match_official():
  tr = sg.fixture("train")
  grads, taps1_grads, taps2_grads = head_gradients()
  names = tr["param_names"].tolist()
  worst = 0.0
  for i, term in enumerate(TERMS):
    golden_norms = tr[f"gradnorm_{GOLDEN_TERM[term]}"]
    for layer in HEAD:
      ours = float(np.linalg.norm(np.asarray(grads[layer]["kernel"][i], np.float64)))
      ref = float(golden_norms[names.index(f"{layer}.weight")])
      assert (ours == 0) == (ref == 0), (term, layer, ours, ref)  # which losses reach which layer
      assert abs(ours - ref) <= 1e-3 * ref, (term, layer, ours, ref)
      worst = max(worst, abs(ours - ref) / max(ref, 1e-30))
    # fc8's bg row gets no gradient from any term (overwritten in the PCM input and in ECR, not in cls / ER).
    assert not np.any(np.asarray(grads["fc8"]["kernel"][i][..., 0]))
    # ECR and the min-pooling term never reach the backbone (detached taps, no-grad PCM input).
    reaches_backbone = any(
        np.any(np.asarray(g[k][i])) for g in (taps1_grads, taps2_grads) for k in g
    )
    if term in ("ecr1", "ecr2", "rvmin1", "rvmin2"):
      assert not reaches_backbone, term
    else:  # cls and ER train the backbone, through conv6 only
      assert reaches_backbone, term
    for g in (taps1_grads, taps2_grads):
      assert not np.any(np.asarray(g["conv4"][i])) and not np.any(np.asarray(g["conv5"][i]))
  # Full head gradients of the total loss (golden OIHW; some rows stored).
  total = TERMS.index("total")
  oihw = lambda layer: np.asarray(grads[layer]["kernel"][total])[0, 0].T
  for ours, ref in (
      (oihw("f8_3"), tr["grad_f8_3"]),
      (oihw("f9"), tr["grad_f9"]),
      (oihw("fc8")[tr["channels"]], tr["grad_fc8_rows"]),
      (oihw("f8_4")[::4], tr["grad_f8_4_every4"]),
  ):
    sg.assert_close(ours, ref[..., 0, 0], rel=1e-3, atol=0.0, what="head gradient")
  print(f"head gradient norms: max relative error {worst:.2e}")


@pytest.mark.slow
def test_all_gradient_norms_match_official():
  """Per-term gradient norm of every trainable tensor (39 convs) through the whole network (minutes on CPU)."""
  model, variables = sg.seeded_seam()
  tr = sg.fixture("train")
  x = jnp.asarray(sg.nhwc(sg.fixture("forward")["x"]))
  labels = jnp.asarray(tr["label"][:, 1:, 0, 0])

  @jax.jit
  def norms(params, cotangent):
    def weighted(p):
      v = {**variables, "params": p}
      out1 = model.apply(v, x, train=False)
      out2 = model.apply(v, L.rescale_view(x), train=False)
      _, t = L.seam_loss(out1, out2, labels)
      return jnp.dot(cotangent, jnp.stack([t[name] for name in TERMS]))

    g = jax.grad(weighted)(params)
    return {
        leaf_path(p): jnp.sqrt(jnp.sum(jnp.square(a.astype(jnp.float32))))
        for p, a in jax.tree_util.tree_leaves_with_path(g)
    }

  from jaxseg.models.convert import torch_name

  names = tr["param_names"].tolist()
  trainable = [n for n, rg in zip(names, tr["param_requires_grad"]) if rg]
  assert len(trainable) == 39
  worst = 0.0
  for i, term in enumerate(TERMS):
    ours = {
        torch_name(tuple(k.split("/"))): float(v)
        for k, v in norms(variables["params"], jax.nn.one_hot(i, len(TERMS))).items()
    }
    golden = tr[f"gradnorm_{GOLDEN_TERM[term]}"]
    for name in trainable:
      ref = float(golden[names.index(name)])
      assert (ours[name] == 0) == (ref == 0), (term, name, ours[name], ref)
      assert abs(ours[name] - ref) <= 1e-3 * ref, (term, name, ours[name], ref)
      worst = max(worst, abs(ours[name] - ref) / max(ref, 1e-30))
  print(f"gradient norms (39 tensors x 8 terms): max relative error {worst:.2e}")


def test_rescale_view_align_corners_switch():
  from jaxseg.losses.seam import rescale_view

  x = jnp.broadcast_to(jnp.arange(10.0)[None, :, None], (2, 10, 1))[
      None
  ]  # [1, 2, 10, 1], varies along W
  official = rescale_view(x, 0.5)  # align_corners=True: corner to corner
  assert float(official[0, 0, 0, 0]) == 0.0 and float(official[0, 0, -1, 0]) == 9.0
  centres = rescale_view(x, 0.5, align_corners=False)  # pixel centres: 0.5, 2.5, ... of the input
  np.testing.assert_allclose(np.asarray(centres[0, 0, :, 0]), [0.5, 2.5, 4.5, 6.5, 8.5], atol=1e-6)
