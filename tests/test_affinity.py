"""AffinityNet stage: pair layout, labels from CAMs, the model head, the balanced loss and the random walk."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.losses.affinity import affinity_loss
from jaxseg.methods.seam import affinity as aff
from jaxseg.models import affinitynet as anet
from jaxseg.models.seeded import seeded_variables

# ------------------------------------------------------------------------------------------------------------
# Independent references (coordinates and loops, not the library's index arrays).


def brute_force_pairs(h, w, r):
  """[(from_yx, [to_yx per offset])] from the geometric definition, offsets in the official order."""
  offsets = [(0, dx) for dx in range(1, r)]
  offsets += [
      (dy, dx) for dy in range(1, r) for dx in range(-(r - 1), r) if dy * dy + dx * dx < r * r
  ]
  froms = [(y, x) for y in range(0, h - r + 1) for x in range(r - 1, w - r + 1)]
  return froms, offsets


def dense_walk_numpy(cams, feats, r, beta, logt):
  """float64 dense random walk from features, with loops over pixel coordinates."""
  c, h, w = cams.shape
  n = h * w
  a = np.eye(n)
  froms, offsets = brute_force_pairs(h, w, r)
  for y, x in froms:
    for dy, dx in offsets:
      v = np.exp(-np.mean(np.abs(feats[y, x].astype(np.float64) - feats[y + dy, x + dx])))
      i, j = y * w + x, (y + dy) * w + (x + dx)
      a[i, j] = a[j, i] = v
  a = a**beta
  t = a / a.sum(0, keepdims=True)
  t = np.linalg.matrix_power(t, 2**logt)
  return (cams.reshape(c, n).astype(np.float64) @ t).reshape(c, h, w)


def upsample_torch_bilinear(x, out_h, out_w):
  """PyTorch `F.interpolate(mode='bilinear', align_corners=False)` on [C, h, w], from its formula."""

  def weights(n_in, n_out):
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
      src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
      lo = min(int(np.floor(src)), n_in - 1)
      hi = min(lo + 1, n_in - 1)
      m[i, lo] += 1 - (src - lo)
      m[i, hi] += src - lo
    return m

  return np.einsum("Hh,chw,Ww->cHW", weights(x.shape[1], out_h), x, weights(x.shape[2], out_w))


# ------------------------------------------------------------------------------------------------------------
# Pair layout.


def test_pair_offsets_official_order():
  offs = anet.pair_offsets(5)
  assert len(offs) == 34
  assert offs[:5] == ((0, 1), (0, 2), (0, 3), (0, 4), (1, -4))
  assert offs[-1] == (4, 2)
  assert all(dy * dy + dx * dx < 25 and (dy > 0 or dx > 0) for dy, dx in offs)
  assert len(anet.pair_offsets(2)) == 4
  with pytest.raises(ValueError, match="radius"):
    anet.pair_offsets(1)


def test_pair_indices_match_geometry():
  h, w, r = 7, 10, 3
  from_idx, to_idx = anet.pair_indices(h, w, r)
  froms, offsets = brute_force_pairs(h, w, r)
  assert from_idx.tolist() == [y * w + x for y, x in froms]
  assert to_idx.shape == (len(offsets), len(froms))
  for p, (dy, dx) in enumerate(offsets):
    assert to_idx[p].tolist() == [(y + dy) * w + x + dx for y, x in froms]


def test_effective_radius_official_rule():
  assert anet.effective_radius(56, 56, 5) == 5
  assert anet.effective_radius(11, 30, 5) == 5
  assert anet.effective_radius(10, 30, 5) == 4
  assert anet.effective_radius(8, 7, 5) == 3
  with pytest.raises(ValueError, match="too small"):
    anet.effective_radius(4, 20, 5)
  with pytest.raises(ValueError, match="too small"):
    anet.pair_indices(4, 20, 5)


def test_pairwise_affinities_vs_loops():
  rng = np.random.default_rng(0)
  feats = rng.normal(size=(2, 6, 9, 5)).astype(np.float32)
  got = np.asarray(anet.pairwise_affinities(jnp.asarray(feats), 3))
  froms, offsets = brute_force_pairs(6, 9, 3)
  assert got.shape == (2, len(offsets), len(froms)) and got.dtype == np.float32
  for b in range(2):
    for p, (dy, dx) in enumerate(offsets):
      for k, (y, x) in enumerate(froms):
        want = np.exp(-np.mean(np.abs(feats[b, y, x] - feats[b, y + dy, x + dx])))
        np.testing.assert_allclose(got[b, p, k], want, rtol=1e-5)


# ------------------------------------------------------------------------------------------------------------
# Labels.


def test_pair_labels_hand_computed():
  label = np.array([[0, 0, 1, 255], [0, 255, 1, 1], [2, 0, 0, 1]], np.uint8)
  # radius 2: offsets (0,1), (1,-1), (1,0), (1,1); "from" pixels (0,1)=0, (0,2)=1, (1,1)=255, (1,2)=1.
  bg, fg, neg = aff.affinity_pair_labels(label, radius=2)
  np.testing.assert_array_equal(bg, [[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(fg, [[0, 0, 0, 1], [0, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 1]])
  np.testing.assert_array_equal(neg, [[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1], [1, 0, 0, 0]])
  assert bg.dtype == fg.dtype == neg.dtype == np.float32


def test_pair_labels_official_shape_and_partition():
  rng = np.random.default_rng(1)
  label = rng.choice(np.array([0, 1, 2, 255], np.uint8), size=(56, 56))
  bg, fg, neg = aff.affinity_pair_labels(label, radius=5)
  assert bg.shape == (34, 52 * 48)
  assert np.max(bg + fg + neg) == 1  # disjoint
  from_idx, to_idx = anet.pair_indices(56, 56, 5)
  lf, lt = label.reshape(-1)[from_idx][None], label.reshape(-1)[to_idx]
  np.testing.assert_array_equal(bg + fg + neg == 0, (lf == 255) | (lt == 255))


def test_label_map_hand_computed():
  # Five pixels in a row, channels [bg, class a, class b].
  la = np.array(
      [[[0.9, 0.1, 0.0], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.2, 0.1, 0.7], [0, 0, 0]]], np.float32
  )
  ha = np.array(
      [[[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.0, 0.9, 0.1], [0.5, 0.1, 0.4], [0, 0, 0]]], np.float32
  )
  got = aff.affinity_label_map(la, ha, stride=1)
  # bg in both -> 0; bg only in la -> ignored; fg in la -> its index; ha says bg -> 0; no score -> ignored.
  np.testing.assert_array_equal(got, [[0, 255, 1, 0, 255]])
  assert got.dtype == np.uint8


def test_label_map_block_mean_then_argmax():
  la = np.zeros((4, 6, 3), np.float32)
  la[..., 0] = 0.5
  la[:2, :2, 1] = [
      [1.0, 1.0],
      [0.1, 0.1],
  ]  # block (0, 0): class-1 mean .55 > bg .5 (a pixel argmax would tie)
  ha = np.zeros_like(la)
  ha[..., 1] = 0.3
  ha[2:, 4:, 0] = 1.0  # block (1, 2): ha says bg
  got = aff.affinity_label_map(la, ha, stride=2)
  np.testing.assert_array_equal(got, [[1, 255, 255], [255, 255, 0]])
  # Non-multiple sizes are zero-padded at the bottom/right before the mean (skimage block_reduce).
  x = np.ones((3, 3, 1), np.float32)
  np.testing.assert_allclose(aff.block_mean(x, 2)[..., 0], [[1.0, 0.5], [0.5, 0.25]])


def test_scores_with_background_and_crf_scores():
  cams = np.array([[[0.0, 0.5], [1.0, 0.2]], [[0.3, 0.1], [0.0, 0.9]]], np.float32)
  s = aff.scores_with_background(cams, 4.0)
  np.testing.assert_allclose(s[0], (1 - cams.max(0)) ** 4, rtol=1e-6)
  np.testing.assert_array_equal(s[1:], cams)
  assert np.all(
      aff.scores_with_background(cams, aff.LOW_ALPHA)[0]
      >= aff.scores_with_background(cams, aff.HIGH_ALPHA)[0]
  )
  img = np.full((2, 2, 3), 100, np.uint8)
  q = aff.crf_scores(img, cams, aff.LOW_ALPHA, method="exact")
  assert q.shape == (3, 2, 2) and q.dtype == np.float32
  np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-5)


def test_affinity_targets_end_to_end_shapes():
  rng = np.random.default_rng(2)
  la = rng.uniform(size=(64, 64, 3)).astype(np.float32)
  ha = rng.uniform(size=(64, 64, 3)).astype(np.float32)
  out = aff.affinity_targets(la, ha, stride=8, radius=3)
  assert out["aff_label_map"].shape == (8, 8)
  assert out["aff_bg_pos"].shape == (len(anet.pair_offsets(3)), 6 * 4)


def test_label_errors():
  with pytest.raises(ValueError, match="equal-shaped"):
    aff.affinity_label_map(np.zeros((8, 8, 3)), np.zeros((8, 8, 4)))
  with pytest.raises(ValueError, match="integer"):
    aff.affinity_pair_labels(np.zeros((8, 8), np.float32))
  with pytest.raises(ValueError, match="too small"):
    aff.affinity_pair_labels(np.zeros((8, 8), np.uint8), radius=5)
  with pytest.raises(ValueError, match="fg_cams"):
    aff.scores_with_background(np.zeros((4, 4)), 4.0)


# ------------------------------------------------------------------------------------------------------------
# Loss.


def loss_by_loops(a, bg, fg, neg):
  sums = {"bg": 0.0, "fg": 0.0, "neg": 0.0}
  counts = {"bg": 1e-5, "fg": 1e-5, "neg": 1e-5}
  for idx in itertools.product(*map(range, a.shape)):
    v = float(a[idx])
    if bg[idx]:
      sums["bg"] -= np.log(v + 1e-5)
      counts["bg"] += 1
    if fg[idx]:
      sums["fg"] -= np.log(v + 1e-5)
      counts["fg"] += 1
    if neg[idx]:
      sums["neg"] -= np.log(1 + 1e-5 - v)
      counts["neg"] += 1
  terms = {k: sums[k] / counts[k] for k in sums}
  return terms["bg"] / 4 + terms["fg"] / 4 + terms["neg"] / 2, terms


def test_affinity_loss_vs_loops():
  rng = np.random.default_rng(3)
  a = rng.uniform(0.01, 0.99, size=(2, 4, 6)).astype(np.float32)
  kind = rng.integers(0, 4, size=a.shape)  # 0 bg, 1 fg, 2 neg, 3 ignored
  bg, fg, neg = ((kind == k).astype(np.float32) for k in range(3))
  loss, metrics = affinity_loss(jnp.asarray(a), jnp.asarray(bg), jnp.asarray(fg), jnp.asarray(neg))
  want, terms = loss_by_loops(a, bg, fg, neg)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  for k in ("bg", "fg", "neg"):
    np.testing.assert_allclose(float(metrics[f"{k}_loss"]), terms[k], rtol=1e-5)
  np.testing.assert_allclose(float(metrics["neg_count"]), neg.sum() + 1e-5, rtol=1e-6)
  # Ignored pairs do not matter; an empty class contributes 0.
  a2 = np.where(kind == 3, 0.5, a).astype(np.float32)
  assert float(affinity_loss(a2, bg, fg, neg)[0]) == pytest.approx(float(loss), rel=1e-6)
  zero = np.zeros_like(fg)
  loss_nofg, m = affinity_loss(a, bg, zero, neg)
  assert float(m["fg_loss"]) == 0.0
  np.testing.assert_allclose(float(loss_nofg), terms["bg"] / 4 + terms["neg"] / 2, rtol=1e-5)
  # Jit and gradients: pos pairs push affinities up, neg pairs down.
  g = jax.jit(jax.grad(lambda x: affinity_loss(x, bg, fg, neg)[0]))(jnp.asarray(a))
  g = np.asarray(g)
  assert (
      np.all(g[(kind == 0) | (kind == 1)] < 0)
      and np.all(g[kind == 2] > 0)
      and np.all(g[kind == 3] == 0)
  )


def test_affinity_loss_shape_errors():
  a = jnp.full((1, 3, 4), 0.5)
  with pytest.raises(AssertionError):
    affinity_loss(a, a, a, a[..., :3])
  with pytest.raises(AssertionError):
    affinity_loss(a[0], a[0], a[0], a[0])


# ------------------------------------------------------------------------------------------------------------
# Random walk.


@pytest.mark.parametrize("by_squaring", [True, False])
def test_random_walk_vs_dense_numpy(by_squaring):
  rng = np.random.default_rng(4)
  h, w = 7, 9  # min edge 7 < 11: the official radius shrinks to 3
  feats = rng.normal(scale=0.3, size=(h, w, 6)).astype(np.float32)
  cams = rng.uniform(size=(3, h, w)).astype(np.float32)
  want = dense_walk_numpy(cams, feats, 3, beta=8, logt=3)
  got = aff.random_walk(
      jnp.asarray(cams), jnp.asarray(feats), beta=8, logt=3, by_squaring=by_squaring
  )
  assert got.shape == (3, h, w) and got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-6)
  # Same result from precomputed affinities at the effective radius.
  affs = anet.pairwise_affinities(jnp.asarray(feats)[None], anet.effective_radius(h, w))[0]
  got2 = aff.random_walk(jnp.asarray(cams), affs, beta=8, logt=3, by_squaring=by_squaring)
  np.testing.assert_allclose(np.asarray(got2), np.asarray(got), rtol=1e-5, atol=1e-7)


def test_affinity_matrix_structure():
  rng = np.random.default_rng(5)
  affs = rng.uniform(0.1, 0.9, size=(len(anet.pair_offsets(2)), 4 * 5)).astype(np.float32)
  a = np.asarray(aff.affinity_matrix(jnp.asarray(affs), 5, 7, 2))
  np.testing.assert_array_equal(a, a.T)
  np.testing.assert_array_equal(np.diag(a), 1.0)
  from_idx, to_idx = anet.pair_indices(5, 7, 2)
  assert a[from_idx[3], to_idx[2, 3]] == affs[2, 3]
  assert np.count_nonzero(a) == 5 * 7 + 2 * affs.size  # nothing beyond the radius pairs


def test_refine_cams_vs_numpy_pipeline():
  rng = np.random.default_rng(6)
  hh, ww = 37, 45  # padded to 40 x 48 -> 5 x 6 grid, radius shrinks to 2
  fg = rng.uniform(size=(2, hh, ww)).astype(np.float32)
  feats = rng.normal(scale=0.3, size=(5, 6, 4)).astype(np.float32)
  got = np.asarray(aff.refine_cams(jnp.asarray(fg), jnp.asarray(feats), alpha=6.0, beta=8, logt=2))
  cams = np.concatenate([(1 - fg.max(0, keepdims=True)) ** 6, fg])
  cams = np.pad(cams, ((0, 0), (0, 3), (0, 3)))
  pooled = cams.reshape(3, 5, 8, 6, 8).mean((2, 4))
  walked = dense_walk_numpy(pooled, feats, 2, beta=8, logt=2)
  want = upsample_torch_bilinear(walked, 40, 48)[:, :hh, :ww]
  assert got.shape == (3, hh, ww)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  mask = np.asarray(aff.pseudo_mask(jnp.asarray(got)))
  np.testing.assert_array_equal(mask, want.argmax(0))
  # jit-able end to end.
  jitted = jax.jit(
      aff.refine_cams, static_argnames=("alpha", "beta", "logt", "radius", "stride", "by_squaring")
  )
  np.testing.assert_allclose(np.asarray(jitted(fg, feats, logt=2)), got, rtol=1e-5, atol=1e-7)


def test_random_walk_errors():
  cams = jnp.zeros((2, 7, 9))
  with pytest.raises(ValueError, match="radius"):
    aff.random_walk(cams, jnp.zeros((34, 12)))  # affinities for the wrong radius/grid
  with pytest.raises(ValueError, match="do not match"):
    aff.random_walk(cams, jnp.zeros((7, 8, 4)))
  with pytest.raises(ValueError, match="too small"):
    aff.random_walk(jnp.zeros((2, 4, 9)), jnp.zeros((4, 9, 3)))


def test_pad_images():
  x = jnp.ones((1, 37, 45, 3))
  p = aff.pad_images(x)
  assert p.shape == (1, 40, 48, 3)
  assert float(p[:, 37:].sum()) == 0.0 and float(p[:, :, 45:].sum()) == 0.0


# ------------------------------------------------------------------------------------------------------------
# Model.


@pytest.fixture(scope="module")
def tiny_net():
  """Width-1/16 AffinityNet with seeded weights (model.init of the whole backbone compiles for ~20 s on CPU)."""
  model = anet.AffinityNet(width_multiplier=1 / 16)
  x = jax.random.normal(jax.random.key(0), (1, 48, 40, 3))
  template = jax.eval_shape(lambda: model.init(jax.random.key(1), x, False))
  return model, seeded_variables(template, seed=0), x


def test_affinitynet_shapes_and_names(tiny_net):
  model, variables, x = tiny_net
  feats = jax.jit(lambda v, x: model.apply(v, x, False))(variables, x)
  assert feats.shape == (1, 6, 5, 448) and feats.dtype == jnp.float32
  assert float(feats.min()) >= -1.0 and float(feats.min()) < 0.0  # ELU output
  p = variables["params"]
  assert p["f8_3"]["kernel"].shape == (1, 1, 32, 64)  # 512 / 16 -> 64
  assert p["f8_4"]["kernel"].shape == (1, 1, 64, 128)
  assert p["f8_5"]["kernel"].shape == (1, 1, 256, 256)
  assert p["f9"]["kernel"].shape == (1, 1, 448, 448)
  assert "bias" not in p["f9"] and "conv1a" in p and "b7" in p
  # The groups the trainer builds for the AffinityNet stage of the paper config.
  from jaxseg.methods.seam import default_config
  from jaxseg.train.config import stage_trainer_config
  from jaxseg.train.optimizer import group_labels

  groups = group_labels(stage_trainer_config(default_config(), "affinity").optimizer, p)
  assert (
      groups["f8_5"]["kernel"] == "default/x10"
      and groups["b2_1"]["conv_branch2a"]["kernel"] == "frozen"
  )
  assert groups["b4_3"]["conv_branch2a"]["kernel"] == "default/x1"


def test_affinity_head_official_init():
  taps = {
      "conv4": jnp.zeros((1, 2, 2, 512)),
      "conv5": jnp.zeros((1, 2, 2, 1024)),
      "conv6": jnp.zeros((1, 2, 2, 4096)),
  }
  p = anet.AffinityHead().init(jax.random.key(2), taps)["params"]
  bound = 4 * np.sqrt(6 / (448 + 448))  # xavier_uniform, gain 4
  f9 = np.asarray(p["f9"]["kernel"])
  assert np.abs(f9).max() <= bound and np.abs(f9).max() > 0.99 * bound
  for name, fan_in in (("f8_3", 512), ("f8_4", 1024), ("f8_5", 4096)):  # kaiming_normal, fan_in
    k = np.asarray(p[name]["kernel"])
    assert abs(k.std() - np.sqrt(2 / fan_in)) < 0.05 * np.sqrt(2 / fan_in)
    assert np.abs(k).max() > 3.5 * np.sqrt(
        2 / fan_in
    )  # untruncated normal (truncation is at 2 std)


def test_affinity_head_formula(tiny_net):
  _, variables, _ = tiny_net
  p = variables["params"]
  rng = np.random.default_rng(7)
  taps = {
      "conv4": rng.normal(size=(1, 3, 2, 32)),
      "conv5": rng.normal(size=(1, 3, 2, 64)),
      "conv6": rng.normal(size=(1, 3, 2, 256)),
  }
  taps = {k: v.astype(np.float32) for k, v in taps.items()}
  got = anet.AffinityHead().apply(
      {"params": {k: p[k] for k in ("f8_3", "f8_4", "f8_5", "f9")}}, taps
  )
  elu = lambda v: np.where(v > 0, v, np.expm1(np.minimum(v, 0)))  # noqa: E731
  k = lambda name: np.asarray(p[name]["kernel"])[0, 0]  # noqa: E731
  cat = np.concatenate(
      [
          elu(taps["conv4"] @ k("f8_3")),
          elu(taps["conv5"] @ k("f8_4")),
          elu(taps["conv6"] @ k("f8_5")),
      ],
      axis=-1,
  )
  np.testing.assert_allclose(np.asarray(got), elu(cat @ k("f9")), rtol=1e-4, atol=1e-4)


def test_affinity_gradient_reaches_backbone(tiny_net):
  """Unlike SEAM's PCM, the backbone taps are not detached: the affinity loss trains the backbone."""
  model, variables, x = tiny_net

  def loss_fn(params):
    feats = model.apply({**variables, "params": params}, x, False)
    affs = anet.pairwise_affinities(feats, 2)
    ones = jnp.ones_like(affs)
    return affinity_loss(affs, ones, 0 * ones, 0 * ones)[0]

  grads = jax.jit(jax.grad(loss_fn))(variables["params"])
  assert float(jnp.abs(grads["b4_3"]["conv_branch2a"]["kernel"]).sum()) > 0
  assert float(jnp.abs(grads["f9"]["kernel"]).sum()) > 0


def test_affinitynet_bad_input(tiny_net):
  model, variables, _ = tiny_net
  with pytest.raises(ValueError, match="NHWC"):
    model.apply(variables, jnp.zeros((1, 3, 32, 32)), False)
