"""Writes the backbone parity fixtures `tests/data/backbones/*.npz` from PyTorch reference networks.

Needs torch (`pip install torch==2.13.0`, the CPU wheel); the tests only read the .npz files.

The reference networks below are small PyTorch re-statements of the official modules, with the official
state-dict names and the same op sequence:
  * torchvision `resnet.py` (BasicBlock / Bottleneck, `replace_stride_with_dilation`), plus the two video
    variants: CRW's `modify()` (strides set to 1, no dilation) and MAST's OS-4 encoder (no max-pool);
  * ADVENT `advent/model/deeplabv2.py` (Caffe bottleneck, stride on the 1x1 conv, forced shortcut on the
    dilated stages, ceil-mode max-pool, ClassifierModule = sum of 4 dilated 3x3 convs);
  * SEAM `network/resnet38d.py` (pre-activation wide blocks ResBlock / ResBlock_bot).
A width multiplier (not in the official code) shrinks every channel count so fixtures stay small; the
full-width official outputs are covered by the golden sets in `shared/golden/{seam,esl}` instead.

Weights: `jaxseg.models.seeded.seeded_state_dict(names -> shapes, seed)`, the rule the golden sets use. Each
fixture stores the state-dict names and shapes (so the test regenerates the same weights from the official
names), the input, and the reference outputs computed in float64 (cast to float32), for eval-mode BN and,
where the official code trains with batch statistics, train-mode BN plus a few updated running statistics.

Usage:  python tools/make_backbone_fixtures.py [--out tests/data/backbones]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from jaxseg.models.seeded import seeded_state_dict  # noqa: E402


def width(channels: int, multiplier: float) -> int:
  return max(1, int(round(channels * multiplier)))


# ------------------------------------------------------------------------------------------------------------
# torchvision ResNet (re-stated; torchvision does not import beside torch 2.13 here).


class TvBasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, downsample=None, first_dilation=1, dilation=1):
    super().__init__()
    self.conv1 = nn.Conv2d(
        inplanes, planes, 3, stride, padding=first_dilation, dilation=first_dilation, bias=False
    )
    self.bn1 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=dilation, dilation=dilation, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    identity = x
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    if self.downsample is not None:
      identity = self.downsample(x)
    return self.relu(out + identity)


class TvBottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride=1, downsample=None, first_dilation=1, dilation=1):
    super().__init__()
    del dilation  # torchvision: the single 3x3 conv takes the dilation given to the block
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(
        planes, planes, 3, stride, padding=first_dilation, dilation=first_dilation, bias=False
    )
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x):
    identity = x
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    if self.downsample is not None:
      identity = self.downsample(x)
    return self.relu(out + identity)


class TvResNet(nn.Module):
  """torchvision.models.ResNet features; `replace` = replace_stride_with_dilation."""

  def __init__(
      self,
      depth,
      multiplier=1.0,
      replace=(False, False, False),
      dilate=True,
      max_pool=True,
      stage_widths=(64, 128, 256, 512),
  ):
    super().__init__()
    block, layers = {
        18: (TvBasicBlock, [2, 2, 2, 2]),
        34: (TvBasicBlock, [3, 4, 6, 3]),
        50: (TvBottleneck, [3, 4, 6, 3]),
        101: (TvBottleneck, [3, 4, 23, 3]),
    }[depth]
    self.inplanes = width(64, multiplier)
    self.dilation = 1
    self.dilate = dilate
    self.conv1 = nn.Conv2d(3, self.inplanes, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(self.inplanes)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, 2, 1) if max_pool else nn.Identity()
    w = [width(c, multiplier) for c in stage_widths]
    self.layer1 = self._make_layer(block, w[0], layers[0])
    self.layer2 = self._make_layer(block, w[1], layers[1], 2, replace[0])
    self.layer3 = self._make_layer(block, w[2], layers[2], 2, replace[1])
    self.layer4 = self._make_layer(block, w[3], layers[3], 2, replace[2])

  def _make_layer(self, block, planes, blocks, stride=1, replace=False):
    previous_dilation = self.dilation
    if replace:
      if self.dilate:  # torchvision; dilate=False is CRW's modify(): stride 1, no dilation
        self.dilation *= stride
      stride = 1
    downsample = None
    if stride != 1 or self.inplanes != planes * block.expansion:
      downsample = nn.Sequential(
          nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
          nn.BatchNorm2d(planes * block.expansion),
      )
    layers = [block(self.inplanes, planes, stride, downsample, previous_dilation, self.dilation)]
    self.inplanes = planes * block.expansion
    for _ in range(1, blocks):
      layers.append(
          block(self.inplanes, planes, first_dilation=self.dilation, dilation=self.dilation)
      )
    return nn.Sequential(*layers)

  def forward(self, x):
    out = {}
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    out["stem"] = x
    for name in ("layer1", "layer2", "layer3", "layer4"):
      x = getattr(self, name)(x)
      out[name] = x
    return out


# ------------------------------------------------------------------------------------------------------------
# ADVENT DeepLab-v2 (advent/model/deeplabv2.py, re-stated with a width multiplier).


class AdventBottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(
        inplanes, planes, 1, stride=stride, bias=False
    )  # Caffe: stride on the 1x1
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=dilation, dilation=dilation, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample
    for bn in (self.bn1, self.bn2, self.bn3):
      for p in bn.parameters():
        p.requires_grad = False

  def forward(self, x):
    residual = x
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    if self.downsample is not None:
      residual = self.downsample(x)
    return self.relu(out + residual)


class AdventClassifier(nn.Module):

  def __init__(self, inplanes, dilations, num_classes):
    super().__init__()
    self.conv2d_list = nn.ModuleList(
        [
            nn.Conv2d(inplanes, num_classes, 3, 1, padding=d, dilation=d, bias=True)
            for d in dilations
        ]
    )

  def forward(self, x):
    out = self.conv2d_list[0](x)
    for conv in self.conv2d_list[1:]:
      out = out + conv(x)
    return out


class AdventDeepLabV2(nn.Module):

  def __init__(self, num_classes, multiplier=1.0, layers=(3, 4, 23, 3), multi_level=True):
    super().__init__()
    self.multi_level = multi_level
    self.inplanes = width(64, multiplier)
    self.conv1 = nn.Conv2d(3, self.inplanes, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(self.inplanes)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
    self.layer1 = self._make_layer(width(64, multiplier), layers[0])
    self.layer2 = self._make_layer(width(128, multiplier), layers[1], stride=2)
    self.layer3 = self._make_layer(width(256, multiplier), layers[2], stride=1, dilation=2)
    self.layer4 = self._make_layer(width(512, multiplier), layers[3], stride=1, dilation=4)
    if multi_level:
      self.layer5 = AdventClassifier(width(256, multiplier) * 4, [6, 12, 18, 24], num_classes)
    self.layer6 = AdventClassifier(width(512, multiplier) * 4, [6, 12, 18, 24], num_classes)

  def _make_layer(self, planes, blocks, stride=1, dilation=1):
    downsample = None
    if stride != 1 or self.inplanes != planes * 4 or dilation == 2 or dilation == 4:
      downsample = nn.Sequential(
          nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
          nn.BatchNorm2d(planes * 4),
      )
    layers = [
        AdventBottleneck(self.inplanes, planes, stride, dilation=dilation, downsample=downsample)
    ]
    self.inplanes = planes * 4
    for _ in range(1, blocks):
      layers.append(AdventBottleneck(self.inplanes, planes, dilation=dilation))
    return nn.Sequential(*layers)

  def forward(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    x = self.layer3(self.layer2(self.layer1(x)))
    out = {}
    if self.multi_level:
      out["aux"] = self.layer5(x)
    out["main"] = self.layer6(self.layer4(x))
    return out


# ------------------------------------------------------------------------------------------------------------
# SEAM resnet38d (network/resnet38d.py, re-stated with a width multiplier).


class Seam38Block(nn.Module):

  def __init__(self, cin, cmid, cout, stride=1, first_dilation=None, dilation=1):
    super().__init__()
    first_dilation = dilation if first_dilation is None else first_dilation
    self.same_shape = cin == cout and stride == 1
    self.bn_branch2a = nn.BatchNorm2d(cin)
    self.conv_branch2a = nn.Conv2d(
        cin, cmid, 3, stride, padding=first_dilation, dilation=first_dilation, bias=False
    )
    self.bn_branch2b1 = nn.BatchNorm2d(cmid)
    self.conv_branch2b1 = nn.Conv2d(cmid, cout, 3, padding=dilation, dilation=dilation, bias=False)
    if not self.same_shape:
      self.conv_branch1 = nn.Conv2d(cin, cout, 1, stride, bias=False)

  def forward(self, x):
    a = F.relu(self.bn_branch2a(x))
    shortcut = x if self.same_shape else self.conv_branch1(a)
    b = self.conv_branch2b1(F.relu(self.bn_branch2b1(self.conv_branch2a(a))))
    return shortcut + b, a


class Seam38BlockBot(nn.Module):

  def __init__(self, cin, cout, stride=1, dilation=1, dropout=0.0):
    super().__init__()
    self.bn_branch2a = nn.BatchNorm2d(cin)
    self.conv_branch2a = nn.Conv2d(cin, cout // 4, 1, stride, bias=False)
    self.bn_branch2b1 = nn.BatchNorm2d(cout // 4)
    self.dropout_2b1 = nn.Dropout2d(dropout)
    self.conv_branch2b1 = nn.Conv2d(
        cout // 4, cout // 2, 3, padding=dilation, dilation=dilation, bias=False
    )
    self.bn_branch2b2 = nn.BatchNorm2d(cout // 2)
    self.dropout_2b2 = nn.Dropout2d(dropout)
    self.conv_branch2b2 = nn.Conv2d(cout // 2, cout, 1, bias=False)
    self.conv_branch1 = nn.Conv2d(cin, cout, 1, stride, bias=False)

  def forward(self, x):
    a = F.relu(self.bn_branch2a(x))
    shortcut = self.conv_branch1(a)
    b = self.conv_branch2a(a)
    b = self.conv_branch2b1(self.dropout_2b1(F.relu(self.bn_branch2b1(b))))
    b = self.conv_branch2b2(self.dropout_2b2(F.relu(self.bn_branch2b2(b))))
    return shortcut + b, a


class SeamResNet38(nn.Module):

  def __init__(self, multiplier=1.0):
    super().__init__()
    w = lambda c: width(c, multiplier)  # noqa: E731
    self.conv1a = nn.Conv2d(3, w(64), 3, padding=1, bias=False)
    self.b2 = Seam38Block(w(64), w(128), w(128), stride=2)
    self.b2_1 = Seam38Block(w(128), w(128), w(128))
    self.b2_2 = Seam38Block(w(128), w(128), w(128))
    self.b3 = Seam38Block(w(128), w(256), w(256), stride=2)
    self.b3_1 = Seam38Block(w(256), w(256), w(256))
    self.b3_2 = Seam38Block(w(256), w(256), w(256))
    self.b4 = Seam38Block(w(256), w(512), w(512), stride=2)
    for i in range(1, 6):
      setattr(self, f"b4_{i}", Seam38Block(w(512), w(512), w(512)))
    self.b5 = Seam38Block(w(512), w(512), w(1024), stride=1, first_dilation=1, dilation=2)
    self.b5_1 = Seam38Block(w(1024), w(512), w(1024), dilation=2)
    self.b5_2 = Seam38Block(w(1024), w(512), w(1024), dilation=2)
    self.b6 = Seam38BlockBot(w(1024), w(2048), stride=1, dilation=4, dropout=0.3)
    self.b7 = Seam38BlockBot(w(2048), w(4096), dilation=4, dropout=0.5)
    self.bn7 = nn.BatchNorm2d(w(4096))

  def train(self, mode=True):  # SEAM's override: BN always in eval mode
    super().train(mode)
    for m in self.modules():
      if isinstance(m, nn.BatchNorm2d):
        m.eval()
    return self

  def forward(self, x):
    x = self.conv1a(x)
    for name in ("b2", "b2_1", "b2_2", "b3", "b3_1", "b3_2"):
      x, _ = getattr(self, name)(x)
    x, conv3 = self.b4(x)
    for i in range(1, 6):
      x, _ = getattr(self, f"b4_{i}")(x)
    x, conv4 = self.b5(x)
    x, _ = self.b5_1(x)
    x, _ = self.b5_2(x)
    x, conv5 = self.b6(x)
    x, _ = self.b7(x)
    return {"conv3": conv3, "conv4": conv4, "conv5": conv5, "conv6": F.relu(self.bn7(x))}


# ------------------------------------------------------------------------------------------------------------
# Fixture writing.


def seeded_load(model: nn.Module, seed: int) -> dict:
  shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
  weights = seeded_state_dict(shapes, seed)
  missing, unexpected = model.load_state_dict(
      {k: torch.from_numpy(v) for k, v in weights.items()}, strict=False
  )
  assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (
      missing,
      unexpected,
  )
  return shapes


def run(model: nn.Module, x: np.ndarray, train: bool, dtype) -> tuple[dict, nn.Module]:
  model = model.to(dtype)
  model.train(train)
  with torch.no_grad():
    out = model(torch.from_numpy(x).to(dtype))
  if not isinstance(out, dict):
    out = dict(enumerate(out))
  return {k: v.double().numpy() for k, v in out.items()}, model


def nchw_to_nhwc(a: np.ndarray) -> np.ndarray:
  return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def make_fixture(
    path: str,
    build,
    config: dict,
    x_nchw: np.ndarray,
    seed: int,
    modes=("eval", "train"),
    track_stats=(),
) -> dict:
  """Runs `build()` with seeded weights in float64 (reference) and float32 (torch's own error)."""
  arrays = {"x": nchw_to_nhwc(x_nchw).astype(np.float32)}
  shapes = seeded_load(build(), seed)
  arrays["state_dict_names"] = np.array(list(shapes))
  arrays["state_dict_shapes"] = np.array(json.dumps([list(s) for s in shapes.values()]))
  arrays["config"] = np.array(json.dumps(config))
  torch_error = {}
  for mode in modes:
    models = {}
    outs = {}
    for dtype in (torch.float64, torch.float32):
      m = build()
      seeded_load(m, seed)
      outs[dtype], models[dtype] = run(m, x_nchw, mode == "train", dtype)
    for k, ref in outs[torch.float64].items():
      arrays[f"{mode}__{k}"] = nchw_to_nhwc(ref).astype(np.float32)
      err = np.abs(outs[torch.float32][k] - ref).max() / max(np.abs(ref).max(), 1e-12)
      torch_error[f"{mode}/{k}"] = float(err)
    if mode == "train":
      state = models[torch.float64].state_dict()
      for name in track_stats:
        for stat in ("running_mean", "running_var"):
          arrays[f"train_stats__{name}.{stat}"] = state[f"{name}.{stat}"].float().numpy()
  np.savez_compressed(path, **arrays)
  return torch_error


def resnet_fixtures(out_dir: str) -> dict:
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 3, 40, 40)).astype(np.float32)
  cases = {
      # tag: (torch kwargs, jax ResNet kwargs)
      "resnet18_os32": (dict(depth=18), dict(depth=18, output_stride=32)),
      "resnet18_os8_crw": (
          dict(depth=18, replace=(False, True, True), dilate=False),
          dict(depth=18, output_stride=8, dilate=False),
      ),
      "resnet18_os4_mast": (
          dict(
              depth=18,
              replace=(False, True, True),
              dilate=False,
              max_pool=False,
              stage_widths=(64, 128, 256, 256),
          ),
          dict(depth=18, output_stride=4, dilate=False, stage_widths=[64, 128, 256, 256]),
      ),
      "resnet34_os16": (
          dict(depth=34, replace=(False, False, True)),
          dict(depth=34, output_stride=16),
      ),
      "resnet50_os8": (
          dict(depth=50, replace=(False, True, True)),
          dict(depth=50, output_stride=8),
      ),
      "resnet101_os16": (
          dict(depth=101, replace=(False, False, True)),
          dict(depth=101, output_stride=16),
      ),
  }
  errors = {}
  for tag, (torch_kwargs, jax_kwargs) in cases.items():
    multiplier = 0.25 if jax_kwargs["depth"] < 101 else 0.125
    jax_kwargs = dict(jax_kwargs, width_multiplier=multiplier)
    last = "layer4.1.bn2" if jax_kwargs["depth"] < 50 else "layer4.2.bn3"
    errors[tag] = make_fixture(
        os.path.join(out_dir, f"{tag}.npz"),
        lambda: TvResNet(multiplier=multiplier, **torch_kwargs),
        jax_kwargs,
        x,
        seed=0,
        track_stats=("bn1", last),
    )
  return errors


