"""Checks a config's datasets before a long run: reads every example, lists the bad files.

  python -m jaxseg.data.check --config=configs/<method>.py[:variant] [--config.data.root=...]
      [--workers=16] [--verbose]

Builds the train and eval sources of every data section of the config (`config.data`, or the
`source_data` / `target_data` of a domain-adaptation config) as the method does
(`jaxseg.data.datasets.build_source`), reads every example on a thread pool with a progress bar,
then prints a table of the bad files and why (the `DataError` message). Exit status 1 if any
example (or source) is bad, 0 if all read, 2 for a config error. `data.skip_bad` is ignored here.
A method may define `data_sources(config) -> {label: source}` to choose what is checked.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import ml_collections

from jaxseg.data.errors import DataError

# How a method's stages build each source (keyword arguments of `datasets.build_source`), where they
# differ from the defaults: {method: {(section, split): kwargs}}.
BUILD_ARGS = {
    "seam": {
        ("data", "train"): dict(with_labels=True, with_masks=False),
        ("data", "eval"): dict(with_labels=True),
    },
}
# Errors a broken file can raise from a reader besides DataError: reported, not raised.
_READ_ERRORS = (DataError, OSError, ValueError)


def data_sections(config: ml_collections.ConfigDict) -> list[str]:
  """Names of the config's data sections (sub-dicts with the keys of `datasets.data_config()`)."""
  return [
      key
      for key, value in config.items()
      if isinstance(value, ml_collections.ConfigDict)
      and {"name", "root", "train_split", "eval_split"} <= set(value.keys())
  ]


def sources_to_check(config: ml_collections.ConfigDict) -> list[tuple[str, Callable[[], object]]]:
  """[(label, build() -> source)]: each distinct (dataset, split) of the config once."""
  from jaxseg import methods
  from jaxseg.data import datasets

  method = methods.get_method(config.method)
  if hasattr(method, "data_sources"):
    return [(label, lambda s=source: s) for label, source in method.data_sources(config).items()]
  out, seen = [], set()
  for section in data_sections(config):
    data = config[section]
    for split in ("train", "eval"):
      kwargs = BUILD_ARGS.get(config.method, {}).get((section, split), {})
      split_name = data.train_split if split == "train" else data.eval_split
      key = (data.name, data.root, split_name, tuple(sorted(kwargs.items())))
      if key in seen:
        continue
      seen.add(key)
      label = f"{section}/{split} ({data.name}:{split_name})"
      out.append((label, lambda d=data, s=split, k=kwargs: datasets.build_source(d, s, **k)))
  return out


def _example_name(source, index: int) -> str:
  ids = getattr(source, "ids", None)
  try:
    return str(ids[index]) if ids is not None else str(index)
  except (IndexError, TypeError):
    return str(index)


def scan(
    source, *, workers: int = 8, desc: str = "", progress: bool = True
) -> list[tuple[str, str]]:
  """Reads every example of `source` on `workers` threads -> [(example id, error message)]."""

  def read(index: int):
    try:
      source[index]
      return None
    except _READ_ERRORS as e:
      text = str(e) if isinstance(e, DataError) else f"{type(e).__name__}: {e}"
      return _example_name(source, index), text

  from tqdm import tqdm

  with ThreadPoolExecutor(max(1, workers)) as pool:
    results = pool.map(read, range(len(source)))
    results = tqdm(results, total=len(source), desc=desc, disable=not progress, unit="ex")
    return [r for r in results if r is not None]


def check(
    config: ml_collections.ConfigDict, *, workers: int = 8, progress: bool = True
) -> tuple[list[tuple[str, str, str]], int]:
  """([(source label, example id or '-', error message)], examples read) over every source."""
  config = ml_collections.ConfigDict(config.to_dict())  # unlocked copy: skip_bad off
  for section in data_sections(config):
    config[section].skip_bad = False
  bad, total = [], 0
  for label, build in sources_to_check(config):
    try:
      source = build()
    except DataError as e:
      bad.append((label, "-", str(e)))
      continue
    total += len(source)
    bad.extend(
        (label, name, text)
        for name, text in scan(source, workers=workers, desc=label, progress=progress)
    )
  return bad, total


def _printable(text: str) -> str:
  # File names that are not UTF-8 arrive as surrogate escapes: print them as \udcXX.
  return text.encode("utf-8", "backslashreplace").decode("utf-8")


def format_table(rows: Iterable[tuple[str, str, str]]) -> str:
  """source | example | problem (the first line of the message, then its hint if any)."""
  rows = [(_printable(a), _printable(b), _printable(c).splitlines() or [""]) for a, b, c in rows]
  width_a = max([len("source")] + [len(a) for a, _, _ in rows])
  width_b = max([len("example")] + [len(b) for _, b, _ in rows])
  lines = [f"{'source':{width_a}}  {'example':{width_b}}  problem"]
  for a, b, text in rows:
    lines.append(f"{a:{width_a}}  {b:{width_b}}  {text[0]}")
    lines.extend(f"{'':{width_a}}  {'':{width_b}}    {t.strip()}" for t in text[1:2])
  return "\n".join(lines)


def main() -> None:
  """The command line (absl flags are defined here, so importing this module defines none)."""
  from absl import app, flags

  from jaxseg import cli, methods

  config_flag, verbose = cli.define_config_flags()
  workers = flags.DEFINE_integer("workers", min(32, 4 * (os.cpu_count() or 1)), "Reader threads.")
  progress = flags.DEFINE_bool("progress", True, "Show a progress bar (stderr).")

  def run(argv: list[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    with cli.user_errors(verbose.value):
      config = config_flag.value
      methods.check_config_keys(config)
      bad, total = check(config, workers=workers.value, progress=progress.value)
    if bad:
      print(format_table(bad), flush=True)
      files = sum(1 for _, name, _ in bad if name != "-")
      unbuilt = f"; {len(bad) - files} source(s) could not be built" if len(bad) > files else ""
      print(f"{files} bad example(s) of {total} read{unbuilt}", flush=True)
      sys.exit(1)
    print(f"all {total} examples read without error", flush=True)

  cli.run_absl(run)


if __name__ == "__main__":
  main()
