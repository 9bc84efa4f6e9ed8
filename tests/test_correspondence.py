"""MAST / CRW correspondence primitives and MAST's Lab input: parity with the official code's outputs.

Goldens: tests/data/vos/{mast,crw}.npz (copies of shared/golden/vos, see tests/data/vos/README.md), made by
running zlai0/MAST @ a57b043 and ajabri/videowalk @ 047f3f4. Their layouts are PyTorch's (NCHW,
[B, C, T, N]); they are moved to channels-last here. Tolerances as the golden README suggests: float32
outputs atol 1e-5, losses rtol 1e-5, indices and argmaxes exact (ties: see test_crw_lp_topk_indices).
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.data import lab
from jaxseg.losses import correspondence as cr
from jaxseg.losses import walk as rw
from jaxseg.methods.vos import propagation

DATA = Path(__file__).parent / "data" / "vos"
ATOL = 1e-5


@pytest.fixture(scope="module")
def mast():
  return dict(np.load(DATA / "mast.npz"))


@pytest.fixture(scope="module")
def crw():
  return dict(np.load(DATA / "crw.npz"))


def nhwc(x: np.ndarray) -> np.ndarray:
  """[..., C, H, W] -> [..., H, W, C]."""
  return np.moveaxis(x, -3, -1)


def assert_close(actual, expected, atol=ATOL, rtol=1e-5):
  np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=atol, rtol=rtol)


# ------------------------------------------------------------------------------------------------
# MAST goldens
# ------------------------------------------------------------------------------------------------


def test_mast_correlation_and_train_colorizer(mast):
  feats_r = nhwc(mast["mast_col_train_feats_r"])  # [2 refs, B, h, w, C]
  feats_t = nhwc(mast["mast_col_train_feats_t"])
  corr = jax.jit(functools.partial(cr.window_logits, radius=6))(feats_t, feats_r[:1])
  expected = np.transpose(mast["mast_col_train_corr_ref0"], (0, 3, 4, 1, 2)).reshape(2, 24, 24, 169)
  assert corr.shape == (2, 24, 24, 1, 169)
  assert_close(corr[:, :, :, 0], expected)

  colorize = functools.partial(cr.mast_colorize, radius=6, ref_index=[0, 2], current_ind=4)
  out = jax.jit(colorize)(feats_r, feats_t, nhwc(mast["mast_col_train_vals_r"]))
  assert_close(out, nhwc(mast["mast_col_train_out"]))


@pytest.mark.parametrize("radius", [6, 12])
def test_mast_eval_colorizer_local(mast, radius):
  colorize = functools.partial(
      cr.mast_colorize, radius=radius, ref_index=[0, 5, 9], current_ind=10, num_classes=7
  )
  out = jax.jit(colorize)(
      nhwc(mast["mast_col_eval_feats_r"]),
      nhwc(mast["mast_col_eval_feats_t"]),
      mast["mast_col_eval_labels_r"][:, :, 0],  # uint8 ids [N, B, 96, 96]
  )
  assert_close(out, nhwc(mast[f"mast_col_eval_R{radius}_out"]))


def test_mast_roi_colorizer(mast):
  ref_index = [int(i) for i in mast["mast_col_roi_ref_index"]]
  current = int(mast["mast_col_roi_current_ind"])
  args = (
      nhwc(mast["mast_col_eval_feats_r"]),
      nhwc(mast["mast_col_eval_feats_t"]),
      mast["mast_col_eval_labels_r"],  # [N, B, 1, 96, 96] -> [N, B, 96, 96, 1] below
  )
  args = (args[0], args[1], np.moveaxis(args[2], 2, -1))

  def run(align_corners, quirk=True):
    fn = functools.partial(
        cr.mast_colorize,
        radius=12,
        ref_index=ref_index,
        current_ind=current,
        num_classes=7,
        align_corners=align_corners,
        roi_label_offset_quirk=quirk,
    )
    return np.asarray(jax.jit(fn)(*args))

  expected_true = nhwc(mast["mast_col_roi_R12_ac_true_out"])
  assert_close(run(True), expected_true)
  assert_close(run(False), nhwc(mast["mast_col_roi_R12_ac_false_out"]))
  # The label-offset quirk is what the official code computes: using each frame's own offset differs.
  assert np.abs(run(True, quirk=False) - expected_true).max() > 1e-3


def test_mast_colorize_rejects_bad_inputs(mast):
  feats_r = nhwc(mast["mast_col_eval_feats_r"])
  feats_t = nhwc(mast["mast_col_eval_feats_t"])
  labels = mast["mast_col_eval_labels_r"][:, :, 0]
  with pytest.raises(ValueError, match="ROI frames"):
    cr.mast_colorize(
        feats_r, feats_t, labels, radius=2, ref_index=[22, 0, 5], current_ind=26, num_classes=7
    )
  with pytest.raises(ValueError, match="subsampled"):
    cr.mast_colorize(
        feats_r,
        feats_t,
        labels,
        radius=2,
        ref_index=[0, 5, 9],
        current_ind=10,
        subsample=2,
        num_classes=7,
    )


def test_mast_lab_input(mast):
  bgr = mast["mast_lab_in_bgr_u8"]
  expected = nhwc(mast["mast_lab_out"])

  @jax.jit
  def run(bgr):
    formula = lab.mast_normalize_lab(lab.bgr_to_lab(bgr / 255.0, method="formula"))
    return lab.mast_lab_input(bgr, bgr=True), lab.mast_lab_input(bgr[..., ::-1]), formula

  from_bgr, from_rgb, formula = run(bgr)
  assert_close(from_bgr, expected)
  assert_close(from_rgb, expected)
  # The per-pixel formula is what cv2's float Lab approximates with its interpolated table.
  err = np.abs(np.asarray(formula) - expected).max(axis=(0, 1, 2)) * np.array(lab.MAST_LAB_STD)
  assert err.max() < 0.5 and err[0] > 1e-3  # close in Lab units, but not cv2's output


# ------------------------------------------------------------------------------------------------
# Local windows vs the dense reference (random inputs)
# ------------------------------------------------------------------------------------------------


def _random_inputs(seed, n, b, h, w, c, v):
  rng = np.random.default_rng(seed)
  query = rng.standard_normal((b, h, w, c)).astype(np.float32)
  keys = rng.standard_normal((n, b, h, w, c)).astype(np.float32)
  values = rng.standard_normal((n, b, h, w, v)).astype(np.float32)
  return query, keys, values


@pytest.mark.parametrize(
    "seed,n,h,w,radius,dilation",
    [
        (1, 1, 9, 11, 1, 1),
        (2, 2, 8, 7, 2, 2),
        (3, 3, 6, 10, 3, 1),  # window wider than the image in one axis
        (4, 2, 12, 9, 2, 3),
    ],
)
def test_local_propagate_matches_dense_reference(seed, n, h, w, radius, dilation):
  query, keys, values = _random_inputs(seed, n, 2, h, w, 5, 3)

  @jax.jit
  def run(query, keys, values):
    out = cr.local_propagate(query, keys, values, radius, dilation)
    ref = cr.dense_local_propagate_reference(query, keys, values, radius, dilation)
    # The same through the explicit unfold: softmax over all frames' windows times the window values.
    probs = jax.nn.softmax(cr.window_logits(query, keys, radius, dilation), axis=(-2, -1))
    cols = cr.window_values(values, radius, dilation)  # [B, h, w, N, S, V]
    return out, ref, jnp.sum(probs[..., None] * cols, axis=(3, 4))

  out, ref, unfolded = run(query, keys, values)
  assert out.shape == (2, h, w, 3)
  assert_close(out, ref)
  assert_close(out, unfolded)


def test_local_propagate_topk():
  query, keys, values = _random_inputs(5, 2, 1, 7, 8, 4, 2)
  radius, dilation, k, tau = 2, 2, 6, 0.5

  @jax.jit
  def run(query, keys, values):
    return (
        cr.local_propagate(query, keys, values, radius, dilation),
        cr.local_propagate(query, keys, values, radius, dilation, topk=2 * 25),
        cr.local_propagate(query, keys, values, radius, dilation, topk=k, temperature=tau),
        cr.window_logits(query, keys, radius, dilation),
        cr.window_values(values, radius, dilation),
    )

  full, full_topk, out, logits, cols = (np.asarray(x) for x in run(query, keys, values))
  assert_close(full_topk, full)
  logits = logits.reshape(1, 7, 8, -1) / tau
  cols = cols.reshape(1, 7, 8, -1, 2)
  order = np.argsort(-logits, axis=-1)[..., :k]
  top = np.take_along_axis(logits, order, -1)
  weights = np.exp(top - top.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  picked = np.take_along_axis(cols, order[..., None], axis=-2)
  assert_close(out, np.sum(weights[..., None] * picked, axis=-2))


def _max_intermediate_size(jaxpr) -> int:
  """Largest array (in elements) produced anywhere in a jaxpr, including scan / remat bodies."""
  biggest = 0
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      shape = getattr(var.aval, "shape", ())
      biggest = max(biggest, int(np.prod(shape)) if shape else 1)
    for param in eqn.params.values():
      for sub in param if isinstance(param, tuple | list) else (param,):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          biggest = max(biggest, _max_intermediate_size(inner))
  return biggest


def test_local_propagate_memory_stays_windowed():
  """No HW x HW affinity and no per-shift copies of the keys, forward or backward."""
  n, b, h, w, c, v, radius = 2, 1, 16, 16, 16, 3, 2
  query, keys, values = _random_inputs(6, n, b, h, w, c, v)
  hw = h * w

  def loss(q, k, val):
    return jnp.sum(cr.local_propagate(q, k, val, radius) ** 2)

  logits_size = b * hw * n * (2 * radius + 1) ** 2  # 12800: the intended O(HW * window) array
  unfold_size = (
      logits_size * c
  )  # 204800: stacked shifted keys (what a scan without remat would keep)
  assert logits_size < hw * hw < unfold_size
  fwd = jax.make_jaxpr(loss)(query, keys, values).jaxpr
  bwd = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)))(query, keys, values).jaxpr
  assert _max_intermediate_size(fwd) <= logits_size
  assert _max_intermediate_size(bwd) < hw * hw
  # The dense reference does build the HW x HW affinity (sanity check of the walker).
  dense = jax.make_jaxpr(lambda *a: cr.dense_local_propagate_reference(*a, radius))
  assert _max_intermediate_size(dense(query, keys, values).jaxpr) >= hw * hw * n


# ------------------------------------------------------------------------------------------------
# CRW walk goldens and edge dropout
# ------------------------------------------------------------------------------------------------


def test_crw_walk_and_loss(crw):
  q = np.transpose(crw["crw_q"], (0, 2, 3, 1))  # [B, C, T, N] -> [B, T, N, C]
  tau = float(crw["crw_temperature"])

  @jax.jit
  def run(q):
    a, a12, a21 = rw.walk_matrices(q, tau)
    cycles = rw.palindrome_cycles(a12, a21)
    parts = (a, a12, a21, cycles, rw.cycle_log_probs(cycles), rw.palindrome_walks(q, tau))
    return parts + (rw.cycle_cross_entropy(cycles), rw.crw_walk_loss(q, tau))

  a, a12, a21, cycles, logp, walks, xent, (loss, xents) = run(q)
  assert_close(a, crw["crw_A"])
  assert_close(a12, crw["crw_A12"])
  assert_close(a21, crw["crw_A21"])
  assert_close(cycles, crw["crw_cycles"])
  assert_close(logp, crw["crw_cycles_logp"])
  assert_close(walks, crw["crw_cycles"])
  assert_close(xent, crw["crw_cycle_xent"], atol=0)
  assert_close(xents, crw["crw_cycle_xent"], atol=0)
  assert_close(loss, crw["crw_loss"], atol=0)


def key(seed: int) -> jax.Array:
  """An RBG PRNG key: its XLA program compiles several times faster on CPU than threefry's."""
  return jax.random.key(seed, impl="rbg")


