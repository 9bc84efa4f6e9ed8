"""ADVENT (valeoai/ADVENT): one iteration of `train_advent` / `train_minent` around the official
networks and helpers, for `train_step.py --method=uda --reference=<checkout>`."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable

from .common import timer, torch_device, uda_shapes


def reference(args, path: str) -> Callable[[], float]:
  """One iteration of ADVENT's `train_advent` (or `train_minent`, --uda-objective=minent), official
  config values (domain_adaptation/config.py), on device-resident random inputs."""
  import torch
  import torch.nn.functional as F
  from torch import nn

  sys.path.insert(0, path)
  deeplabv2 = importlib.import_module("advent.model.deeplabv2")
  discriminator = importlib.import_module("advent.model.discriminator")
  func = importlib.import_module("advent.utils.func")
  losses = importlib.import_module("advent.utils.loss")
  device = torch_device(torch)
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

    return timer(torch, step, batch)

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

  return timer(torch, step, batch)
