"""`ReaderBuilder`: a TFDS `GeneratorBasedBuilder` whose examples come from a jaxseg reader.

A subclass names its reader per split (`readers(root)`), how a reader example becomes a record
(`to_record`) and back (`from_record`, used by `jaxseg.data.readers.prepared`), and its features.
What the base class adds to TFDS:

  - Records keep the reader's order (`disable_shuffling`): record k of a split is the k-th readable
    example, and stores the reader's `index` and a per-example `checksum` (`records.checksum`).
  - Resume: the encoded records are staged in chunks of `CHUNK` examples under
    `<data_dir>/<name>/_staging-<version>/<split>/` (each chunk written atomically); an interrupted
    preparation reads the finished chunks back instead of decoding and encoding their files again.
    The staging folder is removed once the dataset is written (`prepare` does it).
  - Bad files: a reader `DataError` stops the preparation with the file's name and a hint, unless
    `skip_bad` is set; then the example is left out and listed in `skipped` (split -> [(index,
    message)]), which `prepare` prints and writes to `<version dir>/skipped.json`. A corrupt file is
    never encoded: the reader decodes and validates every file before it is written.

The root of the raw dataset is TFDS's manual dir: `tfds build <name> --manual_dir=<root>` or
`python -m jaxseg.data.prepare <name> --root=<root>`.
"""

from __future__ import annotations

import inspect
import os
import pickle
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from jaxseg.data.errors import DataError
from jaxseg.data.prepare import records

CHUNK = 64  # examples per staged chunk


class ReaderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the jaxseg builders (see the module doc)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version, written by jaxseg.data.prepare."}
  DESCRIPTION = ""
  LAYOUT = ""  # the expected manual_dir layout, for error messages
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Pass the raw dataset's folder (standard layout) as --manual_dir (tfds build) or --root "
      "(python -m jaxseg.data.prepare)."
  )
  skip_bad = False  # set by `prepare --skip_bad`
  chunk_size = CHUNK

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    """The builder's source file (TFDS's own lookup needs the `importlib_resources` backport)."""
    return epath.Path(inspect.getfile(cls))

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.skipped: dict[str, list[tuple[int, str]]] = {}

  # -- To define in subclasses. ---------------------------------------------------------------
  def features(self) -> dict[str, Any]:
    """{key: tfds feature} of a record, without `index` and `checksum` (added here)."""
    raise NotImplementedError

  def readers(self, root: str) -> dict[str, Any]:
    """{TFDS split name: random-access reader} of the raw dataset at `root`."""
    raise NotImplementedError

  def to_record(self, example: dict[str, Any]) -> dict[str, Any]:
    """A reader example -> the record's feature values (PNG bytes for images)."""
    raise NotImplementedError

  @classmethod
  def from_record(cls, record: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """A decoded record -> the reader's example (without `index`), as the reader built with
    `options` gives it."""
    raise NotImplementedError

  def split_metadata(self, split: str, records_of_split: list[dict[str, Any]]) -> dict | None:
    """Extra metadata of a split from its (record-key subset) records; None: none."""
    del split, records_of_split
    return None

  METADATA_KEYS: tuple[str, ...] = ()  # record keys `split_metadata` reads

  # -- TFDS. ----------------------------------------------------------------------------------
  def _info(self) -> tfds.core.DatasetInfo:
    features = dict(self.features())
    features["index"] = tfds.features.Scalar(dtype=np.int64, doc="the reader's example index")
    features["checksum"] = tfds.features.Text(
        doc="SHA-256 of the example (jaxseg records.checksum)"
    )
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict(features),
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(),
        homepage="https://github.com/jaxseg/jaxseg",
    )

  def staging_dir(self) -> str:
    parent = os.path.dirname(
        os.fspath(self.data_dir).rstrip("/")
    )  # data_dir or its incomplete.* dir
    return os.path.join(parent, f"_staging-{self.version}")

  def _split_generators(self, dl_manager):
    try:
      root = dl_manager.manual_dir
    except AssertionError:  # no manual dir given
      root = None
    if not root or not os.path.isdir(os.fspath(root)):
      raise DataError(
          f"{self.name}: raw dataset folder not found: {root}\nhint: pass --root=<folder> "
          f"(python -m jaxseg.data.prepare) or --manual_dir=<folder> (tfds build); {self.LAYOUT}"
      )
    readers = self.readers(os.fspath(root))
    return {split: self._generate_examples(split, reader) for split, reader in readers.items()}

  def _generate_examples(self, split: str, reader):
    folder = os.path.join(self.staging_dir(), split)
    os.makedirs(folder, exist_ok=True)
    n = len(reader)
    size = int(self.chunk_size)
    self.skipped[split] = []
    meta: list[dict[str, Any]] = []
    for c in range(-(-n // size)):
      path = os.path.join(folder, f"chunk-{c:05d}-of-{-(-n // size):05d}.pkl")
      if os.path.exists(path):
        with open(path, "rb") as f:
          chunk = pickle.load(f)
      else:
        chunk = self._encode_chunk(reader, range(c * size, min(n, (c + 1) * size)))
        with open(path + ".tmp", "wb") as f:
          pickle.dump(chunk, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(path + ".tmp", path)
      self.skipped[split].extend(chunk["skipped"])
      for key, record in chunk["records"]:
        meta.append({k: record[k] for k in self.METADATA_KEYS})
        yield key, record
    extra = self.split_metadata(split, meta)
    if extra is not None:
      self.info.metadata[split] = extra

  def _encode_chunk(self, reader, indices) -> dict[str, Any]:
    out, skipped = [], []
    for i in indices:
      try:
        example = reader[i]
      except DataError as e:
        if not self.skip_bad:
          raise DataError(
              f"{e}\nhint: fix or remove the file, or rerun with --skip_bad to leave the example "
              "out (listed in skipped.json); finished chunks are not redone"
          ) from e
        skipped.append((int(i), str(e).splitlines()[0]))
        continue
      record = self.to_record(example)
      record["index"] = int(i)
      record["checksum"] = records.checksum(example)
      out.append((int(i), record))
    return {"records": out, "skipped": skipped}
