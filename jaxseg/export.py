"""Exports a trained network as a portable `jax.export` artefact (StableHLO, weights included).

  python -m jaxseg.export --workdir=runs/demo --out=runs/demo/model.jaxexport [--stage=S] [--which=best]

The file runs with plain JAX, without jaxseg or this repository (README "Exporting a trained network"):

  from jax import export
  exported = export.deserialize(open("model.jaxexport", "rb").read())
  logits = exported.call(images)  # float32 [B, H, W, 3], normalised as in training

The network's eval-mode forward (`load_inference_model(...).apply_fn` with its variables closed over as
constants) is exported for the platforms asked for (default cpu, cuda, tpu), with a symbolic batch size
and image height and width where the network's shape logic allows it, else the training crop (and, if
the batch size must be concrete too, `--batch_size`); `<out>.json` records the input shape.
"""

from __future__ import annotations

import json
import os
import sys

PLATFORMS = ("cpu", "cuda", "tpu")


def export_model(
    model, *, platforms=PLATFORMS, image_size=None, symbolic_size: bool = True, batch_size: int = 8
):
  """`jax.export.Exported` of `model.apply_fn` with `model.variables` baked in.

  Args:
    model: a `jaxseg.train.inference.InferenceModel`.
    image_size: (H, W) when not symbolic (default: the config's training crop).
    symbolic_size: also try H and W symbolic; the fallbacks are a symbolic batch at the fixed (H, W),
      then `batch_size` x (H, W) (`description['input']` says which one the file takes).
  Returns:
    (exported, description dict: input shape spec, platforms).
  """
  import jax
  import numpy as np
  from jax import export

  from jaxseg.models.conv_lowering import conv_lowering

  variables = jax.device_get(model.variables)

  def forward(images):
    return model.apply_fn(variables, images)

  fixed = tuple(int(s) for s in (image_size or _crop_size(model.config)))
  h, w = fixed
  # Most general first; a network whose shape logic needs concrete sizes (stride arithmetic on the
  # image size, a lowering chosen by the batch size) takes the next.
  specs = [f"b, {h}, {w}, 3", f"{int(batch_size)}, {h}, {w}, 3"]
  if symbolic_size:
    specs.insert(0, "b, h, w, 3")
  errors = []
  for text in specs:
    shape = export.symbolic_shape(text)
    try:
      # XLA's own convolutions: portable to every platform (the matmul lowering is a CPU-speed choice
      # made from concrete sizes).
      with conv_lowering("xla"):
        exported = export.export(jax.jit(forward), platforms=tuple(platforms))(
            jax.ShapeDtypeStruct(shape, np.float32)
        )
      return exported, dict(input=f"float32[{text}]", platforms=list(platforms))
    except Exception as e:  # noqa: BLE001  (a symbolic size this network cannot take: try the next)
      errors.append(f"[{text}]: {str(e).splitlines()[0]}")
  raise ValueError("the network does not export: " + "; ".join(errors))


def _crop_size(config):
  for section, key in (("augment", "crop_size"), ("input", "target_size"), ("input", "image_size")):
    if section in config and key in config[section]:
      return tuple(config[section][key])
  raise ValueError("no training image size in the config: pass image_size")


def main(argv=None) -> None:
  from jaxseg import cli

  parser = cli.ArgumentParser(prog="python -m jaxseg.export", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="a trained jaxseg workdir")
  parser.add_argument("--out", required=True, help="the .jaxexport file to write")
  parser.add_argument("--stage", default=None, help="training stage / run (default: the method's)")
  parser.add_argument("--which", default="latest", choices=("latest", "best"))
  parser.add_argument("--platforms", default=",".join(PLATFORMS), help="comma-separated")
  parser.add_argument("--sizes", default="symbolic", choices=("symbolic", "fixed"))
  parser.add_argument("--batch_size", type=int, default=8, help="when the batch cannot be symbolic")
  parser.add_argument("--verbose", action="store_true", help="full tracebacks")
  args = parser.parse_args(argv)

  from jaxseg.methods import load_inference_model

  with cli.user_errors(args.verbose):
    model = load_inference_model(args.workdir, args.stage, args.which)
    exported, info = export_model(
        model,
        platforms=tuple(args.platforms.split(",")),
        symbolic_size=args.sizes == "symbolic",
        batch_size=args.batch_size,
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "wb") as f:
      f.write(exported.serialize())
    info.update(method=model.config.method, stage=model.stage, step=model.step)
    with open(args.out + ".json", "w") as f:
      json.dump(info, f, indent=2)
    print(
        f"exported {model.config.method} {model.stage} (step {model.step}) -> {args.out} "
        f"(input {info['input']}, platforms {','.join(info['platforms'])})",
        flush=True,
    )


if __name__ == "__main__":
  main(sys.argv[1:])