def test_crw_edge_dropout():
  rng = np.random.default_rng(7)
  q = rng.standard_normal((2, 4, 16, 8)).astype(np.float32)
  q /= np.linalg.norm(q, axis=-1, keepdims=True)

  @functools.partial(jax.jit, static_argnames="rate")
  def walk(q, rng_key, rate):
    return rw.crw_walk_loss(q, 0.1, edge_dropout=rate, rng=rng_key)

  base, base_x = walk(q, key(0), 0.0)
  again, _ = walk(q, key(3), 0.0)  # p = 0: the key is not used
  assert float(base) == float(again)
  dropped, dropped_x = walk(q, key(0), 0.3)
  other, _ = walk(q, key(1), 0.3)
  assert np.abs(np.asarray(dropped_x) - np.asarray(base_x)).min() > 1e-4
  assert abs(float(dropped) - float(other)) > 1e-4
  with pytest.raises(ValueError, match="rng"):
    rw.crw_walk_loss(q, 0.1, edge_dropout=0.3)

  # Official aliasing: A12's dropped edges are dropped in A21 too (transposed).
  @jax.jit
  def matrices(q, rng_key):
    shared = rw.walk_matrices(q, 0.1, edge_dropout=0.3, rng=rng_key)
    independent = rw.walk_matrices(q, 0.1, edge_dropout=0.3, rng=rng_key, shared_dropout=False)
    return shared[1:] + independent[1:]

  a12, a21, a12_ind, a21_ind = (np.asarray(x) for x in matrices(q, key(4)))
  np.testing.assert_array_equal(a12_ind, a12)
  dropped12_t = np.swapaxes(a12 == 0.0, -1, -2)  # exp(-1e20 / tau) underflows to exactly 0
  assert 0.2 < dropped12_t.mean() < 0.4
  live_rows = (a21.max(-1) > a21.min(-1))[..., None]  # a fully dropped row is uniform, not 0
  assert np.all(a21[dropped12_t & live_rows] == 0.0)
  assert np.any(a21_ind[dropped12_t] > 0.0)


