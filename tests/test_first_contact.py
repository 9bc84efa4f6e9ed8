"""First contact: the entry points other than launch.py (CAM CLI, weight converter, DAVIS evaluator)
report known errors in at most 3 lines with an exit status; class legends on prediction pictures;
the CAM CLI's default target is the most frequent non-background class, named in the title."""

import importlib
import os
import subprocess
import sys
import types
from concurrent.futures import ThreadPoolExecutor

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from jaxseg.cam import __main__ as cam_cli
from jaxseg.cam import demo
from jaxseg.data.palette import palette
from jaxseg.evaluation import pictures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARAMS = os.path.join(ROOT, "tests", "data", "backbones", "resnet38_w003125.params")


def _tree(tmp_path):
  """A workdir with config.json and no checkpoint, a tiny DAVIS root with one result frame
  missing, and an image."""
  from jaxseg import methods
  from jaxseg.methods.supervised import method

  methods.save_config(method.default_config(), str(tmp_path / "work"))
  davis = tmp_path / "davis"
  (davis / "Annotations" / "480p" / "seq").mkdir(parents=True)
  (davis / "ImageSets" / "2017").mkdir(parents=True)
  (davis / "ImageSets" / "2017" / "val.txt").write_text("seq\n")
  (tmp_path / "results" / "seq").mkdir(parents=True)
  for frame in range(3):
    Image.fromarray(np.ones((8, 8), np.uint8), "L").save(
        davis / "Annotations" / "480p" / "seq" / f"{frame:05d}.png"
    )
  Image.fromarray(cam_cli.demo_image(24, 0)).save(tmp_path / "a.png")


# (module, arguments, exit status, text stderr must hold); {t} is the test's tmp_path.
CASES = [
    ("jaxseg.cam", "--demo --size=16 --layer=blok3", 2, "did you mean block3"),
    ("jaxseg.cam", "--demo --size=16 --image={t}/nope.jpg", 1, "{t}/nope.jpg"),
    ("jaxseg.cam", "--demo --size=16 --class=99", 2, "--class 99"),
    ("jaxseg.cam", "--demo --size=16 --method=nocam", 2, "--method nocam"),
    ("jaxseg.cam", "--workdir={t}/nowhere --image={t}/a.png", 1, "{t}/nowhere"),
    ("jaxseg.cam", "--workdir={t}/work --image={t}/a.png --layer=x", 1, "no checkpoint in"),
    ("jaxseg.cam", "--demo --bogus", 2, "unrecognized arguments: --bogus"),
    (
        "jaxseg.tools.convert_weights",
        "--arch resnet38 --input {t}/no.params --output {t}/o",
        1,
        "no.params",
    ),
    (
        "jaxseg.tools.convert_weights",
        f"--arch resnet38 --width-multiplier 0.0625 --input {PARAMS} --output {{t}}/o",
        1,
        "191 wrong shape",
    ),
    ("jaxseg.tools.convert_weights", "--arch resnet51 --input x.pth --output o", 2, "resnet51"),
    ("jaxseg.evaluation.davis", "--davis={t}/nodavis --results={t}/results", 1, "{t}/nodavis"),
    ("jaxseg.evaluation.davis", "--davis={t}/davis --results={t}/results", 1, "seq/00001.png"),
    ("jaxseg.evaluation.davis", "--davis={t}/davis", 2, "--results"),
]


def _run(module, args, tmp_path):
  return subprocess.run(
      [sys.executable, "-m", module, *args.format(t=tmp_path).split()],
      cwd=tmp_path,
      capture_output=True,
      text=True,
      timeout=120,
      env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT),
  )


def _main(module, args, tmp_path, capsys):
  """In-process `python -m module args` -> (exit status, stderr)."""
  main = importlib.import_module(module if module != "jaxseg.cam" else "jaxseg.cam.__main__").main
  capsys.readouterr()
  with pytest.raises(SystemExit) as exit_info:
    main(args.format(t=tmp_path).split())
  return exit_info.value.code, capsys.readouterr().err


def _check(case, status, stderr, tmp_path):
  module, args, expected_status, text = case
  lines = stderr.strip().splitlines()
  where = f"python -m {module} {args}:\n{stderr}"
  assert status == expected_status, where
  assert 1 <= len(lines) <= 3 and lines[0].startswith("error: "), where
  assert text.format(t=tmp_path) in stderr and "Traceback" not in stderr, where


def test_cli_errors_as_subprocesses(tmp_path):
  """One case per entry point as a real process (exit status, stderr); the rest run in-process."""
  _tree(tmp_path)
  cases = [CASES[0], CASES[8], CASES[10]]
  with ThreadPoolExecutor(3) as pool:  # side by side: each spends most of its time importing jax
    procs = list(pool.map(lambda case: _run(case[0], case[1], tmp_path), cases))
  for case, proc in zip(cases, procs):
    _check(case, proc.returncode, proc.stderr, tmp_path)
  assert not os.path.exists(tmp_path / "o")  # no output from a failed conversion
  proc = _run("jaxseg.evaluation.davis", "--davis={t}/nodavis --results={t} --verbose", tmp_path)
  assert proc.returncode == 1 and "Traceback" in proc.stderr and "DataError" in proc.stderr


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0].split('.')[-1]}:{c[3][:20]}")
def test_cli_errors_are_short_with_an_exit_status(tmp_path, capsys, case):
  _tree(tmp_path)
  status, stderr = _main(case[0], case[1], tmp_path, capsys)
  _check(case, status, stderr, tmp_path)
  assert not os.path.exists(tmp_path / "o")


