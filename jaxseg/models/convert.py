"""Official PyTorch / MXNet checkpoints -> Flax variable trees for the jaxseg backbones.

Every backbone names its Flax variables after the official PyTorch state dict, so conversion is a renaming
plus layout changes:

  Flax path ('layer1', '0', 'conv1', 'kernel')  <->  PyTorch key 'layer1.0.conv1.weight'
  kernel [kh, kw, in, out] (HWIO)               <->  weight [out, in, kh, kw] (OIHW)
  BatchNorm scale / bias / mean / var           <->  weight / bias / running_mean / running_var

A state dict here is a plain `{name: numpy array}`. Conversion is all-or-nothing: a missing key, a key the
model does not have, or a wrong shape raises `CheckpointMismatchError` listing every offending key; nothing is
ever partially loaded. `num_batches_tracked` entries are ignored (jaxseg's BatchNorm uses a fixed momentum).

This module holds the name maps (the generic torch-name mapping and one converter per architecture); the
file readers and writers are in `checkpoint_files` and re-exported here (`convert.read_torch_checkpoint`,
`convert.read_mxnet_params`, `convert.load_variables`, ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import flax
import jax
import numpy as np

from jaxseg.models.checkpoint_files import (
    StateDict,
    Variables,
    load_variables,
    read_mxnet_params,
    read_torch_checkpoint,
    save_variables,
    write_mxnet_params,
)

__all__ = [
    "CheckpointMismatchError",
    "StateDict",
    "Variables",
    "convert_deeplab_v2",
    "convert_fc_discriminator",
    "convert_mast_encoder",
    "convert_resnet38",
    "convert_torchvision_resnet",
    "load_variables",
    "mxnet_resnet38_to_state_dict",
    "read_mxnet_params",
    "read_torch_checkpoint",
    "save_variables",
    "state_dict_to_variables",
    "strip_prefix",
    "torch_name",
    "torch_shapes",
    "variables_to_state_dict",
    "write_mxnet_params",
]

# Flax leaf name -> PyTorch leaf name.
_LEAF_TO_TORCH = {
    "kernel": "weight",
    "scale": "weight",
    "bias": "bias",
    "mean": "running_mean",
    "var": "running_var",
}
_ALWAYS_IGNORED = re.compile(r"(^|\.)num_batches_tracked$")
_MAX_LISTED = 25


class CheckpointMismatchError(ValueError):
  """A checkpoint does not match the model. The message lists the offending keys (grouped by module when
  there are many); the complete lists are in `.missing`, `.unexpected` and `.wrong_shape`."""

  def __init__(
      self,
      message: str,
      *,
      missing: Sequence[str] = (),
      unexpected: Sequence[str] = (),
      wrong_shape: Sequence[str] = (),
  ):
    super().__init__(message)
    self.missing = sorted(missing, key=_natural_key)
    self.unexpected = sorted(unexpected, key=_natural_key)
    self.wrong_shape = sorted(wrong_shape, key=_natural_key)


# ------------------------------------------------------------------------------------------------------------
# Generic state dict <-> variables mapping.


def torch_name(path: Sequence[str]) -> str:
  """Flax variable path (without the collection) -> PyTorch state-dict key."""
  *modules, leaf = path
  if leaf not in _LEAF_TO_TORCH:
    raise ValueError(f"no PyTorch name for Flax leaf {'/'.join(path)!r}")
  return ".".join([*modules, _LEAF_TO_TORCH[leaf]])


def _flax_to_torch_layout(leaf: str, value: np.ndarray) -> np.ndarray:
  if leaf == "kernel" and value.ndim == 4:
    return value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
  if leaf == "kernel" and value.ndim == 2:
    return value.T  # [in, out] -> Linear [out, in]
  return value


def _torch_to_flax_layout(leaf: str, value: np.ndarray) -> np.ndarray:
  if leaf == "kernel" and value.ndim == 4:
    return value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
  if leaf == "kernel" and value.ndim == 2:
    return value.T
  return value


def _torch_shape(leaf: str, shape: Sequence[int]) -> tuple[int, ...]:
  """Shape of a Flax leaf in PyTorch layout."""
  shape = tuple(int(d) for d in shape)
  if leaf == "kernel" and len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  if leaf == "kernel" and len(shape) == 2:
    return shape[::-1]
  return shape


def _flatten(variables: Mapping[str, Any]) -> dict[tuple[str, ...], Any]:
  """{collection: tree} -> {(collection, *path): leaf}."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables))
  return {tuple(str(k) for k in key): value for key, value in flat.items()}