# ------------------------------------------------------------------------------------------------
# CRW label propagation goldens
# ------------------------------------------------------------------------------------------------


def _lp_inputs(crw):
  n_ctx, topk, radius, tau = crw["crw_lp_params"]
  n_ctx, topk = int(n_ctx), int(topk)
  feats = np.transpose(crw["crw_lp_feats"][0], (1, 2, 3, 0))  # [n_ctx + T, h, w, C], padded
  np.testing.assert_array_equal(feats[:n_ctx], np.broadcast_to(feats[n_ctx], feats[:n_ctx].shape))
  kwargs = dict(n_context=n_ctx, topk=topk, radius=float(radius), temperature=float(tau))
  return feats, feats[n_ctx:], kwargs


def test_crw_lp_index_bank_and_mask(crw):
  _, real, kwargs = _lp_inputs(crw)
  bank = propagation.context_index_bank(real.shape[0], kwargs["n_context"])
  np.testing.assert_array_equal(bank, crw["crw_lp_key_indices"])
  mask = propagation.spatial_neighbour_mask(10, 12, kwargs["radius"])
  np.testing.assert_array_equal(np.asarray(mask), crw["crw_lp_mask"][0, 0])
  # Official indexing of a long-term frame m > 0: padded index m + n_context + 1 (real frame m + 1),
  # used from target n_context + m + 1 on (0 before).
  np.testing.assert_array_equal(
      propagation.context_index_bank(7, 2, long_mem=(0, 1)),
      [
          [0, 0, 0, 1],
          [0, 0, 1, 2],
          [0, 0, 2, 3],
          [0, 0, 3, 4],
          [0, 4, 4, 5],
          [0, 4, 5, 6],
          [0, 4, 6, 7],
      ],
  )