def deeplab_fixtures(out_dir: str) -> dict:
  rng = np.random.default_rng(1)
  x = (rng.uniform(0, 255, (2, 3, 33, 41)) - np.array([104.0, 116.7, 122.7])[:, None, None]).astype(
      np.float32
  )
  config = dict(num_classes=5, width_multiplier=0.125)
  return {
      "deeplab_v2_w0125": make_fixture(
          os.path.join(out_dir, "deeplab_v2_w0125.npz"),
          lambda: AdventDeepLabV2(5, multiplier=0.125),
          config,
          x,
          seed=0,
          track_stats=("bn1", "layer4.2.bn3", "layer3.0.downsample.1"),
      )
  }


def resnet38_fixtures(out_dir: str) -> dict:
  rng = np.random.default_rng(2)
  x = rng.standard_normal((2, 3, 36, 44)).astype(np.float32)
  config = dict(width_multiplier=0.0625)
  # SEAM keeps BN in eval mode in train() too, so only eval mode exists (dropout is tested separately).
  return {
      "resnet38_w00625": make_fixture(
          os.path.join(out_dir, "resnet38_w00625.npz"),
          lambda: SeamResNet38(0.0625),
          config,
          x,
          seed=0,
          modes=("eval",),
      )
  }


# MXNet NDArray-list writer, independent of jaxseg's reader (format: MXNet src/ndarray/ndarray.cc, Save):
# list magic 0x112, reserved 0, count, arrays (V2 magic, dense stype 0, ndim, int64 dims, cpu context,
# dtype flag 0 = float32, data), count, names (uint64 length + bytes).
def write_mxnet_v2(path: str, arrays: dict) -> None:
  import struct

  with open(path, "wb") as f:
    f.write(struct.pack("<QQQ", 0x112, 0, len(arrays)))
    for a in arrays.values():
      a = np.ascontiguousarray(a, np.float32)
      f.write(struct.pack("<Iii", 0xF993FAC9, 0, a.ndim) + struct.pack(f"<{a.ndim}q", *a.shape))
      f.write(struct.pack("<iii", 1, 0, 0) + a.astype("<f4").tobytes())
    f.write(struct.pack("<Q", len(arrays)))
    for name in arrays:
      f.write(struct.pack("<Q", len(name)) + name.encode())


