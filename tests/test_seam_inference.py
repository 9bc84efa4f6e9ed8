"""SEAM multi-scale + flip CAM inference, pseudo labels and the bg-threshold sweep: parity with the official
`infer_SEAM.py` / `evaluation.py` (shared/golden/seam seam_infer.npz / seam_eval.npz, cut into tests/data/seam).
"""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.evaluation.miou import confusion_matrix
from jaxseg.methods.seam import cam_inference as ci

import seam_golden as sg


def golden_passes() -> np.ndarray:
  """The official per-pass CAMs [8, 20, 50, 70] (only the present classes are stored; the rest are 0)."""
  fx = sg.fixture("infer")
  assert fx["cam_passes_other_absmax"] == 0
  passes = np.zeros((8, 20, 50, 70), np.float32)
  passes[:, fx["present"]] = fx["cam_passes_present"]
  return passes


def test_multiscale_inputs_match_official():
  fx = sg.fixture("infer")
  inputs = ci.multiscale_inputs(fx["image"])
  assert [x.shape[:2] for x in inputs] == [(25, 35), (50, 70), (75, 105), (100, 140)]
  for i, x in enumerate(inputs):
    for flipped in (0, 1):
      ref = sg.nhwc(fx[f"input_{2 * i + flipped}"])[0]
      ours = x[:, ::-1] if flipped else x
      ours = (
          ours if i == 0 else ours[::4, ::4]
      )  # the fixture keeps every 4th pixel of the larger passes
      np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)
  assert ci.scaled_size(5, 7, 0.5) == (2, 4)  # Python round: 2.5 -> 2, 3.5 -> 4
  # Normalised float input: resized channel by channel; close to the uint8 path (which rounds to uint8).
  floats = ci.multiscale_inputs(ci.normalize_image(fx["image"]), (0.5,))[0]
  assert np.abs(floats - inputs[0]).max() < 0.1


def test_fusion_matches_official():
  fx = sg.fixture("infer")
  passes = golden_passes()
  fused = ci.fuse_cams(passes)
  present = fx["present"]
  raw_sum = passes.sum(axis=0)
  sg.assert_close(raw_sum[present], fx["sum_cam_raw_present"], atol=1e-7, what="sum")
  sg.assert_close(fused[present], fx["norm_cam_present"], atol=1e-6, what="norm cam")
  absent = np.setdiff1d(np.arange(20), present)
  np.testing.assert_array_equal(np.unique(fused[absent]), fx["norm_cam_other_values"])  # exactly -1
  assert (
      fused[present].min() < -1
  )  # the official zeroing of the minimum pixels gives values far below 0
  np.testing.assert_array_equal(ci.present_classes(fx["label"]), present)


def test_pseudo_label_matches_official():
  fx = sg.fixture("infer")
  norm_cam = np.full((20, 50, 70), -1.0, np.float32)
  norm_cam[fx["present"]] = fx["norm_cam_present"]
  pred = ci.pseudo_label(norm_cam, fx["label"], float(fx["bg_thresh"]))
  assert pred.dtype == np.uint8
  np.testing.assert_array_equal(pred, fx["pred"])
  # An absent class never wins, even with a higher score.
  hacked = norm_cam.copy()
  hacked[0] = 5.0
  np.testing.assert_array_equal(ci.pseudo_label(hacked, fx["label"], 0.26), fx["pred"])
  with pytest.raises(ValueError, match="bg_threshold"):
    ci.pseudo_label(norm_cam, fx["label"], -0.1)


def test_network_passes_match_official():
  """Scale 1.0 and its flip through the full-width network (passes 2, 3; at scale 0.5 both present classes
  lose the PCM's per-pixel winner test everywhere, so those passes are all zero); all scales: slow test.
  """
  fx = sg.fixture("infer")
  _, variables = sg.seeded_seam()
  inputs = ci.multiscale_inputs(fx["image"], (1.0,))
  passes = ci.pass_cams(sg.eval_apply(), variables, inputs, fx["label"], (50, 70))
  assert passes.shape == (2, 20, 50, 70)
  ref = golden_passes()[2:4]
  assert np.abs(ref).max() > 0.01
  sg.assert_close(passes, ref, what="passes 2-3")
  print(
      "passes 2-3 max abs error %.2e (max |ref| %.3g)"
      % (np.abs(passes - ref).max(), np.abs(ref).max())
  )


@pytest.mark.slow
def test_multiscale_cams_match_official():
  fx = sg.fixture("infer")
  _, variables = sg.seeded_seam()
  cams = ci.multiscale_cams(sg.eval_apply(), variables, fx["image"], fx["label"])
  present = fx["present"]
  sg.assert_close(cams[present], fx["norm_cam_present"], what="fused cam")
  print("fused cam max abs error %.2e" % np.abs(cams[present] - fx["norm_cam_present"]).max())
  np.testing.assert_array_equal(ci.pseudo_label(cams, fx["label"]), fx["pred"])


