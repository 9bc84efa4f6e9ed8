"""VOS stages: train the correspondence, propagate first-frame masks, evaluate DAVIS J&F.

Workdir layout:
  train/                         checkpoints, metrics, trainer_config.json of the encoder
  synthetic_davis/               the synthetic evaluation videos in the DAVIS-2017 layout (synthetic only)
  results/<method>/<seq>/*.png   propagated ids as palette PNGs (the DAVIS results layout), one folder per
                                 method: model (the trained encoder), copy_first, lab_pixels (baselines);
                                 a relaunch skips sequences whose PNGs are all there
  results/<method>/global_results-<split>.csv, per-sequence_results-<split>.csv  (the official files)
  metrics.json, results.md       J&F, J and F means of every method
  pictures/<seq>.gif             one per video: frame | ground truth | each method's masks (outlines),
                                 titled with each method's J&F on that video, animated
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxseg.data.errors import DataError
from jaxseg.data.readers import davis as davis_data
from jaxseg.errors import ConfigError
from jaxseg.evaluation import davis as davis_eval
from jaxseg.evaluation import pictures
from jaxseg.evaluation.outputs import write_json, write_palette_png
from jaxseg.methods.vos import data, method, propagation
from jaxseg.train import multihost
from jaxseg.train.inference import InferenceModel, load_variables
from jaxseg.train.stages import train_stage

BASELINES = ("copy_first", "lab_pixels")
# Column titles of the GIFs: short, so that they fit above a tile.
PICTURE_TITLES = {"model": "trained", "copy_first": "copy first", "lab_pixels": "raw Lab"}


def train(config, workdir: str) -> None:
  """Trains the encoder with the recipe's objective (the top-level trainer section)."""
  train_stage(config, workdir, method.make_task(config), subdir="train")


def load_encoder(config, workdir: str, which: str = "latest") -> InferenceModel:
  """The 'train' stage's encoder (`predict(frames) -> features`), from its checkpoint's parameters
  and BatchNorm statistics alone (no optimiser state, no training clips)."""
  encoder = method.build_encoder(config)
  one_frame = {k: v[:1, :1] for k, v in method.example_batch(config).items()}
  variables, step, mesh = load_variables(
      os.path.join(workdir, "train"),
      lambda rng: method.init_variables(config, rng, one_frame),
      which=which,
  )
  return InferenceModel(
      config=config,
      stage="train",
      step=step,
      variables=variables,
      apply_fn=encode_fn(config, encoder),
      mesh=mesh,
      kind="features",
      prepare=lambda frame: method.frames_to_input(np.asarray(frame)[None], config.recipe)[0],
  )


def _sequences(config, workdir: str):
  """(DAVIS root or None when read from a prepared davis2017, sequence source, count)."""
  from jaxseg.data.readers import prepared

  d = config.eval_data
  if prepared.reads_prepared(d, "eval_data"):
    if str(d.resolution) != "480p":
      raise ConfigError(f"eval_data: the prepared davis2017 holds 480p, not {d.resolution!r}")
    source = prepared.section_source(d, str(d.split), where="eval_data", default_name="davis2017")
    root = None
  else:
    root = data.davis_root(config, workdir)
    source = davis_data.DavisSequenceSource(root, str(d.split), str(d.resolution))
  count = len(source) if not int(d.max_sequences) else min(len(source), int(d.max_sequences))
  return root, source, count


def _prepared_annotations(source, names: list[str]):
  """sequence -> (annotation file names, ids [T, H, W]) of a prepared davis2017 source."""

  def annotations(seq: str):
    example = source[names.index(seq)]
    if "masks" not in example:
      raise DataError(f"{source!r}: sequence {seq!r} is not annotated on every frame")
    return [f"{n}.png" for n in example["frame_names"]], example["masks"]

  return annotations


def _result_paths(workdir: str, name: str, example) -> list[str]:
  folder = os.path.join(workdir, "results", name, example["sequence"])
  return [os.path.join(folder, f"{f}.png") for f in example["frame_names"]]


def encode_fn(config, encoder):
  """(variables, frames [B, H, W, 3]) -> features [B, h, w, D] (CRW: its map layer's)."""
  if config.recipe == "mast":
    return lambda v, x: encoder.apply(v, x, train=False)
  return lambda v, x: encoder.apply(v, x, train=False)["map"]


def propagate_sequence(
    config, model: InferenceModel, frames: np.ndarray, first_ids: np.ndarray, num_objects: int
) -> np.ndarray:
  """uint8 [T, H, W] object ids of a video: the first frame's ids [H, W] (0 = background, 1..K)
  propagated with the trained encoder's features and the recipe's memory (`config.propagate`).

  Args:
    frames: uint8 RGB [T, H, W, 3].
  """
  x = method.frames_to_input(np.asarray(frames), config.recipe)
  feats = jnp.concatenate([model.predict(x[t : t + 1]) for t in range(len(x))])
  fn = propagation.propagate_mast if config.recipe == "mast" else propagation.propagate_crw
  return fn(feats, np.asarray(first_ids), int(num_objects), config.propagate)


