"""SEAM (YudeWang/SEAM): one iteration of `train_SEAM.py`'s loop around the official network and loss
helpers (`network/resnet38_SEAM.py`, `tool/`), for `train_step.py --method=seam --reference=<checkout>`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

from .common import stub_missing, timer, torch_device


def reference(args, path: str) -> Callable[[], float]:
  import torch
  import torch.nn.functional as F

  stub_missing(
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
  device = torch_device(torch)
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

  return timer(torch, step, batch)
