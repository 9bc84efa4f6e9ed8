"""NYU Depth v2 labelled set (1449 RGB-D images, 640x480) from `nyu_depth_v2_labeled.mat`.

The file is MATLAB v7.3, i.e. HDF5 (after a 512-byte MATLAB header), read with h5py. The file is
opened lazily in the process that reads an item (never pickled); building the source only checks the
datasets' shapes. MATLAB is column-major, so h5py sees every array with its axes reversed:
  images     uint8   [N, 3, W, H]  -> image i = images[i].transpose(2, 1, 0): uint8 [H, W, 3]
  depths     float32 [N, W, H]     -> depths[i].T: metres [H, W] (filled: no holes)
  rawDepths  float32 [N, W, H]     -> the raw Kinect depth, 0 = no measurement
  labels     uint16  [N, W, H]     -> labels[i].T: 0 = unlabelled, 1..894 NYU class ids
Non-finite or negative depths are set to 0 (invalid).

Classes (`classes=`):
  40   the Gupta et al. mapping 894 -> 40 (`classMapping40.mat`, variable `mapClass`, 1 x 894,
       values 1..40; a 0 entry means unlabelled): `mapping40=` its path or an array [894].
  13   the Couprie et al. classes: `class13Mapping.mat` (VainF/nyuv2-python-toolkit; a struct
       `classMapping13` whose numeric field lists the 13-class id 1..13 of each of the 40 classes)
       applied after the 40-class mapping; `mapping13=` its path or an array [40] (needs `mapping40`
       too), or a table [894] straight from the NYU ids (e.g. `mapClass` of a `classMapping13.mat`
       made by howard-mahe/nyudv2_class_mapping), which needs no `mapping40`.
  894  the raw NYU ids (needs no mapping); 894 ids do not fit uint8, so this mask is uint16 and its
       unlabelled value is 65535 (`source.ignore_index`).
The mask holds 0-based class ids (class c of the table -> c - 1) and `ignore_index` (255) where the
pixel is unlabelled (id 0 or a table entry 0). The tables are not shipped here: pass the .mat files
(MATLAB v5 read with scipy.io.loadmat; v7.3 with h5py) or arrays.

Split (`splits.mat`, VainF/nyuv2-python-toolkit: `trainNdxs` 795 x 1, `testNdxs` 654 x 1, 1-based
image numbers): split 'train' or 'test' needs `splits_path`; 'all' is every image in file order.

Example: image uint8 [H, W, 3], mask uint8 [H, W] (uint16 for classes=894), depth float32 [H, W]
metres (0 = invalid), intrinsics float32 [3, 3], index (position in the split), id (the 1-based image
number as '%05d', as the common extraction scripts name the files).

Intrinsics: the Kinect RGB camera for the full 640x480 frame (NYU toolbox `camera_params.m`):
fx 518.857901, fy 519.469611, cx 325.582449, cy 253.736166. The commonly used cropped frames (the
toolbox's 561x427 crop starting at row 45, column 41: SUN RGB-D) have cx 284.582449, cy 208.736166;
pass `intrinsics=` for any other frame (the default is refused for images that are not 480x640).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from jaxseg.data.errors import DataError
from jaxseg.data.transforms import validate_example

NUM_IMAGES = 1449
NUM_RAW_CLASSES = 894
IGNORE_INDEX = 255
RAW_IGNORE_INDEX = 65535  # classes=894: 894 ids do not fit uint8
NYU_INTRINSICS = np.array(
    [
        [518.85790117450188, 0.0, 325.58244941119034],
        [0.0, 519.46961112127485, 253.73616633400465],
        [0.0, 0.0, 1.0],
    ],
    np.float32,
)
NYU_INTRINSICS.flags.writeable = False
NYU_IMAGE_SIZE = (480, 640)  # (H, W) of the frames NYU_INTRINSICS describes
_HINT = (
    "expected nyu_depth_v2_labeled.mat (MATLAB v7.3 = HDF5, ~2.8 GB) from "
    "http://horatio.cs.nyu.edu/mit/silberman/nyu_depth_v2/nyu_depth_v2_labeled.mat"
)
_MATLAB_V5_MAGIC = b"MATLAB 5.0 MAT-file"


def _h5py():
  try:
    import h5py
  except ImportError as e:  # pragma: no cover - h5py is a requirement
    raise ImportError("reading NYU Depth v2 needs h5py: pip install h5py") from e
  return h5py


def _check_hdf5(path: str, what: str) -> None:
  """DataError unless `path` is an HDF5 file (MATLAB v7.3); v5 .mat files get a re-save hint."""
  if not os.path.isfile(path):
    raise DataError(f"{what} not found: {path}\nhint: {_HINT}")
  if _h5py().is_hdf5(path):
    return
  with open(path, "rb") as f:
    head = f.read(128)
  if head.startswith(_MATLAB_V5_MAGIC):
    raise DataError(
        f"{path}: a MATLAB v5/v7 .mat file, not v7.3 (HDF5); {what} must be MATLAB v7.3\n"
        "hint: pass the original nyu_depth_v2_labeled.mat, or re-save the variables in MATLAB "
        "with save(file, ..., '-v7.3')"
    )
  raise DataError(f"{path}: not an HDF5 (MATLAB v7.3) file\nhint: {_HINT}")


def read_mat_array(path: str | os.PathLike, name: str) -> np.ndarray:
  """Variable `name` of a .mat file (v5 via scipy.io.loadmat, v7.3 via h5py) as a numpy array.

  A v5 struct is returned as loaded (a record array); v7.3 structs are not supported.
  """
  import scipy.io

  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataError(f"{path}: .mat file not found")
  if _h5py().is_hdf5(path):
    with _h5py().File(path, "r") as f:
      if name not in f or not isinstance(f[name], _h5py().Dataset):
        raise DataError(f"{path}: no array variable {name!r} (has {sorted(f.keys())})")
      return np.asarray(f[name][()]).T
  try:
    variables = scipy.io.loadmat(path)
  except (ValueError, TypeError, OSError) as e:
    raise DataError(f"{path}: cannot read .mat file ({type(e).__name__}: {e})") from e
  if name not in variables:
    found = sorted(k for k in variables if not k.startswith("__"))
    raise DataError(f"{path}: no variable {name!r} (has {found})")
  return variables[name]


def _numeric_table(value: np.ndarray, sizes: tuple[int, ...], where: str) -> np.ndarray:
  """A flat integer table from an array, or from the numeric field of a MATLAB struct of that size."""
  value = np.asarray(value)
  if value.dtype.names:  # v5 struct: (1, 1) record array; take its field of the right size.
    record = value.reshape(-1)[0]
    for field in value.dtype.names:
      candidate = np.asarray(record[field])
      if candidate.dtype == object and candidate.size == 1:
        candidate = np.asarray(candidate.reshape(-1)[0])
      if np.issubdtype(candidate.dtype, np.number) and candidate.size in sizes:
        value = candidate
        break
    else:
      raise DataError(
          f"{where}: struct with fields {value.dtype.names} has no numeric field of "
          f"{' or '.join(map(str, sizes))} entries"
      )
  if not np.issubdtype(value.dtype, np.number) or value.size not in sizes:
    raise DataError(
        f"{where}: expected a numeric table of {' or '.join(map(str, sizes))} entries, got "
        f"{value.dtype} {value.shape}"
    )
  table = value.reshape(-1)
  if not np.all(np.isfinite(table)) or np.any(table != np.round(table)):
    raise DataError(f"{where}: class table holds non-integer values")
  return table.astype(np.int64)


def load_mapping(mapping: Any, variable: str, sizes: tuple[int, ...], high: int) -> np.ndarray:
  """int64 table from a .mat path (variable `variable`) or an array; entries in 0..high."""
  if isinstance(mapping, (str, os.PathLike)):
    where = f"{os.fspath(mapping)} (variable {variable!r})"
    value = read_mat_array(mapping, variable)
  else:
    where, value = f"{variable} array", mapping
  table = _numeric_table(value, sizes, where)
  if table.min() < 0 or table.max() > high:
    raise DataError(f"{where}: class table values [{table.min()}, {table.max()}] not in 0..{high}")
  return table


def class_lut(classes: int, mapping40: Any = None, mapping13: Any = None) -> np.ndarray:
  """Lookup NYU id 0..894 -> 0-based class id, unlabelled -> ignore (uint8; uint16 for 894)."""
  if classes == NUM_RAW_CLASSES:
    lut = np.arange(-1, NUM_RAW_CLASSES, dtype=np.int64)
    lut[0] = RAW_IGNORE_INDEX
    return lut.astype(np.uint16)
  if classes == 40:
    if mapping40 is None:
      raise ValueError(
          "classes=40 needs mapping40= (classMapping40.mat, variable 'mapClass', or an array [894])"
      )
    one_based = np.concatenate([[0], load_mapping(mapping40, "mapClass", (894,), 40)])
  elif classes == 13:
    if mapping13 is None:
      raise ValueError(
          "classes=13 needs mapping13= (class13Mapping.mat, or an array [40] (with mapping40=) "
          "or [894])"
      )
    table13 = load_mapping(mapping13, "classMapping13", (40, 894), 13)
    if table13.size == 894:
      one_based = np.concatenate([[0], table13])
    else:
      if mapping40 is None:
        raise ValueError("a 40 -> 13 table (mapping13 of 40 entries) needs mapping40= too")
      to40 = np.concatenate([[0], load_mapping(mapping40, "mapClass", (894,), 40)])
      one_based = np.concatenate([[0], table13])[to40]
  else:
    raise ValueError(f"classes must be 40, 13 or 894, got {classes!r}")
  return np.where(one_based == 0, IGNORE_INDEX, one_based - 1).astype(np.uint8)


def read_split_indices(splits_path: str | os.PathLike, split: str, num_images: int) -> np.ndarray:
  """0-based image positions of `split` ('train' / 'test') from splits.mat (1-based indices)."""
  name = {"train": "trainNdxs", "test": "testNdxs"}[split]
  path = os.fspath(splits_path)
  raw = np.asarray(read_mat_array(path, name))
  if not np.issubdtype(raw.dtype, np.number) or raw.size == 0:
    raise DataError(
        f"{path}: {name} must be a non-empty numeric array, got {raw.dtype} {raw.shape}"
    )
  numbers = raw.reshape(-1)
  if np.any(numbers != np.round(numbers)) or numbers.min() < 1 or numbers.max() > num_images:
    raise DataError(
        f"{path}: {name} must hold 1-based image numbers 1..{num_images} (the .mat file has "
        f"{num_images} images), got [{numbers.min()}, {numbers.max()}]"
    )
  numbers = numbers.astype(np.int64)
  if np.unique(numbers).size != numbers.size:
    raise DataError(f"{path}: {name} lists some image numbers twice")
  return numbers - 1


class NyuDepthV2Source:
  """The labelled NYU Depth v2 images of a split, from the v7.3 .mat file (see the module doc)."""

  def __init__(
      self,
      mat_path: str | os.PathLike,
      split: str = "train",
      *,
      splits_path: str | os.PathLike | None = None,
      classes: int = 40,
      mapping40: Any = None,
      mapping13: Any = None,
      depth_key: str = "depths",
      intrinsics: np.ndarray | None = None,
  ):
    """Checks the file's datasets; reads no image.

    Args:
      mat_path: nyu_depth_v2_labeled.mat.
      split: 'train' (795), 'test' (654) from `splits_path`, or 'all' (every image).
      splits_path: splits.mat with `trainNdxs` / `testNdxs` (1-based).
      classes: 40, 13 or 894 (see the module doc).
      mapping40: classMapping40.mat path, or an int array [894] with values 0..40.
      mapping13: class13Mapping.mat path, or an int array [40] (40 -> 13) or [894] (894 -> 13).
      depth_key: 'depths' (filled) or 'rawDepths' (raw Kinect, with holes) for `depth`.
      intrinsics: float [3, 3] K of the stored frames; default `NYU_INTRINSICS` (480x640 only).
    """
    self.mat_path = os.fspath(mat_path)
    if depth_key not in ("depths", "rawDepths"):
      raise ValueError(f"depth_key must be 'depths' or 'rawDepths', got {depth_key!r}")
    if split not in ("train", "test", "all"):
      raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    self.split, self.classes, self.depth_key = split, int(classes), depth_key
    self.lut = class_lut(self.classes, mapping40, mapping13)
    self.num_classes = self.classes
    self.ignore_index = RAW_IGNORE_INDEX if self.classes == NUM_RAW_CLASSES else IGNORE_INDEX
    self.num_images, self.image_size = self._check_file()
    if intrinsics is None:
      if self.image_size != NYU_IMAGE_SIZE:
        raise DataError(
            f"{self.mat_path}: images are {self.image_size[0]}x{self.image_size[1]} (HxW), not "
            "the 480x640 frame of the default Kinect intrinsics\nhint: pass intrinsics= for "
            "cropped or resized frames (the 427x561 crop has cx 284.582449, cy 208.736166)"
        )
      intrinsics = NYU_INTRINSICS
    self.intrinsics = np.array(intrinsics, np.float32)
    if self.intrinsics.shape != (3, 3):
      raise ValueError(f"intrinsics must be [3, 3], got shape {self.intrinsics.shape}")
    self.splits_path = None if splits_path is None else os.fspath(splits_path)
    if split == "all":
      self.positions = np.arange(self.num_images, dtype=np.int64)
    elif self.splits_path is None:
      raise DataError(
          f"NYU Depth v2 split {split!r} needs splits_path= (splits.mat with trainNdxs / "
          "testNdxs, e.g. from VainF/nyuv2-python-toolkit), or split='all'"
      )
    else:
      self.positions = read_split_indices(self.splits_path, split, self.num_images)
    self.ids = tuple(f"{p + 1:05d}" for p in self.positions)
    self._file = None
    self._pid = None

  def _check_file(self) -> tuple[int, tuple[int, int]]:
    path = self.mat_path
    _check_hdf5(path, "NYU Depth v2 labelled .mat file")
    h5py = _h5py()
    try:
      f = h5py.File(path, "r")
    except OSError as e:
      raise DataError(f"{path}: cannot open as HDF5 ({e})\nhint: {_HINT}") from e
    with f:
      shapes = {}
      for key in ("images", self.depth_key, "labels"):
        if key not in f or not isinstance(f[key], h5py.Dataset):
          raise DataError(f"{path}: no dataset {key!r} (has {sorted(f.keys())})\nhint: {_HINT}")
        shapes[key] = (f[key].shape, f[key].dtype)
    image_shape, image_dtype = shapes["images"]
    if len(image_shape) != 4 or image_shape[1] != 3 or image_dtype != np.uint8:
      raise DataError(
          f"{path}: dataset 'images' is {image_dtype} {image_shape}; expected uint8 [N, 3, W, H] "
          "(MATLAB's H x W x 3 x N seen by HDF5)"
      )
    n, _, w, h = image_shape
    for key in (self.depth_key, "labels"):
      shape, dtype = shapes[key]
      if tuple(shape) != (n, w, h):
        raise DataError(
            f"{path}: dataset {key!r} has shape {shape}; expected [N, W, H] = {(n, w, h)} to "
            "match 'images'"
        )
      kind = np.floating if key != "labels" else np.integer
      if not np.issubdtype(dtype, kind):
        raise DataError(f"{path}: dataset {key!r} has dtype {dtype}; expected {kind.__name__}")
    if n == 0:
      raise DataError(f"{path}: the file holds no images")
    return n, (h, w)

  def __getstate__(self) -> dict[str, Any]:
    state = dict(self.__dict__)
    state["_file"] = state["_pid"] = None  # h5py handles are per process.
    return state

  def _h5(self):
    if self._file is None or self._pid != os.getpid():
      try:
        self._file = _h5py().File(self.mat_path, "r")
      except OSError as e:
        raise DataError(f"{self.mat_path}: cannot open as HDF5 ({e})") from e
      self._pid = os.getpid()
    return self._file

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
    self._file = self._pid = None

  def __len__(self) -> int:
    return len(self.positions)

  def __repr__(self) -> str:
    return (
        f"NyuDepthV2Source(mat_path={self.mat_path!r}, split={self.split!r}, "
        f"classes={self.classes}, depth_key={self.depth_key!r}, len={len(self)})"
    )

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    if not -len(self) <= index < len(self):
      raise IndexError(f"NYU Depth v2: index {index} out of range for {len(self)} images")
    index %= len(self)
    k = int(self.positions[index])
    where = f"{self.mat_path} image {k + 1}"
    f = self._h5()
    try:
      image = np.ascontiguousarray(f["images"][k].transpose(2, 1, 0))
      depth = np.asarray(f[self.depth_key][k], np.float32).T
      labels = np.asarray(f["labels"][k]).T
    except (OSError, KeyError, ValueError) as e:
      raise DataError(f"{where}: cannot read ({type(e).__name__}: {e})") from e
    if labels.size and (labels.min() < 0 or labels.max() > NUM_RAW_CLASSES):
      raise DataError(
          f"{where}: label values [{labels.min()}, {labels.max()}] not in 0..{NUM_RAW_CLASSES}"
      )
    depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)
    example = {
        "image": image,
        "mask": self.lut[labels.astype(np.int64)],
        "depth": np.ascontiguousarray(depth),
        "intrinsics": self.intrinsics.copy(),
        "index": index,
        "id": self.ids[index],
    }
    return validate_example(example, self.num_classes, self.ignore_index, source=where)
