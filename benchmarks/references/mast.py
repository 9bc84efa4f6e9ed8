"""MAST (zlai0/MAST): one training iteration of `models/mast.py: MAST` with `main.py`'s loss ops, for
`train_step.py --method=vos --reference=<checkout>`; a pure-PyTorch stand-in replaces the compiled
`spatial_correlation_sampler` when it does not import."""

from __future__ import annotations

import importlib
import os
import sys
import types
from collections.abc import Callable

import numpy as np

from .common import timer, torch_device


def _correlation_sampler_standin(torch) -> types.ModuleType:
  """A pure-PyTorch `spatial_correlation_sampler` module (the compiled C++/CUDA extension MAST's colorizer
  imports), for the configuration MAST uses: kernel 1, stride 1, no padding, dilation 1, any odd
  patch and patch dilation. out[b, dy, dx, i, j] = sum_c a[b, c, i, j] * b[b, c, i + (dy - R) d,
  j + (dx - R) d], zero outside b, R = (patch - 1) // 2: one shifted product per displacement, by
  autograd. Same values as the extension; not its speed."""
  functional = torch.nn.functional

  def spatial_correlation_sample(
      input1, input2, kernel_size=1, patch_size=1, stride=1, padding=0, dilation=1, dilation_patch=1
  ):
    if (kernel_size, stride, padding, dilation) != (1, 1, 0, 1) or patch_size % 2 != 1:
      raise NotImplementedError(
          "the spatial_correlation_sampler stand-in covers kernel_size=1, stride=1, padding=0, "
          f"dilation=1 and an odd patch_size only; got kernel_size={kernel_size}, stride={stride}, "
          f"padding={padding}, dilation={dilation}, patch_size={patch_size}"
      )
    batch, _, height, width = input1.shape
    reach = (patch_size - 1) // 2 * dilation_patch
    padded = functional.pad(input2, (reach, reach, reach, reach))
    shifts = []
    for dy in range(patch_size):
      top = dy * dilation_patch
      for dx in range(patch_size):
        left = dx * dilation_patch
        window = padded[:, :, top : top + height, left : left + width]
        shifts.append((input1 * window).sum(1))
    return torch.stack(shifts, 1).reshape(batch, patch_size, patch_size, height, width)

  class SpatialCorrelationSampler(torch.nn.Module):

    def __init__(
        self, kernel_size=1, patch_size=1, stride=1, padding=0, dilation=1, dilation_patch=1
    ):
      super().__init__()
      self.options = dict(
          kernel_size=kernel_size,
          patch_size=patch_size,
          stride=stride,
          padding=padding,
          dilation=dilation,
          dilation_patch=dilation_patch,
      )

    def forward(self, input1, input2):
      return spatial_correlation_sample(input1, input2, **self.options)

  module = types.ModuleType("spatial_correlation_sampler")
  module.__doc__ = "pure-PyTorch stand-in (benchmarks/references/mast.py)"
  module.spatial_correlation_sample = spatial_correlation_sample
  module.SpatialCorrelationSampler = SpatialCorrelationSampler
  return module


def _correlation_sampler(torch) -> str:
  """'compiled' when the official extension imports, else installs the stand-in and says so."""
  try:
    importlib.import_module("spatial_correlation_sampler")
    return "compiled"
  except (ImportError, OSError) as err:  # not installed, or built against another torch
    sys.modules["spatial_correlation_sampler"] = _correlation_sampler_standin(torch)
    print(
        f"note: spatial_correlation_sampler is not importable ({err}); MAST's colorizer runs on a "
        "pure-PyTorch stand-in (padding + a loop over the P*P shifts), whose speed differs from "
        "the compiled op's",
        flush=True,
    )
    return "pure-PyTorch stand-in"


def reference(args, path: str) -> Callable[..., dict]:
  import torch
  import torch.nn.functional as F

  device = torch_device(torch)
  if device.type == "cpu":
    torch.set_num_threads(
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    )
  sampler = _correlation_sampler(torch)
  sys.path.insert(0, path)
  mast = importlib.import_module("models.mast")  # models/ has no __init__: check it is MAST's
  if not os.path.abspath(mast.__file__).startswith(os.path.join(path, "models")):
    raise SystemExit(f"'models.mast' resolved to {mast.__file__}, not {path}/models/mast.py")
  size, batch = args.size or 256, args.batch or 12
  model = mast.MAST(types.SimpleNamespace(training=True)).to(device)  # R = 6 when training
  model.train()
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999))  # main.py defaults
  gen = torch.Generator().manual_seed(0)
  clip = [(torch.rand(batch, 3, size, size, generator=gen) * 2 - 1).to(device) for _ in range(2)]

  def dropout2d_lab(frames):
    """MAST.dropout2d_lab's ops (one of the a/b channels zeroed, the rest scaled by 3/2), for NumPy
    >= 2.4, which refuses the official `int()` of its one-element draw."""
    dropped = 1  # np.random.choice(np.arange(1, 2), 1): always one channel
    np.random.choice(np.arange(1, 2), 1)  # same draws from the global generator as the official
    channels = np.random.choice(np.arange(1, 3), dropped, replace=False)
    for frame in frames:
      frame[:, channels] = 0
      frame *= 3 / (3 - dropped)
    return frames, channels

  try:
    model.dropout2d_lab([frame.clone() for frame in clip])
    drop = model.dropout2d_lab
  except TypeError:
    drop = dropout2d_lab
    print(
        "note: MAST.dropout2d_lab fails under this NumPy (int() of a 1-element array); the step "
        "runs the same ops restated",
        flush=True,
    )

  def step():  # main.py: train, one iteration (the loader's fresh tensors: on-device copies)
    images_lab_gt = [frame.clone() for frame in clip]
    images_lab = [frame.clone() for frame in clip]
    _, ch = drop(images_lab)
    # main.py's compute_lphoto: main.py parses sys.argv and imports tensorboard, matplotlib and its
    # data loaders at import, so its ops are restated here.
    _, _, h, w = images_lab[0].size()
    ref_x = images_lab[:-1]
    ref_y = [lab[:, ch] for lab in images_lab_gt[:-1]]
    tar_x = images_lab[-1]
    tar_y = images_lab_gt[-1][:, ch]
    outputs = model(ref_x, ref_y, tar_x, [0, 2], 4)  # pairwise training, as the official
    outputs = F.interpolate(outputs, (h, w), mode="bilinear")
    loss = F.smooth_l1_loss(outputs * 20, tar_y * 20, reduction="mean")
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss

  run = timer(torch, step, batch)
  return lambda *a, **k: {**run(*a, **k), "correlation_sampler": sampler}
