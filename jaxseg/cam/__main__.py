"""CLI: CAM pictures for one image from a trained jaxseg model.

  python -m jaxseg.cam --workdir=<trained jaxseg workdir> --image=a.jpg \
      --method=gradcam++ --layer=backbone/layer4 --out=cam.png
  python -m jaxseg.cam --workdir=... --image=a.jpg --method=all --layer=... --out=all.png
  python -m jaxseg.cam --workdir=... --image=a.jpg --list-layers
  python -m jaxseg.cam --demo --image=a.jpg --method=all --out=/tmp/cam.png   # small random CNN

The model comes from `jaxseg.methods.load_inference_model(workdir) -> (apply_fn, variables, config)`, with
apply_fn(variables, images [B, H, W, 3] ImageNet-normalised float32) -> logits [B, K] (classification:
target = --class or the arg-max class) or [B, h, w, K] (segmentation: target = the --class logits summed
over the pixels predicted as that class; default the most frequent predicted class).
`--method=all` draws every method side by side in one picture.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxseg.cam import activations, demo, methods, overlay
from jaxseg.cam import targets as targets_lib

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
DEMO_LAYER = "block3"
DEMO_FC_LAYER = "fc"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
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
      help="target class (default: arg-max / most frequent predicted class)",
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
  try:
    picture = Image.open(path).convert("RGB")
  except (OSError, ValueError) as error:
    raise SystemExit(f"--image {path}: cannot read the image ({error})") from error
  if size:
    picture = picture.resize((size, size), Image.BILINEAR)
  return np.asarray(picture, np.uint8)


def normalize(image: np.ndarray) -> jax.Array:
  """uint8 [H, W, 3] -> float32 [1, H, W, 3], ImageNet mean/std."""
  return jnp.asarray(((image.astype(np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD)[None])


def load_model(args: argparse.Namespace):
  """(apply_fn, variables, default layers, default fc layer)."""
  if args.demo:
    model = demo.SmallCNN(num_classes=10)
    return model.apply, demo.random_variables(model, args.seed), [DEMO_LAYER], DEMO_FC_LAYER
  try:
    from jaxseg.methods import load_inference_model
  except ImportError as error:
    raise SystemExit(
        f"jaxseg.methods.load_inference_model is not available ({error}); "
        "train a model first, or use --demo"
    ) from error
  apply_fn, variables, _ = load_inference_model(args.workdir)
  return apply_fn, variables, None, None


def make_target(logits: jax.Array, class_id: int | None) -> tuple[targets_lib.Target, int]:
  """The one-image target for classification [1, K] or segmentation [1, h, w, K] logits."""
  num_classes = logits.shape[-1]
  if class_id is not None and not 0 <= class_id < num_classes:
    raise SystemExit(f"--class {class_id} out of range for {num_classes} classes")
  if logits.ndim == 2:
    cls = int(jnp.argmax(logits[0])) if class_id is None else class_id
    return targets_lib.ClassLogit(np.array([cls])), cls
  if logits.ndim == 4:
    prediction = np.asarray(jnp.argmax(logits[0], axis=-1))
    cls = (
        int(np.bincount(prediction.ravel(), minlength=num_classes).argmax())
        if class_id is None
        else class_id
    )
    mask = (prediction == cls).astype(np.float32)[None]
    return targets_lib.SegmentationTarget(np.array([cls]), mask), cls
  raise SystemExit(f"model output has shape {logits.shape}; expected [B, K] or [B, h, w, K]")


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  apply_fn, variables, default_layers, default_fc = load_model(args)
  image = load_image(args.image, args.size, args.seed)
  x = normalize(image)

  if args.list_layers:
    for name, shape in activations.list_layers(apply_fn, variables, x).items():
      print(f"{name or '<root>'}\t{shape}")
    return 0
  layers = args.layer or default_layers
  if not layers:
    known = ", ".join(
        n
        for n, s in activations.list_layers(apply_fn, variables, x).items()
        if isinstance(s, tuple) and len(s) == 4
    )
    raise SystemExit(f"--layer is required; 4-D layers of this model: {known}")
  fc_layer = args.fc_layer or default_fc
  try:
    scales = tuple(float(s) for s in args.aug_scales.split(","))
  except ValueError as error:
    raise SystemExit(f"--aug-scales {args.aug_scales!r}: {error}") from error

  if args.method.lower() == "all":
    names = [m for m in methods.ALL_METHODS if m != "cam" or fc_layer]
  else:
    names = [methods.canonical_method(args.method)]
  logits = apply_fn(variables, x)
  target, cls = make_target(logits, args.class_id)

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
  overlay.write_cam_grid(args.out, image, cams, titles, columns=7 if len(cams) > 6 else None)
  print(f"class {cls}, layer(s) {', '.join(layers)}: wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
