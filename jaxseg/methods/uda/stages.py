"""UDA stages: source-only / adaptation training, ESL or max-prob pseudo labels, self-training,
evaluation on the target's labelled split.

Workdir layout:
  source_only/, adapt/, self_train/   each training stage's checkpoints, metrics, trainer_config.json
  pseudo_labels/<kind>/<id>.png       target train pseudo labels (255 = ignored), written atomically;
  pseudo_labels/thresholds.json       the class thresholds (a relaunch reuses them and writes only
                                      the missing PNGs)
  metrics.json, results.md            target mIoU of every trained stage; pseudo-label precision and
                                      coverage per class (when the target train split has labels)
  pictures/uda.png                    target image | entropy | pseudo labels | prediction | ground truth
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxseg.data import datasets, transforms
from jaxseg.data.palette import colorize
from jaxseg.evaluation.outputs import read_json, write_json, write_palette_png
from jaxseg.evaluation.pictures import grey_heat, legend_entries, write_image_grid
from jaxseg.evaluation.segmentation import dataset_scorer, training_evaluator
from jaxseg.losses.segmentation import upsample_logits
from jaxseg.methods.uda import method
from jaxseg.methods.uda import pseudo_labels as pl
from jaxseg.train import multihost
from jaxseg.train import sharding as shd
from jaxseg.train.inference import InferenceModel, load_variables
from jaxseg.train.stages import train_stage

TRAINING_STAGES = {"source_only": "source_only", "adapt": None, "self_train": "self_train"}


@dataclasses.dataclass(frozen=True)
class EvalInput:
  """Eval example: image resized to the network input size and normalised; the mask at label size."""

  size: tuple[int, int]
  label_size: tuple[int, int] | None
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  bicubic: bool = True

  def __call__(self, example):
    image = method.resize_image_and_mask({"image": example["image"]}, self.size, self.bicubic)
    out = {"image": transforms.normalize(image, self.mean, self.std)["image"].astype(np.float32)}
    if "mask" in example:
      mask = np.asarray(example["mask"])
      if self.label_size is not None and mask.shape != tuple(self.label_size):
        mask = resize_mask(mask, self.label_size)
      out["mask"] = mask.astype(np.int32)
    return out


def resize_mask(mask, size) -> np.ndarray:
  """Class mask [H, W] -> [h, w] by nearest neighbour (unchanged if already that size)."""
  mask = np.asarray(mask)
  if mask.shape == tuple(size):
    return mask
  return transforms.resize_array("mask", mask, tuple(size), "mask")


def eval_input(config, label_size=None) -> EvalInput:
  i = config.input
  return EvalInput(
      tuple(i.target_size),
      label_size,
      tuple(i.mean),
      tuple(i.std),
      bicubic=method.uses_bicubic(config),
  )


def _stage_dir(workdir: str, stage: str) -> str:
  return os.path.join(workdir, stage)


def _predict_fn(config, section):
  segmenter, _ = method.build_networks(config, section)

  def predict(variables, batch):
    logits = segmenter.apply(variables, batch["image"], train=False)["main"]
    # Official protocol: main logits upsampled (align_corners=True) to the label resolution, argmax.
    return jnp.argmax(upsample_logits(logits, batch["mask"].shape[1:3]), axis=-1)

  return predict


def _scorer(config, batch_sharding, section):
  label_size = tuple(config.evaluate.label_size) if config.evaluate.label_size else None
  return dataset_scorer(
      _predict_fn(config, section),
      datasets.build_source(config.target_data, "eval"),
      eval_input(config, label_size),
      num_classes=config.target_data.num_classes,
      ignore_index=config.target_data.ignore_index,
      batch_size=int(config.evaluate.batch_size),
      batch_sharding=batch_sharding,
  )


def segmenter_variables(state) -> dict:
  return {"params": state["params"]["segmenter"], **state["model_state"]}


def _evaluator(config, stage: str):
  return training_evaluator(
      lambda ts: _scorer(config, ts.batch_sharding, TRAINING_STAGES[stage]), segmenter_variables
  )


def _train(config, workdir: str, stage: str, task) -> None:
  train_stage(config, workdir, task, section=TRAINING_STAGES[stage], subdir=stage)


def source_only(config, workdir: str) -> None:
  """Trains on the labelled source only (the baseline row), with the `source_only` section."""
  _train(
      config,
      workdir,
      "source_only",
      method.make_task(
          config,
          section=TRAINING_STAGES["source_only"],
          objective="source_only",
          make_evaluator=_evaluator(config, "source_only"),
      ),
  )


def adapt(config, workdir: str) -> None:
  """Trains `loss.name` (advent | minent | source_only) with the top-level trainer section."""
  task = method.make_task(config, make_evaluator=_evaluator(config, "adapt"))
  _train(config, workdir, "adapt", task)


def load_stage(config, workdir: str, stage: str, which: str = "latest") -> InferenceModel:
  """A trained stage's segmenter (`predict(images) -> main logits`), from its checkpoint's segmenter
  parameters and BatchNorm statistics alone (no discriminators, optimiser state or data)."""
  section = TRAINING_STAGES[stage]
  segmenter, _ = method.build_networks(config, section)
  h, w = config.input.target_size

  def init_fn(rng):
    return segmenter.init(rng, jnp.zeros((1, h, w, 3)), train=False)

  variables, step, mesh = load_variables(
      _stage_dir(workdir, stage), init_fn, which=which, params_key="segmenter"
  )
  return InferenceModel(
      config=config,
      stage=stage,
      step=step,
      variables=variables,
      apply_fn=lambda v, images: segmenter.apply(v, images, train=False)["main"],
      mesh=mesh,
      # As the evaluation: resized to the network's input size, logits upsampled align_corners=True.
      prepare=lambda image: eval_input(config)({"image": image})["image"],
      class_names=tuple(datasets.class_names(config.target_data)),
      input_size=(h, w),
      resize_logits=upsample_logits,
  )


def _label_dir(workdir: str, kind: str) -> str:
  return os.path.join(workdir, "pseudo_labels", kind)


def _name(example, index: int) -> str:
  return str(example.get("id", f"{index:07d}"))


def pseudo_labels(config, workdir: str) -> dict:
  """Labels the target train split with the 'adapt' model: ESL (entropy) or max-prob thresholds over
  the whole split in bounded memory (two histogram passes), then one PNG per image."""
  variables = load_stage(config, workdir, "adapt", str(config.pseudo_labels.checkpoint)).variables
  segmenter, _ = method.build_networks(config)
  size = tuple(config.input.target_size)
  forward = jax.jit(
      lambda v, x: pl.prediction_maps(segmenter.apply(v, x, train=False)["main"], size)
  )
  source = datasets.build_source(config.target_data, "train")
  transform = eval_input(config)
  num_classes = config.target_data.num_classes

  def maps(i):
    example = source[i]
    out = jax.device_get(forward(variables, transform(example)["image"][None]))
    return example, {k: np.asarray(v[0]) for k, v in out.items()}

  kinds = ("esl", "maxprob") if _has_target_masks(source) else (str(config.pseudo_labels.kind),)
  threshold_path = os.path.join(workdir, "pseudo_labels", "thresholds.json")
  if os.path.exists(threshold_path):
    thresholds = {k: np.asarray(v) for k, v in read_json(threshold_path).items()}
  else:
    thresholds = {}
    for kind in kinds:
      value = "entropy" if kind == "esl" else "maxprob"

      def share(value=value):
        for i in multihost.host_pass(len(source), f"pseudo labels ({value} histograms)"):
          _, m = maps(i)
          yield m[value], m["label"]

      fn = pl.dataset_esl_thresholds if kind == "esl" else pl.dataset_maxprob_thresholds
      thresholds[kind] = fn(share, num_classes)
    if multihost.is_main_process():
      write_json(threshold_path, {k: v.tolist() for k, v in thresholds.items()})
  stats = {k: np.zeros((4, num_classes), np.int64) for k in kinds}  # see `_accumulate`
  for i in multihost.host_pass(len(source), "pseudo labels (PNGs)"):
    example, m = maps(i)
    name = _name(example, i)
    for kind in kinds:
      label_fn = pl.esl_pseudo_labels if kind == "esl" else pl.maxprob_pseudo_labels
      value = m["entropy"] if kind == "esl" else m["maxprob"]
      labels = label_fn(m["label"], value, thresholds[kind]).astype(np.uint8)
      path = os.path.join(_label_dir(workdir, kind), f"{name}.png")
      if not os.path.exists(path):  # Resumable: PNGs of an interrupted pass are complete (atomic).
        write_palette_png(path, labels)
      if "mask" in example:
        gt = resize_mask(example["mask"], size)
        _accumulate(stats[kind], labels, gt, num_classes)
  multihost.sync("uda_pseudo_labels")
  summary = {"thresholds": {k: v.tolist() for k, v in thresholds.items()}}
  for kind in kinds:
    s = multihost.sum_over_processes(stats[kind])
    if s[2].sum():  # the target train split has ground truth (synthetic): score the labels
      summary[kind] = _precision_coverage(s)
  if multihost.is_main_process():
    write_json(os.path.join(workdir, "pseudo_labels", "summary.json"), summary)
    _print_pseudo_label_table(summary, kinds, datasets.class_names(config.target_data))
  return {k: {m: summary[k][m] for m in ("precision", "coverage")} for k in kinds if k in summary}


def _has_target_masks(source) -> bool:
  return len(source) > 0 and "mask" in source[0]


def _accumulate(stats, labels, gt, num_classes):
  """stats int64 [4, C] += per class: kept pixels labelled c, of those right, ground-truth pixels of
  c, of those kept (with any label)."""
  valid_gt = gt < num_classes
  kept = (labels < num_classes) & valid_gt
  for c in range(num_classes):
    stats[0, c] += int(np.sum(kept & (labels == c)))
    stats[1, c] += int(np.sum(kept & (labels == c) & (gt == c)))
    stats[2, c] += int(np.sum(valid_gt & (gt == c)))
    stats[3, c] += int(np.sum(kept & (gt == c)))


def _precision_coverage(s) -> dict:
  """precision: kept pixels whose pseudo label is right; coverage: ground-truth pixels that are kept."""
  kept, correct, labelled, covered = (np.asarray(x, np.float64) for x in s)
  with np.errstate(invalid="ignore", divide="ignore"):
    precision = np.where(kept > 0, correct / kept, np.nan)
    coverage = np.where(labelled > 0, covered / labelled, np.nan)
  return {
      "precision": float(correct.sum() / max(kept.sum(), 1)),
      "coverage": float(covered.sum() / max(labelled.sum(), 1)),
      "precision_per_class": [None if np.isnan(v) else float(v) for v in precision],
      "coverage_per_class": [None if np.isnan(v) else float(v) for v in coverage],
  }


def _print_pseudo_label_table(summary, kinds, names):
  rows = [f"{'class':<14}" + "".join(f"{k + ' prec':>14}{k + ' cov':>13}" for k in kinds)]
  for c, name in enumerate(names):
    cells = []
    for k in kinds:
      if k not in summary:
        continue
      p, cv = summary[k]["precision_per_class"][c], summary[k]["coverage_per_class"][c]
      cells.append(f"{_pct(p):>14}{_pct(cv):>13}")
    rows.append(f"{name:<14}" + "".join(cells))
  totals = "".join(
      f"{_pct(summary[k]['precision']):>14}{_pct(summary[k]['coverage']):>13}"
      for k in kinds
      if k in summary
  )
  rows.append(f"{'all':<14}{totals}")
  print(
      "pseudo labels (precision: kept pixels that are right; coverage: ground-truth pixels kept):"
  )
  print("\n".join(rows), flush=True)


def _pct(v) -> str:
  return "-" if v is None else f"{100 * v:.1f}"


class PseudoLabelSource:
  """The target train split with the pseudo labels of `pseudo_labels/<kind>/` as 'mask'."""

  def __init__(self, source, label_dir: str):
    self.source, self.label_dir = source, label_dir

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    example = dict(self.source[i])
    path = os.path.join(self.label_dir, f"{_name(example, i)}.png")
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path}: pseudo label missing; run the 'pseudo_labels' stage first")
    example["mask"] = np.asarray(Image.open(path))
    return example


def self_train(config, workdir: str) -> None:
  """Trains on source labels + target pseudo labels (`self_train` section; `self_train.objective`)."""
  target = PseudoLabelSource(
      datasets.build_source(config.target_data, "train"),
      _label_dir(workdir, str(config.pseudo_labels.kind)),
  )
  task = method.make_task(
      config,
      section=TRAINING_STAGES["self_train"],
      target_source=target,
      objective=str(config.self_train.objective),
      make_evaluator=_evaluator(config, "self_train"),
  )
  _train(config, workdir, "self_train", task)


def evaluate(config, workdir: str) -> dict:
  """Target mIoU of every trained stage (label resolution, 19-class protocol), metrics.json, pictures."""
  names = datasets.class_names(config.target_data)
  summary, variables = {}, {}
  for stage in TRAINING_STAGES:
    if not os.path.isdir(os.path.join(_stage_dir(workdir, stage), "checkpoints")):
      continue
    model = load_stage(config, workdir, stage, str(config.evaluate.checkpoint))
    scorer = _scorer(config, shd.batch_sharding(model.mesh), TRAINING_STAGES[stage])
    (metrics, _), _ = scorer(model.variables)
    summary[stage] = {
        "miou": float(metrics["miou"]),
        "iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, metrics["iou"])},
    }
    variables[stage] = model.variables
  pl_summary = os.path.join(workdir, "pseudo_labels", "summary.json")
  if os.path.exists(pl_summary):
    summary["pseudo_labels"] = read_json(pl_summary)
  table = results_table(summary)
  print(table, flush=True)
  if multihost.is_main_process():
    write_json(os.path.join(workdir, "metrics.json"), summary)
    with open(os.path.join(workdir, "results.md"), "w") as f:
      f.write(table + "\n")
    if variables and int(config.evaluate.num_pictures):
      print(f"pictures: {_pictures(config, workdir, variables)}", flush=True)
  return {s: v["miou"] for s, v in summary.items() if "miou" in v}


STAGE_NAMES = {
    "source_only": "source only",
    "adapt": "AdvEnt / MinEnt (adapt)",
    "self_train": "self-training on pseudo labels",
}


def results_table(summary: dict) -> str:
  """Markdown: target mIoU of each trained stage; pseudo-label precision and coverage when scored."""
  lines = ["| stage | target mIoU (%) |", "|---|---|"]
  for stage, value in summary.items():
    if "miou" in value:
      lines.append(f"| {STAGE_NAMES.get(stage, stage)} | {100 * value['miou']:.1f} |")
  labels = summary.get("pseudo_labels", {})
  scored = [k for k in ("esl", "maxprob") if k in labels]
  if scored:
    lines += ["", "| pseudo labels | precision (%) | coverage (%) |", "|---|---|---|"]
    for kind in scored:
      name = {"esl": "ESL (entropy)", "maxprob": "max-prob (BDL)"}[kind]
      lines.append(
          f"| {name} | {100 * labels[kind]['precision']:.1f} | {100 * labels[kind]['coverage']:.1f} |"
      )
  return "\n".join(lines)


def _pictures(config, workdir: str, variables: dict) -> str:
  """Target train images (the ones with pseudo labels): image | entropy of the last model | pseudo
  labels | source-only prediction | last model's prediction | ground truth, with the class legend, the
  entropy colour bar and what the ignore colour means."""
  from jaxseg.losses.entropy import normalized_entropy

  segmenter, _ = method.build_networks(config)
  transform = eval_input(config)
  forward = jax.jit(lambda v, x: segmenter.apply(v, x, train=False)["main"])
  kind = str(config.pseudo_labels.kind)
  train_source = datasets.build_source(config.target_data, "train")
  last = list(variables)[-1]
  shown = (["source_only"] if "source_only" in variables and last != "source_only" else []) + [last]
  rows, masks = [], []
  for i in range(min(int(config.evaluate.num_pictures), len(train_source))):
    # Pseudo labels exist for the target *train* split: show those images.
    example = train_source[i]
    image = np.asarray(example["image"])
    x = transform(example)["image"][None]
    preds, entropy = [], None
    for stage in shown:
      probs = jax.nn.softmax(upsample_logits(forward(variables[stage], x), image.shape[:2]), -1)
      preds.append(np.asarray(jnp.argmax(probs[0], -1)).astype(np.uint8))
      entropy = np.asarray(normalized_entropy(probs)[0])  # of the last model
    path = os.path.join(_label_dir(workdir, kind), f"{_name(example, i)}.png")
    pseudo = np.asarray(Image.open(path)) if os.path.exists(path) else np.full(image.shape[:2], 255)
    pseudo = resize_mask(pseudo, image.shape[:2]).astype(np.uint8)
    gt = example["mask"] if "mask" in example else None
    masks += [pseudo, *preds] + ([gt] if gt is not None else [])
    gt_tile = colorize(gt) if gt is not None else np.full_like(image, 255)
    rows.append(
        [image, grey_heat(entropy), colorize(pseudo), *(colorize(p) for p in preds), gt_tile]
    )
  short = {"source_only": "source only", "adapt": "adapted", "self_train": "self-trained"}
  titles = [
      "target image",
      f"entropy ({short.get(last, last)})",
      f"pseudo labels ({kind})",
      *(short.get(s, s) for s in shown),
      "ground truth",
  ]
  return write_image_grid(
      os.path.join(workdir, "pictures", "uda.png"),
      rows,
      titles=titles,
      legend=legend_entries(masks, datasets.class_names(config.target_data)),
      colour_bars=[("normalised entropy (black: certain, white: uniform)", 0.0, 1.0)],
      notes=[
          "ignore: pixels without a pseudo label (ESL: entropy above the class threshold; max-prob: "
          "probability below it), or without ground truth"
      ],
  )


STAGE_FNS = {
    "source_only": source_only,
    "adapt": adapt,
    "pseudo_labels": pseudo_labels,
    "self_train": self_train,
    "evaluate": evaluate,
}
