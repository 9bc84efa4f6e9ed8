"""SEAM demo: every stage runs, and (slow tier) the same command twice gives identical numbers; one
forward for both CAMs; the reduced run of the PCM claim in CI."""

import json
import os
import subprocess
import sys

import inference_check
import numpy as np
import pytest

from jaxseg.tools import results

import subprocs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _launch(config: str, workdir, *extra, timeout=1200):
  """launch.py on one CPU device (as the seed study measured), not the test session's 8 fake ones."""
  env = subprocs.one_device_env()
  out = subprocess.run(
      [
          sys.executable,
          "launch.py",
          f"--config={config}",
          f"--workdir={workdir}",
          "--config.train.progress_bar=False",
          *extra,
      ],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=timeout,
      check=False,
  )
  assert out.returncode == 0, out.stderr[-3000:]


def _read(path):
  with open(path) as f:
    return f.read()


# A small run of every stage (8 eval scenes, one inference scale + flip: the same code paths, a quarter of
# the inference compilations); the second launch reuses the first's compiled programs through the test
# run's compilation cache (tests/conftest.py).
RUNLOCAL = (
    "configs/seam.py:synthetic,runlocal",
    "--config.data.synthetic.num_eval=8",
    "--config.infer.scales=(1.0,)",
    "--config.evaluate.num_pictures=2",
)


@pytest.fixture(scope="module")
def runlocal(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("seam_runlocal")
  _launch(RUNLOCAL[0], workdir, *RUNLOCAL[1:])
  return workdir


@pytest.mark.slow
@pytest.mark.ci
def test_runlocal_pipeline_writes_everything(runlocal, monkeypatch):
  """Every stage (train, infer, affinity, segment, evaluate) writes its outputs; the trained networks
  load from their checkpoints alone, and the segmenter scores the evaluation's mIoU again."""
  a = runlocal
  metrics = json.loads((a / "metrics.json").read_text())
  keys = (
      "raw_cam_miou",
      "seam_cam_miou",
      "random_walk_miou",
      "segmenter_miou",
      "segmenter_crf_miou",
  )
  assert set(keys) <= set(metrics), metrics
  assert all(0 <= metrics[k] <= 1 for k in keys)
  results_md = (a / "results.md").read_text()
  assert "SEAM raw CAM (fc8)" in results_md and "SEAM random walk" in results_md
  assert "segmenter + CRF" in results_md
  assert len(os.listdir(a / "segment" / "pseudo_masks")) == 8  # segment.num_images training scenes
  assert len(os.listdir(a / "segment" / "masks")) == 2  # the picture grid's scenes
  assert len(os.listdir(a / "infer" / "cams")) == 8
  assert len(os.listdir(a / "affinity" / "masks")) == 8  # the eval scenes, random-walked
  assert os.path.getsize(a / "pictures" / "seam.png") > 1000
  # The trained SEAMNet loads with the data moved away, bit for bit the checkpoint's arrays (its CAM
  # forward is what the infer stage above ran; compiling it again here would cost ~40 s of CI).
  model = inference_check.load_without_data(a, monkeypatch, stage="train")
  assert model.stage == "train" and model.step == 4
  # With the segment stage trained, the default model is the segmenter; it scores what the stage wrote.
  from jaxseg.methods.seam import segment_stage

  model = inference_check.load_without_data(a, monkeypatch)
  assert model.stage == "segment" and model.step == 4
  scored = segment_stage.score(model.config, str(a), model)
  written = json.loads((a / "segment" / "metrics.json").read_text())
  assert scored["miou"] == written["miou"] and scored["crf_miou"] == written["crf_miou"]
  _check_predict(a, monkeypatch, model)


# Slow tier only (13.5 s idle after the shared run, its programs from the compilation cache; ~25 s on a
# loaded CI): the bit-for-bit repeat of training and inference. Resuming exactly (the same training
# again) stays in CI through tests/test_launch.py and tests/test_trainer_extensions.py.
@pytest.mark.slow
def test_runlocal_repeats_bit_for_bit(runlocal, tmp_path):
  """The same command again gives identical numbers, CAMs and training logs (two views, PCM,
  multi-scale inference, sweep)."""
  a, b = runlocal, tmp_path / "b"
  _launch(RUNLOCAL[0], b, *RUNLOCAL[1:], '--config.stages=("train", "infer")')
  for path in ("infer/metrics.json", "metrics.jsonl"):
    assert _read(a / path) == _read(b / path), path
  cams = sorted(os.listdir(a / "infer" / "cams"))
  for name in cams:
    cam_a = _read_npy(a / "infer" / "cams" / name)
    cam_b = _read_npy(b / "infer" / "cams" / name)
    assert cam_a.keys() == cam_b.keys() and all((cam_a[k] == cam_b[k]).all() for k in cam_a), name


def _check_predict(workdir, monkeypatch, segmenter):
  """`python -m jaxseg.predict` with the data moved away: the segmenter (default) on two scenes, one
  of them cropped to an odd size, gives each image alone's padded prediction; the CAM network
  (`--stage=train`) labels a scene with the classes its own classifier finds."""
  from PIL import Image

  from jaxseg import predict
  from jaxseg.data import datasets

  source = datasets.build_source(segmenter.config.data, "eval")
  images = [source[0]["image"], source[1]["image"][:50, :37]]
  names = inference_check.write_images(workdir / "own_images", images)
  out = workdir / "predicted"
  result = inference_check.predict_without_data(
      workdir, monkeypatch, f"--input={workdir / 'own_images'}", f"--out={out}"
  )
  assert result == dict(written=2, existing=0, bad=0, total=2)
  for name, image in zip(names, images):
    h, w = image.shape[:2]
    x = predict.pad_image(segmenter.prepare(image), predict.padded_size((h, w), 32))
    probs = predict.segmentation_probs_fn(segmenter)(segmenter.variables, x[None], x.shape[:2])
    expected = np.asarray(np.argmax(probs, -1))[0, :h, :w]
    np.testing.assert_array_equal(np.asarray(Image.open(out / "masks" / f"{name}.png")), expected)
  cam_out = workdir / "predicted_cam"
  inference_check.write_images(workdir / "one_image", images[:1])
  inference_check.predict_without_data(
      workdir,
      monkeypatch,
      "--stage=train",
      f"--input={workdir / 'one_image'}",
      f"--out={cam_out}",
      "--scales=1",
      "--no-flip",
  )
  mask = np.asarray(Image.open(cam_out / "masks" / "img0.png"))
  assert mask.shape == images[0].shape[:2] and mask.max() < segmenter.config.data.num_classes


def test_pseudo_mask_source_feeds_the_trainer_the_masks_written(tmp_path):
  """The segment stage's source reads back the PNGs written (ignore label 255 kept) and its augment,
  without scaling or flipping, hands them to the trainer unchanged."""
  from jaxseg.data import transforms
  from jaxseg.evaluation.outputs import write_palette_png
  from jaxseg.methods import seam
  from jaxseg.methods.seam import segment_stage

  rng = np.random.default_rng(0)
  images = [{"image": rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)} for _ in range(2)]
  masks = [rng.integers(0, 7, (24, 32)).astype(np.uint8) for _ in range(2)]
  masks[0][:5] = 255
  paths = [str(tmp_path / f"{i}.png") for i in range(2)]
  for path, mask in zip(paths, masks):
    write_palette_png(path, mask)
  source = segment_stage.PseudoMaskSource(images, paths)
  config = seam.default_config()
  config.segment.update(crop_size=(24, 32), scale_range=None, flip=False)
  augment = transforms.build_augment(segment_stage.augment_spec(config))
  for i in range(2):
    example = source[i]
    np.testing.assert_array_equal(example["mask"], masks[i])
    np.testing.assert_array_equal(example["image"], images[i]["image"])
    out = augment.random_map(example, np.random.default_rng(i))
    np.testing.assert_array_equal(out["mask"], masks[i])
  assert (augment.random_map(source[0], np.random.default_rng(0))["mask"] == 255).sum() == 5 * 32


