"""Steady-state training-step throughput, compile time and model FLOPs utilisation (MFU).

Times jaxseg's real train step (the trainer's jitted, donated step over the device mesh, the method's loss and
optimiser) and, with --reference, the official PyTorch implementation's step at the same shapes on the same
machine, and prints jaxseg / official.

  python benchmarks/train_step.py --method=seam                      # paper shapes: ResNet-38, 448^2 + x0.3 view
  python benchmarks/train_step.py --method=uda                       # AdvEnt: DeepLab-v2 R101 + 2 D, 1280x720 + 1024x512
  python benchmarks/train_step.py --method=uda --size=320 --steps=2 --repeats=2 --reference=/path/to/ADVENT
  python benchmarks/train_step.py --method=seam --reference=/path/to/SEAM    # + official step, same device
  python benchmarks/train_step.py --method=vos --reference=/path/to/MAST     # MAST pairs, 256^2, batch 12
  python benchmarks/train_step.py --method=seam --size=112 --batch=2 --steps=3   # quick CPU check

Methods (shapes from the papers / official configs):
  seam  SEAM train step: two views (448^2 crop and its x0.3 rescale), cls + ER + ECR + PCM min-pooling losses,
        SGD with the official parameter groups; batch 8 per device. Reference: YudeWang/SEAM
        (`network/resnet38_SEAM.py`, `train_SEAM.py`'s loss lines restated around the imported pieces).
  uda   The `uda` method's AdvEnt step (its default objective): DeepLab-v2 R101 multi-level, source
        1280x720 with labels, target 1024x512; segmenter CE (main + 0.1 aux, logits upsampled to the label
        size) + adversarial BCE on the target self-information maps (0.001 main + 0.0002 aux, D frozen),
        and the two FC discriminators (main and aux heads) on the detached source / target maps (each term
        halved); SGD momentum 0.9 with 10x lr on the heads and ADVENT's per-listing backbone updates, Adam
        (0.9, 0.99) for each discriminator; batch 1 per device as ADVENT. `--uda-objective=minent` times
        the MinEnt step instead (CE + 0.001 / 0.0002 x target entropy; no discriminator).
        Reference: valeoai/ADVENT, one iteration of `advent/domain_adaptation/train_UDA.py: train_advent`
        (or `train_minent`) restated around its imported pieces (`advent/model/deeplabv2.py`,
        `advent/model/discriminator.py: get_fc_discriminator`, `advent/utils/func.py: loss_calc,
        prob_2_entropy, bce_loss, adjust_learning_rate*`, `advent/utils/loss.py: entropy_loss`): the
        official order of forward / backward passes, requires_grad toggles and optimiser steps, labels
        source 0 / target 1, cfg.TRAIN's values (domain_adaptation/config.py, restated: it needs easydict);
        `F.softmax`'s implicit dim (1) is written out. On CPU `bce_loss` (which moves its label tensor to
        `get_device()`, -1 there) is restated with the same ops.
  vos   MAST step (the `vos` method's `mast_loss`): pairs of 256^2 Lab frames, one of a/b dropped, ResNet-18
        features, colorizer with R = 6, smooth-L1 (x20); Adam 1e-3; batch 12 per device. Reference:
        zlai0/MAST (`models/mast.py: MAST` with training=True, its `dropout2d_lab`, `main.py: compute_lphoto`'s
        ops restated as main.py parses argv at import). Without the compiled `spatial_correlation_sampler`
        a pure-PyTorch stand-in (same values, other speed) is installed and the script says so.
  hn    No train-step case here yet (not among --method's choices).

MFU = FLOPs of the compiled step (XLA cost analysis of the step with XLA's convolution ops, whatever
lowering is timed; counts multiply-adds as 2) / step time / device peak.
Peaks are dense tensor-core numbers per chip (table `PEAK_TFLOPS`): bf16 for bf16 compute, TF32 for fp32 compute
on NVIDIA (XLA's default f32 matmul precision there), the bf16 MXU peak on TPU. CPUs have no entry: FLOP/s only.

Official PyTorch is timed in fp32 (the code has no mixed precision). On CPU install torch 2.13.0
(`pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu`); the official code's unused
imports (cv2, pydensecrf, tensorboardX, torchvision) are replaced by inert stubs when missing.
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib
import importlib.util
import json
import os
import statistics
import sys
import time
import types
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from jaxseg.models import conv_lowering  # noqa: E402
from jaxseg.train import loop  # noqa: E402
from jaxseg.train import sharding as shd  # noqa: E402

# Dense peak TFLOP/s per chip: (bf16, fp32 as XLA computes it by default). Matched against device_kind.
PEAK_TFLOPS = {
    "H200": (989.4, 494.7),  # SXM; TF32 for fp32
    "H100": (989.4, 494.7),  # SXM (PCIe parts: 756 / 378)
    "A100": (312.0, 156.0),
    "TPU v5 lite": (197.0, 197.0),  # v5e
    "TPU v5e": (197.0, 197.0),
    "TPU v5p": (459.0, 459.0),
    "TPU v5": (459.0, 459.0),
    "TPU v4": (275.0, 275.0),
}

TARGETS = {  # printed next to the results (issue 7); a benchmark reports, it does not assert
    "seam": "official fp32 ratio >= 3x on a GPU (>= 1x on CPU); MFU >= 45% bf16 on H100/H200",
    "uda": "AdvEnt step: official fp32 ratio >= 1x on CPU, >= 2x on a GPU",
    "vos": "MAST's PyTorch step: >= 1x on this CPU, >= 2x on a GPU",
}


def peak_tflops(device_kind: str, dtype: str) -> float | None:
  for key, (bf16, fp32) in PEAK_TFLOPS.items():
    if key.lower() in device_kind.lower():
      return bf16 if dtype == "bfloat16" else fp32
  return None


# ------------------------------------------------------------------------------------------------------------
# jaxseg steps


def seam_case(args, dtype: str):
  """(config, task, global batch) of the SEAM train step at the paper's shapes."""
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
  import seam as seam_config  # pylint: disable=import-outside-toplevel
  from jaxseg.methods.seam import method  # pylint: disable=import-outside-toplevel

  config = seam_config.get_config("voc")
  size = args.size or 448
  batch = args.batch or 8
  with config.unlocked():
    config.data.name = (
        "synthetic"  # only builds the (unused) source; the batch below is fed directly
    )
    config.data.synthetic.num_train = 8
    config.data.synthetic.image_size = (size, size)
    config.model.width_multiplier = args.width
    config.train.compute_dtype = dtype
    config.augment.crop_size = (size, size)
    config.train.batch_size = batch * num_devices(args)
  task = method.make_task(config)
  rng = np.random.default_rng(0)
  n = config.train.batch_size
  labels = (rng.random((n, config.data.num_classes - 1)) < 0.15).astype(np.float32)
  labels[np.arange(n), rng.integers(0, labels.shape[1], n)] = 1.0
  data = dict(image=rng.standard_normal((n, size, size, 3)).astype(np.float32), labels=labels)
  return config, task, data