def seam_to_mxnet_name(name: str) -> str:
  """SEAM state-dict name -> the ademxapp MXNet name (the inverse of SEAM's convert_mxnet_to_torch)."""
  module, leaf = name.rsplit(".", 1)
  if module == "conv1a":
    return "arg:conv1a_weight"
  bn_leaf = {
      "weight": "gamma",
      "bias": "beta",
      "running_mean": "moving_mean",
      "running_var": "moving_var",
  }
  if module == "bn7":
    return ("aux:" if leaf.startswith("running") else "arg:") + "bn7_" + bn_leaf[leaf]
  block, layer = module.split(".")
  stage, _, sub = block[1:].partition("_")
  block_id = f"{stage}a" if not sub else f"{stage}b{sub}"
  kind, branch = layer.split("_")
  if kind == "conv":
    return f"arg:res{block_id}_{branch}_weight"
  return (
      "aux:" if leaf.startswith("running") else "arg:"
  ) + f"bn{block_id}_{branch}_{bn_leaf[leaf]}"


def mxnet_fixtures(out_dir: str) -> dict:
  multiplier = 0.03125
  model = SeamResNet38(multiplier)
  shapes = seeded_load(model, seed=3)
  weights = seeded_state_dict(shapes, seed=3)
  arrays = {seam_to_mxnet_name(k): v for k, v in weights.items()}
  assert len(arrays) == len(weights)
  # The ImageNet classifier of the original file (dropped by every converter); 16 rows instead of 1000
  # to keep the file small.
  arrays["arg:linear1000_weight"] = np.zeros((16, width(4096, multiplier)), np.float32)
  arrays["arg:linear1000_bias"] = np.zeros((16,), np.float32)
  write_mxnet_v2(os.path.join(out_dir, "resnet38_w003125.params"), arrays)
  x = np.random.default_rng(4).standard_normal((1, 3, 24, 32)).astype(np.float32)
  model = model.double().eval()
  with torch.no_grad():
    out = model(torch.from_numpy(x).double())
  np.savez_compressed(
      os.path.join(out_dir, "resnet38_w003125_mxnet.npz"),
      x=nchw_to_nhwc(x),
      config=np.array(json.dumps(dict(width_multiplier=multiplier))),
      **{f"eval__{k}": nchw_to_nhwc(v.numpy()).astype(np.float32) for k, v in out.items()},
  )
  return {}


