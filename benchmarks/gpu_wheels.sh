#!/usr/bin/env bash
# Downloads, here, the pure-Python (and array-record's manylinux) wheels that the lent GPU machine's image
# lacks, into .whl/ (git-ignored), for Python 3.12 on x86-64: `benchmarks/gpu.sh` installs them there.
# Carry the folder with the device tool's `carry: [".whl"]` (about 3 MiB of the 64 MiB a call may take).
# The image has jax 0.11.x (cuda13), flax, optax, orbax, chex, etils, absl-py, cloudpickle, protobuf,
# pyyaml, einops, h5py, scipy, pillow, tqdm and torch; jaxseg also imports grain (-> array-record,
# portpicker) and ml-collections. tensorflow-datasets is imported only for `data.name='tfds'`: not carried.
set -euo pipefail
cd "$(dirname "$0")/.."
pin() { grep -E "^$1==" requirements.txt | cut -d' ' -f1; }
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  "$(pin grain)" "$(pin ml-collections)" array-record==0.8.6 portpicker==1.6.0
ls -l .whl