UDA_SOURCE, UDA_TARGET = (720, 1280), (512, 1024)  # (H, W): GTA5 source, Cityscapes target (ADVENT)


def uda_shapes(args) -> tuple[tuple[int, int], tuple[int, int]]:
  """(source, target) (H, W): ADVENT's, or scaled so that the source width is --size."""
  scale = (args.size / UDA_SOURCE[1]) if args.size else 1.0
  return (
      tuple(int(round(s * scale)) for s in UDA_SOURCE),
      tuple(int(round(s * scale)) for s in UDA_TARGET),
  )


UDA_OBJECTIVES = ("advent", "minent")
# ADVENT's FC discriminator: five 4x4 / 2 convs, so its input (a map at the label size) needs >= 32 px a side.
UDA_MIN_DISCRIMINATOR_SIDE = 32


def uda_case(args, dtype: str):
  """The `uda` method's own step for `--uda-objective` (AdvEnt by default: segmenter + the two
  discriminators, each network with its optimiser group), paper optimisers, random inputs at the
  requested shapes."""
  from jaxseg.methods.uda import method as uda  # pylint: disable=g-import-not-at-top

  objective = args.uda_objective
  source, target = uda_shapes(args)
  if objective == "advent" and min(*source, *target) < UDA_MIN_DISCRIMINATOR_SIDE:
    raise SystemExit(
        f"--method=uda --uda-objective=advent: source {source} / target {target} (H, W) are below the "
        f"discriminators' {UDA_MIN_DISCRIMINATOR_SIDE} px (five stride-2 convs); use --size >= 80"
    )
  batch = (args.batch or 1) * num_devices(args)
  config = uda.default_config()
  config.train.batch_size = batch
  config.train.compute_dtype = dtype
  config.model.width_multiplier = args.width
  config.loss.name = objective
  config.input.update(source_size=source, target_size=target)
  segmenter, disc = uda.build_networks(config)
  task = loop.TrainTask(
      init_fn=lambda rng, b: uda.init_variables(config, rng, b),
      loss_fn=functools.partial(uda.uda_loss, segmenter, disc, config.loss, objective),
      train_source=None,
      augment=None,
  )
  rng = np.random.default_rng(0)
  data = {
      "source": {
          "image": rng.standard_normal((batch, *source, 3)).astype(np.float32) * 50,
          "mask": rng.integers(0, 19, (batch, *source)).astype(np.int32),
      },
      "target": {"image": rng.standard_normal((batch, *target, 3)).astype(np.float32) * 50},
  }
  return config, task, data