def _natural_key(name: str) -> list:
  """Sort key that orders 'layer3.6' before 'layer3.10'."""
  return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _listing(title: str, items: Sequence[str]) -> str:
  """Every offending key, grouped by module (e.g. 'layer3.10.*: 15 tensors') when there are many."""
  items = sorted(items, key=_natural_key)
  if len(items) <= _MAX_LISTED:
    return f"  {title} ({len(items)}):\n    " + "\n    ".join(items)
  groups: dict[str, int] = {}
  for item in items:
    parts = item.split(":", 1)[0].split(".")
    group = ".".join(parts[:2]) if len(parts) > 2 else parts[0]
    groups[group] = groups.get(group, 0) + 1
  grouped = [f"{g}.*: {n} tensor{'s' if n > 1 else ''}" for g, n in groups.items()]
  shown = "\n    ".join(grouped[: 4 * _MAX_LISTED])
  more = (
      f"\n    ... and {len(grouped) - 4 * _MAX_LISTED} more groups"
      if len(grouped) > 4 * _MAX_LISTED
      else ""
  )
  return f"  {title} ({len(items)}, by module):\n    {shown}{more}"


def state_dict_to_variables(
    state_dict: Mapping[str, Any],
    template: Mapping[str, Any],
    *,
    source: str = "checkpoint",
    ignore: Iterable[str] = (),
    allow_missing: Iterable[str] = (),
) -> Variables:
  """Maps a PyTorch-named state dict onto the structure of `template` (e.g. `model.init(...)`).

  Args:
    state_dict: {torch key: array-like}.
    template: Flax variables ({'params': ..., 'batch_stats': ...}); leaves may be arrays or
      `jax.ShapeDtypeStruct` (from `jax.eval_shape`). Shapes and dtypes are taken from it.
    source: name used in error messages (a file name).
    ignore: regexes (`re.search`) of checkpoint keys to drop (e.g. a classifier the model lacks).
    allow_missing: regexes of torch keys the checkpoint may lack; their values are kept from the template,
      which must then hold concrete arrays for them (e.g. new heads over an ImageNet init).

  Returns:
    numpy variables with the template's structure and dtypes.

  Raises:
    CheckpointMismatchError listing every missing / unexpected / wrongly shaped key.
  """
  ignore_res = [re.compile(p) for p in ignore]
  allow_res = [re.compile(p) for p in allow_missing]
  checkpoint = {
      k: v
      for k, v in state_dict.items()
      if not _ALWAYS_IGNORED.search(k) and not any(r.search(k) for r in ignore_res)
  }
  flat_template = _flatten(template)
  by_torch_name: dict[str, tuple[str, ...]] = {}
  for key in flat_template:
    name = torch_name(key[1:])
    if name in by_torch_name:
      raise ValueError(
          f"two Flax variables map to the torch key {name!r}: {by_torch_name[name]} and {key}"
      )
    by_torch_name[name] = key

  missing, kept, wrong_shape = [], [], []
  unexpected = sorted(set(checkpoint) - set(by_torch_name))
  flat_out: dict[tuple[str, ...], np.ndarray] = {}
  for name, key in by_torch_name.items():
    spec = flat_template[key]
    if name not in checkpoint:
      if any(r.search(name) for r in allow_res) and not isinstance(spec, jax.ShapeDtypeStruct):
        kept.append(name)
        flat_out[key] = np.asarray(spec)
      else:
        missing.append(name)
      continue
    value = np.asarray(checkpoint[name])
    expected_torch_shape = _torch_shape(key[-1], spec.shape)
    if value.shape != expected_torch_shape:
      wrong_shape.append(
          f"{name}: checkpoint {tuple(value.shape)}, model expects {expected_torch_shape}"
      )
      continue
    flat_out[key] = _torch_to_flax_layout(key[-1], value).astype(spec.dtype)

  if missing or unexpected or wrong_shape:
    parts = [
        f"{source} does not match the model ({len(by_torch_name)} model tensors, "
        f"{len(checkpoint)} checkpoint tensors after ignores); nothing was loaded."
    ]
    mismatched = len(missing) + len(wrong_shape) + len(unexpected)
    if mismatched > 0.1 * len(by_torch_name):
      parts.append(
          "  Many tensors do not match: this checkpoint is probably for a different "
          "architecture, depth or width (or its keys carry a prefix to strip)."
      )
    if missing:
      parts.append(_listing("missing keys (in the model, not in the checkpoint)", missing))
    if unexpected:
      parts.append(_listing("unexpected keys (in the checkpoint, not in the model)", unexpected))
    if wrong_shape:
      parts.append(_listing("wrong shapes", wrong_shape))
    raise CheckpointMismatchError(
        "\n".join(parts), missing=missing, unexpected=unexpected, wrong_shape=wrong_shape
    )
  return flax.traverse_util.unflatten_dict(flat_out)


def variables_to_state_dict(variables: Mapping[str, Any]) -> StateDict:
  """Inverse of `state_dict_to_variables`: Flax variables -> {torch key: numpy array (OIHW kernels)}."""
  out = {}
  for key, value in _flatten(variables).items():
    out[torch_name(key[1:])] = _flax_to_torch_layout(key[-1], np.asarray(value))
  return out


