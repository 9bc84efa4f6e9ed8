"""The inference / propagation passes of each method, for `python -m jaxseg.tools.plan`.

A pass is what a stage runs with a trained network over a whole split: SEAM's multi-scale + flip CAMs
('infer') and its segmenter's multi-scale + flip scoring ('segment_eval'), the uda / hn / supervised
evaluation forwards, vos's encoder over every frame of the evaluation videos plus MAST's propagation step.
Each is a list of `PassCall`s: one jitted function (the network's eval forward, or the propagation step) at
one input shape, and how often the pass calls it. Weights are `jax.eval_shape` of the network's init, as for
training. Only the device work is planned: host-side resizes, CAM fusion, the dense CRF and file I/O are not.

Split sizes and image sizes of the paper datasets are `EVAL_SETS` (from the readers' docstrings); the
synthetic datasets take theirs from the config.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

# (dataset name, split) -> (images or frames, (H, W) of a typical one).
EVAL_SETS: dict[tuple[str, str], tuple[int, tuple[int, int]]] = {
    ("voc", "train"): (1464, (375, 500)),  # PASCAL VOC 2012: at most 500 px a side, mostly 500x375
    ("voc", "val"): (1449, (375, 500)),
    ("voc", "train_aug"): (10582, (375, 500)),
    ("cityscapes", "val"): (500, (1024, 2048)),
    ("nyu", "test"): (654, (480, 640)),
    ("davis", "val"): (1999, (480, 854)),  # DAVIS 2017 val at 480p: 30 sequences, 1999 frames
}
DAVIS_VAL_SEQUENCES = 30
MAST_LATE_FRAME = 23  # a frame with the most references (long-term frames through the ROI path)


@dataclasses.dataclass(frozen=True)
class PassCall:
  """One compiled function of a pass: `fn(variables, *inputs)` and how many times the pass calls it."""

  label: str
  fn: Callable[..., Any]
  inputs: tuple[Any, ...]  # jax.ShapeDtypeStructs
  count: int
  uses_variables: bool = True


@dataclasses.dataclass(frozen=True)
class PassSpec:
  """An inference / propagation pass: `build() -> (init_fn(rng) -> variables, [PassCall])`."""

  name: str
  what: str
  compute_dtype: str
  build: Callable[[], tuple[Callable[[Any], dict], list[PassCall]]]


def eval_set(data, split: str) -> tuple[int, tuple[int, int]]:
  """(images, (H, W)) of `split` of the data section `data`; the synthetic sizes come from the config."""
  from jaxseg.errors import ConfigError

  if str(data.name).startswith("synthetic"):
    s = data.synthetic
    count = int(s.num_eval) if "num_eval" in s else int(s.num_videos) * int(s.num_frames)
    return count, tuple(int(v) for v in s.image_size)
  key = (str(data.name), str(split))
  if key not in EVAL_SETS:
    raise ConfigError(
        f"no split size for dataset {key[0]!r} split {key[1]!r}: the planner knows "
        f"{sorted(EVAL_SETS)} (jaxseg/tools/plan_passes.py EVAL_SETS)"
    )
  return EVAL_SETS[key]


def _images(batch: int, h: int, w: int, dtype="float32"):
  import jax

  return jax.ShapeDtypeStruct((batch, h, w, 3), dtype)


def multiscale_calls(apply, size, scales, flip: bool, images: int, label: str) -> list[PassCall]:
  """One call per scale of an image of `size` ((H, W) x scale rounded, as `cam_inference.scaled_size`),
  batch 2 with the flip, each called once per image."""
  from jaxseg.methods.seam.cam_inference import scaled_size

  return [
      PassCall(
          f"{label} x{s:g}",
          apply,
          (_images(2 if flip else 1, *scaled_size(*size, s)),),
          images,
      )
      for s in scales
  ]


def _scales_text(scales, flip) -> str:
  return f"scales {tuple(float(s) for s in scales)}{' + flip' if flip else ''}"


def _seam_passes(config) -> list[PassSpec]:
  from jaxseg.methods.seam import method
  from jaxseg.train.config import compute_dtype
  from jaxseg.train.inference import image_init_fn

  out = []
  if "infer" in config.stages:
    count, size = eval_set(config.data, config.data.eval_split)
    scales, flip = tuple(config.infer.scales), bool(config.infer.flip)

    def infer(size=size, scales=scales, flip=flip, count=count):
      model = method.build_model(config)
      apply = lambda v, x: model.apply(v, x, train=False)  # noqa: E731
      init = image_init_fn(model, tuple(config.augment.crop_size))
      return init, multiscale_calls(apply, size, scales, flip, count, "CAM network")

    out.append(
        PassSpec(
            "infer",
            f"multi-scale CAMs of {count} {config.data.name}:{config.data.eval_split} images at "
            f"{size[0]}x{size[1]}, {_scales_text(scales, flip)}",
            str(compute_dtype(config)),
            infer,
        )
    )
  if "segment" in config.stages:
    split = str(config.segment.eval_split)
    count, size = eval_set(config.data, split)
    scales, flip = tuple(config.segment.test_scales), bool(config.segment.test_flip)

    def segment_eval(size=size, scales=scales, flip=flip, count=count):
      model = method.build_segmenter(config)
      apply = lambda v, x: model.apply(v, x, train=False)["main"]  # noqa: E731
      init = image_init_fn(model, tuple(config.segment.crop_size))
      return init, multiscale_calls(apply, size, scales, flip, count, "segmenter")

    out.append(
        PassSpec(
            "segment_eval",
            f"segmenter scoring of {count} {config.data.name}:{split} images at {size[0]}x{size[1]}, "
            f"{_scales_text(scales, flip)} (CRF on the host: not planned)",
            str(compute_dtype(config, "segment")),
            segment_eval,
        )
    )
  return out


def _single_forward(name, what, dtype, model_fn, apply, size, count, batch=1) -> PassSpec:
  """A pass of `count` images through one network at `size`, `batch` at a time."""

  def build():
    from jaxseg.train.inference import image_init_fn

    model = model_fn()
    calls = [
        PassCall(
            f"forward [{batch}, {size[0]}, {size[1]}, 3]",
            functools.partial(apply, model),
            (_images(batch, *size),),
            -(-count // batch),
        )
    ]
    return image_init_fn(model, size), calls

  return PassSpec(name, what, dtype, build)


def _uda_passes(config) -> list[PassSpec]:
  from jaxseg.methods.uda import method
  from jaxseg.train.config import compute_dtype

  if "evaluate" not in config.stages:
    return []
  data = config.target_data
  count, _ = eval_set(data, data.eval_split)
  size = tuple(int(s) for s in config.input.target_size)
  return [
      _single_forward(
          "evaluate",
          f"segmenter forward over {count} {data.name}:{data.eval_split} images resized to "
          f"{size[0]}x{size[1]} (one trained stage)",
          str(compute_dtype(config)),
          lambda: method.build_networks(config)[0],
          lambda model, v, x: model.apply(v, x, train=False)["main"],
          size,
          count,
      )
  ]


def _hn_passes(config) -> list[PassSpec]:
  from jaxseg.methods.hn import method
  from jaxseg.train.config import compute_dtype

  if "evaluate" not in config.stages:
    return []
  count, _ = eval_set(config.data, config.data.eval_split)
  size = tuple(int(s) for s in config.evaluate.eval_size)
  batch = int(config.evaluate.batch_size)
  section = "finetune" if "finetune" in config else None
  return [
      _single_forward(
          "evaluate",
          f"FCN forward over {count} {config.data.name}:{config.data.eval_split} images at "
          f"{size[0]}x{size[1]}, batch {batch} (one network)",
          str(compute_dtype(config, section)),
          lambda: method.build_model(config, int(config.data.num_classes), section),
          lambda model, v, x: model.apply(v, x, train=False),
          size,
          count,
          batch,
      )
  ]


def _supervised_passes(config) -> list[PassSpec]:
  from jaxseg.methods.supervised import method
  from jaxseg.train.config import compute_dtype

  if "evaluate" not in config.stages:
    return []
  count, _ = eval_set(config.data, config.data.eval_split)
  size = tuple(int(s) for s in config.evaluate.eval_size)
  batch = int(config.evaluate.batch_size)
  return [
      _single_forward(
          "evaluate",
          f"FCN forward over {count} {config.data.name}:{config.data.eval_split} images at "
          f"{size[0]}x{size[1]}, batch {batch}",
          str(compute_dtype(config)),
          lambda: method.build_model(config),
          lambda model, v, x: model.apply(v, x, train=False),
          size,
          count,
          batch,
      )
  ]


def _vos_passes(config) -> list[PassSpec]:
  from jaxseg.methods.vos import method, propagation, stages
  from jaxseg.train.config import compute_dtype

  if "propagate" not in config.stages:
    return []
  data = config.eval_data
  frames, size = eval_set(data, data.split)
  sequences = DAVIS_VAL_SEQUENCES if str(data.name) == "davis" else int(data.synthetic.num_videos)
  mast = config.recipe == "mast"

  def build():
    import jax

    encoder = method.build_encoder(config)
    encode = stages.encode_fn(config, encoder)
    one_frame = {k: v[:1, :1] for k, v in method.example_batch(config).items()}
    init = functools.partial(method.init_variables, config, batch=one_frame)
    frame = _images(1, *size)
    calls = [PassCall(f"encoder [1, {size[0]}, {size[1]}, 3]", encode, (frame,), frames)]
    if mast:
      variables = jax.eval_shape(lambda: init(jax.random.key(0)))
      _, h, w, c = jax.eval_shape(encode, variables, frame).shape
      step, inputs = propagation.mast_step_for_frame(
          (h, w, c), size, 2, config.propagate, MAST_LATE_FRAME
      )
      calls.append(
          PassCall(
              f"MAST step (frame {MAST_LATE_FRAME}'s references, {h}x{w} features)",
              step,
              inputs,
              frames - sequences,
              uses_variables=False,
          )
      )
    return (lambda rng: init(rng)), calls

  what = (
      f"{frames} frames of {sequences} {data.name}:{data.split} videos at {size[0]}x{size[1]}: "
      + (
          "encoder + MAST propagation (every step at a late frame's references, 2 objects)"
          if mast
          else "encoder only (CRW's propagation is not planned)"
      )
  )
  return [PassSpec("propagate", what, str(compute_dtype(config)), build)]


PASSES: dict[str, Callable[[Any], list[PassSpec]]] = {
    "seam": _seam_passes,
    "uda": _uda_passes,
    "vos": _vos_passes,
    "hn": _hn_passes,
    "supervised": _supervised_passes,
}


def pass_specs(config) -> list[PassSpec]:
  """The inference / propagation passes of `config`'s stages that the planner can build."""
  return PASSES.get(config.get("method"), lambda c: [])(config)