def vos_case(args, dtype: str):
  """The `vos` method's MAST step (the method's own objective): pairs of 256 x 256 Lab frames, batch
  12 (MAST's default), Adam; random clean-Lab inputs."""
  from jaxseg.methods.vos import method as vos  # pylint: disable=g-import-not-at-top

  size = args.size or 256
  batch = (args.batch or 12) * num_devices(args)
  config = vos.default_config()
  config.train.batch_size = batch
  config.train.compute_dtype = dtype
  config.model.width_multiplier = args.width
  config.input.image_size = (size, size)
  encoder = vos.build_encoder(config)
  task = loop.TrainTask(
      init_fn=functools.partial(vos.init_variables, config),
      loss_fn=functools.partial(vos.mast_loss, encoder, config.loss),
      train_source=None,
      augment=None,
  )
  rng = np.random.default_rng(0)
  clip = rng.uniform(-1, 1, (batch, 2, size, size, 3)).astype(np.float32)
  return config, task, {"clip": clip}


CASES: dict[str, Callable] = {
    "seam": seam_case,
    "uda": uda_case,
    "vos": vos_case,
}


def num_devices(args) -> int:
  return args.devices or jax.device_count()


def median_step_seconds(
    step: Callable[[], Any], sync: Callable[[], Any], *, warmup: int, steps: int, repeats: int
) -> float:
  """Median over `repeats` windows of seconds per `step()`; `sync()` waits for queued work, and is called
  only at the end of each window, so nothing inside a window blocks the host."""
  for _ in range(warmup):  # compilation caches, cuDNN autotuning, oneDNN primitive creation
    step()
  sync()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      step()
    sync()
    times.append((time.perf_counter() - start) / steps)
  return statistics.median(times)


def model_flops(task, ts, state, batch) -> float:
  """FLOPs of one train step: XLA's cost analysis of the step traced with XLA's convolution ops.

  Counted on that program whatever lowering is timed: im2col + matmul (the CPU path, see
  jaxseg/models/conv_lowering.py) also multiplies the zero padding taps, which are not model FLOPs.
  """
  with conv_lowering.conv_lowering("xla"):
    return flops_of(loop.make_train_step(task, ts).lower(state, batch).compile())


def flops_of(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0)) if cost else 0.0


