"""Speed and memory of label propagation with MAST's memory (the `vos` method's `propagate_mast`).

For each frame size, a synthetic video of --frames frames goes through the paper config's encoder
(`configs/vos.py:mast`: ResNet-18 at output stride 4, random weights: speed does not depend on them) and
MAST's memory: to predict frame i + 1, the long-term frames 0 and 5 and the recent frames i, i - 2, i - 4,
window radius 12, references more than 15 frames back through the ROI path. The whole video runs once to
compile every memory pattern, then again timed. Printed per size: encoder and propagation frames/s, the
compiled propagation step's memory (XLA's memory analysis of the largest memory pattern: arguments +
outputs + temporaries) and its bytes per pixel, which stays flat when memory is linear in pixels, the
size a dense HW x HW affinity over the same references would need, and on accelerators the device's peak
bytes in use.

  python benchmarks/vos.py                                  # 120x214, 240x427, 480x854 (DAVIS 480p), 24 frames
  python benchmarks/vos.py --sizes=64x112,128x224 --frames=8 --width=0.25   # quick CPU check
  python benchmarks/vos.py --sizes=240x427 --reference=/path/to/MAST --repeats=5   # against MAST

With --reference=<zlai0/MAST checkout>, the official test-time propagation of the same video
(references/mast.py: `propagation_reference`, benchmark.py's loop with the features computed once) runs
beside jaxseg's, in alternating timed passes over the whole video (--repeats of them, medians): the
encoders, and the propagation with MAST's compiled `spatial_correlation_sampler` (built by
references/correlation_sampler.py when it does not import) and with the pure-PyTorch stand-in.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from references.common import Contender, interleaved_medians  # noqa: E402

from configs import vos as vos_config  # noqa: E402
from jaxseg.methods.vos import method, propagation  # noqa: E402


def _parse_sizes(text: str) -> list[tuple[int, int]]:
  sizes = []
  for item in text.split(","):
    h, w = item.lower().split("x")
    sizes.append((int(h), int(w)))
  return sizes


def synthetic_video(num_frames: int, height: int, width: int, num_objects: int = 2):
  """(float32 Lab-normalised frames [T, H, W, 3], uint8 first-frame ids [H, W]); deterministic."""
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)
  ids = np.zeros((height, width), np.uint8)
  for k in range(1, num_objects + 1):
    y0, x0 = height * k // (num_objects + 2), width * k // (num_objects + 2)
    ids[y0 : y0 + height // 4, x0 : x0 + width // 4] = k
  return method.frames_to_input(frames, "mast"), ids


def step_memory(features, ids, num_objects: int, cfg, target: int = 23) -> tuple[int, int]:
  """(bytes, number of references) of the compiled propagation step that predicts frame `target` (by
  default a late frame: long-term frames 0 and 5 through the ROI path plus three recent frames, the most
  references), for the shapes of `features` [T, h, w, C] and `ids` [H, W] (shapes only: lowered on
  abstract arrays, so the video may be shorter)."""
  _, h, w, c = features.shape
  step, inputs = propagation.mast_step_for_frame((h, w, c), ids.shape, num_objects, cfg, target)
  compiled = jax.jit(step).lower(*inputs).compile()
  m = compiled.memory_analysis()
  total = int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)
  return total, int(inputs[0].shape[0])


def run_size(encoder, variables, cfg, height: int, width: int, num_frames: int) -> dict:
  x, ids = synthetic_video(num_frames, height, width)
  encode = jax.jit(lambda v, f: encoder.apply(v, f, train=False))

  def pass_once():
    start = time.perf_counter()
    feats = jnp.concatenate([encode(variables, x[t : t + 1]) for t in range(num_frames)])
    feats.block_until_ready()
    mid = time.perf_counter()
    out = propagation.propagate_mast(feats, ids, 2, cfg)  # returns host ids: synchronised
    return mid - start, time.perf_counter() - mid, feats, out

  pass_once()  # compiles the encoder and every memory pattern
  enc_s, prop_s, feats, out = pass_once()
  mem, num_refs = step_memory(feats, ids, 2, cfg)
  h, w = feats.shape[1:3]
  dense = num_refs * (h * w) ** 2 * 4  # one fp32 affinity HW x (refs * HW)
  row = dict(
      size=f"{height}x{width}",
      pixels=height * width,
      feature_grid=f"{h}x{w}",
      encoder_fps=num_frames / enc_s,
      propagation_fps=(num_frames - 1) / prop_s,
      total_fps=(num_frames - 1) / (enc_s * (num_frames - 1) / num_frames + prop_s),
      step_bytes=mem,
      step_bytes_per_pixel=mem / (height * width),
      dense_affinity_bytes=dense,
      predicted_frames=int(out.shape[0]),
  )
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    row["device_peak_bytes"] = int(stats["peak_bytes_in_use"])
  return row


def compare_size(args, encoder, variables, cfg, height: int, width: int) -> dict:
  """jaxseg's encoder and propagation beside MAST's on one video, in alternating timed passes."""
  from references import mast as mast_reference

  num_frames = args.frames
  x, ids = synthetic_video(num_frames, height, width)
  encode = jax.jit(lambda v, f: encoder.apply(v, f, train=False))
  cache = {}

  def jax_encode():
    cache["feats"] = jnp.concatenate([encode(variables, x[t : t + 1]) for t in range(num_frames)])

  def jax_propagate():
    cache["ids"] = propagation.propagate_mast(cache["feats"], ids, 2, cfg)  # host ids: synchronised

  contenders = {
      ("jaxseg", "encoder"): Contender(
          jax_encode, lambda: jax.block_until_ready(cache), lambda s: dict(fps=num_frames / s)
      ),
      ("jaxseg", "propagation"): Contender(
          jax_propagate, lambda: None, lambda s: dict(fps=(num_frames - 1) / s)
      ),
  }
  official = mast_reference.propagation_reference(
      os.path.abspath(args.reference),
      x,
      ids,
      long_term=tuple(cfg.long_term),
      short_term=int(cfg.short_term),
      gap=int(cfg.short_gap),
      sampler_source=args.correlation_sampler,
  )
  for name, c in official.items():
    contenders[("MAST", name)] = c
  for c in contenders.values():  # compiles every memory pattern; the official's allocator warms up
    c.step()
    c.sync()
  times = interleaved_medians(contenders, steps=1, repeats=args.repeats)
  row = dict(size=f"{height}x{width}", frames=num_frames, repeats=args.repeats)
  for (who, name), c in contenders.items():
    row[f"{who} {name} fps"] = c.report(times[(who, name)])["fps"]
  jax_prop = row["jaxseg propagation fps"]
  for name in official:
    if name != "encoder":
      row[f"propagation vs MAST ({name})"] = jax_prop / row[f"MAST {name} fps"]
  row["encoder vs MAST"] = row["jaxseg encoder fps"] / row["MAST encoder fps"]
  return row


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--sizes", default="120x214,240x427,480x854", help="HxW,HxW,... (480p last)")
  parser.add_argument(
      "--frames", type=int, default=24, help="frames per video (>= 17 reaches the ROI)"
  )
  parser.add_argument(
      "--width", type=float, default=None, help="encoder width (default: the config's)"
  )
  parser.add_argument("--dtype", default="float32", help="encoder compute dtype")
  parser.add_argument("--json", default="", help="also write the rows to this file")
  parser.add_argument(
      "--reference", default="", help="zlai0/MAST checkout: time its propagation beside jaxseg's"
  )
  parser.add_argument(
      "--correlation-sampler",
      default="",
      help="with --reference: '' = build the PyPI sdist if the compiled op does not import, a tarball "
      "or checkout to build, 'none' = the pure-PyTorch stand-in only",
  )
  parser.add_argument("--repeats", type=int, default=3, help="with --reference: timed passes each")
  args = parser.parse_args(argv)
  if args.reference and args.width not in (None, 1.0):
    raise SystemExit("--reference needs the full-width encoder (MAST has no other)")

  config = vos_config.get_config("mast")
  if args.width is not None:
    config.model.width_multiplier = args.width
  config.train.compute_dtype = args.dtype
  encoder = method.build_encoder(config)
  variables = encoder.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)), train=False)
  cfg = config.propagate
  print(
      f"device: {jax.devices()[0].device_kind} x{jax.device_count()}; encoder width "
      f"{config.model.width_multiplier}, {args.dtype}; MAST memory: long-term {tuple(cfg.long_term)}, "
      f"{cfg.short_term} recent every {cfg.short_gap}, radius {cfg.radius}, ROI beyond {cfg.roi_gap}",
      flush=True,
  )
  if args.reference:
    rows = []
    for height, width in _parse_sizes(args.sizes):
      rows.append(compare_size(args, encoder, variables, cfg, height, width))
      print(
          "  ".join(
              f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}" for k, v in rows[-1].items()
          ),
          flush=True,
      )
    if args.json:
      with open(args.json, "w") as f:
        json.dump(rows, f, indent=1)
    return rows
  rows = []
  header = (
      f"{'size':>10} {'grid':>8} {'enc fps':>8} {'prop fps':>9} {'total fps':>9} "
      f"{'step MiB':>9} {'B/pixel':>8} {'dense MiB':>10}"
  )
  print(header, flush=True)
  for height, width in _parse_sizes(args.sizes):
    row = run_size(encoder, variables, cfg, height, width, args.frames)
    rows.append(row)
    print(
        f"{row['size']:>10} {row['feature_grid']:>8} {row['encoder_fps']:8.2f} "
        f"{row['propagation_fps']:9.2f} {row['total_fps']:9.2f} {row['step_bytes'] / 2**20:9.1f} "
        f"{row['step_bytes_per_pixel']:8.1f} {row['dense_affinity_bytes'] / 2**20:10.1f}"
        + (
            f"  device peak {row['device_peak_bytes'] / 2**20:.0f} MiB"
            if "device_peak_bytes" in row
            else ""
        ),
        flush=True,
    )
  per_pixel = [r["step_bytes_per_pixel"] for r in rows]
  print(
      f"propagation step bytes per pixel: {min(per_pixel):.1f} .. {max(per_pixel):.1f} "
      f"(flat = linear in pixels; a dense affinity grows with pixels^2)",
      flush=True,
  )
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=1)
  return rows


if __name__ == "__main__":
  main()