def golden_subsets(out_dir: str) -> dict:
  """Copies the parts of shared/golden/{esl,seam} that the backbone tests use (NCHW -> NHWC)."""
  golden = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "golden")
  esl = np.load(os.path.join(golden, "esl", "esl_golden.npz"))
  keys = [
      "x",
      "deeplab_eval_aux",
      "deeplab_eval_main",
      "deeplab_train_aux",
      "deeplab_train_main",
      "deeplab_train_updated_bn1_running_mean",
      "deeplab_train_updated_bn1_running_var",
      "deeplab_train_updated_layer4_2_bn3_running_mean",
      "deeplab_train_updated_layer4_2_bn3_running_var",
  ]
  np.savez_compressed(
      os.path.join(out_dir, "golden_esl_deeplab.npz"), **{k: nchw_to_nhwc(esl[k]) for k in keys}
  )
  seam = np.load(os.path.join(golden, "seam", "seam_backbone.npz"))
  # conv3 is unused by SEAM; conv6 (4096 ch) is kept for every 8th channel to stay small.
  np.savez_compressed(
      os.path.join(out_dir, "golden_seam_backbone.npz"),
      x=nchw_to_nhwc(seam["x"]),
      bb_conv4=nchw_to_nhwc(seam["bb_conv4"]),
      bb_conv5=nchw_to_nhwc(seam["bb_conv5"]),
      bb_conv6_every8=nchw_to_nhwc(seam["bb_conv6"][:, ::8]),
  )
  return {}


def main():
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument(
      "--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "backbones")
  )
  parser.add_argument(
      "--only", nargs="*", default=None, help="subset of: resnet deeplab resnet38 mxnet golden"
  )
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  torch.set_num_threads(2)
  groups = {
      "resnet": resnet_fixtures,
      "deeplab": deeplab_fixtures,
      "resnet38": resnet38_fixtures,
      "mxnet": mxnet_fixtures,
      "golden": golden_subsets,
  }
  for name, fn in groups.items():
    if args.only and name not in args.only:
      continue
    errors = fn(args.out)
    print(f"[{name}] torch float32 vs float64 reference (max abs err / max |ref|):")
    for tag, errs in errors.items():
      print(
          f"  {tag}: "
          + ", ".join(
              f"{k}={v:.1e}" for k, v in errs.items() if k.endswith(("layer4", "main", "conv6"))
          )
      )


if __name__ == "__main__":
  main()