def time_jaxseg(args, dtype: str) -> dict:
  config, task, data = CASES[args.method](args, dtype)
  mesh = shd.make_mesh(config.mesh, jax.devices()[: num_devices(args)])
  ts = loop.setup(config, task, data, mesh=mesh)
  state = ts.init_state()
  batch = shd.global_batch(data, ts.batch_sharding)
  step = loop.make_train_step(task, ts)
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  if conv_lowering.uses_xla_convolutions():
    flops = flops_of(compiled)
  else:
    flops = model_flops(task, ts, state, batch)
  carry = {"state": state, "metrics": None}

  def one_step():  # the state is donated: feed each step's output to the next
    carry["state"], carry["metrics"], _ = step(carry["state"], batch)

  step_s = median_step_seconds(
      one_step,
      lambda: jax.block_until_ready(carry),
      warmup=args.warmup,
      steps=args.steps,
      repeats=args.repeats,
  )
  metrics = carry["metrics"]
  if step._cache_size() != 1:  # pylint: disable=protected-access
    raise RuntimeError(f"the {args.method} step recompiled: {step._cache_size()} executables")  # pylint: disable=protected-access
  images = int(config.train.batch_size)
  kind = jax.devices()[0].device_kind
  peak = peak_tflops(kind, dtype)
  tflops = (
      flops / step_s / 1e12
  )  # cost analysis is of the whole (SPMD-partitioned) program per device
  return dict(
      images_per_s=images / step_s,
      step_s=step_s,
      compile_s=compile_s,
      flops_per_step=flops,
      tflops_per_s=tflops,
      mfu=(tflops / peak) if peak else None,
      loss=float(metrics["loss"]),
      global_batch=images,
      devices=num_devices(args),
  )


# ------------------------------------------------------------------------------------------------------------
# Official PyTorch steps (imported from the checkout at run time; nothing vendored)


def _stub_missing(names):
  """Inert modules for imports the official code makes but never uses in the timed step."""

  class _Stub(types.ModuleType):

    def __getattr__(self, attr):
      if attr.startswith("__"):
        raise AttributeError(attr)
      return _Stub(f"{self.__name__}.{attr}")

    def __call__(self, *a, **k):
      raise RuntimeError(f"{self.__name__} is a stub (not installed)")

  for name in names:
    top = name.split(".")[0]
    try:
      if importlib.util.find_spec(top) is not None:
        continue
    except ValueError:
      pass
    sys.modules[name] = _Stub(name)


