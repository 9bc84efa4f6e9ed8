"""Exports a trained network as a portable `jax.export` artefact (StableHLO, weights included).

  python -m jaxseg.export --workdir=runs/demo --out=runs/demo/model.jaxexport [--stage=S] [--which=best]

The file runs with plain JAX, without jaxseg or this repository (README "Exporting a trained network"):

  from jax import export
  exported = export.deserialize(open("model.jaxexport", "rb").read())
  logits = exported.call(images)  # float32 [B, H, W, 3], normalised as in training

The network's eval-mode forward (`load_inference_model(...).apply_fn` with its variables closed over as
constants) is exported for the platforms asked for (default cpu, cuda, tpu), with a symbolic batch size
and, where the network allows it, symbolic image height and width (`--sizes=fixed` pins them to the
training crop instead).
"""

from __future__ import annotations

import json
import os
import sys

PLATFORMS = ("cpu", "cuda", "tpu")


def export_model(model, *, platforms=PLATFORMS, image_size=None, symbolic_size: bool = True):
  """`jax.export.Exported` of `model.apply_fn` with `model.variables` baked in.

  Args:
    model: a `jaxseg.train.inference.InferenceModel`.
    image_size: (H, W) when not symbolic (default: the config's training crop).
    symbolic_size: also leave H and W symbolic; falls back to fixed (H, W) if the network needs them.
  Returns:
    (exported, description dict: input shape spec, platforms).
  """
  import jax
  import numpy as np
  from jax import export

  variables = jax.device_get(model.variables)

  def forward(images):
    return model.apply_fn(variables, images)

  fixed = tuple(int(s) for s in (image_size or _crop_size(model.config)))
  specs = []
  if symbolic_size:
    specs.append(("b, h, w, 3", export.symbolic_shape("b, h, w, 3")))
  specs.append(
      (f"b, {fixed[0]}, {fixed[1]}, 3", export.symbolic_shape(f"b, {fixed[0]}, {fixed[1]}, 3"))
  )
  errors = []
  for text, shape in specs:
    try:
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
  parser.add_argument("--verbose", action="store_true", help="full tracebacks")
  args = parser.parse_args(argv)

  from jaxseg.methods import load_inference_model

  with cli.user_errors(args.verbose):
    model = load_inference_model(args.workdir, args.stage, args.which)
    exported, info = export_model(
        model, platforms=tuple(args.platforms.split(",")), symbolic_size=args.sizes == "symbolic"
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
