"""Checkpoint files: PyTorch / MXNet weight readers and the msgpack variable format, all as numpy.

Readers: `read_torch_checkpoint` (.pth/.pt; needs the optional `torch` extra, imported lazily) and
`read_mxnet_params` (MXNet NDArray-list `.params`, parsed with numpy; mxnet itself is not needed); both return
a state dict `{name: numpy array}` with the names as saved. `write_mxnet_params` writes that format (for
tests and fixtures).

Saved format: `save_variables` writes the variable tree ({'params': ..., 'batch_stats': ...}) with
`flax.serialization.msgpack_serialize` (one self-describing file, numpy arrays, no pickle);
`load_variables` reads it back.

Mapping names onto a model is `convert`'s job.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from typing import Any

import flax
import jax
import numpy as np

StateDict = dict[str, np.ndarray]  # {key: array}, names and layouts as in the file (OIHW kernels).
Variables = dict[str, Any]  # Flax variables {'params': ..., 'batch_stats': ...}.


def read_torch_checkpoint(path: str | os.PathLike) -> StateDict:
  """Reads a PyTorch checkpoint into {key: numpy array}. Needs torch (`pip install jaxseg[torch]`).

  Accepts a bare state dict or a dict wrapping one under 'state_dict' / 'model' / 'model_state_dict'.
  Loaded with `weights_only=True` (no arbitrary unpickling).
  """
  try:
    import torch
  except ImportError as e:
    raise ImportError(
        "reading .pth files needs torch: pip install 'jaxseg[torch]' " "(torch==2.13.0, CPU wheel)"
    ) from e
  try:
    obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
  except (OSError, RuntimeError, ValueError, EOFError, UnicodeDecodeError) as e:
    raise ValueError(
        f"{path}: not a readable PyTorch checkpoint ({' '.join(str(e).split())[:160]})"
    ) from None
  except Exception as e:  # noqa: BLE001  (torch's unpickler raises many types on garbage)
    raise ValueError(
        f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: "
        f"{' '.join(str(e).split())[:160]})"
    ) from None
  for wrapper in ("state_dict", "model", "model_state_dict"):
    if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
      obj = obj[wrapper]
      break
  if not isinstance(obj, dict):
    raise ValueError(f"{path}: expected a state dict (a dict of tensors), got {type(obj).__name__}")
  out = {}
  for key, value in obj.items():
    if not hasattr(value, "detach"):
      raise ValueError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
    out[key] = value.detach().cpu().numpy()
  return out


# MXNet NDArray-list files (`mx.nd.save` / `.params`), parsed with numpy. Layout (little endian):
#   uint64 0x112 (list magic), uint64 reserved,
#   uint64 n, then n arrays, then uint64 m (0 or n), m names each as uint64 length + utf-8 bytes.
# One array:
#   uint32 magic: 0xF993FAC9 (V2) or 0xF993FACA (V3, numpy shapes): int32 storage type (0 = dense; sparse
#     arrays are not supported), shape = uint32 ndim + ndim int64;
#   0xF993FAC8 (V1): shape = uint32 ndim + ndim int64;
#   anything else (legacy, MXNet < 0.11): the value is ndim, followed by ndim uint32;
#   then (if ndim > 0) context int32 dev_type + int32 dev_id, int32 dtype flag, raw C-order data.
_MX_LIST_MAGIC = 0x112
_MX_V1, _MX_V2, _MX_V3 = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
_MX_DTYPES = {
    0: np.float32,
    1: np.float64,
    2: np.float16,
    3: np.uint8,
    4: np.int32,
    5: np.int8,
    6: np.int64,
}


class _Reader:

  def __init__(self, data: bytes, source: str):
    self.data, self.pos, self.source = data, 0, source

  def take(self, fmt: str):
    size = struct.calcsize(fmt)
    if self.pos + size > len(self.data):
      raise ValueError(
          f"{self.source}: truncated MXNet file (wanted {size} bytes at offset {self.pos})"
      )
    values = struct.unpack_from(fmt, self.data, self.pos)
    self.pos += size
    return values

  def raw(self, size: int) -> bytes:
    if self.pos + size > len(self.data):
      raise ValueError(f"{self.source}: truncated MXNet file (array data at offset {self.pos})")
    chunk = self.data[self.pos : self.pos + size]
    self.pos += size
    return chunk


def _read_mx_array(r: _Reader, index: int) -> np.ndarray:
  (magic,) = r.take("<I")
  if magic in (_MX_V2, _MX_V3):
    (stype,) = r.take("<i")
    if stype != 0:
      raise ValueError(
          f"{r.source}: array {index} has sparse storage type {stype}; only dense is supported"
      )
    (ndim,) = r.take("<i")
    shape = r.take(f"<{ndim}q") if ndim > 0 else ()
  elif magic == _MX_V1:
    (ndim,) = r.take("<I")
    shape = r.take(f"<{ndim}q")
  else:
    ndim = magic
    if ndim > 32:
      raise ValueError(f"{r.source}: array {index}: bad header {magic:#x} (not an MXNet NDArray)")
    shape = r.take(f"<{ndim}I")
  if ndim <= 0:
    return np.zeros((0,), np.float32)
  r.take("<ii")  # context: dev_type, dev_id
  (flag,) = r.take("<i")
  if flag not in _MX_DTYPES:
    raise ValueError(f"{r.source}: array {index} has unknown dtype flag {flag}")
  dtype = np.dtype(_MX_DTYPES[flag]).newbyteorder("<")
  count = int(np.prod(shape))
  return (
      np.frombuffer(r.raw(count * dtype.itemsize), dtype)
      .reshape(shape)
      .astype(dtype.newbyteorder("="))
  )


def read_mxnet_params(path: str | os.PathLike) -> StateDict:
  """Reads an MXNet `.params` / `mx.nd.save` file into {name: numpy array} (names as saved, e.g.
  'arg:res2a_branch1_weight'). Raises ValueError naming the file on any format problem."""
  with open(path, "rb") as f:
    data = f.read()
  source = os.fspath(path)
  r = _Reader(data, source)
  header, _ = r.take("<QQ")
  if header != _MX_LIST_MAGIC:
    raise ValueError(f"{source}: not an MXNet NDArray file (header {header:#x}, expected 0x112)")
  (count,) = r.take("<Q")
  arrays = [_read_mx_array(r, i) for i in range(count)]
  (num_names,) = r.take("<Q")
  names = []
  for _ in range(num_names):
    (length,) = r.take("<Q")
    names.append(r.raw(length).decode("utf-8"))
  if num_names != count:
    raise ValueError(
        f"{source}: {count} arrays but {num_names} names; unnamed lists are not supported"
    )
  if r.pos != len(data):
    raise ValueError(f"{source}: {len(data) - r.pos} trailing bytes after the NDArray list")
  if len(set(names)) != len(names):
    raise ValueError(f"{source}: duplicate names in the NDArray list")
  return dict(zip(names, arrays, strict=True))


def write_mxnet_params(
    path: str | os.PathLike, arrays: Mapping[str, np.ndarray], version: str = "v2"
) -> None:
  """Writes {name: array} in MXNet's NDArray-list format (`version`: 'v2' as MXNet >= 1.0 writes it,
  'v1', or 'legacy' as MXNet < 0.11 did). For tests and fixtures; `read_mxnet_params` reads it back.
  """
  flags = {np.dtype(v): k for k, v in _MX_DTYPES.items()}
  chunks = [struct.pack("<QQQ", _MX_LIST_MAGIC, 0, len(arrays))]
  for name, value in arrays.items():
    value = np.ascontiguousarray(value)
    if value.dtype not in flags:
      raise ValueError(f"{name}: dtype {value.dtype} has no MXNet type flag")
    if version == "v2":
      chunks.append(struct.pack(f"<Iii{value.ndim}q", _MX_V2, 0, value.ndim, *value.shape))
    elif version == "v1":
      chunks.append(struct.pack(f"<II{value.ndim}q", _MX_V1, value.ndim, *value.shape))
    elif version == "legacy":
      chunks.append(struct.pack(f"<I{value.ndim}I", value.ndim, *value.shape))
    else:
      raise ValueError(f"unknown MXNet NDArray version {version!r}")
    chunks.append(struct.pack("<iii", 1, 0, flags[value.dtype]))  # cpu(0)
    chunks.append(value.astype(value.dtype.newbyteorder("<")).tobytes())
  chunks.append(struct.pack("<Q", len(arrays)))
  for name in arrays:
    encoded = name.encode("utf-8")
    chunks.append(struct.pack("<Q", len(encoded)) + encoded)
  with open(path, "wb") as f:
    f.write(b"".join(chunks))


def save_variables(path: str | os.PathLike, variables: Mapping[str, Any]) -> None:
  """Writes a variable tree as flax msgpack (numpy arrays; read back with `load_variables`)."""
  tree = jax.tree_util.tree_map(np.asarray, flax.core.unfreeze(variables))
  with open(path, "wb") as f:
    f.write(flax.serialization.msgpack_serialize(tree))


def load_variables(path: str | os.PathLike) -> Variables:
  """Reads a tree written by `save_variables` ({'params': ..., 'batch_stats': ...} of numpy arrays)."""
  with open(path, "rb") as f:
    data = f.read()
  try:
    tree = flax.serialization.msgpack_restore(data)
  except Exception as e:  # noqa: BLE001  (msgpack raises several types on a damaged file)
    raise ValueError(
        f"{path}: not a jaxseg .msgpack variables file ({' '.join(str(e).split())[:160]}); "
        "write one with python -m jaxseg.tools.convert_weights"
    ) from None
  if not isinstance(tree, dict):
    raise ValueError(f"{path}: expected a tree of variables, got {type(tree).__name__}")
  return tree