def _read_npy(path):

  return np.load(path, allow_pickle=True).item()


def test_one_forward_for_both_outputs_gives_the_same_numbers():
  """`multiscale_cams_multi` (the infer stage's one forward) equals one `multiscale_cams` per output."""
  import jax.numpy as jnp

  from jaxseg.methods.seam import cam_inference as ci

  rng = np.random.default_rng(0)
  w_rv, w_cam = rng.standard_normal((2, 3, 7)).astype(np.float32)
  calls = []

  def apply_fn(_, images):
    calls.append(images.shape)
    return {
        "cam_rv": jnp.einsum("bhwc,ck->bhwk", jnp.tanh(images), w_rv),
        "cam": jnp.einsum("bhwc,ck->bhwk", images, w_cam),
    }

  image = rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)
  label = np.array([1, 0, 1, 0, 0, 1], np.float32)
  both = ci.multiscale_cams_multi(apply_fn, None, image, label, outputs=("cam_rv", "cam"))
  assert len(calls) == len(ci.OFFICIAL_SCALES)  # one forward per scale (image + flip as a batch)
  for output in ("cam_rv", "cam"):
    np.testing.assert_array_equal(
        both[output], ci.multiscale_cams(apply_fn, None, image, label, output=output)
    )
  gts = [rng.integers(0, 7, (20, 28)) for _ in range(3)]
  cams = [both["cam"], both["cam_rv"], both["cam"][::-1]]
  labels = [label, label, label[::-1]]
  sweep = ci.ThresholdSweep((0.0, 0.2, 0.5), num_classes=7)
  for cam, lab, gt in zip(cams, labels, gts):
    sweep.add(cam, lab, gt)
  expected = ci.threshold_sweep(cams, labels, gts, (0.0, 0.2, 0.5), num_classes=7)
  got = sweep.result()
  np.testing.assert_array_equal(got["confusion"], expected["confusion"])
  assert got["best_miou"] == expected["best_miou"]


# The SEAM demo at a CI budget (`configs/seam.py:synthetic,reduced`: train + infer, 300 steps, the 200 eval
# scenes; one CPU device). It asserts the direction that holds at this budget, the PCM CAM over SEAM's raw
# fc8 CAM; the bound and its seed study: `jaxseg.tools.results` (study seam_ci, README "CI claims"). SEAM
# over plain CAM is NOT a reduced-budget claim: at 300 steps plain CAM beat SEAM CAM (56.9 vs 50.3, seed
# 0); SEAM needs the demo's 600 steps.
@pytest.mark.slow
@pytest.mark.ci
def test_reduced_demo_pcm_beats_raw_cam(tmp_path):
  _launch("configs/seam.py:synthetic,reduced", tmp_path)
  with open(tmp_path / "infer" / "metrics.json") as f:
    metrics = json.load(f)
  gain = metrics["cam_rv"]["best_miou"] - metrics["cam"]["best_miou"]
  assert gain > results.bound("PCM CAM > SEAM raw CAM"), metrics
