"""`tfds build` for the jaxseg builders, without TensorFlow or Apache Beam.

  python -m jaxseg.data.prepare.tfds_build gta5 --manual_dir=/data/GTA5 --data_dir=/data/tfds \
      --file_format=array_record

takes the arguments of `tfds build` and runs TFDS's own build command (`tensorflow_datasets.scripts.
cli.build`) with the jaxseg builders registered (`--imports=jaxseg.data.prepare.builders` is implied).
The `tfds` executable itself cannot start in the project's environment: tensorflow-datasets 4.9.10's
command line imports TensorFlow and apache_beam at start-up (its `convert_format` subcommand), and
apache-beam does not resolve with the pins (docs/datasets.md). With both installed (the
requirements-beam.txt environment plus tensorflow-cpu), `tfds build <name>
--imports=jaxseg.data.prepare.builders ...` runs the same command.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
  import simple_parsing
  from tensorflow_datasets.scripts.cli import build

  import jaxseg.data.prepare.builders  # noqa: F401  (registers the builders)

  args = simple_parsing.parse(build.Args, args=list(sys.argv[1:] if argv is None else argv))
  args.execute()


if __name__ == "__main__":
  main()
