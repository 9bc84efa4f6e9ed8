"""A trained network out of its workdir: restored from the network's shapes alone.

`load_variables` reads a training stage's `trainer_config.json` and, from its checkpoint, only the
network's parameters and model state (BatchNorm statistics), shaped by the network's own `init`: no
optimiser state, no `TrainTask`, no data source opened, so moving or deleting the training data does
not take the trained model with it. Every method's evaluation and its `load_inference_model` go
through it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxseg.train import checkpoint as ckpt_lib
from jaxseg.train import sharding as shd

WHICH = ("latest", "best")
KINDS = ("segmentation", "cam", "features")


def normalizer(config) -> Callable[[np.ndarray], np.ndarray]:
  """uint8 RGB [H, W, 3] -> float32 (x / 255 - mean) / std with the config's `normalize` section."""
  mean = np.asarray(config.normalize.mean, np.float32)
  std = np.asarray(config.normalize.std, np.float32)

  def prepare(image: np.ndarray) -> np.ndarray:
    return ((np.asarray(image, np.float32) / 255.0 - mean) / std).astype(np.float32)

  return prepare


def resize_bilinear_logits(logits: jax.Array, size: tuple[int, int]) -> jax.Array:
  """[B, h, w, C] -> float32 [B, H, W, C], bilinear with half-pixel centres (identity at that size)."""
  size = (int(size[0]), int(size[1]))
  if tuple(logits.shape[1:3]) == size:
    return logits.astype(jnp.float32)
  b, _, _, c = logits.shape
  return jax.image.resize(logits.astype(jnp.float32), (b, *size, c), "bilinear")


def read_trainer_config(stage_dir: str) -> ml_collections.ConfigDict:
  """The stage's complete trainer config, as training saved it (`<stage dir>/trainer_config.json`)."""
  path = os.path.join(stage_dir, "trainer_config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: has this stage been trained in {stage_dir}?")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def checkpoint_steps(stage_dir: str, which: str = "latest") -> tuple[str, list[int]]:
  """(checkpoint folder, its steps newest first) of a stage: 'latest' = `checkpoints/`, 'best' =
  `checkpoints_best/` (one step: orbax keeps the best only)."""
  if which not in WHICH:
    raise ValueError(f"which={which!r}: expected one of {WHICH}")
  folder = os.path.join(stage_dir, "checkpoints" if which == "latest" else "checkpoints_best")
  steps = sorted(int(s) for s in os.listdir(folder) if s.isdigit()) if os.path.isdir(folder) else []
  if not steps:
    raise FileNotFoundError(f"no checkpoint in {folder}: train this stage first")
  return folder, steps[::-1]


def checkpoint_step(stage_dir: str, which: str = "latest") -> tuple[str, int]:
  """(checkpoint folder, step) of a stage's newest ('latest') or best-scoring ('best') checkpoint."""
  folder, steps = checkpoint_steps(stage_dir, which)
  return folder, steps[0]


def image_init_fn(model, size: tuple[int, int]) -> Callable[[jax.Array], dict]:
  """`load_variables`' init_fn for a Linen network called as `model(images [1, H, W, 3], train)`:
  rng -> its eval-mode variables (the same rng for 'params' and 'dropout')."""
  h, w = (int(s) for s in size)

  def init_fn(rng):
    return model.init({"params": rng, "dropout": rng}, jnp.zeros((1, h, w, 3)), train=False)

  return init_fn


