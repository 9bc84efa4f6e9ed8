"""Cuts the SEAM parity fixtures in this folder out of `shared/golden/seam/` (official YudeWang/SEAM @ 3212261
outputs, see that folder's README for every key). Layouts stay as the golden set has them (NCHW / OIHW).

    python tests/data/seam/extract_golden.py /path/to/shared/golden/seam

Subsets (to keep the fixtures < 3 MB):
  forward.npz  full: x, cam_lowres, pcm_cam_in, pcm_f_in, f9_out, pcm_out; full-resolution cam / cam_rv only in
               channels CHANNELS (bg, the three present classes, one absent class); backbone taps bb_conv4 and
               bb_conv5 every 8th channel, bb_conv6 every 32nd.
  train.npz    full: img2, label, view-2 raw cams, the four view-2-space maps, both ECR error maps, every loss,
               label*_gap, param names / requires_grad / gradnorm_*; head gradients of the total loss: f8_3 and f9
               full, fc8 rows CHANNELS, f8_4 every 4th output row. (View-1 raw cams = forward.npz upsampled.)
  infer.npz    image, label, the 8 network inputs (passes 0/1 full, the others every 4th pixel), per-pass CAMs,
               raw sum and normalised CAM in the present classes only (the other 18 are checked through
               `*_other_absmax` / `norm_cam_other_values`), present keys, pred, threshold.
  eval.npz     the whole of seam_eval.npz.
  trajectory.npz  a byte-identical copy of seam_trajectory.npz (3 official training iterations).
"""

import os
import shutil
import sys

import numpy as np

CHANNELS = np.array([0, 4, 8, 15, 20])  # bg, classes 3, 7, 14 (+1 for the bg slot), absent class 19


def main(golden: str) -> None:
  out_dir = os.path.dirname(os.path.abspath(__file__))
  load = lambda name: np.load(os.path.join(golden, name))
  fwd, bb, train, infer, ev = (
      load(f"seam_{n}.npz") for n in ("forward", "backbone", "train", "infer", "eval")
  )
  np.testing.assert_array_equal(fwd["x"], bb["x"])
  np.testing.assert_array_equal(fwd["x"], train["x"])
  np.savez_compressed(
      os.path.join(out_dir, "forward.npz"),
      channels=CHANNELS,
      **{k: fwd[k] for k in ("x", "cam_lowres", "pcm_cam_in", "pcm_f_in", "f9_out", "pcm_out")},
      cam_channels=fwd["cam"][:, CHANNELS],
      cam_rv_channels=fwd["cam_rv"][:, CHANNELS],
      bb_conv4_every8=bb["bb_conv4"][:, ::8],
      bb_conv5_every8=bb["bb_conv5"][:, ::8],
      bb_conv6_every32=bb["bb_conv6"][:, ::32],
  )

  keep = [
      "img2",
      "label",
      "train_cam2_raw",
      "train_cam_rv2_raw",
      "train_cam1_s",
      "train_cam2_s",
      "train_cam_rv1_s",
      "train_cam_rv2_s",
      "tensor_ecr1",
      "tensor_ecr2",
      "label1_gap",
      "label2_gap",
      "param_names",
      "param_requires_grad",
  ]
  keep += [k for k in train.files if k.startswith(("loss", "gradnorm_"))]
  np.savez_compressed(
      os.path.join(out_dir, "train.npz"),
      channels=CHANNELS,
      **{k: train[k] for k in keep},
      grad_f8_3=train["grad_loss_f8_3.weight"],
      grad_f9=train["grad_loss_f9.weight"],
      grad_fc8_rows=train["grad_loss_fc8.weight"][CHANNELS],
      grad_f8_4_every4=train["grad_loss_f8_4.weight"][::4],
  )

  present = infer["infer_present"]
  other = np.setdiff1d(np.arange(20), present)
  inputs = {
      f"input_{i}": infer[f"infer_input_{i}"] if i < 2 else infer[f"infer_input_{i}"][..., ::4, ::4]
      for i in range(8)
  }
  np.savez_compressed(
      os.path.join(out_dir, "infer.npz"),
      image=infer["infer_img_uint8"],
      label=infer["infer_label"],
      present=present,
      pred=infer["infer_pred"],
      bg_thresh=infer["infer_bg_thresh"],
      **inputs,
      cam_passes_present=infer["infer_cam_passes"][:, present],
      cam_passes_other_absmax=np.abs(infer["infer_cam_passes"][:, other]).max(),
      sum_cam_raw_present=infer["infer_sum_cam_raw"][present],
      sum_cam_raw_other_absmax=np.abs(infer["infer_sum_cam_raw"][other]).max(),
      norm_cam_present=infer["infer_norm_cam"][present],
      norm_cam_other_values=np.unique(infer["infer_norm_cam"][other]),
      cam_dict=infer["infer_cam_dict"],
  )
  np.savez_compressed(os.path.join(out_dir, "eval.npz"), **{k: ev[k] for k in ev.files})
  shutil.copyfile(
      os.path.join(golden, "seam_trajectory.npz"), os.path.join(out_dir, "trajectory.npz")
  )


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/golden/seam")