def test_pass_cams_plumbing_with_a_stub_model():
  """Flip handling, channel 0 dropped, label multiplier and array-returning apply functions."""
  rng = np.random.default_rng(0)
  h, w = 6, 10
  weights = rng.standard_normal((3, 21)).astype(np.float32)

  def apply_fn(_, images):  # a per-pixel linear map: flip-equivariant
    return {
        "cam_rv": jnp.einsum("bhwc,ck->bhwk", images, weights),
        "cam": jnp.zeros(images.shape[:3] + (21,)),
    }

  image = rng.standard_normal((h, w, 3)).astype(np.float32)
  image[:, :5] += 3  # not symmetric
  label = np.zeros(20, np.float32)
  label[[2, 7]] = 1
  passes = ci.pass_cams(apply_fn, None, [image], label, (h, w))
  assert passes.shape == (2, 20, h, w)
  expected = np.einsum("hwc,ck->khw", image, weights)[1:] * label[:, None, None]
  np.testing.assert_allclose(passes[0], expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(passes[1], expected, rtol=1e-5, atol=1e-5)  # un-flipped back
  single = ci.pass_cams(
      lambda v, x: apply_fn(v, x)["cam_rv"], None, [image], label, (h, w), flip=False
  )
  np.testing.assert_array_equal(single, passes[:1])
  with pytest.raises(ValueError, match="no 'cam_rv'"):
    ci.pass_cams(lambda v, x: {"cam": x}, None, [image], label, (h, w))
  with pytest.raises(ValueError, match="expected"):
    ci.pass_cams(apply_fn, None, [image], label[:5], (h, w))
  with pytest.raises(ValueError, match="uint8 or normalised float"):
    ci.multiscale_inputs(np.zeros((4, 4, 3), np.int32))


def test_official_miou_matches_official_evaluation():
  ev = sg.fixture("eval")
  conf = sum(
      np.asarray(confusion_matrix(jnp.asarray(gt), jnp.asarray(pred), 21), np.int64)
      for gt, pred in zip(ev["eval_gt"], ev["eval_pred"])
  )
  iou, miou = ci.official_miou(conf)
  np.testing.assert_allclose(iou, ev["eval_iou"], rtol=0, atol=1e-12)
  assert abs(miou - float(ev["eval_miou"])) < 1e-12
  assert iou[17] == 0  # absent from gt and predictions: counts as 0 in the official mean


def test_threshold_sweep_matches_brute_force():
  rng = np.random.default_rng(1)
  cams, labels, gts = [], [], []
  for shape in ((12, 9), (7, 15)):
    label = np.zeros(20, np.float32)
    label[rng.choice(20, 2, replace=False)] = 1
    cam = rng.uniform(-0.2, 1, (20, *shape)).astype(np.float32)
    gt = rng.integers(0, 21, shape).astype(np.uint8)
    gt[rng.random(shape) < 0.1] = 255
    cam[:, :3, :3] = (
        0.5  # ties with the 0.5 threshold (bg wins) and between classes (lower index wins)
    )
    cams.append(cam), labels.append(label), gts.append(gt)
  thresholds = (0.0, 0.26, 0.5)
  sweep = ci.threshold_sweep(cams, labels, gts, thresholds)
  for t_index, t in enumerate(thresholds):
    tp, p, g = np.zeros(21), np.zeros(21), np.zeros(21)
    for cam, label, gt in zip(cams, labels, gts):  # official evaluation.py, npy mode
      scores = np.zeros((21, *gt.shape), np.float32)
      for c in np.nonzero(label > 1e-5)[0]:
        scores[c + 1] = cam[c]
      scores[0] = t
      pred = np.argmax(scores, axis=0)
      valid = gt < 255
      for c in range(21):
        p[c] += np.sum((pred == c) & valid)
        g[c] += np.sum((gt == c) & valid)
        tp[c] += np.sum((gt == c) & (pred == gt) & valid)
    iou = tp / (g + p - tp + 1e-10)
    np.testing.assert_allclose(sweep["iou"][t_index], iou, atol=1e-9)
    assert sweep["miou"][t_index] == pytest.approx(iou.mean(), abs=1e-9)
  assert sweep["best_miou"] == max(sweep["miou"])
  assert len(ci.OFFICIAL_THRESHOLD_SWEEP) == 60 and ci.OFFICIAL_THRESHOLD_SWEEP[26] == 0.26
  with pytest.raises(ValueError, match="expected num_classes"):
    ci.threshold_sweep(cams, labels, gts, thresholds, num_classes=5)
  with pytest.raises(ValueError, match="do not match"):
    ci.threshold_sweep(cams[:1], labels[:1], [gts[1]], thresholds)
  # Pseudo labels agree with the sweep's predictions (same tie rules).
  pred = ci.pseudo_label(cams[0], labels[0], 0.5)
  assert (pred[:3, :3] == 0).all()
  np.testing.assert_array_equal(
      pred,
      np.where(
          np.max(np.where(labels[0][:, None, None] > 0, cams[0], -np.inf), 0) > 0.5,
          np.argmax(np.where(labels[0][:, None, None] > 0, cams[0], -np.inf), 0) + 1,
          0,
      ),
  )
