"""One of the two processes of `tests/test_prepare.py::test_two_processes_read_disjoint_ranges`.

python tests/per_host_reader.py <data_dir> <coordinator port> <process id> <out.json>: joins a
2-process JAX job, builds the training source of a `source='tfds'` data section with
`tfds.per_process`, reads 4 batches through the training pipeline, saves the iterator state after
batch 2, restores it in a fresh iterator and reads batches 3-4 again. Writes the ids of every batch,
the record indices this process read, its range, and the restored batches.
"""

import json
import sys

import jax

data_dir, port, process_id, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)

from jaxseg.data import datasets, pipeline  # noqa: E402
from jaxseg.data.readers import prepared  # noqa: E402

read = []
record = prepared.PreparedSource.record


def logged(self, index):
  read.append(self.start + int(index) % len(self))
  return record(self, index)


prepared.PreparedSource.record = logged

data = datasets.data_config()
data.update(name="cityscapes", num_classes=19, source="tfds", train_split="train")
data.tfds.update(data_dir=data_dir, per_process=True)
source = datasets.build_source(data, "train", with_masks=False)
ds = pipeline.train_dataset(
    source, lambda example, rng: example, seed=0, global_batch_size=2, keys=("id",)
)
it = pipeline.make_iterator(ds)
batches = [list(map(str, next(it)["id"])) for _ in range(2)]
state = pipeline.encode_state(it)
batches += [list(map(str, next(it)["id"])) for _ in range(2)]
fresh = pipeline.make_iterator(ds)
pipeline.decode_state(fresh, state)
restored = [list(map(str, next(fresh)["id"])) for _ in range(2)]
with open(out, "w") as f:
  json.dump(
      {
          "range": [source.start, source.end],
          "process": [jax.process_index(), jax.process_count()],
          "batches": batches,
          "restored": restored,
          "read": sorted(set(read)),
          "ids": [source[i]["id"] for i in range(len(source))],
      },
      f,
  )
