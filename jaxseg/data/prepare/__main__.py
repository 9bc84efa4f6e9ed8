"""python -m jaxseg.data.prepare <name> --root=<raw dataset> --data_dir=<out> [--skip_bad] [--verify]

Writes the TFDS dataset `<name>` (voc_aug, gta5, cityscapes, nyu_depth_v2[/hn], davis2017, video_frames)
as ArrayRecord shards under `<data_dir>/<name>/<version>/`, with TFDS's progress bars. An
interrupted run resumes from its staged chunks (see `jaxseg.data.prepare.base`); a finished dataset
is not rewritten (`--overwrite` does). `--skip_bad` leaves out examples whose files are bad and
lists them (`skipped.json`); `--verify` re-reads every record and compares it with its checksum
(alone, without --root, it checks an existing dataset). Ctrl-C or SIGTERM stop it with one line saying
what is kept (exit status 128 + the signal). Equivalent TFDS command:
  tfds build <name> --imports=jaxseg.data.prepare.builders --manual_dir=<root> --data_dir=<out> \
      --file_format=array_record
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import threading
from typing import Any

from jaxseg.data.errors import DataError
from jaxseg.data.prepare import BUILDERS, builder_class


def prepare(
    name: str,
    root: str,
    data_dir: str,
    *,
    skip_bad: bool = False,
    overwrite: bool = False,
    beam_runner: Any = None,
) -> dict[str, list]:
  """Prepares `name` from `root` into `data_dir`; returns {split: [[index, reason]]} skipped.

  `beam_runner` (e.g. 'DirectRunner' or a runner object): encode the chunks on Apache Beam.
  """
  import tensorflow_datasets as tfds

  base, _, config_name = name.partition("/")
  kwargs = {"config": config_name} if config_name else {}
  builder = builder_class(base)(data_dir=data_dir, file_format="array_record", **kwargs)
  builder.skip_bad = skip_bad
  builder.use_beam = beam_runner is not None
  mode = tfds.download.GenerateMode
  config = tfds.download.DownloadConfig(
      manual_dir=root,
      download_mode=mode.REUSE_CACHE_IF_EXISTS if overwrite else mode.REUSE_DATASET_IF_EXISTS,
  )
  if beam_runner is not None:
    import apache_beam as beam

    if isinstance(beam_runner, str):
      beam_runner = beam.runners.create_runner(beam_runner)
    config.beam_runner = beam_runner
    config.beam_options = beam.options.pipeline_options.PipelineOptions([])
  existed = builder.is_prepared()
  builder.download_and_prepare(download_config=config)
  skipped_path = os.path.join(os.fspath(builder.data_dir), "skipped.json")
  if not existed:  # this run wrote the dataset
    with open(skipped_path, "w") as f:
      json.dump(builder.skipped_examples(), f, indent=1)
  shutil.rmtree(builder.staging_dir(), ignore_errors=True)
  if os.path.exists(skipped_path):
    with open(skipped_path) as f:
      return json.load(f)
  return {}


def verify(name: str, data_dir: str) -> dict[str, tuple[int, list[str]]]:
  """Re-reads every record of every split; {split: (records, [problems])}."""
  import tensorflow_datasets as tfds
  from tqdm import tqdm

  from jaxseg.data.prepare import records
  from jaxseg.data.readers.prepared import open_split

  cls = builder_class(name)
  builder = tfds.builder(name, data_dir=data_dir)
  out = {}
  for split in builder.info.splits:
    ds = open_split(name, split, data_dir)
    problems = []
    for k in tqdm(range(len(ds)), desc=f"verify {name}/{split}", unit=" records"):
      try:
        record = ds[k]
        example = cls.from_record(record, {})
        if records.checksum(example) != records.text(record["checksum"]):
          problems.append(f"record {k} (reader index {int(record['index'])}): checksum differs")
      except Exception as e:  # noqa: BLE001 - a corrupt record may fail anywhere in decoding
        problems.append(f"record {k}: cannot decode ({type(e).__name__}: {e})")
    out[split] = (len(ds), problems)
  return out


class _Stopped(BaseException):
  """SIGTERM arrived. A BaseException, as Ctrl-C's KeyboardInterrupt: no `except Exception` on the way
  (a reader's, TFDS's) may swallow it."""

  def __init__(self, signum: int):
    super().__init__(signum)
    self.signum = signum


def _raise_stopped(signum, frame):
  raise _Stopped(signum)


def _stopped_message(args: argparse.Namespace, signum: int) -> str:
  name = signal.Signals(signum).name
  if not args.root:
    return f"{args.name}: verification stopped by {name}; nothing was changed"
  return (
      f"{args.name}: stopped by {name} before it finished; the chunks encoded so far stay staged under "
      f"{args.data_dir}: rerun the same command to resume from them"
  )


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m jaxseg.data.prepare", description=__doc__.split("\n\n")[0]
  )
  parser.add_argument("name", help=f"{', '.join(sorted(BUILDERS))} (nyu_depth_v2/hn: + HN labels)")
  parser.add_argument("--root", default="", help="the raw dataset's folder (standard layout)")
  parser.add_argument("--data_dir", required=True, help="TFDS data_dir to write")
  parser.add_argument("--skip_bad", action="store_true", help="leave out bad files, list them")
  parser.add_argument("--verify", action="store_true", help="re-read every record vs checksum")
  parser.add_argument("--overwrite", action="store_true", help="rewrite a finished dataset")
  parser.add_argument(
      "--beam_runner", default="", help="encode on Apache Beam with this runner (DirectRunner, ...)"
  )
  args = parser.parse_args(argv)
  on_main_thread = threading.current_thread() is threading.main_thread()
  if on_main_thread:  # signal handlers can only be set there
    previous = signal.signal(signal.SIGTERM, _raise_stopped)
  try:
    if args.root:
      skipped = prepare(
          args.name,
          args.root,
          args.data_dir,
          skip_bad=args.skip_bad,
          overwrite=args.overwrite,
          beam_runner=args.beam_runner or None,
      )
      total = sum(len(v) for v in skipped.values())
      print(f"{args.name}: {total} example(s) skipped as bad" + (":" if total else ""))
      for split, items in skipped.items():
        for index, reason in items:
          print(f"  {split}[{index}]: {reason}")
    elif not args.verify:
      parser.error("--root is needed to prepare (or --verify to check a prepared dataset)")
    if args.verify:
      failed = False
      for split, (count, problems) in verify(args.name, args.data_dir).items():
        print(f"verify {args.name}/{split}: {count} records, {len(problems)} bad")
        for p in problems[:20]:
          print(f"  {p}")
        failed |= bool(problems)
      return 1 if failed else 0
  except DataError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print(_stopped_message(args, signal.SIGINT), file=sys.stderr)
    return 128 + signal.SIGINT
  except _Stopped as e:
    print(_stopped_message(args, e.signum), file=sys.stderr)
    return 128 + e.signum
  finally:
    if on_main_thread:
      signal.signal(signal.SIGTERM, previous)
  return 0


if __name__ == "__main__":
  sys.exit(main())
