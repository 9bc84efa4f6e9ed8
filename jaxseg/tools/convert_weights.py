"""Convert official backbone checkpoints to jaxseg Flax variables (flax msgpack).

  python -m jaxseg.tools.convert_weights --arch resnet50 --input resnet50-0676ba61.pth --output r50.msgpack
  python -m jaxseg.tools.convert_weights --arch deeplab_v2 --num-classes 19 \\
      --input DeepLab_resnet_pretrained_imagenet.pth --output deeplab_init.msgpack
  python -m jaxseg.tools.convert_weights --arch resnet38 \\
      --input ilsvrc-cls_rna-a1_cls1000_ep-0001.params --output resnet38.msgpack

Inputs: `.pth`/`.pt` (PyTorch state dict; needs torch) or `.params` (MXNet NDArray list; ResNet-38 only; no
mxnet needed). The output holds {'params': ..., 'batch_stats': ...} for the model built with the same flags;
read it with `jaxseg.models.convert.load_variables`. Any key mismatch aborts (nothing is written) with a
two-line summary; `--verbose` prints the full list of keys and the traceback. Exit status 2 for a bad
option, 1 for a missing, unreadable or mismatched checkpoint.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

import jax
import numpy as np

from jaxseg import cli
from jaxseg.models import convert
from jaxseg.models.deeplab_v2 import DeepLabV2
from jaxseg.models.resnet import ResNet
from jaxseg.models.resnet38 import ResNet38

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "deeplab_v2", "resnet38")


def build_model(args: argparse.Namespace):
  """The Flax module the checkpoint is converted for."""
  if args.arch.startswith("resnet") and args.arch != "resnet38":
    return ResNet(
        int(args.arch[len("resnet") :]),
        width_multiplier=args.width_multiplier,
        output_stride=args.output_stride,
    )
  if args.arch == "deeplab_v2":
    return DeepLabV2(
        num_classes=args.num_classes,
        multi_level=not args.single_level,
        width_multiplier=args.width_multiplier,
    )
  return ResNet38(width_multiplier=args.width_multiplier)


def read_checkpoint(path: str) -> dict[str, np.ndarray]:
  if not path.endswith((".params", ".pth", ".pt", ".pth.tar")):
    raise ValueError(f"{path}: unknown checkpoint type (expected .pth, .pt, .pth.tar or .params)")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--input {path}: file not found")
  if path.endswith(".params"):
    return convert.read_mxnet_params(path)
  try:
    return convert.read_torch_checkpoint(path)
  except ImportError as e:
    raise ValueError(f"{path}: {e}") from e
  except (RuntimeError, EOFError, AttributeError) as e:  # torch.load on a damaged / foreign file
    raise ValueError(
        f"{path}: cannot read the PyTorch checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})"
    ) from e


def mismatch_summary(error: convert.CheckpointMismatchError, args) -> str:
  """Two lines for the console: the counts of mismatched keys, the first one, and a hint."""
  counts = [
      f"{len(keys)} {what}"
      for what, keys in (
          ("missing", error.missing),
          ("unexpected", error.unexpected),
          ("wrong shape", error.wrong_shape),
      )
      if keys
  ]
  first = (error.wrong_shape or error.missing or error.unexpected or [""])[0]
  head = str(error).splitlines()[0].removesuffix("; nothing was loaded.") if str(error) else ""
  detail = f": {', '.join(counts)} (first: {first})" if counts else ""
  return (
      f"{head}{detail}\nhint: check --arch {args.arch}, --width-multiplier, --num-classes, "
      "--prefix and --ignore; --verbose lists every key"
  )


def convert_checkpoint(args: argparse.Namespace) -> dict:
  model = build_model(args)
  state_dict = read_checkpoint(args.input)
  if args.prefix:
    state_dict = convert.strip_prefix(state_dict, args.prefix)
  if args.input.endswith(".params"):
    if args.arch != "resnet38":
      raise ValueError(f"{args.input}: MXNet .params files are supported for --arch resnet38 only")
    state_dict = convert.mxnet_resnet38_to_state_dict(state_dict, source=args.input)
  if args.arch == "deeplab_v2":
    imagenet = {"auto": None, "yes": True, "no": False}[args.imagenet_init]
    return convert.convert_deeplab_v2(
        state_dict, model, imagenet_init=imagenet, source=args.input, head_seed=args.seed
    )
  if args.arch == "resnet38":
    return convert.convert_resnet38(state_dict, model, source=args.input, ignore=args.ignore)
  if args.ignore:
    state_dict = {
        k: v for k, v in state_dict.items() if not any(re.search(p, k) for p in args.ignore)
    }
  return convert.convert_torchvision_resnet(state_dict, model, source=args.input)


def parse_args(argv=None) -> argparse.Namespace:
  parser = cli.ArgumentParser(
      prog="python -m jaxseg.tools.convert_weights",
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("--arch", required=True, choices=ARCHS)
  parser.add_argument("--input", required=True, help=".pth / .pt (PyTorch) or .params (MXNet)")
  parser.add_argument("--output", required=True, help="output file (flax msgpack)")
  parser.add_argument("--width-multiplier", type=float, default=1.0)
  parser.add_argument(
      "--output-stride", type=int, default=32, help="ResNet only (does not change weights)"
  )
  parser.add_argument("--num-classes", type=int, default=19, help="deeplab_v2 only")
  parser.add_argument("--single-level", action="store_true", help="deeplab_v2 without the aux head")
  parser.add_argument(
      "--imagenet-init",
      choices=("auto", "yes", "no"),
      default="auto",
      help="deeplab_v2: ADVENT's prefixed ImageNet init (heads freshly initialised)",
  )
  parser.add_argument("--seed", type=int, default=0, help="seed of freshly initialised heads")
  parser.add_argument("--prefix", default="", help="strip this key prefix first (e.g. 'module.')")
  parser.add_argument(
      "--ignore",
      action="append",
      default=[],
      help="regex of checkpoint keys to drop (repeatable), e.g. '^(fc8|f8_3|f8_4|f9)\\.'",
  )
  parser.add_argument("--verbose", action="store_true", help="full traceback and key lists")
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  with cli.user_errors(args.verbose):
    try:
      variables = convert_checkpoint(args)
    except convert.CheckpointMismatchError as e:
      if args.verbose:
        raise
      raise convert.CheckpointMismatchError(mismatch_summary(e, args)) from e
    convert.save_variables(args.output, variables)
  leaves = jax.tree_util.tree_leaves(variables)
  counts = {
      c: sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(t)) for c, t in variables.items()
  }
  print(
      f"wrote {args.output}: {len(leaves)} arrays, "
      + ", ".join(f"{c} {n:,} values" for c, n in counts.items())
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
