"""TFDS's on-disk shuffle buckets without TensorFlow.

tensorflow-datasets 4.9.10 keeps a split's serialized records in memory up to 1 GB
(`shuffle.MAX_MEM_BUFFER_SIZE`); past that it spills them to bucket files opened with
`tf.io.gfile`, i.e. TensorFlow, even with `disable_shuffling` (the records are then sorted by key).
Every real dataset is larger, so `no_tf_shuffle_buckets()` hands the shuffler a stand-in for the four
`tf` names it uses (`io.gfile.GFile/exists/remove`, `errors.ResourceExhaustedError`), backed by
`etils.epath` (local files, GCS or S3 as epath supports them). It does nothing when TensorFlow is
installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import types

from etils import epath


class _ResourceExhaustedError(Exception):
  """Never raised: the shuffler's 'too many open files' retry path stays unused."""

  message = ""


def _gfile(path, mode: str = "r"):
  return epath.Path(path).open(mode)


_TF = types.SimpleNamespace(
    io=types.SimpleNamespace(
        gfile=types.SimpleNamespace(
            GFile=_gfile,
            exists=lambda path: epath.Path(path).exists(),
            remove=lambda path: epath.Path(path).unlink(),
        )
    ),
    errors=types.SimpleNamespace(ResourceExhaustedError=_ResourceExhaustedError),
)


@contextlib.contextmanager
def no_tf_shuffle_buckets():
  """Within the block, TFDS's shuffler writes its buckets without TensorFlow (see the module doc)."""
  from tensorflow_datasets.core import shuffle

  if importlib.util.find_spec("tensorflow") is not None:
    yield
    return
  saved = shuffle.tf
  shuffle.tf = _TF
  try:
    yield
  finally:
    shuffle.tf = saved
