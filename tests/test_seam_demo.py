"""The embedded SEAM demo shows what SEAM adds over plain CAM (slow: ~35 min on 2 CPU cores; not in CI).

Measured with the head learning-rate fix of configs/seam.py (1 CPU device, the launch command; 96 px
scenes, 600 steps each, train + infer, mIoU at the best background threshold), seeds 0 / 1 / 2: plain
CAM 52.2 / 53.2 / 49.2, SEAM raw CAM 59.7 / 56.6 / 67.0, SEAM CAM (PCM) 62.7 / 59.9 / 68.0 (SEAM - plain
CAM +10.5 / +6.7 / +18.9, PCM - raw CAM +2.9 / +3.3 / +1.1); lowest class IoU 15 % (plain CAM, seed 2).
Before the fix the plain CAM lost whole classes and the same command gave 30.7 on one machine and 40.3
on another. This test runs under the test session's 8 fake devices, which round differently from the
1-device launch: the margins are below the smallest measured gains.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEAM_MARGIN = 0.05  # SEAM CAM over the plain CAM baseline (smallest measured gain +6.7 points)
PCM_MARGIN = 0.0  # SEAM CAM (PCM) over SEAM's own raw fc8 CAM (smallest measured gain +1.1 points)


def _run(config: str, workdir, extra=()):
  cmd = [
      sys.executable,
      "launch.py",
      f"--config={config}",
      f"--workdir={workdir}",
      "--config.train.progress_bar=False",
      *extra,
  ]
  out = subprocess.run(
      cmd,
      cwd=ROOT,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
      timeout=3600,
      check=False,
  )
  assert out.returncode == 0, out.stdout[-3000:]
  with open(os.path.join(workdir, "infer", "metrics.json")) as f:
    return json.load(f)


@pytest.mark.slow
def test_seam_demo_beats_plain_cam(tmp_path):
  no_affinity = ['--config.stages=("train", "infer")']
  baseline = _run("configs/seam.py:synthetic_cam", tmp_path / "cam", no_affinity)
  seam = _run("configs/seam.py:synthetic", tmp_path / "seam", no_affinity)
  assert seam["cam_rv"]["best_miou"] >= baseline["cam"]["best_miou"] + SEAM_MARGIN, (seam, baseline)
  assert seam["cam_rv"]["best_miou"] >= seam["cam"]["best_miou"] + PCM_MARGIN, seam
  # The cause of the old instability: no class may be dead in either arm (measured minimum 29 %, seeds 0 and 1).
  assert min(baseline["cam"]["iou_at_best"]) > 0.1, baseline
  assert min(seam["cam_rv"]["iou_at_best"]) > 0.1, seam
