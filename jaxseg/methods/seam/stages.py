"""SEAM stages after training: CAM inference, AffinityNet refinement, evaluation summary.

Outputs under the workdir:
  infer/cams/<id>.npy      dict {fg class index (0-based): float32 [H, W] fused CAM}, present
                           classes only (the official `infer_SEAM.py` format; np.load(..., allow_pickle=True))
  infer/masks/<id>.png     palette PNG pseudo mask at config.infer.bg_threshold
  infer/metrics.json       mIoU per background threshold, for the PCM CAM and the raw fc8 CAM
  affinity/...             AffinityNet checkpoints, random-walk masks and their mIoU
  segment/...              pseudo masks of the training images, the DeepLab-v2 segmenter's checkpoints,
                           its eval masks and metrics.json (mIoU without / with the dense CRF)
  metrics.json, results.md the summary (mIoU per output; markdown table); pictures/seam.png the picture grid
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from jaxseg.data import datasets
from jaxseg.data.palette import colorize
from jaxseg.evaluation.outputs import read_json, write_json, write_palette_png
from jaxseg.evaluation.pictures import legend_entries, write_image_grid
from jaxseg.methods.seam import cam_inference, method
from jaxseg.train import multihost


def _thresholds(config) -> tuple[float, ...]:
  start, stop, step = config.infer.sweep
  return tuple(float(t) for t in np.round(np.arange(start, stop - 1e-9, step), 6))


def infer(config, workdir: str) -> dict:
  """Multi-scale + flip CAMs for the eval split; pseudo masks; background-threshold sweep."""
  apply, variables = method.load_cam_model(config, workdir)
  source = datasets.build_source(config.data, "eval", with_labels=True)
  outputs = ["cam_rv", "cam"] if config.model.use_pcm else ["cam"]
  out_dir = os.path.join(workdir, "infer")
  os.makedirs(os.path.join(out_dir, "cams"), exist_ok=True)
  os.makedirs(os.path.join(out_dir, "masks"), exist_ok=True)
  thresholds = _thresholds(config)
  sweeps = {
      output: cam_inference.ThresholdSweep(
          thresholds, num_classes=config.data.num_classes, ignore_index=config.data.ignore_index
      )
      for output in outputs
  }
  for i in multihost.host_pass(len(source), "SEAM infer"):
    example = source[i]
    # One forward per input gives both the raw and the PCM CAM (the same numbers as one pass per output).
    cams = cam_inference.multiscale_cams_multi(
        apply,
        variables,
        example["image"],
        example["labels"],
        scales=tuple(config.infer.scales),
        flip=bool(config.infer.flip),
        outputs=outputs,
    )
    _save_outputs(config, out_dir, example, cams[outputs[0]], i)
    for output in outputs:
      sweeps[output].add(cams[output], example["labels"], example["mask"])

  results = {}
  for output in outputs:
    sweep = _summarise(sweeps[output].result(), thresholds)
    results[output] = sweep
    print(
        f"SEAM infer ({output}): best background threshold {sweep['best_threshold']:.2f} -> "
        f"mIoU {100 * sweep['best_miou']:.2f}; at {config.infer.bg_threshold:.2f}: "
        f"{100 * sweep['miou_at_default']:.2f}",
        flush=True,
    )
  if multihost.is_main_process():
    write_json(
        os.path.join(out_dir, "metrics.json"),
        {k: {kk: vv for kk, vv in v.items() if kk != "confusion"} for k, v in results.items()},
    )
  return {k: {kk: v[kk] for kk in ("best_threshold", "best_miou")} for k, v in results.items()}


def _save_outputs(config, out_dir, example, cams, index):
  name = str(example.get("id", f"{index:06d}"))
  present = cam_inference.present_classes(example["labels"])
  if config.infer.save_cams:
    np.save(os.path.join(out_dir, "cams", f"{name}.npy"), {int(c): cams[c] for c in present})
  if config.infer.save_masks:
    mask = cam_inference.pseudo_label(cams, example["labels"], float(config.infer.bg_threshold))
    write_palette_png(os.path.join(out_dir, "masks", f"{name}.png"), mask)


def _summarise(sweep: dict, thresholds) -> dict:
  """This process's `ThresholdSweep.result()` -> the summed-over-processes metrics of infer/metrics.json."""
  confusion = multihost.sum_over_processes(sweep["confusion"])
  miou = np.array([cam_inference.official_miou(c)[1] for c in confusion])
  best = int(np.argmax(miou))
  default = int(np.argmin(np.abs(np.asarray(thresholds) - 0.26)))
  return dict(
      thresholds=list(thresholds),
      miou=miou.tolist(),
      best_threshold=float(thresholds[best]),
      best_miou=float(miou[best]),
      miou_at_default=float(miou[default]),
      iou_at_best=cam_inference.official_miou(confusion[best])[0].tolist(),
      confusion=confusion,
  )


