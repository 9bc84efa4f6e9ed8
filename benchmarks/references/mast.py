"""MAST (zlai0/MAST): one training iteration of `models/mast.py: MAST` with `main.py`'s loss ops, for
`train_step.py --method=vos --reference=<checkout>`, and its test-time colorizer (`benchmark.py`'s
propagation) for `vos.py --reference=<checkout>`. The colorizer runs on the compiled
`spatial_correlation_sampler` the official code imports (built for this torch by correlation_sampler.py when
it does not import) and, as a second row, on a pure-PyTorch stand-in of it."""

from __future__ import annotations

import importlib
import os
import sys
import types
from collections.abc import Callable

import numpy as np

from . import correlation_sampler
from .common import timer, torch_device

COMPILED, STANDIN = "compiled", "pure-PyTorch stand-in"
SAMPLER_OPTIONS = ("kernel_size", "patch_size", "stride", "padding", "dilation", "dilation_patch")


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
      self.kernel_size, self.patch_size, self.stride = kernel_size, patch_size, stride
      self.padding, self.dilation, self.dilation_patch = padding, dilation, dilation_patch

    def forward(self, input1, input2):
      return spatial_correlation_sample(
          input1, input2, **{k: getattr(self, k) for k in SAMPLER_OPTIONS}
      )

  module = types.ModuleType("spatial_correlation_sampler")
  module.__doc__ = "pure-PyTorch stand-in (benchmarks/references/mast.py)"
  module.spatial_correlation_sample = spatial_correlation_sample
  module.SpatialCorrelationSampler = SpatialCorrelationSampler
  return module


def correlation_samplers(torch, source: str = "") -> dict[str, types.ModuleType]:
  """{COMPILED: the extension, STANDIN: the stand-in}; COMPILED is the importable extension, else the one
  `correlation_sampler.build(source)` makes (`source`: "" = the PyPI sdist, a tarball or a checkout; "none"
  skips it). Left out, with a note, when it cannot be had."""
  samplers = {}
  try:
    samplers[COMPILED] = importlib.import_module("spatial_correlation_sampler")
  except (ImportError, OSError) as err:  # not installed, or built against another torch
    reason = f"{err}; --correlation-sampler=none"
    if source != "none":
      try:
        samplers[COMPILED] = correlation_sampler.load(correlation_sampler.build(source))
      except Exception as build_err:  # noqa: BLE001  (no compiler, no network: time the stand-in alone)
        reason = f"building it failed: {build_err!r}"
    if COMPILED not in samplers:
      print(
          f"note: the compiled spatial_correlation_sampler is not available ({reason}); MAST's colorizer "
          "runs on the pure-PyTorch stand-in alone (padding + a loop over the P*P shifts), whose "
          "speed differs from the compiled op's",
          flush=True,
      )
  samplers[STANDIN] = _correlation_sampler_standin(torch)
  return samplers


def sampler_switch(colorizer, module: types.ModuleType) -> Callable[[], None]:
  """A call that points MAST's colorizer at `module`'s correlation samplers, made with the options it
  built its own with."""

  def like(sampler):
    return module.SpatialCorrelationSampler(**{k: getattr(sampler, k) for k in SAMPLER_OPTIONS})

  window, dilated = like(colorizer.correlation_sampler), [
      like(s) for s in colorizer.correlation_sampler_dilated
  ]

  def switch():
    colorizer.correlation_sampler, colorizer.correlation_sampler_dilated = window, dilated

  return switch


def import_mast(path: str, samplers: dict):
  """The checkout's `models.mast` module; `models/colorizer.py` imports the first of `samplers`."""
  sys.modules["spatial_correlation_sampler"] = next(iter(samplers.values()))
  sys.path.insert(0, path)
  mast = importlib.import_module("models.mast")  # models/ has no __init__: check it is MAST's
  if not os.path.abspath(mast.__file__).startswith(os.path.join(path, "models")):
    raise SystemExit(f"'models.mast' resolved to {mast.__file__}, not {path}/models/mast.py")
  return mast


