"""UDA building blocks against the official ADVENT / ESL / BDL outputs (shared/golden/esl, cut into
tests/data/esl by extract_uda_parts.py): FC discriminator + converter, adversarial BCE and upsampled CE,
entropy-weighted CE, ESL / max-prob pseudo labels, and the bounded-memory dataset threshold pass."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.losses.adversarial import (
    SOURCE_DOMAIN_LABEL,
    TARGET_DOMAIN_LABEL,
    adversarial_generator_loss,
    bce_with_logits,
    discriminator_loss,
)
from jaxseg.losses.entropy import normalized_entropy, self_information_map
from jaxseg.losses.segmentation import (
    entropy_confidence_weights,
    entropy_weighted_cross_entropy,
    softmax_cross_entropy_with_ignore,
    upsample_logits,
    upsampled_cross_entropy,
)
from jaxseg.methods.uda import pseudo_labels as pl
from jaxseg.models import convert
from jaxseg.models.discriminator import FCDiscriminator
from jaxseg.models.seeded import seeded_state_dict
from jaxseg.train.multihost import process_indices

DATA = os.path.join(os.path.dirname(__file__), "data", "esl")
NUM_CLASSES = 19
# advent/model/discriminator.py: get_fc_discriminator(19, ndf=64) state dict (nn.Sequential indices).
OFFICIAL_D_SHAPES = {
    "0.weight": (64, 19, 4, 4),
    "0.bias": (64,),
    "2.weight": (128, 64, 4, 4),
    "2.bias": (128,),
    "4.weight": (256, 128, 4, 4),
    "4.bias": (256,),
    "6.weight": (512, 256, 4, 4),
    "6.bias": (512,),
    "8.weight": (1, 512, 4, 4),
    "8.bias": (1,),
}


def load(name):
  with np.load(os.path.join(DATA, name)) as data:
    return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def golden():
  return {**load("entropy_golden.npz"), **load("uda_parts.npz")}


def nhwc(x):
  return jnp.asarray(np.moveaxis(np.asarray(x), 1, -1))


@pytest.fixture(scope="module")
def discriminator():
  model = FCDiscriminator(num_classes=NUM_CLASSES)
  variables = convert.convert_fc_discriminator(seeded_state_dict(OFFICIAL_D_SHAPES, 0), model)
  return model, variables


# ------------------------------------------------------------------------------------------------------------
# Discriminator.


def test_discriminator_names_and_shapes_are_official(discriminator):
  model, variables = discriminator
  template = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 19))))
  assert convert.torch_shapes(template) == OFFICIAL_D_SHAPES
  assert set(variables) == {"params"}


def test_discriminator_matches_official_forward(discriminator, golden):
  model, variables = discriminator
  apply = jax.jit(model.apply)
  trg = apply(variables, nhwc(golden["adv_trg_entropy_map"]))
  assert trg.shape == (1, 2, 3, 1)  # 65x97 -> 1/32
  np.testing.assert_allclose(trg, nhwc(golden["adv_d_out_trg"]), rtol=1e-5, atol=1e-6)
  # Source map rebuilt from the official upsampled logits: softmax -> self-information -> D.
  src_map = self_information_map(jax.nn.softmax(nhwc(golden["adv_src_logits_up"]), axis=-1))
  src = apply(variables, src_map)
  np.testing.assert_allclose(src, nhwc(golden["adv_d_out_src"]), rtol=1e-5, atol=1e-6)


def test_discriminator_converter_prefix_mismatch_and_bf16(discriminator, golden):
  model, variables = discriminator
  prefixed = {f"d_main.{k}": v for k, v in seeded_state_dict(OFFICIAL_D_SHAPES, 0).items()}
  again = convert.convert_fc_discriminator(prefixed, model, prefix="d_main.")
  jax.tree.map(np.testing.assert_array_equal, again, variables)
  with pytest.raises(convert.CheckpointMismatchError, match="wrong shapes"):
    convert.convert_fc_discriminator(prefixed, FCDiscriminator(19, ndf=32), prefix="d_main.")
  with pytest.raises(convert.CheckpointMismatchError, match="unexpected"):
    convert.convert_fc_discriminator(prefixed, model)  # prefix not stripped
  with pytest.raises(ValueError, match="input channels"):
    model.apply(variables, jnp.zeros((1, 64, 64, 3)))
  entropy_map = nhwc(golden["adv_trg_entropy_map"])
  low = FCDiscriminator(NUM_CLASSES, dtype=jnp.bfloat16).apply(variables, entropy_map)
  assert low.dtype == jnp.bfloat16
  ref = np.asarray(golden["adv_d_out_trg"]).transpose(0, 2, 3, 1)
  assert np.abs(np.asarray(low, np.float32) - ref).max() < 0.05 * np.abs(ref).max() + 0.02


# ------------------------------------------------------------------------------------------------------------
# Losses.


def test_adversarial_losses_match_advent(golden):
  d_src, d_trg = nhwc(golden["adv_d_out_src"]), nhwc(golden["adv_d_out_trg"])
  assert (SOURCE_DOMAIN_LABEL, TARGET_DOMAIN_LABEL) == (0.0, 1.0)
  np.testing.assert_allclose(adversarial_generator_loss(d_trg), golden["adv_loss_g_trg"], rtol=1e-6)
  np.testing.assert_allclose(
      bce_with_logits(d_src, SOURCE_DOMAIN_LABEL) / 2, golden["adv_loss_d_src"], rtol=1e-6
  )
  np.testing.assert_allclose(
      bce_with_logits(d_trg, TARGET_DOMAIN_LABEL) / 2, golden["adv_loss_d_trg"], rtol=1e-6
  )
  np.testing.assert_allclose(
      discriminator_loss(d_src, d_trg),
      golden["adv_loss_d_src"] + golden["adv_loss_d_trg"],
      rtol=1e-6,
  )
  # Saturated logits stay finite, with the exact limits.
  big = jnp.array([[[[100.0], [-100.0]]]])
  np.testing.assert_allclose(bce_with_logits(big, 1.0), 50.0, rtol=1e-6)
  assert bool(jnp.isfinite(jax.grad(lambda z: bce_with_logits(z, 0.0))(big)).all())


def test_upsampled_cross_entropy_matches_advent_loss_calc(golden):
  logits_lr = nhwc(golden["adv_src_logits_lr"])
  labels = jnp.asarray(golden["seg_label"].astype(np.int32))
  up = upsample_logits(logits_lr, (65, 97))
  np.testing.assert_allclose(up, nhwc(golden["adv_src_logits_up"]), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
      upsampled_cross_entropy(logits_lr, labels), golden["seg_loss_ce_src"], rtol=1e-5
  )
  # ESL's target pseudo-label CE is the same function; weighting off must be it exactly.
  plain = entropy_weighted_cross_entropy(logits_lr, labels, power=0.0)
  assert float(plain) == float(upsampled_cross_entropy(logits_lr, labels))
  all_ignored = jnp.full_like(labels, 255)
  assert float(upsampled_cross_entropy(logits_lr, all_ignored)) == 0.0


def test_entropy_weighted_cross_entropy_definition(golden):
  logits_lr = nhwc(golden["adv_trg_logits_lr"])
  labels = jnp.asarray(golden["seg_label"].astype(np.int32))
  power = 2.0
  up = np.asarray(upsample_logits(logits_lr, (65, 97)), np.float64)
  logp = (
      up
      - np.log(np.exp(up - up.max(-1, keepdims=True)).sum(-1, keepdims=True))
      - up.max(-1)[..., None]
  )
  p = np.exp(logp)
  weights = (1.0 - (-(p * logp).sum(-1) / np.log(NUM_CLASSES))) ** power
  lab = np.asarray(labels)
  valid = lab != 255
  ce = -np.take_along_axis(logp, np.where(valid, lab, 0)[..., None], -1)[..., 0]
  expected = (ce * weights * valid).sum() / (weights * valid).sum()
  got = entropy_weighted_cross_entropy(logits_lr, labels, power=power)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  w = entropy_confidence_weights(jnp.asarray(up, jnp.float32), power)
  np.testing.assert_allclose(w, weights, rtol=1e-4, atol=1e-6)
  # Uniform prediction -> weight 0; one-hot -> 1.
  extreme = jnp.stack([jnp.zeros(NUM_CLASSES), 100.0 * jax.nn.one_hot(3, NUM_CLASSES)])[None, None]
  np.testing.assert_allclose(entropy_confidence_weights(extreme, 1.0)[0, 0], [0.0, 1.0], atol=1e-6)
  # The weights are constants for the gradient: d/dlogits = that of CE with the weights frozen.
  grad = jax.grad(lambda z: entropy_weighted_cross_entropy(z, labels, power=power))(logits_lr)
  frozen = entropy_confidence_weights(upsample_logits(logits_lr, (65, 97)), power)

  def frozen_loss(z):
    return softmax_cross_entropy_with_ignore(upsample_logits(z, (65, 97)), labels, weights=frozen)

  np.testing.assert_allclose(grad, jax.grad(frozen_loss)(logits_lr), rtol=1e-5, atol=1e-9)
  with pytest.raises(ValueError, match=">= 0"):
    entropy_weighted_cross_entropy(logits_lr, labels, power=-1.0)


# ------------------------------------------------------------------------------------------------------------
# Pseudo labels: the official formula on the golden set.


def test_median_rank_is_numpy_round_half_even():
  counts = np.concatenate([np.arange(0, 2000), [2**31 - 1, 2**31, 2**31 + 1, 3 * 10**9 + 7]])
  expected = [int(np.round(0.5 * n)) for n in counts]
  np.testing.assert_array_equal(pl.median_rank(counts), expected)


def test_esl_and_maxprob_thresholds_and_labels_match_official(golden):
  labels, entropy, maxprob = golden["pl_argmax"], golden["esl_entropy"], golden["bdl_maxprob"]
  raw = pl.class_medians(entropy, labels, NUM_CLASSES)
  np.testing.assert_array_equal(raw, golden["esl_thresholds_raw"])
  thresholds = pl.esl_thresholds(entropy, labels, NUM_CLASSES)
  np.testing.assert_array_equal(thresholds, golden["esl_thresholds"])
  np.testing.assert_array_equal(
      pl.esl_pseudo_labels(labels, entropy, thresholds), golden["esl_pseudo_labels"]
  )
  raw = pl.class_medians(maxprob, labels, NUM_CLASSES)
  np.testing.assert_array_equal(raw, golden["bdl_thresholds_raw"])
  thresholds = pl.maxprob_thresholds(maxprob, labels, NUM_CLASSES)
  np.testing.assert_array_equal(thresholds, golden["bdl_thresholds"])
  np.testing.assert_array_equal(
      pl.maxprob_pseudo_labels(labels, maxprob, thresholds), golden["bdl_pseudo_labels"]
  )


def test_dataset_pass_matches_official_on_golden_two_hosts(golden):
  """Two simulated hosts, each with a strided share of the 6 images; their histograms add up."""
  labels, entropy, maxprob = golden["pl_argmax"], golden["esl_entropy"], golden["bdl_maxprob"]
  for values, official, rule in (
      (entropy, golden["esl_thresholds"], pl.floor_thresholds),
      (maxprob, golden["bdl_thresholds"], pl.cap_thresholds),
  ):
    shares = [range(host, len(labels), 2) for host in range(2)]
    first = sum(
        pl.first_pass_histogram(values[i], labels[i], NUM_CLASSES) for s in shares for i in s
    )
    bins, _ = pl.locate_median_bins(first)
    second = sum(
        pl.second_pass_histogram(values[i], labels[i], NUM_CLASSES, bins) for s in shares for i in s
    )
    np.testing.assert_array_equal(rule(pl.medians_from_histograms(first, second)), official)
  # The one-process driver (process_indices / sum_over_processes), one image per step.
  share = lambda: ((entropy[i], labels[i]) for i in process_indices(len(labels)))
  got = pl.dataset_esl_thresholds(share, NUM_CLASSES)
  np.testing.assert_array_equal(got, golden["esl_thresholds"])
  share = lambda: ((maxprob[i], labels[i]) for i in process_indices(len(labels)))
  got = pl.dataset_maxprob_thresholds(share, NUM_CLASSES)
  np.testing.assert_array_equal(got, golden["bdl_thresholds"])


def test_prediction_maps_chain_from_official_logits(golden):
  """pl_logits of image 0 -> softmax -> argmax / entropy / max-prob -> labels with the official thresholds."""
  maps = jax.jit(pl.prediction_maps)(nhwc(golden["pl_logits0"]))
  np.testing.assert_array_equal(maps["label"], golden["pl_argmax"][:1])
  np.testing.assert_allclose(maps["entropy"], golden["esl_entropy"][:1], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(maps["maxprob"], golden["bdl_maxprob"][:1], rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(
      pl.esl_pseudo_labels(maps["label"], maps["entropy"], golden["esl_thresholds"]),
      golden["esl_pseudo_labels"][:1],
  )
  np.testing.assert_array_equal(
      pl.maxprob_pseudo_labels(maps["label"], maps["maxprob"], golden["bdl_thresholds"]),
      golden["bdl_pseudo_labels"][:1],
  )
  # Upsampling the probabilities (not the logits) to a label size, align_corners=True.
  low = np.asarray(nhwc(golden["pl_logits0"]))[:, ::4, ::4]
  up = pl.prediction_maps(jnp.asarray(low), (48, 96))
  assert up["label"].shape == (1, 48, 96) and up["entropy"].dtype == jnp.float32
  probs = np.asarray(jax.nn.softmax(jnp.asarray(low), axis=-1), np.float64)[0]
  for axis, (size, out) in enumerate(((12, 48), (24, 96))):
    grid = np.arange(out) * (size - 1) / (out - 1)  # align_corners=True source coordinates
    probs = np.apply_along_axis(lambda v: np.interp(grid, np.arange(size), v), axis, probs)
  np.testing.assert_allclose(up["maxprob"][0], probs.max(-1), rtol=1e-5)
  np.testing.assert_array_equal(up["label"][0], probs.argmax(-1))
  # The entropy the labels use is ESL's (natural log, normalised by ln C).
  np.testing.assert_allclose(
      normalized_entropy(nhwc(golden["pl_prob"])), golden["esl_entropy"][:1], rtol=1e-5, atol=1e-6
  )


# ------------------------------------------------------------------------------------------------------------
# Pseudo labels: the dataset pass is bit-identical to the official formula on hard inputs.


def random_case(seed):
  """Images of entropies with heavy ties (few distinct values), absent classes, values under the 0.1 floor,
  odd and even class counts, a few ignored labels, plus -0.0 and NaN."""
  rng = np.random.default_rng(seed)
  num_images, height, width, num_classes = 5, 9, 11, 7
  weights = rng.dirichlet(np.ones(num_classes))
  weights[rng.integers(num_classes)] = 0.0  # an absent class
  weights /= weights.sum()
  labels = rng.choice(num_classes, size=(num_images, height, width), p=weights).astype(np.uint8)
  labels[rng.random(labels.shape) < 0.05] = 255
  kind = seed % 3
  if kind == 0:  # ties: 6 distinct levels
    values = rng.integers(0, 6, labels.shape).astype(np.float32) / 7
  elif kind == 1:  # mostly below the ESL floor, near-equal values one ulp apart
    base = np.float32(0.05)
    values = np.nextafter(base, np.float32(1), dtype=np.float32) * (
        1 + rng.integers(0, 3, labels.shape)
    ).astype(np.float32)
    values[rng.random(labels.shape) < 0.3] = base
  else:  # continuous, with signed zeros, negatives and NaN
    values = rng.standard_normal(labels.shape).astype(np.float32)
    values[rng.random(labels.shape) < 0.1] = -0.0
    values[rng.random(labels.shape) < 0.1] = 0.0
    values[rng.random(labels.shape) < 0.03] = np.nan
  return values.astype(np.float32), labels, num_classes


@pytest.mark.parametrize("seed", range(9))
def test_dataset_pass_is_bit_identical_to_official_formula(seed):
  values, labels, num_classes = random_case(seed)
  official = pl.class_medians(values, labels, num_classes)
  share = lambda: zip(values, labels)
  got = pl.dataset_class_medians(share, num_classes)
  np.testing.assert_array_equal(got, official)  # NaN == NaN here; -0.0 == 0.0
  assert not np.any(np.signbit(got) & (got == 0))
  # Batched yields and an odd host split give the same tables.
  batched = pl.dataset_class_medians(
      lambda: iter([(values[:2], labels[:2]), (values[2:], labels[2:])]), num_classes
  )
  np.testing.assert_array_equal(batched, official)
  np.testing.assert_array_equal(
      pl.floor_thresholds(got), pl.esl_thresholds(values, labels, num_classes)
  )
  np.testing.assert_array_equal(
      pl.cap_thresholds(got), pl.maxprob_thresholds(values, labels, num_classes)
  )
  counts = np.bincount(labels[labels < num_classes], minlength=num_classes)
  assert np.all(got[counts == 0] == 0)


def test_threshold_rules_and_labels_on_small_example():
  labels = np.array([[0, 0, 0, 1, 1, 2, 255]])
  entropy = np.array([[0.3, 0.05, 0.2, 0.5, 0.7, 0.01, 0.9]], np.float32)
  # class 0: sorted (0.05, 0.2, 0.3), n=3 -> index round(1.5) = 2 -> 0.3; class 1: n=2 -> index 1 -> 0.7;
  # class 2: n=1 -> 0.01 -> floored to 0.1; class 3 absent -> 0 -> 0.1.
  thresholds = pl.esl_thresholds(entropy, labels, 4)
  np.testing.assert_array_equal(thresholds, [np.float32(0.3), np.float32(0.7), 0.1, 0.1])
  np.testing.assert_array_equal(
      pl.esl_pseudo_labels(labels, entropy, thresholds), [[0, 0, 0, 1, 1, 2, 255]]
  )
  np.testing.assert_array_equal(
      pl.esl_pseudo_labels(labels, entropy, [0.25, 0.6, 0.1, 0.1]), [[255, 0, 0, 1, 255, 2, 255]]
  )
  # Comparisons are in float64 as in the official numpy code: float32(0.1) is above 0.1 and so rejected
  # under the floor (a float32 comparison would keep it); float32(0.9) is below the 0.9 cap, rejected too.
  assert float(np.float32(0.1)) > 0.1 and float(np.float32(0.9)) < 0.9
  assert pl.esl_pseudo_labels(np.array([2]), np.array([np.float32(0.1)]), thresholds)[0] == 255
  assert pl.maxprob_pseudo_labels(np.array([0]), np.array([np.float32(0.9)]), [0.9])[0] == 255
  prob = np.array([[0.95, 0.92, 0.99, 0.4, 0.6, 0.5, 0.1]], np.float32)
  caps = pl.maxprob_thresholds(prob, labels, 4)
  np.testing.assert_array_equal(caps, [0.9, np.float32(0.6), np.float32(0.5), 0.0])
  np.testing.assert_array_equal(
      pl.maxprob_pseudo_labels(labels, prob, caps), [[0, 0, 0, 255, 1, 2, 255]]
  )


def test_order_keys_merge_and_errors():
  values = np.array([-np.inf, -3.5, -1e-40, -0.0, 0.0, 1e-45, 0.1, 1.0, np.inf, np.nan], np.float32)
  keys = pl.float32_order_keys(values)
  assert np.all(np.diff(keys[[0, 1, 2, 4, 5, 6, 7, 8, 9]].astype(np.int64)) > 0)
  assert keys[3] == keys[4]  # -0.0 folded into +0.0
  np.testing.assert_array_equal(pl.float32_from_order_keys(keys)[:-1], values[:-1] + 0)
  with pytest.raises(TypeError, match="float32"):
    pl.float32_order_keys(values.astype(np.float64))
  # Counts past 2**31 survive a 32-bit transport summed over 3 hosts.
  counts = np.array([[0, 1, 2**31 + 5, 3 * 2**40 + 12345]], np.int64)
  three_hosts = lambda x: (x.astype(np.int32) * 3).astype(np.int32)
  np.testing.assert_array_equal(pl.merge_counts(counts, three_hosts), 3 * counts)
  np.testing.assert_array_equal(pl.merge_counts(counts), counts)  # one process
  # Passes that saw different predictions are caught.
  values, labels, num_classes = random_case(2)
  first = pl.first_pass_histogram(values, labels, num_classes)
  bins, _ = pl.locate_median_bins(first)
  second = pl.second_pass_histogram(values[1:], labels[1:], num_classes, bins)
  with pytest.raises(ValueError, match="disagree"):
    pl.medians_from_histograms(first, second)