def _torch_device(torch):
  return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def reference_seam(args, path: str) -> Callable[[], float]:
  import torch  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel

  _stub_missing(
      [
          "cv2",
          "pydensecrf",
          "pydensecrf.densecrf",
          "pydensecrf.utils",
          "tensorboardX",
          "torchvision",
          "torchvision.transforms",
      ]
  )
  sys.path.insert(0, path)
  resnet38_seam = importlib.import_module("network.resnet38_SEAM")
  visualization = importlib.import_module("tool.visualization")
  torchutils = importlib.import_module("tool.torchutils")
  train_seam = importlib.import_module("train_SEAM")  # its helpers; __main__ is guarded
  device = _torch_device(torch)
  size, batch = args.size or 448, args.batch or 8
  model = resnet38_seam.Net().to(device)
  model.train()
  groups = model.get_parameter_groups()
  lr, wd = 0.01, 5e-4  # train_SEAM.py defaults
  optimizer = torchutils.PolyOptimizer(
      [
          {"params": groups[0], "lr": lr, "weight_decay": wd},
          {"params": groups[1], "lr": 2 * lr, "weight_decay": 0},
          {"params": groups[2], "lr": 10 * lr, "weight_decay": wd},
          {"params": groups[3], "lr": 20 * lr, "weight_decay": 0},
      ],
      lr=lr,
      weight_decay=wd,
      max_step=10000,
  )
  gen = torch.Generator().manual_seed(0)
  img1 = torch.randn(batch, 3, size, size, generator=gen).to(device)
  label = (torch.rand(batch, 20, generator=gen) < 0.15).float()
  label[:, 0] = 1.0
  label = torch.cat((torch.ones(batch, 1), label), dim=1).to(device).unsqueeze(2).unsqueeze(3)
  max_norm, max_onehot = visualization.max_norm, train_seam.max_onehot
  min_pool = train_seam.adaptive_min_pooling_loss

  def step():  # train_SEAM.py l.102-146, one iteration
    scale = 0.3
    img2 = F.interpolate(img1, scale_factor=scale, mode="bilinear", align_corners=True)
    cam1, cam_rv1 = model(img1)
    label1 = F.adaptive_avg_pool2d(cam1, (1, 1))
    loss_rvmin1 = min_pool((cam_rv1 * label)[:, 1:, :, :])
    cam1 = (
        F.interpolate(max_norm(cam1), scale_factor=scale, mode="bilinear", align_corners=True)
        * label
    )
    cam_rv1 = (
        F.interpolate(max_norm(cam_rv1), scale_factor=scale, mode="bilinear", align_corners=True)
        * label
    )
    cam2, cam_rv2 = model(img2)
    label2 = F.adaptive_avg_pool2d(cam2, (1, 1))
    loss_rvmin2 = min_pool((cam_rv2 * label)[:, 1:, :, :])
    cam2 = max_norm(cam2) * label
    cam_rv2 = max_norm(cam_rv2) * label
    loss_cls1 = F.multilabel_soft_margin_loss(label1[:, 1:, :, :], label[:, 1:, :, :])
    loss_cls2 = F.multilabel_soft_margin_loss(label2[:, 1:, :, :], label[:, 1:, :, :])
    ns, _, hs, ws = cam2.size()
    loss_er = torch.mean(torch.abs(cam1[:, 1:, :, :] - cam2[:, 1:, :, :]))
    cam1[:, 0, :, :] = 1 - torch.max(cam1[:, 1:, :, :], dim=1)[0]
    cam2[:, 0, :, :] = 1 - torch.max(cam2[:, 1:, :, :], dim=1)[0]
    tensor_ecr1 = torch.abs(max_onehot(cam2.detach()) - cam_rv1)
    tensor_ecr2 = torch.abs(max_onehot(cam1.detach()) - cam_rv2)
    k = int(21 * hs * ws * 0.2)
    loss_ecr = torch.mean(torch.topk(tensor_ecr1.view(ns, -1), k=k, dim=-1)[0]) + torch.mean(
        torch.topk(tensor_ecr2.view(ns, -1), k=k, dim=-1)[0]
    )
    loss = (loss_cls1 + loss_cls2) / 2 + (loss_rvmin1 + loss_rvmin2) / 2 + loss_er + loss_ecr
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss

  return _timer(torch, step, batch)