def _use_all_cores(torch, device) -> None:
  if device.type == "cpu":
    torch.set_num_threads(
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    )


def reference(args, path: str) -> Callable[..., dict]:
  import torch
  import torch.nn.functional as F

  device = torch_device(torch)
  _use_all_cores(torch, device)
  samplers = correlation_samplers(torch, getattr(args, "correlation_sampler", ""))
  mast = import_mast(path, samplers)
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

  def with_sampler(module):
    switch = sampler_switch(model.colorizer, module)

    def sampled_step():
      switch()
      return step()

    return sampled_step

  # One model, optimiser and inputs for every sampler: the rows differ in the correlation op alone.
  runs = {
      name: timer(torch, with_sampler(module), batch, correlation_sampler=name)
      for name, module in samplers.items()
  }
  first = next(iter(runs.values()))

  def run(*a, **k) -> dict:
    return first(*a, **k)

  run.contenders = {name: r.contender for name, r in runs.items()}
  return run


def propagation_reference(
    path: str,
    frames,
    first_ids,
    *,
    long_term=(0, 5),
    short_term: int = 3,
    gap: int = 2,
    sampler_source: str = "",
) -> dict:
  """MAST's test-time propagation of one video (`benchmark.py: test`, `--ref 0`, R = 12): {name:
  Contender}, 'encoder' (every frame through `feature_extraction` + `post_convolution` once) and one
  propagation per correlation sampler: for each frame i + 1, the colorizer over the long-term and recent
  frames' features and labels (predicted ones from earlier steps), bilinear to full size, argmax, as
  benchmark.py (which re-encodes the references every frame; here the features are computed once, as
  jaxseg does). Random weights: speed does not depend on them.

  Args:
    frames: float32 Lab-normalised [T, H, W, 3] (the input of jaxseg's encoder).
    first_ids: uint8 [H, W] object ids of frame 0.
  """
  import torch
  import torch.nn.functional as F

  from .common import Contender

  device = torch_device(torch)
  _use_all_cores(torch, device)
  samplers = correlation_samplers(torch, sampler_source)
  mast = import_mast(path, samplers)
  model = mast.MAST(types.SimpleNamespace(training=False)).to(device).eval()  # R = 12 at test time
  video = [
      torch.from_numpy(np.ascontiguousarray(f.transpose(2, 0, 1)[None])).to(device) for f in frames
  ]
  first = torch.from_numpy(np.asarray(first_ids, np.float32)[None, None]).to(device)
  sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
  cache = {}

  def encode():
    with torch.no_grad():
      cache["feats"] = [model.post_convolution(model.feature_extraction(x)) for x in video]

  def propagate():
    feats, outputs = cache["feats"], [first]
    _, _, h, w = first.size()
    for i in range(len(video) - 1):
      # benchmark.py's schedule for --ref 0
      ref_index = (
          list(filter(lambda x: x <= i, long_term))
          + list(filter(lambda x: x > 0, range(i, i - gap * short_term, -gap)))[::-1]
      )
      ref_index = sorted(set(ref_index))
      with torch.no_grad():
        out = model.colorizer(
            [feats[r] for r in ref_index],
            feats[i + 1],
            [outputs[r] for r in ref_index],
            ref_index,
            i + 1,
        )
        out = F.interpolate(out, (h, w), mode="bilinear")
        outputs.append(torch.argmax(out, 1, keepdim=True).float())
    cache["ids"] = outputs

  num = len(video)
  contenders = {
      "encoder": Contender(encode, sync, lambda s: dict(fps=num / s, video_s=s)),
  }
  encode()
  for name, module in samplers.items():
    switch = sampler_switch(model.colorizer, module)

    def run(switch=switch):
      switch()
      propagate()

    contenders[name] = Contender(run, sync, lambda s: dict(fps=(num - 1) / s, video_s=s))
  return contenders
