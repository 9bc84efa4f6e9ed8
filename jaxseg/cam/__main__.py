"""CLI: CAM pictures for one image from a trained jaxseg model.

  python -m jaxseg.cam --workdir=<trained jaxseg workdir> --image=a.jpg \
      --method=gradcam++ --layer=backbone/layer4 --out=cam.png
  python -m jaxseg.cam --workdir=... --image=a.jpg --method=all --layer=... --out=all.png
  python -m jaxseg.cam --workdir=... --image=a.jpg --list-layers
  python -m jaxseg.cam --demo --image=a.jpg --method=all --out=/tmp/cam.png   # small random CNN

The model comes from `jaxseg.methods.load_inference_model(workdir)` (its `apply_fn`, `variables`, `config`), with
apply_fn(variables, images [B, H, W, 3] ImageNet-normalised float32) -> logits [B, K] (classification:
target = --class or the arg-max class) or [B, h, w, K] (segmentation: target = the --class logits summed
over the pixels predicted as that class; default the most frequent predicted class other than
background). The class (its name, from the workdir's config) is the picture's title.
`--method=all` draws every method side by side in one picture.
Known errors (a missing file, a bad --layer, --class or --method, no checkpoint) are one or two lines
(exit status 2 for a bad option, 1 otherwise); `--verbose` shows the traceback.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxseg import cli
from jaxseg.cam import activations, demo, methods, overlay
from jaxseg.cam import targets as targets_lib
from jaxseg.data.readers.sources import decode_image
from jaxseg.errors import ConfigError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
DEMO_LAYER = "block3"
DEMO_FC_LAYER = "fc"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = cli.ArgumentParser(
      prog="python -m jaxseg.cam",
      description=__doc__.splitlines()[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=__doc__,
  )
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--workdir", help="trained jaxseg workdir (load_inference_model)")
  source.add_argument(
      "--demo", action="store_true", help="use a small random CNN instead of a workdir"
  )
  parser.add_argument(
      "--image", help="input image (any format PIL reads); --demo draws one if omitted"
  )
  parser.add_argument(
      "--method", default="gradcam", help=f"one of {', '.join(methods.ALL_METHODS)}, or 'all'"
  )
  parser.add_argument(
      "--layer",
      action="append",
      help="module path of the CAM layer (repeat for several layers, averaged)",
  )
  parser.add_argument(
      "--class",
      dest="class_id",
      type=int,
      default=None,
      help="target class (default: arg-max / most frequent predicted non-background class)",
  )
  parser.add_argument(
      "--size", type=int, default=None, help="resize the image to size x size first"
  )
  parser.add_argument("--fc-layer", default=None, help="final Dense after GAP, for --method=cam")
  parser.add_argument(
      "--aug-smooth", action="store_true", help="flip x multiplier test-time augmentation"
  )
  parser.add_argument(
      "--aug-scales",
      default="1.0",
      help="with --aug-smooth: comma-separated spatial scales, e.g. 0.5,1.0,1.5",
  )
  parser.add_argument(
      "--eigen-smooth", action="store_true", help="first principal component smoothing"
  )
  parser.add_argument(
      "--chunk-size", type=int, default=16, help="Score-/Ablation-CAM channels per step"
  )
  parser.add_argument("--out", default="cam.png", help="output picture (.png)")
  parser.add_argument(
      "--list-layers", action="store_true", help="print the model's layers and exit"
  )
  parser.add_argument("--seed", type=int, default=0, help="--demo weights / image seed")
  parser.add_argument("--verbose", action="store_true", help="full tracebacks for known errors")
  return parser.parse_args(argv)


def demo_image(size: int, seed: int) -> np.ndarray:
  """A uint8 [size, size, 3] picture: a bright disc and a square on a smooth background."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
  image = np.stack([0.3 + 0.3 * xx, 0.3 + 0.3 * yy, 0.4 * np.ones_like(xx)], -1)
  cy, cx = rng.uniform(0.25, 0.75, 2)
  image[(yy - cy) ** 2 + (xx - cx) ** 2 < 0.03] = (0.9, 0.2, 0.1)
  image[(np.abs(yy - (1 - cy)) < 0.12) & (np.abs(xx - (1 - cx)) < 0.12)] = (0.1, 0.3, 0.9)
  return (255 * image).round().astype(np.uint8)


