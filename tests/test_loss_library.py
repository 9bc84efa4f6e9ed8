"""The loss library's contract: docs/losses.md tables exactly `jaxseg.losses.__all__`, and each
listed function, imported from the module the table names, jits on random inputs of the documented
shapes and returns finite float32 values of the documented shapes. Official numbers: the parity
tests."""

import functools
import importlib
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxseg.losses

DOC = Path(__file__).resolve().parent.parent / "docs" / "losses.md"
ROW = re.compile(r"^\| `(\w+)` \| `(\w+)` \|", re.MULTILINE)

B, H, W, C, K = 2, 8, 8, 3, 4  # batch, label size, classes, SEAM foreground classes


def _doc_rows() -> dict[str, str]:
  """{loss: module} from the table of docs/losses.md."""
  rows = ROW.findall(DOC.read_text())
  names = [name for name, _ in rows]
  assert len(names) == len(
      set(names)
  ), f"listed twice: {sorted({n for n in names if names.count(n) > 1})}"
  return dict(rows)


def _normal(*shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _uniform(*shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(0.05, 1.0, shape), jnp.float32)


def _probs(*shape, seed=0):
  return jax.nn.softmax(_normal(*shape, seed=seed), axis=-1)


def _labels(*shape, num_classes=C, seed=0):
  ids = np.random.default_rng(seed).integers(0, num_classes, shape)
  ids[..., 0, 0] = 255  # one ignored pixel per image
  return jnp.asarray(ids, jnp.int32)


def _binary(*shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 2, shape), jnp.float32)


def _nodes(*shape, seed=0):
  q = _normal(*shape, seed=seed)
  return q / jnp.linalg.norm(q, axis=-1, keepdims=True)


def _seam_view(size, seed):
  return {"cam": _normal(B, size, size, K + 1, seed=seed), "cam_rv": _uniform(B, size, size, K + 1)}


def _seam_inputs():
  # view 2 is view 1 rescaled by the official 0.3: 10 -> 3
  return _seam_view(10, 0), _seam_view(3, 1), _binary(B, K)


# name -> (static keyword arguments, a maker of the array arguments, output shapes as a pytree)
CASES = {
    "softmax_cross_entropy_with_ignore": (
        {},
        lambda: (_normal(B, H, W, C), _labels(B, H, W)),
        (),
    ),
    "upsampled_cross_entropy": ({}, lambda: (_normal(B, 4, 4, C), _labels(B, H, W)), ()),
    "entropy_weighted_cross_entropy": (
        {"power": 1.0},
        lambda: (_normal(B, 4, 4, C), _labels(B, H, W)),
        (),
    ),
    "entropy_loss": ({}, lambda: (_probs(B, H, W, C),), ()),
    "self_information_map": ({}, lambda: (_probs(B, H, W, C),), (B, H, W, C)),
    "normalized_entropy": ({}, lambda: (_probs(B, H, W, C),), (B, H, W)),
    "bce_with_logits": ({"label": 1.0}, lambda: (_normal(B, 3, 3, 1),), ()),
    "adversarial_generator_loss": ({}, lambda: (_normal(B, 3, 3, 1),), ()),
    "discriminator_loss": ({}, lambda: (_normal(B, 3, 3, 1), _normal(B, 2, 4, 1, seed=1)), ()),
    "discriminator_loss_terms": (
        {},
        lambda: (_normal(B, 3, 3, 1), _normal(B, 2, 4, 1, seed=1)),
        {"source": (), "target": ()},
    ),
    "seam_loss": (
        {},
        _seam_inputs,
        (
            (),
            {
                k: ()
                for k in (
                    "cls1",
                    "cls2",
                    "rvmin1",
                    "rvmin2",
                    "er",
                    "ecr1",
                    "ecr2",
                    "ecr",
                    "cls",
                    "total",
                )
            },
        ),
    ),
    "cam_classification_loss": ({}, lambda: (_normal(B, H, W, K + 1), _binary(B, K)), ()),
    "multilabel_soft_margin_loss": ({}, lambda: (_normal(B, K), _binary(B, K)), ()),
    "adaptive_min_pooling_loss": ({}, lambda: (_normal(B, H, W, K),), ()),
    "equivariant_regularization": (
        {},
        lambda: (_uniform(B, 4, 4, K + 1), _uniform(B, 4, 4, K + 1, seed=1)),
        (),
    ),
    "equivariant_cross_regularization": (
        {},
        lambda: tuple(_uniform(B, 4, 4, K + 1, seed=s) for s in range(4)),
        ((), ()),
    ),
    "affinity_loss": (
        {},
        lambda: (
            _uniform(B, 5, 12),
            _binary(B, 5, 12),
            _binary(B, 5, 12, seed=1),
            _binary(B, 5, 12, seed=2),
        ),
        (
            (),
            {
                k: ()
                for k in ("bg_loss", "fg_loss", "neg_loss", "bg_count", "fg_count", "neg_count")
            },
        ),
    ),
    "mast_reconstruction_loss": (
        {"radius": 2},
        lambda: (
            _normal(B, 4, 4, 8),
            _normal(1, B, 4, 4, 8, seed=1),
            _normal(1, B, H, W, 1, seed=2),
            _normal(B, H, W, 1, seed=3),
        ),
        ((), {"out": (B, 4, 4, 1), "out_up": (B, H, W, 1), "err_map": (B, H, W)}),
    ),
    "smooth_l1_loss": ({}, lambda: (_normal(B, 5), _normal(B, 5, seed=1) * 3), ()),
    "local_propagate": (
        {"radius": 1},
        lambda: (
            _normal(B, 5, 6, 4),
            _normal(2, B, 5, 6, 4, seed=1),
            _normal(2, B, 5, 6, 3, seed=2),
        ),
        (B, 5, 6, 3),
    ),
    "mast_colorize": (
        # frame 0 is more than roi_gap frames back: it takes the ROI path, frame 20 the local window
        {"radius": 1, "ref_index": (0, 20), "current_ind": 21, "roi_radius": 2},
        lambda: (_normal(2, 1, 4, 4, 4), _normal(1, 4, 4, 4, seed=1), _uniform(2, 1, 16, 16, 3)),
        (1, 4, 4, 3),
    ),
    "crw_walk_loss": (
        {"temperature": 0.07, "edge_dropout": 0.1},
        lambda: (_nodes(B, 4, 5, 8), jax.random.key(0)),
        ((), (2,)),
    ),
    "cycle_cross_entropy": ({}, lambda: (jax.nn.softmax(_normal(2, B, 5, 5), axis=-1),), (2,)),
}


def test_docs_table_lists_exactly_the_public_losses():
  assert sorted(_doc_rows()) == sorted(jaxseg.losses.__all__)
  assert sorted(CASES) == sorted(jaxseg.losses.__all__)  # a new loss needs a case here too


@pytest.mark.parametrize("name", sorted(jaxseg.losses.__all__))
def test_loss_jits_on_documented_shapes(name):
  module = importlib.import_module(f"jaxseg.losses.{_doc_rows()[name]}")
  fn = getattr(module, name)
  assert fn is getattr(jaxseg.losses, name)  # the package re-exports the module's function
  static, make_inputs, shapes = CASES[name]
  args = make_inputs()
  if name == "crw_walk_loss":  # the PRNG key is a keyword argument
    *args, rng = args
    static = {**static, "rng": rng}
  out = jax.jit(functools.partial(fn, **static))(*args)
  got = jax.tree.map(lambda x: tuple(x.shape), out)
  assert got == shapes
  for leaf in jax.tree.leaves(out):
    assert leaf.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(leaf))), name
