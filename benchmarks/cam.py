"""CAMs per second for each method on a ResNet classifier, jaxseg vs pytorch-grad-cam.

    python benchmarks/cam.py                                   # 32 x 224^2, ResNet-50, every method
    python benchmarks/cam.py --batch=2 --size=64 --depth=18 --width=0.25 --methods=gradcam,scorecam

The model is `jaxseg.models.resnet.ResNet` + global average pooling + Dense (random weights), the CAM layer
its last stage ('backbone/layer4'). Each method is jitted once (compile time reported separately) and timed
over --repeats calls; CAMs/s = batch / median call time. When torch and pytorch-grad-cam (PyPI `grad-cam`,
with torchvision) import, the same batch runs through the library on a torchvision ResNet of the same depth
(random weights, same threads) and the ratio jaxseg / torch is printed. Score-CAM and Ablation-CAM run one
forward pass per channel and image (2048 x batch on ResNet-50 layer4): expect them to be slow on CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from jaxseg.cam import methods  # noqa: E402
from jaxseg.cam import targets as targets_lib  # noqa: E402
from jaxseg.models.resnet import ResNet  # noqa: E402

# jaxseg method -> pytorch_grad_cam class name ('cam' has no library counterpart).
LIBRARY_CLASSES = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "hirescam": "HiResCAM",
    "gradcam_elementwise": "GradCAMElementWise",
    "layercam": "LayerCAM",
    "scorecam": "ScoreCAM",
    "ablationcam": "AblationCAM",
    "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
    "fullgrad": "FullGrad",
}


class ResNetClassifier(nn.Module):
  """ResNet backbone -> GAP -> Dense: images [B, H, W, 3] -> logits [B, num_classes]."""

  depth: int = 50
  width_multiplier: float = 1.0
  num_classes: int = 1000

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = ResNet(self.depth, width_multiplier=self.width_multiplier, name="backbone")(
        x, train=False
    )
    return nn.Dense(self.num_classes, name="fc")(jnp.mean(features["layer4"], axis=(1, 2)))


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--size", type=int, default=224)
  parser.add_argument("--depth", type=int, default=50)
  parser.add_argument(
      "--width", type=float, default=1.0, help="ResNet width multiplier (tiny runs)"
  )
  parser.add_argument("--classes", type=int, default=1000)
  parser.add_argument("--methods", default="all", help="comma-separated methods, or 'all'")
  parser.add_argument("--layer", default="backbone/layer4")
  parser.add_argument(
      "--chunk-size", type=int, default=16, help="Score-/Ablation-CAM channels per step"
  )
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument(
      "--torch",
      choices=("auto", "off"),
      default="auto",
      help="compare with pytorch-grad-cam when importable",
  )
  return parser.parse_args(argv)


def time_calls(fn, repeats: int) -> tuple[float, float]:
  """(first call seconds, median seconds of the next `repeats` calls)."""
  start = time.perf_counter()
  fn()
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return first, statistics.median(times)


def jax_timings(args, names) -> dict[str, tuple[float, float]]:
  model = ResNetClassifier(args.depth, args.width, args.classes)
  images = jax.random.normal(jax.random.key(0), (args.batch, args.size, args.size, 3), jnp.float32)
  variables = jax.jit(model.init)(jax.random.key(1), images[:1])
  targets = targets_lib.ClassLogit(jnp.arange(args.batch) % args.classes)
  results = {}
  for name in names:
    options = dict(
        layer=args.layer, chunk_size=args.chunk_size, fc_layer="fc" if name == "cam" else None
    )
    cam_fn = methods.make_cam_fn(name, model.apply, **options)
    results[name] = time_calls(
        lambda: cam_fn(variables, images, targets).block_until_ready(), args.repeats
    )
    print(
        f"  jaxseg {name:20s} compile+run {results[name][0]:8.2f} s   "
        f"{args.batch / results[name][1]:9.2f} CAMs/s",
        flush=True,
    )
  return results


def torch_timings(args, names) -> dict[str, tuple[float, float]]:
  """pytorch-grad-cam on a torchvision ResNet; {} when the libraries do not import."""
  try:
    import pytorch_grad_cam
    import torch
    import torchvision
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
  except Exception as error:  # torchvision may fail to import beside this torch build
    print(f"  torch comparison skipped ({type(error).__name__}: {error})")
    return {}
  torch.set_num_threads(os.cpu_count() or 1)
  net = getattr(torchvision.models, f"resnet{args.depth}")(num_classes=args.classes).eval()
  x = torch.randn(args.batch, 3, args.size, args.size)
  targets = [ClassifierOutputTarget(i % args.classes) for i in range(args.batch)]
  results = {}
  for name in names:
    if name not in LIBRARY_CLASSES:
      continue
    cls = getattr(pytorch_grad_cam, LIBRARY_CLASSES[name])
    layers = [] if name == "fullgrad" else [net.layer4[-1]]
    cam = cls(model=net, target_layers=layers)
    if name == "scorecam":
      cam.batch_size = args.chunk_size
    results[name] = time_calls(lambda: cam(input_tensor=x, targets=targets), args.repeats)
    print(
        f"  torch  {name:20s} first call  {results[name][0]:8.2f} s   "
        f"{args.batch / results[name][1]:9.2f} CAMs/s",
        flush=True,
    )
  return results


def main(argv=None) -> None:
  args = parse_args(argv)
  names = (
      list(methods.ALL_METHODS)
      if args.methods == "all"
      else [methods.canonical_method(m) for m in args.methods.split(",")]
  )
  print(
      f"ResNet-{args.depth} x{args.width}, batch {args.batch} x {args.size}^2, layer {args.layer}, "
      f"jax {jax.__version__} on {jax.devices()[0].platform} ({os.cpu_count()} CPUs)"
  )
  ours = jax_timings(args, names)
  theirs = torch_timings(args, names) if args.torch == "auto" else {}
  print(f"\n{'method':20s} {'jaxseg CAMs/s':>14s} {'torch CAMs/s':>13s} {'ratio':>7s}")
  for name in names:
    ours_rate = args.batch / ours[name][1]
    line = f"{name:20s} {ours_rate:14.2f}"
    if name in theirs:
      theirs_rate = args.batch / theirs[name][1]
      line += f" {theirs_rate:13.2f} {ours_rate / theirs_rate:7.2f}"
    print(line)


if __name__ == "__main__":
  main()