def load_image(path: str | None, size: int | None, seed: int) -> np.ndarray:
  """uint8 RGB [H, W, 3] (resized to size x size when given)."""
  if path is None:
    return demo_image(size or 64, seed)
  image = decode_image(path)  # DataError naming the file
  if size:
    image = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR), np.uint8)
  return image


def normalize(image: np.ndarray) -> jax.Array:
  """uint8 [H, W, 3] -> float32 [1, H, W, 3], ImageNet mean/std."""
  return jnp.asarray(((image.astype(np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD)[None])


def load_model(args: argparse.Namespace):
  """(apply_fn, variables, default layers, default fc layer, class names or None)."""
  if args.demo:
    model = demo.SmallCNN(num_classes=10)
    variables = demo.random_variables(model, args.seed)
    return model.apply, variables, [DEMO_LAYER], DEMO_FC_LAYER, None
  try:
    from jaxseg.methods import load_inference_model
  except ImportError as error:
    raise SystemExit(
        f"jaxseg.methods.load_inference_model is not available ({error}); "
        "train a model first, or use --demo"
    ) from error
  if not os.path.isfile(os.path.join(args.workdir, "config.json")):
    raise FileNotFoundError(
        f"--workdir {args.workdir}: no config.json, not a trained jaxseg workdir\n"
        "hint: pass the --workdir of a launch.py run, or use --demo"
    )
  model = load_inference_model(args.workdir)
  return model.apply_fn, model.variables, None, None, _class_names(model.config)


def _class_names(config) -> list[str] | None:
  try:
    from jaxseg.data import datasets

    return datasets.class_names(config.data)
  except (AttributeError, KeyError, TypeError, ValueError):
    return None  # not a jaxseg config (e.g. a stand-in model)


def class_label(cls: int, names: Sequence[str] | None) -> str:
  """'class 12 (dog)', or 'class 12' without names."""
  return f"class {cls} ({names[cls]})" if names and 0 <= cls < len(names) else f"class {cls}"


def background_class(names: Sequence[str] | None) -> int | None:
  """Class 0 is background unless the names say otherwise (Cityscapes' class 0 is 'road')."""
  if names and names[0].strip().lower() not in ("background", "bg", "0"):
    return None
  return 0


def make_target(
    logits: jax.Array, class_id: int | None, names: Sequence[str] | None = None
) -> tuple[targets_lib.Target, int, str]:
  """(target, class, how it was chosen) for classification [1, K] or segmentation [1, h, w, K]
  logits. The default segmentation target is the most frequent predicted class other than the
  background (the background itself only when nothing else is predicted)."""
  num_classes = logits.shape[-1]
  if class_id is not None and not 0 <= class_id < num_classes:
    shown = f" ({', '.join(names[:6])}{', ...' if len(names) > 6 else ''})" if names else ""
    raise ConfigError(
        f"--class {class_id}: out of range; the model has {num_classes} classes "
        f"0..{num_classes - 1}{shown}"
    )
  how = "--class"
  if logits.ndim == 2:
    if class_id is None:
      class_id, how = int(jnp.argmax(logits[0])), "highest score"
    return targets_lib.ClassLogit(np.array([class_id])), class_id, how
  if logits.ndim == 4:
    prediction = np.asarray(jnp.argmax(logits[0], axis=-1))
    if class_id is None:
      counts = np.bincount(prediction.ravel(), minlength=num_classes)
      background = background_class(names)
      how = "most frequent predicted class"
      if background is not None and counts.sum() > counts[background]:
        counts[background] = -1
        how = "most frequent predicted non-background class"
      class_id = int(counts.argmax())
    mask = (prediction == class_id).astype(np.float32)[None]
    return targets_lib.SegmentationTarget(np.array([class_id]), mask), class_id, how
  raise ValueError(f"model output has shape {logits.shape}; expected [B, K] or [B, h, w, K]")


def _suggested_layers(known: dict) -> list[str]:
  """The last few shallowest 4-D layers before the final one (usually the classifier head)."""
  four_d = [n for n, shape in known.items() if n and isinstance(shape, tuple) and len(shape) == 4]
  depth = min((n.count("/") for n in four_d), default=0)
  shallow = [n for n in four_d if n.count("/") == depth]
  return (shallow[:-1] if len(shallow) > 1 else shallow)[-3:]


def check_layers(layers: Sequence[str], known: dict) -> None:
  """ConfigError for a --layer that is not a module of the model, with close matches."""
  for layer in layers:
    if layer.strip("/") in known:
      continue
    close = difflib.get_close_matches(layer, [n for n in known if n], n=3)
    guess = f"did you mean {', '.join(close)}? " if close else ""
    raise ConfigError(
        f"--layer {layer}: no such layer in this model\n"
        f"hint: {guess}--list-layers prints the model's {len(known)} layers"
    )


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  with cli.user_errors(args.verbose):
    return run(args)


def run(args: argparse.Namespace) -> int:
  try:
    scales = tuple(float(s) for s in args.aug_scales.split(","))
  except ValueError as error:
    raise ConfigError(
        f"--aug-scales {args.aug_scales!r}: expected numbers like 0.5,1.0,1.5"
    ) from error
  if args.method.lower() != "all":
    try:
      methods.canonical_method(args.method)
    except ValueError as error:
      raise ConfigError(f"--method {args.method}: {error}") from error
  apply_fn, variables, default_layers, default_fc, class_names = load_model(args)
  image = load_image(args.image, args.size, args.seed)
  x = normalize(image)

  if args.list_layers:
    for name, shape in activations.list_layers(apply_fn, variables, x).items():
      print(f"{name or '<root>'}\t{shape}")
    return 0
  layers = args.layer or default_layers
  known = activations.list_layers(apply_fn, variables, x)
  if not layers:
    deep = _suggested_layers(known)
    raise ConfigError(
        "--layer is required for this model (the CAM layer's module path)\n"
        f"hint: e.g. {', '.join(deep) or '?'}; --list-layers prints all {len(known)} layers"
    )
  check_layers(layers, known)
  fc_layer = args.fc_layer or default_fc

  if args.method.lower() == "all":
    names = [m for m in methods.ALL_METHODS if m != "cam" or fc_layer]
  else:
    names = [methods.canonical_method(args.method)]
  logits = apply_fn(variables, x)
  target, cls, how = make_target(logits, args.class_id, class_names)
  title = f"{class_label(cls, class_names)}: {how}"

  # Eager calls: the methods share the forward / backward primitives, whose compilations are cached
  # across methods, which beats one jit compilation per method for a single image.
  cams, titles = [], []
  for name in names:
    start = time.perf_counter()
    cam = methods.compute_cam(
        name,
        apply_fn,
        variables,
        x,
        target,
        layer=None if name == "fullgrad" else layers,
        aug_smooth=args.aug_smooth,
        aug_scales=scales,
        eigen_smooth=args.eigen_smooth and name != "fullgrad",
        chunk_size=args.chunk_size,
        fc_layer=fc_layer if name == "cam" else None,
    )
    cams.append(np.asarray(cam)[0])
    titles.append(name)
    print(f"{name:20s} {time.perf_counter() - start:6.2f} s")
  overlay.write_cam_grid(
      args.out, image, cams, titles, columns=7 if len(cams) > 6 else None, header=title
  )
  print(f"{title}, layer(s) {', '.join(layers)}: wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