def torch_shapes(template: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
  """{torch key: torch-layout shape} of a variable tree (arrays or `jax.ShapeDtypeStruct`)."""
  return {
      torch_name(key[1:]): _torch_shape(key[-1], v.shape) for key, v in _flatten(template).items()
  }


def strip_prefix(state_dict: Mapping[str, Any], prefix: str) -> StateDict:
  """Removes `prefix` from every key that has it (e.g. 'module.' from DataParallel checkpoints)."""
  return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


# ------------------------------------------------------------------------------------------------------------
# Architecture-specific converters.


def _template(model, image_shape: tuple[int, int]) -> Variables:
  """Variable shapes/dtypes of `model` (`jax.ShapeDtypeStruct` leaves; nothing is computed)."""
  x = np.zeros((1, *image_shape, 3), np.float32)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))


def convert_torchvision_resnet(
    state_dict: Mapping[str, Any], model, *, source: str = "checkpoint", prefix: str = ""
) -> Variables:
  """torchvision `resnet{18,34,50,101}` state dict -> variables of `model` (a `jaxseg.models.resnet.ResNet`).

  The ImageNet classifier (`fc.*`) is dropped. A mismatching depth or width raises.
  """
  state_dict = strip_prefix(state_dict, prefix) if prefix else dict(state_dict)
  return state_dict_to_variables(
      state_dict, _template(model, (32, 32)), source=source, ignore=[r"^fc\."]
  )


def _deeplab_head_init(template: Variables, seed: int) -> Variables:
  """Template whose head leaves (layer5/layer6) are concrete: kernels N(0, 0.01), biases 0 (ADVENT's init)."""
  rng = np.random.default_rng(seed)
  flat = _flatten(template)
  for key, spec in flat.items():
    if key[1] in ("layer5", "layer6"):
      if key[-1] == "kernel":
        flat[key] = (0.01 * rng.standard_normal(spec.shape)).astype(spec.dtype)
      else:
        flat[key] = np.zeros(spec.shape, spec.dtype)
  return flax.traverse_util.unflatten_dict(flat)


def convert_deeplab_v2(
    state_dict: Mapping[str, Any],
    model,
    *,
    imagenet_init: bool | None = None,
    source: str = "checkpoint",
    head_seed: int = 0,
) -> Variables:
  """ADVENT DeepLab-v2 checkpoint -> variables of `model` (a `jaxseg.models.deeplab_v2.DeepLabV2`).

  Two official formats:
    * the ImageNet init `DeepLab_resnet_pretrained_imagenet.pth`: every key carries a prefix module
      ('Scale.conv1.weight', ...) and `layer5` is an unrelated classifier. As ADVENT's training scripts do,
      the prefix is stripped, `layer5` dropped, and the heads (layer5/layer6) get a fresh init
      (N(0, 0.01) kernels, zero biases, `head_seed`); every backbone tensor must be present.
    * a trained model (`gta2cityscapes_advent.pth`, ...): loaded strictly, heads included.
  `imagenet_init=None` picks the format from the keys (a shared unknown first component = ImageNet init).
  """
  state_dict = dict(state_dict)
  template = _template(model, (33, 33))
  top_level = {key[1] for key in _flatten(template)}
  first = {k.split(".", 1)[0] for k in state_dict}
  if imagenet_init is None:
    imagenet_init = len(first) == 1 and not first & top_level
  if not imagenet_init:
    return state_dict_to_variables(state_dict, template, source=source)
  if len(first) != 1:
    raise CheckpointMismatchError(
        f"{source}: an ImageNet-init DeepLab checkpoint has one shared key prefix (e.g. 'Scale.'); "
        f"found first components {sorted(first)[:10]}"
    )
  stripped = {k.split(".", 1)[1]: v for k, v in state_dict.items() if "." in k}
  stripped = {k: v for k, v in stripped.items() if not k.startswith("layer5.")}
  return state_dict_to_variables(
      stripped,
      _deeplab_head_init(template, head_seed),
      source=source,
      allow_missing=[r"^layer[56]\."],
  )


def convert_fc_discriminator(
    state_dict: Mapping[str, Any], model, *, source: str = "checkpoint", prefix: str = ""
) -> Variables:
  """ADVENT `get_fc_discriminator` state dict ('0.weight' ... '8.bias') -> variables of `model`
  (a `jaxseg.models.discriminator.FCDiscriminator`). `prefix` is stripped first (e.g. 'd_main.')."""
  state_dict = strip_prefix(state_dict, prefix) if prefix else dict(state_dict)
  x = np.zeros((1, 32, 32, model.num_classes), np.float32)
  template = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  return state_dict_to_variables(state_dict, template, source=source)