@pytest.mark.parametrize("l2_normalize", [False, True])
def test_crw_lp_topk_weights_and_indices(crw, l2_normalize):
  """Weights within 1e-5; indices exact except among exactly tied logits.

  The padded video repeats frame 0, so early targets see several identical context frames: their logits
  tie exactly and torch.topk's order (and choice, at the k-th place) among them is arbitrary. There the
  golden index must point at a candidate with the same logit; everywhere else indices match exactly.
  """
  padded, real, kwargs = _lp_inputs(crw)
  weights, idx, bank = propagation.crw_propagation_affinities(
      real, l2_normalize=l2_normalize, chunk_size=48, **kwargs
  )
  weights, idx = np.swapaxes(np.asarray(weights), 1, 2), np.swapaxes(np.asarray(idx), 1, 2)
  assert_close(weights, crw["crw_lp_W"])
  golden = crw["crw_lp_I"]
  mask = np.asarray(propagation.spatial_neighbour_mask(10, 12, kwargs["radius"]))
  n_untied = 0
  for t in range(real.shape[0]):
    ctx = padded[bank[t]].reshape(len(bank[t]), 120, -1).astype(np.float64)
    query = real[t].reshape(120, -1).astype(np.float64)
    logits = np.einsum("npc,qc->qnp", ctx, query)
    logits[:, 1:] += mask[:, None, :]  # short-term frames only (the mask is symmetric)
    logits = logits.reshape(120, -1)
    for rank in range(idx.shape[1]):
      mine, gold = idx[t, rank], golden[t, rank]
      value = logits[np.arange(120), gold]
      ties = (np.abs(logits - value[:, None]) < 1e-6).sum(-1) > 1
      np.testing.assert_array_equal(mine[~ties], gold[~ties])
      np.testing.assert_allclose(logits[np.arange(120), mine][ties], value[ties], atol=1e-6)
      n_untied += int((~ties).sum())
  assert n_untied > 0.5 * golden.size


def test_crw_lp_propagation(crw):
  _, real, kwargs = _lp_inputs(crw)
  first = crw["crw_lp_lbls_in"][0]
  propagate = jax.jit(functools.partial(propagation.crw_propagate, chunk_size=32, **kwargs))
  pred = np.asarray(propagate(real, first))
  assert_close(pred, crw["crw_lp_pred"])
  np.testing.assert_array_equal(pred.argmax(-1), crw["crw_lp_argmax"])
  # Chunking the query pixels does not change the result.
  whole = propagation.crw_propagate(real, first, chunk_size=1024, **kwargs)
  assert_close(whole, pred, atol=1e-6)