def propagate(config, workdir: str) -> dict:
  """Propagates every evaluation sequence's first mask with the trained encoder and the baselines."""
  methods = tuple(config.propagate.methods)
  unknown = sorted(set(methods) - {"model", *BASELINES})
  if unknown:
    raise ValueError(f"propagate.methods: unknown {unknown}; known: model, copy_first, lab_pixels")
  model = None
  if "model" in methods:
    model = load_encoder(config, workdir, str(config.propagate.checkpoint))
  _, source, count = _sequences(config, workdir)
  cfg = config.propagate
  written = 0
  for i in multihost.host_pass(count, "propagate"):
    example = source[i]
    frames, first = example["frames"], example["first_mask"]
    k = int(example["num_objects"])
    for name in methods:
      paths = _result_paths(workdir, name, example)
      if all(os.path.exists(p) for p in paths):
        continue  # an earlier launch finished this sequence
      if name == "copy_first":
        ids = propagation.copy_first(len(frames), first)
      elif name == "lab_pixels":
        lab = method.frames_to_input(frames, "mast")
        keys, queries = propagation.lab_pixel_features(lab, float(cfg.pixel_temperature))
        ids = propagation.propagate_mast(keys, first, k, cfg, query_features=queries)
      else:
        ids = propagate_sequence(config, model, frames, first, k)
      for path, frame_ids in zip(paths, ids):
        write_palette_png(path, frame_ids)
      written += 1
  multihost.sync("vos_propagate")
  print(f"propagated {count} sequences ({written} sequence x method results written)", flush=True)
  return {"sequences": count}


def evaluate(config, workdir: str) -> dict:
  """DAVIS-2017 semi-supervised J&F of every propagated method; metrics.json, CSVs, GIFs."""
  root, source, count = _sequences(config, workdir)
  d = config.eval_data
  names = [source[i]["sequence"] for i in range(count)]
  summary, per_sequence = {}, {}
  for name in config.evaluate.methods:
    results = os.path.join(workdir, "results", name)
    if not os.path.isdir(results):
      print(f"evaluate: no results for {name!r} (run the 'propagate' stage)", flush=True)
      continue
    result = davis_eval.evaluate_davis(
        root,
        results,
        subset=str(d.split),
        sequences=names,
        resolution=str(d.resolution),
        annotations=None if root is not None else _prepared_annotations(source, names),
    )
    if multihost.is_main_process():
      davis_eval.write_csvs(result, results, str(d.split))
    summary[name] = {k: float(v) for k, v in result["global"].items()}
    per_sequence[name] = sequence_scores(result["per_object"])
  label = {"model": f"{config.recipe} (trained)", "copy_first": "copy first mask"}
  label["lab_pixels"] = "raw Lab pixels (untrained)"
  rows = [f"| propagation ({count} sequences) | J&F | J | F |", "|---|---|---|---|"]
  for name, g in summary.items():
    rows.append(
        f"| {label.get(name, name)} | {100 * g['J&F-Mean']:.1f} | {100 * g['J-Mean']:.1f} | "
        f"{100 * g['F-Mean']:.1f} |"
    )
  table = "\n".join(rows)
  print(f"DAVIS-2017 semi-supervised:\n{table}", flush=True)
  if multihost.is_main_process():
    write_json(os.path.join(workdir, "metrics.json"), summary)
    with open(os.path.join(workdir, "results.md"), "w") as f:
      f.write(table + "\n")
    for i in range(min(int(config.propagate.num_pictures), count)):
      methods = [m for m in ("model", *BASELINES) if m in summary]
      path = write_gif(workdir, source[i], methods, per_sequence)
      print(f"pictures: {path}", flush=True)
  return {name: g["J&F-Mean"] for name, g in summary.items()}


def sequence_scores(per_object) -> dict[str, float]:
  """{sequence: J&F mean over its objects} from `evaluate_davis`'s per-object rows ('<seq>_<k>')."""
  scores = {}
  for row in per_object:
    scores.setdefault(row["sequence"].rsplit("_", 1)[0], []).append(row["J&F-Mean"])
  return {seq: float(np.mean(v)) for seq, v in scores.items()}


def write_gif(workdir: str, example, methods, scores=None) -> str:
  """pictures/<seq>.gif, one per video: frame | ground truth (or the first mask) | each method's masks,
  as outlines, each column titled with the method and its J&F on this video (`scores`: {method: {seq:
  J&F}})."""
  frames = example["frames"]
  seq = example["sequence"]
  gt = example.get("masks")
  columns = [("frame", None)]
  columns.append(
      ("ground truth", gt)
      if gt is not None
      else ("first mask", np.repeat(example["first_mask"][None], len(frames), 0))
  )
  for name in methods:
    ids = np.stack([np.asarray(Image.open(p)) for p in _result_paths(workdir, name, example)])
    score = (scores or {}).get(name, {}).get(seq)
    columns.append(
        (
            PICTURE_TITLES.get(name, name)
            + (f" J&F {100 * score:.1f}" if score is not None else ""),
            ids,
        )
    )
  path = os.path.join(workdir, "pictures", f"{seq}.gif")
  return pictures.write_video_gif(path, frames, columns, header=seq)


STAGE_FNS = {"train": train, "propagate": propagate, "evaluate": evaluate}
