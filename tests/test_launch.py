"""The launcher end to end: SIGKILL + relaunch resumes exactly; two processes
(gloo collectives) match one process; the synthetic demo reaches its mIoU."""

import json
import os
import signal
import socket
import subprocess
import sys

import inference_check
import jax
import numpy as np
import pytest

from jaxseg import methods
from jaxseg.tools import results

import subprocs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A short supervised run on the synthetic data.
SMALL = [
    "--config=configs/supervised.py:synthetic",
    "--config.train.batch_size=16",
    "--config.train.total_steps=12",
    "--config.train.checkpoint_every=3",
    "--config.train.log_every=3",
    "--config.train.progress_bar=False",
    "--config.data.synthetic.num_train=256",
    "--config.data.synthetic.num_eval=32",
    "--config.stages=('train',)",
]


def _env(devices=1):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  return env


def _launch(workdir, extra=(), devices=1, **kw):
  cmd = [sys.executable, "launch.py", f"--workdir={workdir}", *SMALL, *extra]
  return subprocess.Popen(
      cmd,
      cwd=ROOT,
      env=_env(devices),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
      **kw,
  )


def _finish(proc, timeout=600):
  out, _ = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, out[-4000:]
  return out


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return {r["step"]: r["loss"] for r in map(json.loads, f)}


def _params(workdir):
  return jax.device_get(methods.load_inference_model(str(workdir)).variables)


@pytest.mark.slow
@pytest.mark.ci
def test_sigkill_then_relaunch_resumes_exactly(tmp_path):
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  _finish(_launch(straight))

  proc = _launch(killed)
  ckpt_dir = killed / "checkpoints"
  subprocs.signal_after_checkpoint(proc, ckpt_dir, min_step=1)
  assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
  saved = sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
  assert saved and saved[-1] < 12

  _finish(_launch(killed))  # The same command again: resumes from the last checkpoint.
  a, b = _params(straight), _params(killed)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert subprocs.iterator_state(straight, 12) == subprocs.iterator_state(killed, 12)
  la, lb = _losses(straight), _losses(killed)
  resumed_steps = [s for s in lb if s > saved[-1]]
  assert resumed_steps and all(la[s] == lb[s] for s in resumed_steps)


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.ci
def test_two_processes_match_one(tmp_path):
  """2 processes x 1 CPU device (gloo) == 1 process x 2 devices: same global batches."""
  steps = [
      "--config.train.total_steps=6",
      "--config.stages=('train','evaluate')",
      "--config.model.width_multiplier=0.125",
      "--config.data.synthetic.image_size=(32,32)",
      "--config.augment.crop_size=(32,32)",
      "--config.evaluate.eval_size=(32,32)",
  ]
  _finish(_launch(tmp_path / "single", steps, devices=2))
  port = _free_port()
  procs = [
      _launch(
          tmp_path / "multi",
          [
              *steps,
              f"--coordinator_address=localhost:{port}",
              "--num_processes=2",
              f"--process_id={i}",
          ],
          devices=1,
      )
      for i in range(2)
  ]
  outs = [_finish(p) for p in procs]
  single, multi = _losses(tmp_path / "single"), _losses(tmp_path / "multi")
  assert sorted(single) == sorted(multi)
  for step in single:
    assert multi[step] == pytest.approx(single[step], rel=1e-5)
  # Each process saved its own data-iterator state.
  names = sorted(
      n
      for n in os.listdir(tmp_path / "multi" / "checkpoints" / "6" / "data")
      if n.endswith(".json")
  )
  assert names == ["process_0-of-2.json", "process_1-of-2.json"]
  # Evaluation sums the confusion matrix over both hosts: same mIoU as one process.
  with open(tmp_path / "single" / "metrics.json") as f:
    m1 = json.load(f)
  with open(tmp_path / "multi" / "metrics.json") as f:
    m2 = json.load(f)
  assert m2["miou"] == pytest.approx(m1["miou"], rel=1e-5)
  assert "mIoU" in outs[0]