def convert_resnet38(
    state_dict: Mapping[str, Any], model, *, source: str = "checkpoint", ignore: Iterable[str] = ()
) -> Variables:
  r"""SEAM ResNet-38 state dict (`resnet38d` names) -> variables of `model` (`jaxseg.models.resnet38.ResNet38`).

  For a full SEAM / AffinityNet checkpoint whose head tensors belong to another module, list them in
  `ignore`, e.g. `ignore=[r"^(fc8|f8_3|f8_4|f8_5|f9)\."]`; anything else unexpected raises.
  """
  return state_dict_to_variables(
      state_dict, _template(model, (16, 16)), source=source, ignore=ignore
  )


# MXNet ResNet-38 (ademxapp `ilsvrc-cls_rna-a1_cls1000_ep-0001.params`) names -> SEAM names, as done by
# SEAM's `resnet38d.convert_mxnet_to_torch`: res{S}{a|bK}_branch{..}_weight -> b{S}[_K].conv_branch{..}.weight,
# bn{S}{a|bK}_branch{..}_{gamma,beta,moving_mean,moving_var} -> b{S}[_K].bn_branch{..}.{weight,...},
# conv1a_weight -> conv1a.weight, bn7_* -> bn7.*, linear1000_* dropped.
_MX_BN = {
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_var": "running_var",
}
_MX_BLOCK = re.compile(
    r"^(res|bn)(\d+)(a|b\d+)_branch(1|2a|2b1|2b2)_(weight|gamma|beta|moving_mean|moving_var)$"
)
_MX_BN7 = re.compile(r"^bn7_(gamma|beta|moving_mean|moving_var)$")


def mxnet_resnet38_to_state_dict(
    params: Mapping[str, np.ndarray], *, source: str = "params"
) -> StateDict:
  """MXNet ResNet-38 A1 parameters ('arg:'/'aux:' prefixed names) -> SEAM `resnet38d` state dict.

  Raises CheckpointMismatchError listing every name that is not a ResNet-38 parameter.
  """
  out, unknown = {}, []
  for raw_name, value in params.items():
    name = raw_name.split(":", 1)[1] if raw_name.startswith(("arg:", "aux:")) else raw_name
    if name.startswith("linear1000_"):
      continue  # the ImageNet classifier
    if name == "conv1a_weight":
      out["conv1a.weight"] = value
      continue
    if m := _MX_BN7.match(name):
      out[f"bn7.{_MX_BN[m.group(1)]}"] = value
      continue
    m = _MX_BLOCK.match(name)
    if m is None:
      unknown.append(raw_name)
      continue
    kind, stage, block, branch, leaf = m.groups()
    block_name = f"b{stage}" if block == "a" else f"b{stage}_{block[1:]}"
    if kind == "res" and leaf == "weight":
      out[f"{block_name}.conv_branch{branch}.weight"] = value
    elif kind == "bn" and leaf != "weight":
      out[f"{block_name}.bn_branch{branch}.{_MX_BN[leaf]}"] = value
    else:
      unknown.append(raw_name)
  if unknown:
    raise CheckpointMismatchError(
        f"{source}: not an MXNet ResNet-38 parameter file; nothing was loaded.\n"
        + _listing("names that are not ResNet-38 parameters", unknown),
        unexpected=unknown,
    )
  return out


# MAST's ResNet18 (`models/submodule.py`) names its layers by position in nn.Sequential containers.
_MAST_RENAMES = (
    (r"\.conv1\.0\.", ".conv1."),
    (r"\.conv1\.1\.", ".bn1."),
    (r"\.left\.0\.", ".conv1."),
    (r"\.left\.1\.", ".bn1."),
    (r"\.left\.3\.", ".conv2."),
    (r"\.left\.4\.", ".bn2."),
    (r"\.shortcut\.", ".downsample."),
)


def convert_mast_encoder(
    state_dict: Mapping[str, Any], model, *, source: str = "checkpoint", prefix: str = ""
) -> Variables:
  """MAST state dict (`feature_extraction.*`, `post_convolution.*`; a saved checkpoint's 'state_dict'
  with `module.` stripped via `prefix`) -> variables of `model` (a `MastEncoder`). The official
  Sequential positions are renamed to torchvision's (conv1.0 -> conv1, conv1.1 -> bn1, left.{0,1,3,4}
  -> conv1/bn1/conv2/bn2, shortcut -> downsample)."""
  state_dict = strip_prefix(state_dict, prefix) if prefix else dict(state_dict)
  renamed = {}
  for key, value in state_dict.items():
    new = "." + key
    for pattern, repl in _MAST_RENAMES:
      new = re.sub(pattern, repl, new)
    renamed[new[1:]] = value
  return state_dict_to_variables(renamed, _template(model, (32, 32)), source=source)
