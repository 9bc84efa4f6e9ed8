"""`ReaderBuilder`: a TFDS `GeneratorBasedBuilder` whose examples come from a jaxseg reader.

A subclass names its reader per split (`readers(root)`), how a reader example becomes a record
(`to_record`) and back (`from_record`, used by `jaxseg.data.readers.prepared`), and its features.
What the base class adds to TFDS:

  - Records keep the reader's order (`disable_shuffling`): record k of a split is the k-th readable
    example, and stores the reader's `index` and a per-example `checksum` (`records.checksum`).
  - Resume: the encoded records are staged in chunks of `chunk_size` examples under
    `<data_dir>/<name>/_staging-<version>/<split>/` (each chunk written atomically, with a
    `.skipped.json` beside it); an interrupted preparation reads the finished chunks back instead
    of decoding and encoding their files again. `prepare` removes the folder once the dataset is
    written.
  - Bad files: a reader `DataError` stops the preparation with the file's name and a hint, unless
    `skip_bad` is set; then the example is left out and listed (`skipped_examples`, which `prepare`
    prints and writes to `<version dir>/skipped.json`). A corrupt file is never encoded: the reader
    decodes and validates every file before it is written.
  - Apache Beam (`use_beam`): the chunks are the Beam elements (`beam.Create(chunks) |
    beam.FlatMap(encode chunk)`), so `download_and_prepare(download_config=DownloadConfig(
    beam_runner=...))` spreads them over workers; TFDS's Beam writer sorts the records by key, so
    the files equal the single-machine ones.

The root of the raw dataset is TFDS's manual dir: `tfds build <name> --manual_dir=<root>` or
`python -m jaxseg.data.prepare <name> --root=<root>`.
"""

from __future__ import annotations

import inspect
import json
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
  allow_skip = True  # False: a bad file always stops (records are addressed by position)
  use_beam = False  # set by `prepare --beam`
  chunk_size = CHUNK

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    """The builder's source file (TFDS's own lookup needs the `importlib_resources` backport)."""
    return epath.Path(inspect.getfile(cls))

  # -- To define in subclasses. ---------------------------------------------------------------
  def features(self) -> dict[str, Any]:
    """{key: tfds feature} of a record, without `index` and `checksum` (added here)."""
    raise NotImplementedError

  def readers(self, root: str) -> dict[str, Any]:
    """{TFDS split name: random-access reader} of the raw dataset at `root`."""
    raise NotImplementedError

  @classmethod
  def to_record(cls, example: dict[str, Any]) -> dict[str, Any]:
    """A reader example -> the record's feature values (PNG bytes for images)."""
    raise NotImplementedError

  @classmethod
  def from_record(cls, record: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """A decoded record -> the reader's example (without `index`); `options` {} gives every
    stored key, other options what the reader built with them gives."""
    raise NotImplementedError

  def split_metadata(self, split: str, reader) -> dict | None:
    """Metadata of a split, from its reader (stored in the dataset's metadata.json); None: none."""
    del split, reader
    return None

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

  def _download_and_prepare(self, *args, **kwargs):
    from jaxseg.data.prepare.tf_free import no_tf_shuffle_buckets

    with no_tf_shuffle_buckets():  # splits over 1 GB spill to disk through tf.io.gfile otherwise
      return super()._download_and_prepare(*args, **kwargs)

  def staging_dir(self) -> str:
    parent = os.path.dirname(
        os.fspath(self.data_dir).rstrip("/")
    )  # data_dir or its incomplete.* dir
    return os.path.join(parent, f"_staging-{self.version}")

  def skipped_examples(self) -> dict[str, list[tuple[int, str]]]:
    """{split: [(reader index, reason)]} of the examples left out, from the staged chunks."""
    out = {}
    for folder in sorted(epath.Path(self.staging_dir()).glob("*")):
      items = []
      for path in sorted(folder.glob("*.skipped.json")):
        items.extend(tuple(item) for item in json.loads(path.read_text()))
      out[folder.name] = sorted(items)
    return out

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
    extra = self.split_metadata(split, reader)
    if extra is not None:
      self.info.metadata[split] = extra
    job = ChunkJob(
        type(self),
        reader,
        os.path.join(self.staging_dir(), split),
        int(self.chunk_size),
        bool(self.skip_bad and self.allow_skip),
    )
    if self.use_beam:
      beam = tfds.core.lazy_imports.apache_beam
      return beam.Create(list(range(job.num_chunks))) | beam.FlatMap(job)
    return (item for c in range(job.num_chunks) for item in job(c))


class ChunkJob:
  """Encodes (or reads back) staged chunk c of a split: `job(c)` -> [(key, record)].

  Picklable (a Beam element function): it holds the builder class, the reader and paths only.
  """

  def __init__(self, builder_cls, reader, folder: str, size: int, skip_bad: bool):
    self.builder_cls, self.reader, self.folder = builder_cls, reader, folder
    self.size, self.skip_bad = size, skip_bad
    self.num_chunks = -(-len(reader) // size)

  def _path(self, c: int) -> epath.Path:
    return epath.Path(self.folder) / f"chunk-{c:05d}-of-{self.num_chunks:05d}.pkl"

  def __call__(self, c: int) -> list[tuple[int, dict[str, Any]]]:
    path = self._path(c)
    if path.exists():
      return pickle.loads(path.read_bytes())
    out, skipped = [], []
    for i in range(c * self.size, min(len(self.reader), (c + 1) * self.size)):
      try:
        example = self.reader[i]
      except DataError as e:
        if not self.skip_bad:
          hint = (
              "rerun with --skip_bad to leave the example out (listed in skipped.json)"
              if self.builder_cls.allow_skip
              else "this dataset addresses records by position: remove or fix the file"
          )
          raise DataError(f"{e}\nhint: {hint}; finished chunks are not redone") from e
        skipped.append((int(i), str(e).splitlines()[0]))
        continue
      record = self.builder_cls.to_record(example)
      record["index"] = int(i)
      record["checksum"] = records.checksum(example)
      out.append((int(i), record))
    path.parent.mkdir(parents=True, exist_ok=True)
    side = path.parent / (path.name[: -len(".pkl")] + ".skipped.json")
    side.write_text(json.dumps(skipped))
    tmp = path.parent / (path.name + ".tmp")
    tmp.write_bytes(pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL))
    tmp.rename(path)  # the chunk is done once this exists
    return out