def reference_uda(args, path: str) -> Callable[[], float]:
  """One iteration of ADVENT's `train_advent` (or `train_minent`, --uda-objective=minent), official
  config values (domain_adaptation/config.py), on device-resident random inputs."""
  import torch  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel

  sys.path.insert(0, path)
  deeplabv2 = importlib.import_module("advent.model.deeplabv2")
  discriminator = importlib.import_module("advent.model.discriminator")
  func = importlib.import_module("advent.utils.func")
  losses = importlib.import_module("advent.utils.loss")
  device = _torch_device(torch)
  source, target = uda_shapes(args)
  batch = args.batch or 1
  model = deeplabv2.get_deeplab_v2(num_classes=19, multi_level=True).to(device)
  model.train()
  train_cfg = types.SimpleNamespace(  # cfg.TRAIN's values the iteration reads
      LEARNING_RATE=2.5e-4,
      LEARNING_RATE_D=1e-4,
      MOMENTUM=0.9,
      WEIGHT_DECAY=5e-4,
      MAX_ITERS=250000,
      POWER=0.9,
      LAMBDA_SEG_MAIN=1.0,
      LAMBDA_SEG_AUX=0.1,
      LAMBDA_ADV_MAIN=0.001,
      LAMBDA_ADV_AUX=0.0002,
      LAMBDA_ENT_MAIN=0.001,
      LAMBDA_ENT_AUX=0.0002,
  )
  cfg = types.SimpleNamespace(TRAIN=train_cfg)
  lr = train_cfg.LEARNING_RATE
  optimizer = torch.optim.SGD(
      model.optim_parameters(lr),
      lr=lr,
      momentum=train_cfg.MOMENTUM,
      weight_decay=train_cfg.WEIGHT_DECAY,
  )
  # source (H, W): the official nn.Upsample(size=(INPUT_SIZE[1], INPUT_SIZE[0])) of a (W, H) config.
  interp = nn.Upsample(size=source, mode="bilinear", align_corners=True)
  interp_target = nn.Upsample(size=target, mode="bilinear", align_corners=True)
  gen = torch.Generator().manual_seed(0)
  images_source = (torch.randn(batch, 3, *source, generator=gen) * 50).to(device)
  labels = torch.randint(0, 19, (batch, *source), generator=gen)
  images = (torch.randn(batch, 3, *target, generator=gen) * 50).to(device)
  loss_calc, prob_2_entropy = func.loss_calc, func.prob_2_entropy
  iteration = [0]

  if args.uda_objective == "minent":

    def step():  # train_UDA.py: train_minent, one iteration
      optimizer.zero_grad()
      func.adjust_learning_rate(optimizer, iteration[0], cfg)
      pred_src_aux, pred_src_main = model(images_source)
      loss = train_cfg.LAMBDA_SEG_MAIN * loss_calc(
          interp(pred_src_main), labels, device
      ) + train_cfg.LAMBDA_SEG_AUX * loss_calc(interp(pred_src_aux), labels, device)
      loss.backward()
      pred_trg_aux, pred_trg_main = model(images)
      loss = train_cfg.LAMBDA_ENT_AUX * losses.entropy_loss(
          F.softmax(interp_target(pred_trg_aux), dim=1)
      ) + train_cfg.LAMBDA_ENT_MAIN * losses.entropy_loss(
          F.softmax(interp_target(pred_trg_main), dim=1)
      )
      loss.backward()
      optimizer.step()
      iteration[0] += 1
      return loss

    return _timer(torch, step, batch)

  if device.type == "cuda":
    bce_loss = func.bce_loss
  else:

    def bce_loss(y_pred, y_label):
      """func.bce_loss's ops; the official moves the label tensor to `y_pred.get_device()`, which
      is -1 (refused by `.to`) for a CPU tensor."""
      y_truth_tensor = torch.FloatTensor(y_pred.size())
      y_truth_tensor.fill_(y_label)
      return nn.BCEWithLogitsLoss()(y_pred, y_truth_tensor)

  d_aux = discriminator.get_fc_discriminator(num_classes=19).to(device)
  d_aux.train()
  d_main = discriminator.get_fc_discriminator(num_classes=19).to(device)
  d_main.train()
  optimizer_d_aux = torch.optim.Adam(
      d_aux.parameters(), lr=train_cfg.LEARNING_RATE_D, betas=(0.9, 0.99)
  )
  optimizer_d_main = torch.optim.Adam(
      d_main.parameters(), lr=train_cfg.LEARNING_RATE_D, betas=(0.9, 0.99)
  )
  source_label, target_label = 0, 1

  def step():  # train_UDA.py: train_advent, one iteration (MULTI_LEVEL)
    i_iter = iteration[0]
    optimizer.zero_grad()
    optimizer_d_aux.zero_grad()
    optimizer_d_main.zero_grad()
    func.adjust_learning_rate(optimizer, i_iter, cfg)
    func.adjust_learning_rate_discriminator(optimizer_d_aux, i_iter, cfg)
    func.adjust_learning_rate_discriminator(optimizer_d_main, i_iter, cfg)
    # only train segnet: no gradients into the discriminators
    for param in d_aux.parameters():
      param.requires_grad = False
    for param in d_main.parameters():
      param.requires_grad = False
    # train on source
    pred_src_aux, pred_src_main = model(images_source)
    pred_src_aux = interp(pred_src_aux)
    loss_seg_src_aux = loss_calc(pred_src_aux, labels, device)
    pred_src_main = interp(pred_src_main)
    loss_seg_src_main = loss_calc(pred_src_main, labels, device)
    loss = (
        train_cfg.LAMBDA_SEG_MAIN * loss_seg_src_main + train_cfg.LAMBDA_SEG_AUX * loss_seg_src_aux
    )
    loss.backward()
    # adversarial training to fool the discriminators
    pred_trg_aux, pred_trg_main = model(images)
    pred_trg_aux = interp_target(pred_trg_aux)
    d_out_aux = d_aux(prob_2_entropy(F.softmax(pred_trg_aux, dim=1)))
    loss_adv_trg_aux = bce_loss(d_out_aux, source_label)
    pred_trg_main = interp_target(pred_trg_main)
    d_out_main = d_main(prob_2_entropy(F.softmax(pred_trg_main, dim=1)))
    loss_adv_trg_main = bce_loss(d_out_main, source_label)
    loss = (
        train_cfg.LAMBDA_ADV_MAIN * loss_adv_trg_main + train_cfg.LAMBDA_ADV_AUX * loss_adv_trg_aux
    )
    loss.backward()
    # train the discriminators
    for param in d_aux.parameters():
      param.requires_grad = True
    for param in d_main.parameters():
      param.requires_grad = True
    # with source
    pred_src_aux = pred_src_aux.detach()
    d_out_aux = d_aux(prob_2_entropy(F.softmax(pred_src_aux, dim=1)))
    loss_d_aux = bce_loss(d_out_aux, source_label) / 2
    loss_d_aux.backward()
    pred_src_main = pred_src_main.detach()
    d_out_main = d_main(prob_2_entropy(F.softmax(pred_src_main, dim=1)))
    loss_d_main = bce_loss(d_out_main, source_label) / 2
    loss_d_main.backward()
    # with target
    pred_trg_aux = pred_trg_aux.detach()
    d_out_aux = d_aux(prob_2_entropy(F.softmax(pred_trg_aux, dim=1)))
    loss_d_aux = bce_loss(d_out_aux, target_label) / 2
    loss_d_aux.backward()
    pred_trg_main = pred_trg_main.detach()
    d_out_main = d_main(prob_2_entropy(F.softmax(pred_trg_main, dim=1)))
    loss_d_main = bce_loss(d_out_main, target_label) / 2
    loss_d_main.backward()
    optimizer.step()
    optimizer_d_aux.step()
    optimizer_d_main.step()
    iteration[0] += 1
    return loss_d_main

  return _timer(torch, step, batch)


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
  module.__doc__ = "pure-PyTorch stand-in (benchmarks/train_step.py)"
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


