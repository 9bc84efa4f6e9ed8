"""Cuts `uda_parts.npz` (tests/test_uda_parts.py) out of `shared/golden/esl/esl_golden.npz` (official ADVENT /
ESL / BDL outputs; that folder's README describes every key). Layouts stay as the golden set has them (NCHW).

    python tests/data/esl/extract_uda_parts.py /path/to/shared/golden/esl

Kept (the maps shared with `entropy_golden.npz` - adv_trg_entropy_map, adv_src_logits_up, seg_label, pl_prob
of image 0 - are not repeated):
  discriminator  adv_d_out_src, adv_d_out_trg
  losses         adv_loss_g_trg, adv_loss_d_src, adv_loss_d_trg, seg_loss_ce_src, adv_src_logits_lr,
                 adv_trg_logits_lr
  pseudo labels  all 6 images of pl_argmax, esl_entropy, esl_pseudo_labels, bdl_maxprob, bdl_pseudo_labels;
                 the raw / final thresholds of both rules; pl_logits of image 0 only (pl_logits0)
"""

import os
import sys

import numpy as np

KEYS = (
    "adv_d_out_src",
    "adv_d_out_trg",
    "adv_loss_g_trg",
    "adv_loss_d_src",
    "adv_loss_d_trg",
    "seg_loss_ce_src",
    "adv_src_logits_lr",
    "adv_trg_logits_lr",
    "pl_argmax",
    "esl_entropy",
    "esl_thresholds_raw",
    "esl_thresholds",
    "esl_pseudo_labels",
    "bdl_maxprob",
    "bdl_thresholds_raw",
    "bdl_thresholds",
    "bdl_pseudo_labels",
)


def main(golden: str) -> None:
  with np.load(os.path.join(golden, "esl_golden.npz")) as data:
    out = {k: data[k] for k in KEYS}
    out["pl_logits0"] = data["pl_logits"][:1]
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "uda_parts.npz")
  np.savez_compressed(path, **out)
  print(f"{path}: {os.path.getsize(path) / 1e6:.2f} MB")


if __name__ == "__main__":
  main(sys.argv[1])
