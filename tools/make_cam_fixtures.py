"""Writes `tests/data/cam/` from the pytorch-grad-cam golden set (no torch needed).

The golden set `shared/golden/cam/` (pytorch-grad-cam 1.5.5 on a small CNN/FCN, see its README) is the
reference; this script copies the keys the CAM tests compare against into `tests/data/cam/cam_golden.npz`,
with the NCHW arrays transposed to NHWC, and writes `cam_golden.json` with the state-dict shapes, so the
tests regenerate the weights with `jaxseg.models.seeded.seeded_state_dict(shapes, seed)` (the golden set's
rule) and convert them with `jaxseg.cam.demo.variables_from_torch`.

Usage:  python tools/make_cam_fixtures.py [--golden ../shared/golden/cam] [--out tests/data/cam]
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

# Golden keys copied as they are ([B, S, S] maps, [B, h, h] raw maps, [B, K] weights, [B] metrics, ...).
PLAIN_PREFIXES = (
    "cam_",
    "campre_",
    "segcam_",
    "rawcam_",
    "weights_",
    "metric_CamMult_",
    "metric_ROAD0_",
    "show_cam_",
)
PLAIN_KEYS = ("img", "targets", "logits", "seg_category", "seg_mask")
# NCHW golden arrays stored NHWC.
NCHW_KEYS = (
    "acts_GradCAM",
    "grads_GradCAM",
    "seg_logits",
    "road0_MoRF80_images",
    "road0_LeRF80_images",
)


def main() -> None:
  here = os.path.dirname(os.path.abspath(__file__))
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--golden", default=os.path.join(here, "..", "..", "shared", "golden", "cam"))
  parser.add_argument("--out", default=os.path.join(here, "..", "tests", "data", "cam"))
  args = parser.parse_args()

  golden = np.load(os.path.join(args.golden, "cam_ref.npz"))
  with open(os.path.join(args.golden, "meta.json")) as f:
    meta = json.load(f)

  arrays = {}
  for key in golden.files:
    if key in PLAIN_KEYS or key.startswith(PLAIN_PREFIXES):
      arrays[key] = golden[key]
    elif key in NCHW_KEYS:
      arrays[key] = np.ascontiguousarray(np.transpose(golden[key], (0, 2, 3, 1)))
  missing = [k for k in PLAIN_KEYS + NCHW_KEYS if k not in arrays]
  if missing:
    raise KeyError(f"{args.golden}/cam_ref.npz lacks keys {missing}")
  # The network input is (img - 0.5) / 0.5; check it so a changed golden set fails here, not in a test.
  x_nhwc = np.transpose(golden["x"], (0, 2, 3, 1))
  if not np.allclose(x_nhwc, (golden["img"] - 0.5) / 0.5, atol=1e-6):
    raise ValueError(f"{args.golden}: x is not (img - 0.5) / 0.5")

  os.makedirs(args.out, exist_ok=True)
  np.savez_compressed(os.path.join(args.out, "cam_golden.npz"), **arrays)
  info = {
      "source": "shared/golden/cam (pytorch-grad-cam 1.5.5, torch 2.13.0)",
      "seed": meta["seed"],
      "grad_cam_version": meta["grad_cam_version"],
      "cnn_state_dict_shapes": meta["cnn_state_dict_shapes"],
      "fcn_state_dict_shapes": meta["fcn_state_dict_shapes"],
      "layout": "NHWC; acts/grads [B, h, w, K]; road0 images [B, S, S, 3] (normalised input)",
  }
  with open(os.path.join(args.out, "cam_golden.json"), "w") as f:
    json.dump(info, f, indent=1, sort_keys=True)
  size = os.path.getsize(os.path.join(args.out, "cam_golden.npz"))
  print(f"wrote {len(arrays)} arrays ({size / 1024:.0f} KiB) to {args.out}")


if __name__ == "__main__":
  main()