def reference_vos(args, path: str) -> Callable[..., dict]:
  import torch  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel

  device = _torch_device(torch)
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

  timer = _timer(torch, step, batch)
  return lambda *a, **k: {**timer(*a, **k), "correlation_sampler": sampler}


def _timer(torch, step, batch):
  def run(warmup: int, steps: int, repeats: int) -> dict:
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    step_s = median_step_seconds(step, sync, warmup=warmup, steps=steps, repeats=repeats)
    return dict(images_per_s=batch / step_s, step_s=step_s)

  return run


REFERENCES = {"seam": reference_seam, "uda": reference_uda, "vos": reference_vos}


# ------------------------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--method", required=True, choices=sorted(CASES))
  parser.add_argument(
      "--precision",
      default="float32,bfloat16",
      help="comma-separated compute dtypes for jaxseg (float32, bfloat16)",
  )
  parser.add_argument(
      "--size",
      type=int,
      default=0,
      help="SEAM crop side / UDA source width (target scaled alike) / MAST frame side; 0 = paper shapes",
  )
  parser.add_argument(
      "--batch", type=int, default=0, help="batch per device; 0 = paper (SEAM 8, UDA 1, MAST 12)"
  )
  parser.add_argument(
      "--width", type=float, default=1.0, help="backbone width multiplier (1 = paper)"
  )
  parser.add_argument("--devices", type=int, default=0, help="use the first N devices (0 = all)")
  parser.add_argument("--steps", type=int, default=10, help="steps per timed repeat")
  parser.add_argument(
      "--repeats", type=int, default=3, help="timed repeats (the median is reported)"
  )
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument(
      "--conv-lowering",
      default="auto",
      help="comma-separated convolution lowerings to time (auto, xla, matmul; see "
      "jaxseg/models/conv_lowering.py): 'auto,xla' shows what the CPU matmul path buys",
  )
  parser.add_argument(
      "--reference", default="", help="path to the official checkout (SEAM, ADVENT or MAST)"
  )
  parser.add_argument(
      "--uda-objective",
      default="advent",
      choices=UDA_OBJECTIVES,
      help="--method=uda: the step timed (jaxseg and --reference): advent (segmenter + two "
      "discriminators) or minent",
  )
  parser.add_argument("--json", default="", help="also write the results here")
  return parser.parse_args(argv)


