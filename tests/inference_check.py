"""A trained workdir's network loads with the training data gone (issue: a trained model leaves its
workdir): every data root in `config.json` points at a missing folder and every way of building a data
source raises, then `jaxseg.methods.load_inference_model` must still load, and its variables must be
exactly the arrays the checkpoint holds.
"""

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxseg import methods
from jaxseg.train import inference

MISSING = "/nonexistent/moved_away"
# Everything that opens or generates a method's data (synthetic sources included).
SOURCE_BUILDERS = (
    ("jaxseg.data.datasets", "build_source"),
    ("jaxseg.methods.hn.data", "depth_source"),
    ("jaxseg.methods.hn.data", "semantic_source"),
    ("jaxseg.methods.vos.data", "train_source"),
)


def _point_roots_at_missing(values):
  for key, value in values.items():
    if isinstance(value, dict):
      _point_roots_at_missing(value)
    elif key in ("root", "mat_path", "splits_path") and isinstance(value, str):
      values[key] = MISSING


def load_without_data(workdir, monkeypatch, stage=None, which="latest"):
  """`load_inference_model(workdir, stage)` with the data moved away; checks its variables against the
  checkpoint's saved arrays. Returns the model."""
  path = os.path.join(workdir, "config.json")
  with open(path) as f:
    values = json.load(f)
  _point_roots_at_missing(values)
  with open(path, "w") as f:
    json.dump(values, f, indent=2)

  def refuse(*args, **kwargs):
    raise AssertionError("a data source was built while loading a trained model")

  with monkeypatch.context() as m:
    for module, name in SOURCE_BUILDERS:
      m.setattr(f"{module}.{name}", refuse)
    model = methods.load_inference_model(str(workdir), stage, which)
  _assert_saved_arrays(workdir, model, which)
  return model


def _stage_dir(workdir, model) -> str:
  for candidate in (
      os.path.join(workdir, model.stage),
      os.path.join(workdir, "finetune", model.stage),
      str(workdir),
  ):
    if os.path.isdir(os.path.join(candidate, "checkpoints")):
      return candidate
  raise AssertionError(f"no stage folder for {model.stage} in {workdir}")


def _assert_saved_arrays(workdir, model, which):
  """The loaded params / statistics are bit for bit the checkpoint's (read back whole, as saved)."""
  folder, step = inference.checkpoint_step(_stage_dir(workdir, model), which)
  assert step == model.step
  with ocp.PyTreeCheckpointer() as checkpointer:
    saved = checkpointer.restore(os.path.join(folder, str(step), "state"))
  params = saved["params"]
  if "segmenter" in params:  # ADVENT's state holds the discriminators too
    params = params["segmenter"]
  expected = {"params": params, **saved["model_state"]}
  loaded = jax.device_get(model.variables)
  assert jax.tree.structure(expected) == jax.tree.structure(loaded)
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(loaded)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def predict_without_data(workdir, monkeypatch, *args) -> dict:
  """`python -m jaxseg.predict --workdir=<workdir> <args>` with every data source refused (run after
  `load_without_data`, which moved the data roots away). Returns its result counts."""
  from jaxseg import predict

  def refuse(*a, **k):
    raise AssertionError("a data source was built by jaxseg.predict")

  with monkeypatch.context() as m:
    for module, name in SOURCE_BUILDERS:
      m.setattr(f"{module}.{name}", refuse)
    return predict.main([f"--workdir={workdir}", "--no_progress", *args])


def write_images(folder, images) -> list[str]:
  """uint8 [H, W, 3] images -> folder/img<i>.png; their names."""
  from PIL import Image

  os.makedirs(folder, exist_ok=True)
  for i, image in enumerate(images):
    Image.fromarray(np.asarray(image, np.uint8)).save(os.path.join(folder, f"img{i}.png"))
  return [f"img{i}" for i in range(len(images))]