def evaluate(config, workdir: str) -> dict:
  """Summary table + metrics.json + picture grid from what the earlier stages wrote."""
  summary = {}
  infer_metrics = read_json(
      os.path.join(workdir, "infer", "metrics.json"), "run the 'infer' stage first"
  )
  # Named as the README's rows: the fc8 CAM is the "plain CAM" of the CAM baseline (loss.name='cam', no
  # PCM) and SEAM's "raw CAM" otherwise; the PCM output is the "SEAM CAM".
  fc8 = "plain_cam" if config.loss.name == "cam" else "raw_cam"
  for key, name in (("cam", fc8), ("cam_rv", "seam_cam")):
    if key in infer_metrics:
      summary[f"{name}_miou"] = infer_metrics[key]["best_miou"]
      summary[f"{name}_best_threshold"] = infer_metrics[key]["best_threshold"]
  aff_path = os.path.join(workdir, "affinity", "metrics.json")
  if os.path.exists(aff_path):
    summary["random_walk_miou"] = read_json(aff_path)["miou"]
  seg_path = os.path.join(workdir, "segment", "metrics.json")
  if os.path.exists(seg_path):
    seg = read_json(seg_path)
    summary["segmenter_miou"] = seg["miou"]
    summary["segmenter_crf_miou"] = seg["crf_miou"]
  lines = [f"{k:<28} {100 * v:6.2f}" for k, v in summary.items() if k.endswith("miou")]
  print("SEAM summary (mIoU, %):\n" + "\n".join(lines), flush=True)
  if multihost.is_main_process():
    write_json(os.path.join(workdir, "metrics.json"), summary)
    with open(os.path.join(workdir, "results.md"), "w") as f:
      f.write(results_table(summary) + "\n")
    path = write_pictures(config, workdir)
    print(f"pictures: {path}", flush=True)
  return summary


# (metrics.json key prefix, row name) of the summary, in pipeline order.
SUMMARY_ROWS = (
    ("plain_cam", "plain CAM"),
    ("raw_cam", "SEAM raw CAM (fc8)"),
    ("seam_cam", "SEAM CAM (PCM)"),
    ("random_walk", "SEAM random walk"),
    ("segmenter", "segmenter on random-walk masks"),
    ("segmenter_crf", "segmenter + CRF"),
)


def results_table(summary: dict) -> str:
  """Markdown table of one run's summary (metrics.json): rows present in it, mIoU % and best threshold."""
  lines = ["| output | mIoU (%) | best bg threshold |", "|---|---|---|"]
  for key, name in SUMMARY_ROWS:
    if f"{key}_miou" in summary:
      threshold = summary.get(f"{key}_best_threshold")
      shown = "" if threshold is None else f"{threshold:.2f}"
      lines.append(f"| {name} | {100 * summary[f'{key}_miou']:.2f} | {shown} |")
  return "\n".join(lines)


def write_pictures(config, workdir: str) -> str:
  """Grid per image: image | fc8 CAM | SEAM CAM (PCM) | pseudo mask | random walk | segmenter |
  ground truth, columns named as the results table's rows; a column whose stage has not run (or, for
  the segmenter, was scored on another split) is left out."""
  from jaxseg.cam import overlay_cam

  apply, variables = method.load_cam_model(config, workdir)
  source = datasets.build_source(config.data, "eval", with_labels=True)
  outputs = ("cam", "cam_rv") if config.model.use_pcm else ("cam",)
  threshold = float(config.infer.bg_threshold)
  count = min(int(config.evaluate.num_pictures), len(source))
  names = [str(source[i].get("id", f"{i:06d}")) for i in range(count)]
  rw_paths = [os.path.join(workdir, "affinity", "masks", f"{n}.png") for n in names]
  with_walk = bool(rw_paths) and all(os.path.exists(p) for p in rw_paths)
  seg_paths = [os.path.join(workdir, "segment", "masks", f"{n}.png") for n in names]
  with_seg = bool(seg_paths) and all(os.path.exists(p) for p in seg_paths)
  titles = ["image", "plain CAM" if config.loss.name == "cam" else "SEAM raw CAM (fc8)"]
  titles += ["SEAM CAM (PCM)"] if config.model.use_pcm else []
  titles += [f"pseudo mask (bg {threshold:g})"] + (["SEAM random walk"] if with_walk else [])
  titles += ["segmenter"] if with_seg else []
  titles += ["ground truth"]
  rows, masks = [], []
  for i in range(count):
    example = source[i]
    image = example["image"]
    cams = cam_inference.multiscale_cams_multi(
        apply,
        variables,
        image,
        example["labels"],
        scales=tuple(config.infer.scales),
        flip=bool(config.infer.flip),
        outputs=outputs,
    )
    row = [image]
    for output in outputs:
      row.append(np.asarray(overlay_cam(image, np.clip(cams[output].max(axis=0), 0, 1))))
    pseudo = cam_inference.pseudo_label(cams[outputs[-1]], example["labels"], threshold)
    row.append(colorize(pseudo))
    masks += [pseudo, example["mask"]]
    if with_walk:
      masks.append(np.asarray(Image.open(rw_paths[i])))
      row.append(colorize(masks[-1]))
    if with_seg:
      masks.append(np.asarray(Image.open(seg_paths[i])))
      row.append(colorize(masks[-1]))
    row.append(colorize(example["mask"]))
    rows.append(row)
  legend = legend_entries(masks, datasets.class_names(config.data))
  path = os.path.join(workdir, "pictures", "seam.png")
  notes = [
      "CAM columns: the largest CAM over the image's classes (multi-scale + flip), blue 0 to red 1; "
      f"pseudo mask: each pixel's class by the last CAM column, background where every CAM is below "
      f"{threshold:g}"
  ]
  return write_image_grid(path, rows, titles=titles, legend=legend, notes=notes)