def main(argv=None) -> dict:
  args = parse_args(argv)
  kind = jax.devices()[0].device_kind
  print(
      f"# {args.method} train step | device {kind} x{num_devices(args)} | jax {jax.__version__} | "
      f"{time.strftime('%Y-%m-%d')}",
      flush=True,
  )
  results = {
      "method": args.method,
      "device": kind,
      "devices": num_devices(args),
      "jax": jax.__version__,
      "date": time.strftime("%Y-%m-%d"),
      "rows": [],
  }
  reference = None
  if args.reference:
    if args.width != 1.0:
      raise SystemExit("--reference needs --width=1 (the official networks have full width only)")
    if num_devices(args) != 1:
      print("note: the official step runs on one device; compare per-device rates", flush=True)
    import torch  # pylint: disable=import-outside-toplevel

    ref_run = REFERENCES[args.method](args, os.path.abspath(args.reference))
    reference = ref_run(max(args.warmup, 3), args.steps, args.repeats)
    del ref_run  # frees the official model, optimiser and inputs before jaxseg's step is built
    gc.collect()
    reference["torch"] = torch.__version__
    print(
        f"official PyTorch {torch.__version__} fp32: {reference['images_per_s']:.3f} img/s "
        f"({1e3 * reference['step_s']:.1f} ms/step)",
        flush=True,
    )
    results["reference"] = reference
  header = f"{'precision':>9} {'lowering':>8} {'img/s':>9} {'ms/step':>9} {'compile s':>9} {'TFLOP/s':>8} {'MFU':>6}"
  if reference:
    header += f" {'vs official':>11}"
  print(header)
  for dtype in args.precision.split(","):
    for lowering in args.conv_lowering.split(","):
      with conv_lowering.conv_lowering(lowering):
        r = time_jaxseg(args, dtype)
      r["precision"], r["conv_lowering"] = dtype, lowering
      if reference:
        r["ratio_vs_official"] = r["images_per_s"] / num_devices(args) / reference["images_per_s"]
      results["rows"].append(r)
      line = (
          f"{dtype:>9} {lowering:>8} {r['images_per_s']:9.3f} {1e3 * r['step_s']:9.1f} {r['compile_s']:9.1f} "
          f"{r['tflops_per_s']:8.3f} {('%.1f%%' % (100 * r['mfu'])) if r['mfu'] is not None else 'n/a':>6}"
      )
      if reference:
        line += f" {r['ratio_vs_official']:10.2f}x"
      print(line, flush=True)
  print(f"targets: {TARGETS.get(args.method, '-')}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=2)
  return results


if __name__ == "__main__":
  main()