# The first demo at its CI budget (`:synthetic,reduced`, 300 of the demo's 600 steps); the bound and its
# seed study: `jaxseg.tools.results` (study supervised_ci, README "CI claims"). One run serves this file's
# demo tests (the trained model they load, export and explain need not be the 600-step one).
@pytest.fixture(scope="module")
def supervised_demo(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("supervised_demo")
  out = _finish(
      subprocess.Popen(
          [
              sys.executable,
              "launch.py",
              "--config=configs/supervised.py:synthetic,reduced",
              f"--workdir={workdir}",
              "--config.train.progress_bar=False",
          ],
          cwd=ROOT,
          env=_env(1),
          stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT,
          text=True,
      ),
      timeout=900,
  )
  return workdir, out


@pytest.mark.slow
@pytest.mark.ci
def test_supervised_synthetic_demo_reaches_miou(supervised_demo):
  workdir, out = supervised_demo
  with open(workdir / "metrics.json") as f:
    metrics = json.load(f)
  assert metrics["miou"] > results.bound("supervised demo mIoU"), out[-3000:]
  assert os.path.getsize(workdir / "pictures" / "predictions.png") > 1000
  table = (workdir / "results.md").read_text()
  assert "mIoU" in table and f"{100 * metrics['miou']:6.2f}" in table  # the table a rerun prints


@pytest.mark.slow
@pytest.mark.ci
def test_demo_model_loads_without_its_data_and_scores_as_evaluate(
    supervised_demo, tmp_path, monkeypatch
):
  """The trained demo network loads with every data root moved away and no source built, and scoring
  the eval split with it gives the evaluate stage's mIoU bit for bit (one device, as it ran)."""
  import shutil

  from jaxseg.methods.supervised import method as supervised
  from jaxseg.train import sharding as shd

  workdir, _ = supervised_demo
  moved = tmp_path / "demo"
  shutil.copytree(workdir, moved)
  model = inference_check.load_without_data(moved, monkeypatch)
  assert model.stage == "train" and model.masks(np.zeros((2, 40, 40, 3), np.float32)).shape == (
      2,
      40,
      40,
  )
  mesh = shd.make_mesh(model.config.mesh, jax.devices()[:1])
  variables = jax.device_put(model.variables, shd.replicated(mesh))
  (metrics, _), _ = supervised._scorer(model.config, shd.batch_sharding(mesh))(variables)
  with open(workdir / "metrics.json") as f:
    assert float(metrics["miou"]) == json.load(f)["miou"]
  # `python -m jaxseg.predict` on eval scenes and an odd-sized crop: padded, batched, cropped back to
  # each image's own size, the masks the loaded network gives each image alone.
  from PIL import Image

  from jaxseg import predict
  from jaxseg.data import datasets

  source = datasets.build_source(model.config.data, "eval")
  images = [source[i]["image"] for i in range(3)] + [source[3]["image"][:37, :50]]
  names = inference_check.write_images(tmp_path / "in", images)
  out = tmp_path / "predicted"
  result = inference_check.predict_without_data(
      moved, monkeypatch, f"--input={tmp_path / 'in'}", f"--out={out}", "--batch_size=2"
  )
  assert result == dict(written=4, existing=0, bad=0, total=4)
  for name, image in zip(names, images):
    h, w = image.shape[:2]
    x = predict.pad_image(model.prepare(image), predict.padded_size((h, w), 32))
    expected = np.asarray(model.masks(x[None]))[0, :h, :w]
    np.testing.assert_array_equal(np.asarray(Image.open(out / "masks" / f"{name}.png")), expected)


@pytest.mark.slow
@pytest.mark.ci
def test_exported_demo_model_runs_without_jaxseg(supervised_demo, tmp_path):
  """`python -m jaxseg.export` writes a jax.export artefact whose outputs equal the loaded model's, run
  by a process that never imports jaxseg (started outside the repository)."""
  from jaxseg import export

  workdir, _ = supervised_demo
  out = tmp_path / "model.jaxexport"
  export.main([f"--workdir={workdir}", f"--out={out}", "--platforms=cpu"])
  info = json.loads((tmp_path / "model.jaxexport.json").read_text())
  model = methods.load_inference_model(str(workdir))
  b, h, w, _ = info["input"].removeprefix("float32[").removesuffix("]").split(", ")
  b = 3 if b == "b" else int(b)
  h, w = (int(h), int(w)) if h.isdigit() else (48, 40)  # symbolic sizes: another size than the crop
  images = np.random.default_rng(0).normal(size=(b, h, w, 3)).astype(np.float32)
  np.save(tmp_path / "images.npy", images)
  code = (
      "import sys, numpy as np\n"
      "from jax import export\n"
      "exported = export.deserialize(open('model.jaxexport', 'rb').read())\n"
      "np.save('logits.npy', np.asarray(exported.call(np.load('images.npy'))))\n"
      "assert not [m for m in sys.modules if m.startswith('jaxseg')]\n"
  )
  env = {k: v for k, v in _env(1).items() if k != "PYTHONPATH"}
  run = subprocess.run(
      [sys.executable, "-c", code],
      cwd=tmp_path,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert run.returncode == 0, run.stderr[-3000:]
  expected = np.asarray(model.predict(images))
  np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.ci
def test_cam_cli_reads_the_demo_checkpoint(supervised_demo, tmp_path, capsys):
  """The CAM CLI's trained-model path on a real workdir (config.json + orbax checkpoint, as launch.py
  writes them): CAMs of the trained demo model, its class names read from the workdir."""
  from PIL import Image

  from jaxseg.cam import __main__ as cli
  from jaxseg.data import datasets

  workdir, _ = supervised_demo
  image_path = tmp_path / "a.png"
  Image.fromarray(cli.demo_image(40, seed=1)).save(image_path)
  out = tmp_path / "seg.png"
  args = [f"--workdir={workdir}", f"--image={image_path}", "--size=32", "--method=hirescam"]
  with pytest.raises(SystemExit) as exit_info:  # a layer the model does not have: close matches
    cli.main(args + ["--layer=backbone/layer9", f"--out={out}"])
  assert exit_info.value.code == 2 and "backbone/layer" in capsys.readouterr().err
  assert cli.main(args + ["--layer=backbone/layer4", "--class=1", f"--out={out}"]) == 0
  picture = np.asarray(Image.open(out))
  assert picture.ndim == 3 and picture.shape[1] > 2 * 128  # image + overlay, enlarged to 128 px
  names = datasets.class_names(methods.load_config(str(workdir)).data)
  assert names[1] in capsys.readouterr().out  # the trained config's class name