def load_variables(
    stage_dir: str,
    init_fn: Callable[[jax.Array], dict],
    *,
    which: str = "latest",
    params_key: str | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[dict, int, jax.sharding.Mesh]:
  """A trained network's Flax variables from a stage's checkpoint, shaped by its `init` alone.

  Args:
    stage_dir: the stage's workdir (holds `checkpoints/`, `trainer_config.json`).
    init_fn: rng -> the network's variables {'params': ..., other collections}; evaluated with
      `jax.eval_shape`, so any input size the network accepts will do.
    params_key: where the network sits in the train state's params when the state holds several
      (ADVENT: 'segmenter' beside the discriminators); None = the params are the network's.
    mesh: devices to place the variables on, replicated (default: the stage's mesh).
  Returns:
    ({'params': ..., 'batch_stats': ...}, the checkpoint's step, the mesh). A checkpoint that does not
    read is reported in one line and the previous one is used (nothing is moved: loading is read-only).

  Raises:
    CheckpointLoadError: none of the stage's checkpoints reads.
  """
  folder, steps = checkpoint_steps(stage_dir, which)
  if mesh is None:
    mesh = stage_mesh(stage_dir)
  shapes = jax.eval_shape(init_fn, jax.random.key(0))
  replicated = shd.replicated(mesh)
  shapes = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), shapes
  )
  params = shapes.pop("params")
  abstract = {
      "params": params if params_key is None else {params_key: params},
      "model_state": shapes,
  }
  failures = []
  for (
      step
  ) in steps:  # newest first; a damaged one is reported and the previous one read (as training)
    try:
      restored = ckpt_lib.restore_entries(folder, step, abstract)
      break
    except Exception as e:  # noqa: BLE001  (any failure to read = damaged; the cause is reported)
      failures.append(f"step {step}: {' '.join(str(e).split())[:200]}")
      print(f"checkpoint {folder}/{step} does not load ({failures[-1]}); trying the previous one")
  else:
    raise ckpt_lib.CheckpointLoadError(f"no checkpoint in {folder} loads ({'; '.join(failures)})")
  params = restored["params"] if params_key is None else restored["params"][params_key]
  return {"params": params, **restored["model_state"]}, step, mesh


def stage_mesh(stage_dir: str) -> jax.sharding.Mesh:
  """The device mesh of the stage's saved trainer config, on this machine's devices."""
  return shd.make_mesh(read_trainer_config(stage_dir).mesh)


@dataclasses.dataclass(frozen=True)
class InferenceModel:
  """A trained network restored for inference.

  Attributes:
    config: the method's config (the workdir's `config.json`).
    stage: the training stage (or run) it comes from.
    step: its checkpoint's step.
    variables: the network's Flax variables, replicated over the devices.
    apply_fn: (variables, images float32 [B, H, W, 3], normalised as in training) -> the network's
      output: logits [B, H, W, C] for segmentation networks (at the network's output stride), CAM
      logits for SEAM, features [B, h, w, D] for VOS encoders.
    mesh: the devices the variables live on (batches are split over its 'data' axis).
    kind: what `apply_fn` returns: 'segmentation' (class logits), 'cam' (SEAM's CAM network: masks
      need image-level classes, `jaxseg.methods.seam.cam_inference.predict_cam_mask`) or 'features'
      (a VOS encoder: masks come from propagating a first-frame mask).
    prepare: uint8 RGB [H, W, 3] -> float32 [H, W, 3] network input (the normalisation training used).
    class_names: the output classes' names (None: numbered).
    input_size: (H, W) every image is resized to before the network, as the method's own evaluation
      does (ADVENT's 1024x512); None = images go in at their own size, padded.
    resize_logits: (logits [B, h, w, C], (H, W)) -> [B, H, W, C], as the method's evaluation upsamples
      the network's output stride to its input (default bilinear, half-pixel centres).
  """

  config: Any
  stage: str
  step: int
  variables: dict
  apply_fn: Callable[[dict, jax.Array], Any]
  mesh: jax.sharding.Mesh
  kind: str = "segmentation"
  prepare: Callable[[np.ndarray], np.ndarray] | None = None
  class_names: tuple[str, ...] | None = None
  input_size: tuple[int, int] | None = None
  resize_logits: Callable[[jax.Array, tuple[int, int]], jax.Array] | None = None

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"InferenceModel kind={self.kind!r}: expected one of {KINDS}")
    if self.prepare is None:
      object.__setattr__(self, "prepare", normalizer(self.config))
    if self.resize_logits is None:
      object.__setattr__(self, "resize_logits", resize_bilinear_logits)

  @functools.cached_property
  def _jitted(self):
    return jax.jit(self.apply_fn)

  def predict(self, images: jax.Array) -> Any:
    """The network's output on a batch of images [B, H, W, 3] (jitted, one compile per shape)."""
    return self._jitted(self.variables, images)

  def masks(self, images: jax.Array) -> jax.Array:
    """int32 [B, h, w] argmax classes of `predict` (segmentation networks)."""
    return jnp.argmax(self.predict(images), axis=-1).astype(jnp.int32)