# ---------------------------------------------------------------------------------------------------------
# Class legends.


def test_legend_entries_name_the_classes_present():
  masks = [np.array([[0, 5], [255, 5]]), np.array([[12, 0]])]
  names = ["background", "a", "b", "c", "d", "bottle"]
  assert pictures.legend_entries(masks, names) == [
      (0, "background"),
      (5, "bottle"),
      (12, "12"),  # beyond the names: its number
      (255, "ignore"),
  ]


def test_prediction_picture_has_a_swatch_for_each_present_class(tmp_path):
  rng = np.random.default_rng(0)
  examples = [
      dict(
          image=rng.normal(size=(16, 16, 3)).astype(np.float32),
          mask=rng.choice([0, 3], (16, 16)),
          pred=rng.choice([0, 3, 7], (16, 16)),
      )
  ]
  names = [f"class{i}" for i in range(10)]
  path = pictures.write_segmentation_grid(
      str(tmp_path / "p.png"), examples, (0.5,) * 3, (0.2,) * 3, names
  )
  picture = np.asarray(Image.open(path))
  plain = pictures.image_grid([np.zeros((16, 16, 3), np.uint8)] * 3, ["image", "gt", "prediction"])
  assert picture.shape[0] > plain.shape[0] and picture.shape[1] == plain.shape[1]
  strip = picture[plain.shape[0] :].reshape(-1, 3)  # below the grid: the legend only
  colours = {tuple(c) for c in strip}
  for class_id in (0, 3, 7):
    assert tuple(palette()[class_id]) in colours, class_id
  assert tuple(palette()[5]) not in colours  # absent classes get no swatch


# ---------------------------------------------------------------------------------------------------------
# The CAM CLI's default target.


def _segmentation_logits(counts):
  """[1, 1, n, K] logits whose arg-max is class k on counts[k] pixels."""
  labels = np.concatenate([np.full(n, k) for k, n in enumerate(counts)])
  return jnp.asarray(np.eye(len(counts), dtype=np.float32)[labels][None, None])


def test_default_cam_target_is_the_most_frequent_non_background_class():
  logits = _segmentation_logits([10, 3, 5])  # background most frequent, then class 2
  _, cls, how = cam_cli.make_target(logits, None, ["background", "cat", "dog"])
  assert cls == 2 and how == "most frequent predicted non-background class"
  assert cam_cli.make_target(logits, None, None)[1] == 2  # unnamed: class 0 is background
  assert cam_cli.make_target(logits, None, ["road", "car", "sky"])[1] == 0  # no background class
  assert cam_cli.make_target(_segmentation_logits([4, 0]), None, None)[1] == 0  # only background
  target, cls, how = cam_cli.make_target(logits, 1, None)
  assert cls == 1 and how == "--class" and float(np.asarray(target.masks).sum()) == 3


def test_cam_cli_names_the_default_class_in_the_title(tmp_path, monkeypatch, capsys):
  import jaxseg.methods
  from jaxseg.data import datasets

  model = demo.SmallFCN(num_classes=4)
  variables = demo.random_variables(model, seed=0, size=24)
  config = ml_collections.ConfigDict(dict(data=datasets.data_config()))
  config.data.num_classes = 4
  stand_in = types.SimpleNamespace(apply_fn=model.apply, variables=variables, config=config)
  monkeypatch.setattr(jaxseg.methods, "load_inference_model", lambda w: stand_in)
  (tmp_path / "config.json").write_text("{}")
  Image.fromarray(cam_cli.demo_image(24, seed=1)).save(tmp_path / "a.png")
  out = tmp_path / "cam.png"
  args = [
      f"--workdir={tmp_path}",
      f"--image={tmp_path / 'a.png'}",
      "--layer=block3",
      f"--out={out}",
  ]
  assert cam_cli.main(args) == 0
  printed = capsys.readouterr().out
  prediction = np.asarray(
      jnp.argmax(model.apply(variables, cam_cli.normalize(cam_cli.demo_image(24, 1)))[0], -1)
  )
  counts = np.bincount(prediction.ravel(), minlength=4)
  counts[0] = -1 if counts.sum() > counts[0] else counts[0]
  expected = int(counts.argmax())
  names = datasets.class_names(config.data)
  assert f"class {expected} ({names[expected]})" in printed, printed
  titled = np.asarray(Image.open(out))
  untitled = pictures.image_grid([np.zeros((24, 24, 3), np.uint8)] * 2, ["image", "gradcam"])
  assert titled.shape[0] > untitled.shape[0]  # the title line above the tiles
